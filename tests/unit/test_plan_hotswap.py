"""plan_swap: which hot-swap replica switches next, one at a time, towards the target split."""

from __future__ import annotations

import pytest

from specops.plan.hotswap import ReplicaEngine, Swap, awake_split, plan_swap
from specops.render.manifests import Pool, PoolSplit

S, B = Pool.SPECULATIVE, Pool.BASELINE


def replicas(*awake: Pool | None, not_ready: tuple[str, ...] = ()) -> list[ReplicaEngine]:
    names = [f"p{i}" for i in range(len(awake))]
    return [ReplicaEngine(n, a, ready=n not in not_ready) for n, a in zip(names, awake, strict=True)]


@pytest.mark.parametrize(
    ("target", "fleet", "expected"),
    [
        # Already there: nothing.
        (PoolSplit(2, 0), replicas(S, S), None),
        (PoolSplit(1, 1), replicas(B, S), None),
        # Fall back: one speculative replica at a time, the first by name.
        (PoolSplit(0, 2), replicas(S, S), Swap("p0", S, B)),
        (PoolSplit(0, 2), replicas(B, S), Swap("p1", S, B)),
        # Re-enable, or a probe of one replica.
        (PoolSplit(2, 0), replicas(B, B), Swap("p0", B, S)),
        (PoolSplit(1, 2), replicas(B, B, B), Swap("p0", B, S)),
        # A replica that is not ready goes first: it serves nobody.
        (PoolSplit(0, 3), replicas(S, S, S, not_ready=("p2",)), Swap("p2", S, B)),
        # One at a time: a replica mid-swap (no engine awake) holds every other swap.
        (PoolSplit(0, 3), replicas(S, None, S), None),
        (PoolSplit(3, 0), replicas(None, B, B), None),
        # Pods missing or surplus are the Deployment's: no swap fixes a count.
        (PoolSplit(3, 0), replicas(S, S), None),
        (PoolSplit(1, 0), replicas(S, S), None),
        (PoolSplit(2, 1), replicas(S, S), None),
        # Mixed: more pods than the target but one pool short: swap towards it.
        (PoolSplit(1, 1), replicas(S, S), Swap("p0", S, B)),
        (PoolSplit(0, 0), replicas(S, B), None),
    ],
)
def test_plan_swap(target: PoolSplit, fleet: list[ReplicaEngine], expected: Swap | None) -> None:
    assert plan_swap(target, fleet) == expected


def test_repeated_swaps_reach_the_target_one_by_one() -> None:
    fleet = {r.name: r for r in replicas(S, S, S, S)}
    target = PoolSplit(1, 3)
    steps = 0
    while (swap := plan_swap(target, list(fleet.values()))) is not None:
        assert fleet[swap.replica].awake is swap.from_pool
        fleet[swap.replica] = ReplicaEngine(swap.replica, swap.to_pool)
        steps += 1
    assert steps == 3
    assert awake_split(list(fleet.values())) == target


def test_awake_split_ignores_replicas_mid_swap() -> None:
    assert awake_split(replicas(S, None, B, B)) == PoolSplit(1, 2)

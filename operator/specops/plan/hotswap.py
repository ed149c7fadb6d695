"""Which hot-swap replica to switch now (pure): one at a time, towards the target split.

With ``spec.rollout.strategy: HotSwap`` a pod holds both engines; its pool is the engine that is
awake.  A switch moves no pod: it drains the replica (the EndpointSlices stop sending it requests),
puts its awake engine to sleep and wakes the other.  This module decides only *which* replica
swaps next; the controller executes the swap through the pod's admin port.  Rules:

* one swap at a time: while any replica has no awake engine (mid-swap, or unknown after an
  operator restart), nothing else starts;
* a replica that is not ready swaps before a ready one (it serves nobody, so moving it costs
  nothing), then by name, so the choice is deterministic;
* pods missing from or beyond the target's total are the Deployment's business (it adds or
  removes pods), not a swap's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from specops.render.manifests import Pool, PoolSplit


@dataclass(frozen=True, slots=True)
class ReplicaEngine:
    """One hot-swap replica as the controller sees it: which engine is awake (None: neither, or
    not known yet) and whether the pod is ready."""

    name: str
    awake: Pool | None
    ready: bool = True


@dataclass(frozen=True, slots=True)
class Swap:
    """Put ``replica``'s ``from_pool`` engine to sleep and wake its ``to_pool`` engine."""

    replica: str
    from_pool: Pool
    to_pool: Pool


def awake_split(replicas: Sequence[ReplicaEngine]) -> PoolSplit:
    """The split the replicas serve now (replicas with no awake engine count in neither pool)."""
    return PoolSplit(
        speculative=sum(r.awake is Pool.SPECULATIVE for r in replicas),
        baseline=sum(r.awake is Pool.BASELINE for r in replicas),
    )


def plan_swap(target: PoolSplit, replicas: Sequence[ReplicaEngine]) -> Swap | None:
    """The next swap towards ``target``, or None (nothing to do, or a swap is under way)."""
    if any(r.awake is None for r in replicas):
        return None
    now = awake_split(replicas)
    if now.speculative > target.speculative and now.baseline < target.baseline:
        source, dest = Pool.SPECULATIVE, Pool.BASELINE
    elif now.baseline > target.baseline and now.speculative < target.speculative:
        source, dest = Pool.BASELINE, Pool.SPECULATIVE
    else:
        return None
    candidates = sorted((r for r in replicas if r.awake is source), key=lambda r: (r.ready, r.name))
    return Swap(candidates[0].name, source, dest)

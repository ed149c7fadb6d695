"""Status writes that scale: evaluations of N resources on the in-memory API server, with figures
that jitter as real scrapes do; the figure-only writes stay within one budget however large N is,
and a change of the policy's state is written at once whatever is left of it."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from specops.controller.ratelimit import TokenBucket, figure_write_budget
from specops.controller.reconciler import Reconciler
from tests.support.fake_kube import FakeKube
from tests.support.policy_states import speculating
from tests.support.resources import as_stored, make_doc

INTERVAL = 30.0  # seconds between evaluations of a resource (the default)
RATE, BURST = 0.5, 15.0  # figure-only writes a second, and the most saved up (one cycle's worth)


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]  # the burst, then empty
    now[0] += 0.5  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 100.0  # never more than the burst saved
    assert sum(bucket.take() for _ in range(10)) == 3
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0.0, 1.0)


def test_figure_write_budget_counts_what_it_defers() -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("specops_status_figure_writes_deferred_total") or 0.0
    may_write = figure_write_budget(rate=0.001, burst=2.0)
    assert [may_write() for _ in range(5)] == [True, True, False, False, False]
    assert REGISTRY.get_sample_value("specops_status_figure_writes_deferred_total") == before + 3


class Fleet:
    """N resources in one fake API server, evaluated once every INTERVAL of a fake clock."""

    def __init__(self, n: int, budget: Callable[[], bool] | None, clock: list[float]) -> None:
        docs = []
        for i in range(n):
            doc = as_stored(make_doc(), namespace="serving", uid=f"u-{i}")
            doc["metadata"]["name"] = f"r{i}"
            docs.append(doc)
        self.kube = FakeKube(*docs)
        self.n = n
        self.clock = clock
        self.reconciler = Reconciler(self.kube, figure_writes=budget)
        self.rng = random.Random(n)

    def cycle(self, acceptance: dict[int, float] | None = None) -> int:
        """One evaluation of every resource, figures jittering by up to 3%; the status writes made."""
        before = len(self.kube.status_patches)
        for i in range(self.n):
            jitter = 1 + self.rng.uniform(-0.03, 0.03)
            obs = speculating(acceptance=(acceptance or {}).get(i, 0.8) * jitter, tpot_p99=0.03 * jitter)
            self.reconciler.evaluate("serving", f"r{i}", obs, self.clock[0])
        self.clock[0] += INTERVAL
        return len(self.kube.status_patches) - before


def steady_writes(n: int, limited: bool, cycles: int = 6) -> list[int]:
    clock = [1_767_225_600.0]
    budget = TokenBucket(RATE, BURST, clock=lambda: clock[0]).take if limited else None
    fleet = Fleet(n, budget, clock)
    fleet.cycle()
    fleet.cycle()  # first status, then the pools ready: every resource writes in these two
    return [fleet.cycle() for _ in range(cycles)]


def test_figure_writes_are_flat_in_the_number_of_resources() -> None:
    """Jitter under 10% is never worth a write; aged figures (60 s) are refreshed within the budget:
    all of them at 10 resources, at most the budget at 100, where 50 a cycle would be due."""
    small = steady_writes(10, limited=True)
    large = steady_writes(100, limited=True)
    unlimited = steady_writes(100, limited=False)
    budget_per_cycle = RATE * INTERVAL
    print(f"\nstatus writes per {INTERVAL:g} s cycle: 10 resources {small}, 100 {large}, "
          f"100 without a budget {unlimited}")  # fmt: skip
    assert sum(small) == 10 * len(small) / 2  # every figure refreshed once a minute: not limited
    assert all(w <= budget_per_cycle for w in large), large  # flat: the budget, not N
    assert sum(large) >= budget_per_cycle * (len(large) - 1), large  # ... and all of it used
    assert sum(unlimited) == 100 * len(unlimited) / 2  # the control: what N alone would write


def test_a_change_of_state_is_written_whatever_the_budget() -> None:
    clock = [1_767_225_600.0]
    fleet = Fleet(20, TokenBucket(RATE, 1.0, clock=lambda: clock[0]).take, clock)
    for _ in range(4):
        fleet.cycle()
    # The budget is spent (1 token, 20 resources with aged figures); resource 7 breaches.
    fleet.cycle(acceptance={7: 0.2})
    status = fleet.kube.objects[("SpeculativeInference", "serving", "r7")]["status"]
    assert (status["verdict"], status["verdictReason"]) == ("Breach", "AcceptanceBelowThreshold")
    assert status["counters"]["breaches"] == 1
    assert status["observed"]["acceptanceRate"] < 0.3  # its figures went with it

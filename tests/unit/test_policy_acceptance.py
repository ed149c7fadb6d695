"""Acceptance as a distribution (issue 14, the break-even band): the per-position counters reveal a
share of requests accepting far less than the mean (the mixed-temperature workload), and the
policy falls back on it when no measured reference judges the latency."""

from __future__ import annotations

from dataclasses import replace

import pytest

from specops.policy import rules
from specops.policy.acceptance import acceptance_spread, counter_acceptance
from specops.policy.decide import decide
from specops.policy.rules import Window
from specops.policy.state import Observation, PolicyState, Reason
from specops.vllm.speculation_table import conditional_from_cumulative
from tests.support.policy_states import (
    NEW,
    NOW,
    POLICY,
    SPECULATING,
    SURGE_FACTS,
    spec_pool,
    status_state,
)


def mixture(*parts: tuple[float, float], k: int = 5) -> tuple[float, ...]:
    """The conditional per-position acceptance vLLM's counters show for a mix of requests, each
    (share, per-position acceptance) accepting every position with that probability."""
    cumulative = [sum(w * a**i for w, a in parts) for i in range(1, k + 1)]
    return conditional_from_cumulative(cumulative)


# The simulator's mixed-temperature workload: 60% at temperature 0.1 (about 0.78 of drafts
# accepted), 40% at 1.0 (about 0.36): a mean near 0.6, in the break-even band.
MIXED = mixture((0.6, 0.92), (0.4, 0.68))


def test_a_mixture_shows_its_lower_share() -> None:
    spread = acceptance_spread(MIXED)
    assert spread is not None
    assert spread.share == pytest.approx(0.4, abs=0.05)
    assert spread.acceptance == pytest.approx(counter_acceptance(0.68, 5), abs=0.03)


@pytest.mark.parametrize(
    "profile",
    [
        mixture((1.0, 0.8)),  # one population: a flat profile
        (0.85, 0.8, 0.75, 0.7, 0.65),  # drafts that degrade with depth: a falling profile
        mixture((0.7, 0.85), (0.3, 0.75)),  # populations too close to tell apart
        mixture((0.95, 0.9), (0.05, 0.3)),  # too small a share to trust
        (0.6, 0.9, 0.6, 0.9, 0.7),  # rising, but no two populations fit it either (noise)
        (0.8, 0.9),  # too few positions
        (),
    ],
)
def test_no_spread_without_the_mark_of_a_mixture(profile: tuple[float, ...]) -> None:
    assert acceptance_spread(profile) is None


def judge(state: PolicyState, obs: Observation) -> Reason | None:
    found = rules.acceptance_spread_below_threshold(Window(POLICY, state, obs, NOW))
    return None if found is None else found.reason


def test_the_rule_needs_no_baseline_and_gives_way_to_one() -> None:
    mixed = Observation(speculative=spec_pool(acceptance=0.6, per_position=MIXED))
    assert judge(NEW, mixed) is Reason.ACCEPTANCE_SPREAD
    # A fresh baseline recorded at this load (1 req/s per replica) judges the latency instead.
    assert judge(SPECULATING, mixed) is None
    # One population at the same mean: nothing to say.
    even = Observation(speculative=spec_pool(acceptance=0.6, per_position=mixture((1.0, 0.83))))
    assert judge(NEW, even) is None
    # A lower share that still accepts above minAcceptanceRate (0.5) is no breach.
    fine = Observation(speculative=spec_pool(acceptance=0.75, per_position=mixture((0.6, 0.95), (0.4, 0.86))))
    assert judge(NEW, fine) is None


def test_a_mixed_workload_falls_back_without_a_reference() -> None:
    state = replace(status_state("Speculative", baselineReference=None), mode_since=NOW - 3600)
    obs = Observation(speculative=spec_pool(acceptance=0.6, per_position=MIXED))
    reasons = []
    for i in range(3):
        d = decide(POLICY, state, obs, NOW + 30 * i, facts=SURGE_FACTS)
        state = d.state
        if d.transition is not None:
            reasons.append(d.transition.reason)
    assert reasons == [Reason.ACCEPTANCE_SPREAD]

"""What the policy compares with, and for how long (issue 13, defects 4 and 6): the recorded
baseline reference judged at any acceptance while fresh, and recorded evidence that expires,
clears or resets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from specops.api.v1alpha1 import PolicySpec
from specops.policy.decide import assess, decide
from specops.policy.state import PolicyState, Reason, Verdict
from tests.support.policy_states import (
    NOW,
    POLICY,
    PROBE_WON,
    REFERENCE,
    SPECULATING,
    speculating,
    status_state,
)

HOUR = 3600.0


def recorded(seconds_ago: float) -> PolicyState:
    """Speculating after a won probe, the reference recorded ``seconds_ago``."""
    assert SPECULATING.reference is not None
    return replace(SPECULATING, reference=replace(SPECULATING.reference, at=NOW - seconds_ago))


# ------------------------------------------ defect 4: latency checked at any acceptance


@pytest.mark.parametrize(
    ("acceptance", "p50", "p99", "reason"),
    [
        # Acceptance 0.8, P99 three times the reference (30 ms at the same load): slow despite it.
        (0.8, 0.02, 0.09, Reason.TAIL_LATENCY_REGRESSION),
        (0.9, 0.02, 0.034, Reason.TAIL_LATENCY_REGRESSION),
        # P50 better, P99 a little worse but the gap twice the reference's: the mixed-workload sign.
        (0.8, 0.01, 0.032, Reason.TAIL_GAP_WIDENING),
        (0.6, 0.02, 0.09, Reason.TAIL_LATENCY_REGRESSION),  # the break-even band, as before
        (0.8, 0.015, 0.025, Reason.HEALTHY),  # a real win
    ],
)
def test_p99_is_judged_against_a_fresh_reference_at_any_acceptance(
    acceptance: float, p50: float, p99: float, reason: Reason
) -> None:
    got = assess(POLICY, SPECULATING, speculating(acceptance=acceptance, tpot_p50=p50, tpot_p99=p99), NOW)
    assert got.reason == reason, got.message


def test_a_slow_draft_with_good_acceptance_falls_back() -> None:
    state = recorded(120)
    slow = speculating(acceptance=0.8, tpot_p99=0.09)
    reasons = []
    for i in range(3):
        d = decide(POLICY, state, slow, NOW + 30 * i)
        state = d.state
        reasons += [d.transition.reason] if d.transition else []
    assert reasons == [Reason.TAIL_LATENCY_REGRESSION]


@pytest.mark.parametrize("acceptance", [0.6, 0.8])
def test_a_stale_reference_is_no_reference(acceptance: float) -> None:
    """Fresh is younger than policy.referenceMaxAge (6h): older, the baseline may have changed
    (other traffic, another node), and the comparison would judge that instead."""
    slow = speculating(acceptance=acceptance, tpot_p99=0.09)
    assert assess(POLICY, recorded(6 * HOUR - 60), slow, NOW).verdict is Verdict.BREACH
    assert assess(POLICY, recorded(6 * HOUR + 60), slow, NOW).reason == Reason.HEALTHY
    short = PolicySpec(reference_max_age="30m")
    assert assess(short, recorded(31 * 60), slow, NOW).reason == Reason.HEALTHY


def test_a_reference_at_another_load_is_no_reference_at_any_acceptance() -> None:
    busy = speculating(acceptance=0.8, tpot_p99=0.09, request_rate=6.0)  # 3 req/s per replica vs 1
    assert assess(POLICY, SPECULATING, busy, NOW).reason == Reason.HEALTHY


def test_a_new_resource_without_a_reference_keeps_speculating() -> None:
    new = status_state("Speculative", decisions=PROBE_WON)  # no baselineReference in status
    assert assess(POLICY, new, speculating(acceptance=0.8, tpot_p99=0.09), NOW).reason == Reason.HEALTHY
    assert REFERENCE["recordedAt"]  # the shared states do carry one


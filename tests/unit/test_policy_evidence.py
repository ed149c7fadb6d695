"""What the policy compares with, and for how long (issue 13, defects 4 and 6): the recorded
baseline reference judged at any acceptance while fresh, and recorded evidence that expires,
clears or resets."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from specops.api.v1alpha1 import PolicySpec, ServingMode, SpeculativeInference, SpeculativeInferenceSpec
from specops.policy.decide import assess, decide, policy_fingerprint, reset_for_new_spec
from specops.policy.state import PolicyState, Reason, Verdict
from tests.support.policy_states import (
    FELL_BACK,
    NOW,
    POLICY,
    PROBE_WON,
    PROBING,
    REFERENCE,
    SPECULATING,
    baseline_only,
    probing,
    speculating,
    status_state,
)
from tests.support.resources import make_doc

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


# ------------------------------------------------ defect 6: evidence that expires or resets


def saturated_baseline(saturated_ago: float) -> PolicyState:
    """In Baseline an hour after a LoadSaturation fallback at 6 req/s per replica."""
    state = status_state("Baseline", decisions=FELL_BACK, saturationRequestsPerReplica=6.0)
    return replace(state, mode_since=NOW - HOUR, saturation_at=NOW - saturated_ago)


def test_the_saturation_load_stops_holding_probes_off_once_stale() -> None:
    busy = baseline_only(request_rate=10.0)  # 5 req/s per replica: at 83% of the saturation load
    d = decide(POLICY, saturated_baseline(HOUR), busy, NOW)
    assert d.transition is None  # recent: no probe at that load
    d = decide(POLICY, saturated_baseline(6 * HOUR + 60), busy, NOW)
    assert d.transition is not None and d.transition.reason == Reason.PROBE_STARTED


def test_a_won_probe_clears_the_saturation_load() -> None:
    state = replace(PROBING, mode_since=NOW - 400, saturation_rate=6.0, saturation_at=NOW - 900)
    for i in range(3):
        d = decide(POLICY, state, probing(tpot_p99=0.02), NOW + 30 * i)
        state = d.state
    assert state.mode == ServingMode.SPECULATIVE
    assert (state.saturation_rate, state.saturation_at) == (None, None)


def test_a_fallback_records_when_speculation_saturated() -> None:
    saturated = speculating(waiting=12.0, request_rate=12.0)  # 6 req/s per replica, queueing
    state = recorded(60)
    for i in range(3):
        state = decide(POLICY, state, saturated, NOW + 30 * i).state
    assert state.mode == ServingMode.BASELINE
    assert (state.saturation_rate, state.saturation_at) == (6.0, NOW + 60)


def spec(**patch: Any) -> SpeculativeInferenceSpec:
    return SpeculativeInference.model_validate(make_doc(**patch)).spec


def test_the_fingerprint_follows_what_the_evidence_depends_on() -> None:
    base = policy_fingerprint(spec())
    assert base == policy_fingerprint(spec())
    # What speculation's and the baseline's latency depend on changes it...
    changes: list[dict[str, Any]] = [
        {"speculation": {"numSpeculativeTokens": 3}},
        {"speculation": {"draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}}},
        {"vllm": {"version": "0.31.0"}},
        {"vllm": {"image": "vllm/vllm-openai:v0.31.0"}},
        {"target": {"maxModelLen": 4096}},
        {"resources": {"gpuType": "H200-141GB"}},
    ]
    for change in changes:
        assert policy_fingerprint(spec(**change)) != base, change
    # ...how many replicas, and the policy's own settings, do not.
    for change in ({"replicas": 4}, {"policy": {"cooldown": "20m"}}, {"podLabels": {"team": "a"}}):
        assert policy_fingerprint(spec(**change)) == base, change


def test_a_new_spec_resets_the_evidence_recorded_under_the_old_one() -> None:
    old = replace(
        saturated_baseline(HOUR),
        reference=SPECULATING.reference,
        lost_probes=2,
        breaches=1,
        spec_fingerprint="old-draft",
    )
    busy = baseline_only(request_rate=10.0)  # 5 req/s per replica: near the old saturation load
    d = decide(POLICY, old, busy, NOW, fingerprint="new-draft")
    s = d.state
    assert s.spec_fingerprint == "new-draft"
    assert (s.saturation_rate, s.saturation_at, s.lost_probes) == (None, None, 0)
    # The reference is recorded afresh from this very window (the baseline pool serves).
    assert s.reference is not None and s.reference.at == NOW and s.reference.rate_per_replica == 5.0
    assert s.mode == ServingMode.PROBING  # no longer held off by the old draft's saturation load
    assert reset_for_new_spec(old, "x").history == old.history  # the record of decisions stays
    # The same spec changes nothing; a state from before fingerprints were kept adopts it.
    assert decide(POLICY, old, busy, NOW, fingerprint="old-draft").transition is None
    adopted = decide(POLICY, replace(old, spec_fingerprint=None), busy, NOW, fingerprint="new-draft")
    assert adopted.transition is None and adopted.state.saturation_rate == 6.0
    assert adopted.state.spec_fingerprint == "new-draft"

"""The policy's decisions over sequences of windows: hysteresis, pins, errors, settling, probes,
cooldown and restarts.  Each rule on its own is tested in test_policy_rules.py."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specops.api.v1alpha1 import PolicySpec, ServingMode
from specops.metrics.observation import build_observations, conditional_acceptance
from specops.metrics.promql import Sample, Signal
from specops.plan.status import observed_fields, policy_state_from_status, policy_status_fields
from specops.policy.decide import assess, decide, probe_cooldown
from specops.policy.state import Observation, PolicyState, PoolMetrics, Reference, Verdict

SPECULATIVE, BASELINE, PROBING = ServingMode.SPECULATIVE, ServingMode.BASELINE, ServingMode.PROBING
POLICY = PolicySpec()  # defaults: min 0.5, break-even 0.65, 3 breaches, 3 recoveries, cooldown 10m


def pool(**kw: Any) -> PoolMetrics:
    base: dict[str, Any] = {"replicas": 2, "request_rate": 2.0, "acceptance": 0.8, "tpot_p50": 0.02, "tpot_p99": 0.03,
                                "waiting": 0.0}  # fmt: skip
    base.update(kw)
    return PoolMetrics(**base)


GOOD = Observation(speculative=pool())
LOW_ACC = Observation(speculative=pool(acceptance=0.4))
SATURATED = Observation(speculative=pool(waiting=6.0))
IDLE = Observation(speculative=pool(request_rate=0.0))
NAN = Observation(speculative=pool(acceptance=float("nan")))
EMPTY = Observation()
DOWN = Observation(error="connection refused")


def test_settling_after_a_switch_holds() -> None:
    state = PolicyState(mode=SPECULATIVE, mode_since=1000, breaches=2)
    d = decide(POLICY, state, LOW_ACC, 1000 + 300)  # window 5m + 2 x 30 s not yet over
    assert (d.assessment.reason, d.state.breaches, d.transition) == ("Settling", 2, None)
    d = decide(POLICY, state, LOW_ACC, 1000 + 361)
    assert d.transition is not None and d.transition.reason == "AcceptanceBelowThreshold"


def run(state: PolicyState, observations: list[Observation], start: float = 1000.0, step: float = 30.0,
        policy: PolicySpec = POLICY) -> tuple[PolicyState, list[str]]:  # fmt: skip
    reasons = []
    now = start
    for obs in observations:
        d = decide(policy, state, obs, now)
        state = d.state
        if d.transition:
            reasons.append(f"{d.transition.from_mode}->{d.transition.to_mode}:{d.transition.reason}")
        now += step
    return state, reasons


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        ([LOW_ACC] * 2, []),  # two breaches are not enough
        ([LOW_ACC] * 3, ["Speculative->Baseline:AcceptanceBelowThreshold"]),
        ([LOW_ACC, GOOD, LOW_ACC, GOOD, LOW_ACC, GOOD], []),  # alternating: the count resets
        (
            [LOW_ACC, IDLE, LOW_ACC, NAN, LOW_ACC],
            ["Speculative->Baseline:AcceptanceBelowThreshold"],
        ),  # NoData holds
        ([LOW_ACC] + [GOOD] * 5, []),  # a single bad sample never decides
        ([SATURATED] * 3, ["Speculative->Baseline:LoadSaturation"]),
        ([DOWN] * 10, []),  # Hold: errors never switch
        ([EMPTY] * 10, []),
    ],
)
def test_speculative_hysteresis(observations: list[Observation], expected: list[str]) -> None:
    _, reasons = run(PolicyState(mode=SPECULATIVE), observations)
    assert reasons == expected


def test_errors_fall_back_once_with_on_metrics_unavailable_baseline() -> None:
    policy = PolicySpec(on_metrics_unavailable="Baseline", consecutive_errors=4)
    state, reasons = run(PolicyState(mode=SPECULATIVE), [DOWN] * 12, policy=policy)
    assert reasons == ["Speculative->Baseline:MetricsUnavailable"]
    assert state.errors == 12
    d = decide(policy, PolicyState(mode=SPECULATIVE, errors=3), GOOD, 0)
    assert d.state.errors == 0  # an answer resets the error count
    assert d.metrics_available.status == "True"
    down = decide(policy, PolicyState(), DOWN, 0).metrics_available
    assert (down.status, down.reason) == ("False", "PrometheusError")


def test_fall_back_then_probe_then_re_enable() -> None:
    base_only = Observation(baseline=pool(acceptance=None, replicas=3, request_rate=3.0))
    probe_win = Observation(speculative=pool(replicas=1, request_rate=1.0, tpot_p99=0.02),
                            baseline=pool(acceptance=None, replicas=2, tpot_p99=0.03))  # fmt: skip
    state, _reasons = run(PolicyState(mode=SPECULATIVE), [LOW_ACC] * 3)
    assert state.mode == BASELINE
    # Cooldown (10 min): 19 evaluations at 30 s do not start a probe, the 21st does.
    state, more = run(state, [base_only] * 19, start=1000 + 90)
    assert more == [] and state.mode == BASELINE
    assert state.reference is not None and state.reference.tpot_p99 == 0.03
    state, more = run(state, [base_only] * 2, start=1000 + 90 + 19 * 30)
    assert more == ["Baseline->Probing:ProbeStarted"]
    # The probe's first window still holds baseline-only data: it settles before it counts wins.
    state, more = run(state, [probe_win] * 2, start=state.mode_since + 30)
    assert more == [] and state.recoveries == 0
    state, more = run(state, [probe_win] * 3, start=state.mode_since + 400)
    assert more == ["Probing->Speculative:ProbeWon"]
    assert [t.reason for t in state.history] == ["AcceptanceBelowThreshold", "ProbeStarted", "ProbeWon"]


def test_no_probe_while_the_baseline_queues() -> None:
    queueing = Observation(baseline=pool(acceptance=None, waiting=5.0))
    calm = Observation(baseline=pool(acceptance=None))
    state = PolicyState(mode=BASELINE, mode_since=0)
    state, reasons = run(state, [queueing] * 10, start=700)  # cooldown (10 min) long over
    assert reasons == [] and state.mode == BASELINE
    _, reasons = run(state, [calm], start=1000)
    assert reasons == ["Baseline->Probing:ProbeStarted"]


def test_probe_loss_and_timeout() -> None:
    loss = Observation(speculative=pool(replicas=1, tpot_p99=0.05), baseline=pool(acceptance=None))
    _, reasons = run(PolicyState(mode=PROBING, mode_since=1000), [loss] * 3, start=1400)
    assert reasons == ["Probing->Baseline:ProbeLost"]
    # Mixed results never reach three wins in a row: the probe ends after probe.duration (10 min),
    # lost when its latest window lost, inconclusive when it won (test_policy_probes.py).
    win = Observation(speculative=pool(replicas=1, tpot_p99=0.02), baseline=pool(acceptance=None))
    state, reasons = run(PolicyState(mode=PROBING, mode_since=1000), [win, loss] * 12)
    assert reasons == ["Probing->Baseline:ProbeInconclusive"] and state.lost_probes == 0
    state, reasons = run(PolicyState(mode=PROBING, mode_since=1000), [loss, win] * 12)
    assert reasons == ["Probing->Baseline:ProbeLost"] and state.lost_probes == 1


def test_manual_pins() -> None:
    pinned = PolicySpec(mode="Baseline")
    d = decide(pinned, PolicyState(mode=SPECULATIVE, breaches=2), GOOD, 5)
    assert d.transition is not None and d.transition.reason == "ManualOverride"
    assert d.state.mode == BASELINE and d.state.breaches == 0
    # Pinned Speculative ignores breaches.
    state, reasons = run(PolicyState(mode=SPECULATIVE), [LOW_ACC] * 5, policy=PolicySpec(mode="Speculative"))
    assert reasons == [] and state.mode == SPECULATIVE


STATES = [
    PolicyState(mode=SPECULATIVE, mode_since=1_700_000_000, breaches=2),
    PolicyState(mode=BASELINE, mode_since=1_700_000_000, reference=Reference(0.02, 0.03, 1.0, 1_700_000_100)),
    PolicyState(mode=PROBING, mode_since=1_700_000_000, recoveries=2, errors=1),
]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("obs", [GOOD, LOW_ACC, IDLE, DOWN, SATURATED])
def test_restart_in_every_state_changes_nothing(state: PolicyState, obs: Observation) -> None:
    """The state survives a round trip through status, so a restarted operator decides the same."""
    restored = policy_state_from_status(policy_status_fields(state))
    assert restored == state
    now = 1_700_000_900.0
    assert decide(POLICY, restored, obs, now) == decide(POLICY, state, obs, now)


def test_history_is_capped_at_20() -> None:
    state = PolicyState()
    flip = [LOW_ACC] * 3
    for i in range(25):
        state, _ = run(state, flip, start=1000 + 1000 * i)
        state = replace(state, mode=SPECULATIVE)
    assert len(state.history) == 20  # 25 transitions happened; the oldest 5 were dropped


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([GOOD, LOW_ACC, IDLE, NAN, DOWN, SATURATED, EMPTY]), max_size=60))
def test_never_decides_on_one_sample(observations: list[Observation]) -> None:
    """Any transition out of Speculative is preceded by consecutiveBreaches breaches."""
    state = PolicyState(mode=SPECULATIVE)
    breaches = 0
    for i, obs in enumerate(observations):
        d = decide(POLICY, state, obs, 1000.0 + 30 * i)
        if d.assessment.verdict is Verdict.BREACH:
            breaches += 1
        elif d.assessment.verdict is Verdict.HEALTHY:
            breaches = 0
        if d.transition is not None and state.mode == SPECULATIVE:
            assert breaches >= POLICY.consecutive_breaches
        state = d.state
        if state.mode != SPECULATIVE:
            break


def test_observations_from_query_rows() -> None:
    def row(pool_: str, value: float, **extra: str) -> Sample:
        return Sample({"namespace": "ns", "specops_name": "svc", "specops_pool": pool_, **extra}, value)

    results = {
        Signal.ACCEPTED: [row("speculative", 80.0)],
        Signal.DRAFTED: [row("speculative", 100.0)],
        Signal.DRAFTS: [row("speculative", 20.0)],
        Signal.ACCEPTED_PER_POSITION: [
            row("speculative", 18.0, position="0"),
            row("speculative", 15.0, position="1"),
        ],
        Signal.REQUEST_RATE: [row("speculative", 1.5), row("baseline", 0.5)],
        Signal.TPOT_P99: [row("speculative", 0.03), row("baseline", float("nan"))],
        Signal.REPLICAS: [row("speculative", 2), row("baseline", 1)],
    }
    obs = build_observations(results)[("ns", "svc")]
    assert obs.speculative is not None and obs.baseline is not None
    assert obs.speculative.acceptance == pytest.approx(0.8)
    assert obs.speculative.mean_acceptance_length == pytest.approx(5.0)
    assert obs.speculative.per_position == (0.9, pytest.approx(0.8333, abs=1e-4))
    assert obs.baseline.tpot_p99 is None  # NaN from histogram_quantile with no data
    assert obs.baseline.replicas == 1
    assert conditional_acceptance([5.0], 0.0) == ()
    assert math.isclose(obs.speculative.rate_per_replica or 0, 0.75)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_no_value_never_a_breach(bad: float) -> None:
    """NaN or infinite answers (a faulty Prometheus or proxy) are dropped: they trip no rule (an
    infinite draft rate once made acceptance 0) and never reach the status (JSON has no NaN)."""

    def row(pool_: str, value: float) -> Sample:
        return Sample({"namespace": "ns", "specops_name": "svc", "specops_pool": pool_}, value)

    good = {Signal.ACCEPTED: 80.0, Signal.DRAFTED: 100.0, Signal.DRAFTS: 20.0, Signal.REQUEST_RATE: 2.0,
            Signal.TPOT_P50: 0.02, Signal.TPOT_P99: 0.03, Signal.WAITING: 0.0, Signal.REPLICAS: 2.0}  # fmt: skip
    for signal in good:  # one signal at a time goes bad
        obs = build_observations(
            {s: [row("speculative", bad if s is signal else v)] for s, v in good.items()}
        )
        spec = obs[("ns", "svc")].speculative
        assert spec is not None
        figures = observed_fields(obs[("ns", "svc")], "2026-01-01T00:00:00Z")
        assert all(math.isfinite(v) for v in figures.values() if isinstance(v, float)), figures
        assert assess(POLICY, PolicyState(), obs[("ns", "svc")], 1000.0).verdict is not Verdict.BREACH, signal
    # Every value bad: no usable series at all.
    everything_bad = build_observations({s: [row("speculative", bad)] for s in Signal})
    assert everything_bad == {}
    d = decide(POLICY, PolicyState(), Observation(), 1000.0)
    assert (d.assessment.verdict, d.assessment.reason) == (Verdict.NO_DATA, "NoSeries")
    assert (d.metrics_available.status, d.metrics_available.reason) == ("True", "NoSeries")
    assert (d.state.breaches, d.state.errors, d.transition) == (0, 0, None)


def test_no_probe_at_the_load_where_speculation_saturated() -> None:
    # Saturated at 6 req/s per replica: the fallback records it (and the status keeps it).
    saturated = Observation(speculative=pool(waiting=6.0, request_rate=12.0))
    state, reasons = run(PolicyState(mode=SPECULATIVE), [saturated] * 3)
    assert reasons == ["Speculative->Baseline:LoadSaturation"]
    assert state.saturation_rate == 6.0
    assert policy_state_from_status(policy_status_fields(state)).saturation_rate == 6.0
    # After the cooldown, still at 5 req/s per replica (>= 80% of 6): no probe.
    busy = Observation(baseline=pool(acceptance=None, request_rate=10.0))
    state, reasons = run(state, [busy] * 5, start=state.mode_since + 700)
    assert reasons == [] and state.mode == BASELINE
    # Load down to 4 req/s per replica: the probe starts.
    calm = Observation(baseline=pool(acceptance=None, request_rate=8.0))
    _, reasons = run(state, [calm], start=state.mode_since + 900)
    assert reasons == ["Baseline->Probing:ProbeStarted"]
    # A window with few completions per replica (requests longer than the window) records nothing.
    short = PolicySpec(window="10s")
    slow = Observation(speculative=pool(waiting=6.0, request_rate=0.6))  # 3 per replica in 10 s
    state, reasons = run(PolicyState(mode=SPECULATIVE), [slow] * 3, policy=short)
    assert reasons == ["Speculative->Baseline:LoadSaturation"] and state.saturation_rate is None


def test_lost_probes_double_the_cooldown_and_a_win_resets_it() -> None:
    lose = Observation(speculative=pool(replicas=1, tpot_p99=0.05), baseline=pool(acceptance=None))
    calm = Observation(baseline=pool(acceptance=None))
    state = PolicyState(mode=PROBING, mode_since=0)
    state, reasons = run(state, [lose] * 3, start=400)
    assert reasons == ["Probing->Baseline:ProbeLost"] and state.lost_probes == 1
    assert policy_state_from_status(policy_status_fields(state)).lost_probes == 1
    # Cooldown 10 min doubled: nothing at 15 min, a probe at 20 min.
    since = state.mode_since
    state, reasons = run(state, [calm], start=since + 900)
    assert reasons == []
    state, reasons = run(state, [calm], start=since + 1200)
    assert reasons == ["Baseline->Probing:ProbeStarted"]
    assert "x2 (1 probe(s) lost in a row)" in state.history[-1].message
    # Backoff is capped at x8.
    assert probe_cooldown(POLICY, replace(state, lost_probes=7)) == 8 * 600
    win = Observation(speculative=pool(replicas=1, tpot_p99=0.02), baseline=pool(acceptance=None))
    state, reasons = run(state, [win] * 3, start=state.mode_since + 400)
    assert reasons == ["Probing->Speculative:ProbeWon"] and state.lost_probes == 0

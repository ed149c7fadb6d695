"""Headroom (issue 14): the load's trend, the pools' step lines, the crossover and capacities they
give, the leading-indicator rules (HeadroomClosing, PredictedSlowdown), and the switches held back
(SwitchDeferred): a fallback whose capacity dip would overload the service, one that would not pay
(a falling load, bursts shorter than a switch), a probe near the crossover.

States are built as the operator builds them: windows decided one by one and read back from status
(``tests.support.policy_states.learned``), on the step lines of the simulator's chat pair."""

from __future__ import annotations

from dataclasses import replace

import pytest

from specops.api.v1alpha1 import PolicySpec
from specops.plan.reconcile import EventReason, plan_evaluation
from specops.plan.status import policy_state_from_status, policy_status_fields
from specops.policy import rules
from specops.policy.decide import PolicyDecision, decide, dip_absorbed
from specops.policy.headroom import (
    CROSSOVER_P99_MARGIN,
    add_to_line,
    estimate_headroom,
    own_slope,
    update_trend,
)
from specops.policy.rules import Window, window_headroom
from specops.policy.state import (
    LoadTrend,
    Observation,
    Overloads,
    PolicyState,
    Reason,
    ServiceFacts,
    StepLine,
    Verdict,
)
from tests.support.policy_states import (
    ACCEPTANCE,
    BASE_LINE,
    FACTS,
    NOW,
    POLICY,
    REFERENCE,
    SPEC_LINE,
    SURGE_FACTS,
    learned,
    line_pool,
    status_state,
)
from tests.support.resources import make_doc

E = 1 + 5 * ACCEPTANCE
STEADY = [2.0] * 20
# Two replicas at 2 req/s each for ten minutes, then a ramp of 0.5 (SLOW) or 1 (FAST) req/s per
# replica per minute, one window every 30 s (the policy's defaults: 5-minute windows).  With no
# surge pod one replica alone can carry up to 7 req/s per replica of the service (80% of a
# speculative replica's 17.5) while the other is moved; the crossover is near 10.3.
SLOW = [2.0 + 0.25 * i for i in range(40)]
FAST = [2.0 + 0.5 * i for i in range(24)]
RAMPING = learned(STEADY + SLOW[:10])  # 4.25 req/s per replica (5.5 now: the window lags), rising
STEADY_HIGH = learned(STEADY + SLOW[:10] + [4.25] * 40)  # the same load, held for 20 minutes


def fit(points: list[tuple[float, float]]) -> StepLine:
    line = None
    for i, (x, y) in enumerate(points):
        line = add_to_line(line, x, y, NOW + 30 * i, memory=6 * 3600, acceptance=ACCEPTANCE)
    assert line is not None
    return line


def on_line(a: float, b: float, xs: list[float]) -> list[tuple[float, float]]:
    return [(x, a - b * x) for x in xs]


SPREAD = [0.2 * i for i in range(1, 20)]


# ------------------------------------------------------------------------- the lines' figures


def test_both_lines_give_the_crossover_and_the_capacities() -> None:
    spec = fit(on_line(*SPEC_LINE, [x / E for x in SPREAD]))
    base = fit(on_line(*BASE_LINE, SPREAD))
    h = estimate_headroom(spec, base, FACTS, ACCEPTANCE)
    (a_s, b_s), (a_0, b_0) = SPEC_LINE, BASE_LINE
    assert h.crossover == pytest.approx(CROSSOVER_P99_MARGIN * (E * a_s - a_0) / (b_s - b_0), rel=0.01)
    assert h.speculative_capacity == pytest.approx(E * a_s / b_s, rel=0.01)
    assert h.baseline_capacity == pytest.approx(a_0 / b_0, rel=0.01)
    assert h.measured and h.source.startswith("Measured")


def test_one_line_and_the_models_ratios_estimate_the_other() -> None:
    spec = fit(on_line(*SPEC_LINE, [x / E for x in SPREAD]))
    h = estimate_headroom(spec, None, FACTS, ACCEPTANCE)
    assert not h.measured and h.source.startswith("Estimated")
    # The model's ratios put the baseline's intercept within 5% of the emulator's, its slope lower.
    assert h.speculative_capacity == pytest.approx(17.5, rel=0.01)
    assert h.crossover is not None and 9.0 < h.crossover < 12.0


def test_a_steady_load_gives_no_slope_and_no_figures() -> None:
    """Noise around one load fits a slope of any sign; it must not become a capacity."""
    noisy = [(0.44 + 0.03 * ((-1) ** i) * (i % 3), 0.24 + 0.01 * ((i * 7) % 5 - 2)) for i in range(40)]
    line = fit(noisy)
    assert own_slope(line) is None
    h = estimate_headroom(line, None, FACTS, ACCEPTANCE)
    assert h.crossover is None and h.speculative_capacity is None


def test_a_slope_the_data_cannot_tell_from_zero_is_none() -> None:
    # A slope of 0.0003 under noise of 0.02: positive, and meaningless (0.04 standard errors).
    spread_but_flat = [(x, 0.24 - 0.002 * x + 0.02 * ((i * 7) % 5 - 2)) for i, x in enumerate(SPREAD)]
    assert own_slope(fit(spread_but_flat)) is None
    assert own_slope(fit(on_line(*SPEC_LINE, SPREAD))) is not None


@pytest.mark.parametrize(("acceptance", "lower"), [(0.5, True), (0.9, False)])
def test_the_crossover_moves_with_the_acceptance(acceptance: float, lower: bool) -> None:
    spec = fit(on_line(*SPEC_LINE, [x / E for x in SPREAD]))
    at_usual = estimate_headroom(spec, None, FACTS, ACCEPTANCE).crossover
    moved = estimate_headroom(spec, None, FACTS, acceptance).crossover
    assert at_usual is not None and moved is not None
    assert (moved < at_usual) is lower


def test_at_an_acceptance_where_speculation_never_pays_the_crossover_is_zero() -> None:
    spec = fit(on_line(*SPEC_LINE, [x / E for x in SPREAD]))
    assert estimate_headroom(spec, None, FACTS, 0.05).crossover == 0.0


def test_the_trend_follows_a_ramp_and_restarts_after_a_gap() -> None:
    trend = None
    for i in range(20):
        trend = update_trend(trend, 2.0 + 0.01 * 30 * i, NOW + 30 * i, POLICY)
    assert trend is not None and trend.slope == pytest.approx(0.01, rel=0.05)
    later = update_trend(trend, 3.0, trend.at + 3 * POLICY.window_seconds + 1, POLICY)
    assert later.slope == 0.0 and later.rate == 3.0


def test_what_the_operator_learns_survives_the_status_round_trip() -> None:
    again = policy_state_from_status(policy_status_fields(RAMPING))
    assert again.load == RAMPING.load and again.speculative_steps == RAMPING.speculative_steps
    assert RAMPING.speculative_steps is not None and own_slope(RAMPING.speculative_steps, 10) is not None


# ------------------------------------------------------------------------------ the rules


def judge(
    rule: rules.Rule, state: PolicyState, obs: Observation, facts: ServiceFacts | None
) -> Reason | None:
    found = rule(Window(POLICY, state, obs, NOW, facts))
    assert found is None or found.verdict is Verdict.BREACH
    return None if found is None else found.reason


def at(state: PolicyState, rate: float) -> Observation:
    return Observation(speculative=line_pool(rate))


@pytest.mark.parametrize(
    ("state", "facts", "expected"),
    [
        # 5.5 req/s per replica now, rising 0.5/min: the crossover is about 10 minutes away, but one
        # replica alone can carry only up to 7: with no surge pod the fallback must start while the
        # other can still carry the load for a switch's 70 s (and the breaches' 90 s).
        (RAMPING, FACTS, Reason.HEADROOM_CLOSING),
        # With a surge pod nothing dips; the fallback (140 s) can wait until it must end in time.
        (RAMPING, SURGE_FACTS, None),
        (STEADY_HIGH, FACTS, None),  # no rise
        (RAMPING, None, None),  # without the service's facts the rule is off
    ],
)  # fmt: skip
def test_headroom_closing(state: PolicyState, facts: ServiceFacts | None, expected: Reason | None) -> None:
    assert judge(rules.headroom_closing, state, at(state, 4.25), facts) is expected


def test_headroom_closing_fires_in_time_for_a_surge_pod_too() -> None:
    """The same ramp, further on (9 req/s per replica now): the fallback (140 s) must start to end
    before the crossover."""
    state = learned(STEADY + SLOW[:22], facts=SURGE_FACTS)
    assert judge(rules.headroom_closing, state, at(state, 7.25), SURGE_FACTS) is Reason.HEADROOM_CLOSING
    earlier = learned(STEADY + SLOW[:18], facts=SURGE_FACTS)
    assert judge(rules.headroom_closing, earlier, at(earlier, 6.25), SURGE_FACTS) is None


def test_headroom_closing_leaves_a_load_already_past_the_crossover_to_predicted_slowdown() -> None:
    past = learned(STEADY + FAST)  # 13.5 req/s per replica (held back all along: no surge pod)
    assert judge(rules.headroom_closing, past, at(past, 13.5), FACTS) is None
    assert judge(rules.predicted_slowdown, past, at(past, 13.5), FACTS) is Reason.PREDICTED_SLOWDOWN


def test_predicted_slowdown_gives_way_to_a_measured_reference() -> None:
    past = learned(STEADY + FAST)
    # A baseline recorded at a comparable load (13.5 req/s per replica) judges instead.
    ref = {**REFERENCE, "requestsPerReplica": 13.0, "recordedAt": "2026-01-01T01:50:00Z"}
    with_ref = replace(past, reference=status_state("Speculative", baselineReference=ref).reference)
    assert judge(rules.predicted_slowdown, with_ref, at(past, 13.5), FACTS) is None
    assert judge(rules.predicted_slowdown, past, at(past, 13.5), None) is None  # no lines: no facts


def test_predicted_slowdown_needs_the_load_past_the_crossover() -> None:
    assert judge(rules.predicted_slowdown, STEADY_HIGH, at(STEADY_HIGH, 5.0), FACTS) is None


# ---------------------------------------------------------------------------- the decisions


def windows(
    state: PolicyState, rates: list[float], facts: ServiceFacts, start: float
) -> list[PolicyDecision]:
    out = []
    for i, rate in enumerate(rates):
        d = decide(POLICY, state, at(state, rate), start + 30 * i, facts=facts)
        out.append(d)
        state = policy_state_from_status(policy_status_fields(d.state))
    return out


def after(rates: list[float]) -> float:
    """The time of the window after ``learned(rates)``'s last."""
    return NOW - 7200 + 30 * len(rates)


def test_a_fallback_the_other_replica_could_not_carry_is_held_back_and_said_once() -> None:
    """A ramp twice as fast: by the third breach one replica alone could no longer carry the load
    for a switch's 70 s: no switch, one SwitchDeferred, the reason in every verdict message."""
    got = windows(learned(STEADY + FAST[:3]), FAST[3:9], FACTS, after(STEADY + FAST[:3]))
    assert all(d.transition is None for d in got)
    deferred = [d.deferred for d in got if d.deferred is not None]
    assert len(deferred) == 1 and deferred[0].reason in (Reason.HEADROOM_CLOSING, Reason.PREDICTED_SLOWDOWN)
    assert "would overload the service" in deferred[0].message
    held = [d for d in got if d.state.deferred_since is not None]
    assert held and all("fallback held back" in d.assessment.message for d in held)


def test_the_slow_ramp_falls_back_in_time_with_the_dip_still_absorbable() -> None:
    got = windows(RAMPING, SLOW[10:14], FACTS, after(STEADY + SLOW[:10]))
    assert [d.transition.reason for d in got if d.transition] == [Reason.HEADROOM_CLOSING]
    assert all(d.deferred is None for d in got)


def test_a_held_back_fallback_ends_when_a_window_is_healthy() -> None:
    held = windows(learned(STEADY + FAST[:3]), FAST[3:9], FACTS, after(STEADY + FAST[:3]))[-1].state
    assert held.deferred_since is not None
    calm = decide(
        POLICY, held, Observation(speculative=line_pool(2.0)), after(STEADY + FAST[:9]), facts=FACTS
    )
    assert calm.state.deferred_since is None and calm.assessment.reason is Reason.HEALTHY


def test_queueing_at_capacity_cannot_lose_a_replica_without_a_surge_pod() -> None:
    """LoadSaturation: the pool serves what it can; with one replica fewer it would serve less."""
    state = replace(STEADY_HIGH, breaches=2, overloads=Overloads())
    queued = Observation(speculative=line_pool(16.0, waiting=6.0))
    d = decide(POLICY, state, queued, NOW, facts=FACTS)
    assert d.transition is None and d.deferred is not None and d.deferred.reason is Reason.LOAD_SATURATION
    d = decide(POLICY, state, queued, NOW, facts=SURGE_FACTS)
    assert d.transition is not None and d.transition.reason is Reason.LOAD_SATURATION


def test_a_falling_load_is_ridden_out() -> None:
    """Past the crossover but falling fast: under it again before a fallback would have ended."""
    # Up past the crossover (held back: no surge pod), now falling 0.48 req/s per replica a minute:
    # 10.6 (the window lags), under 10.3 within the 140 s a fallback takes.
    past = learned(STEADY + FAST)
    t = after(STEADY + FAST)
    state = replace(past, breaches=2, load=LoadTrend(12.0, -0.008, t), deferred_since=None)
    d = decide(POLICY, state, at(state, 11.76), t + 30, facts=SURGE_FACTS)
    assert d.assessment.reason is Reason.PREDICTED_SLOWDOWN
    assert d.transition is None and d.deferred is not None
    assert "riding it out: the load is falling" in d.deferred.message


def test_bursts_shorter_than_a_fallback_are_ridden_out() -> None:
    """Load-driven breaches here have lasted 60 s when they ended by themselves; a fallback of two
    replicas takes 140 s: a new one is ridden out until it outlasts twice the typical."""
    state = replace(
        STEADY_HIGH, breaches=2, overloads=Overloads(since=NOW - 30, typical_seconds=60.0, seen=2)
    )
    queued = Observation(speculative=line_pool(16.0, waiting=6.0))
    d = decide(POLICY, state, queued, NOW, facts=SURGE_FACTS)
    assert d.transition is None and d.deferred is not None and "lasted about 60 s" in d.deferred.message
    long_one = replace(state, overloads=Overloads(since=NOW - 130, typical_seconds=60.0, seen=2))
    assert decide(POLICY, long_one, queued, NOW, facts=SURGE_FACTS).transition is not None


def test_overload_episodes_are_timed_when_they_end_by_themselves() -> None:
    state = replace(STEADY_HIGH, overloads=Overloads(since=NOW - 90))
    d = decide(POLICY, state, Observation(speculative=line_pool(2.0)), NOW, facts=FACTS)
    assert d.state.overloads == Overloads(None, 90.0, 1)
    again = policy_state_from_status(policy_status_fields(d.state))
    assert again.overloads == d.state.overloads


# ------------------------------------------------------------------------------------ probes


def baseline_after(rate: float) -> PolicyState:
    """In Baseline for an hour after a ramp the speculative pool was learned on."""
    state = replace(RAMPING, mode=status_state("Baseline").mode, mode_since=NOW - 3600, history=())
    return replace(state, load=LoadTrend(rate, 0.0, NOW - 30))


def test_no_probe_near_the_crossover() -> None:
    d = decide(POLICY, baseline_after(9.5), Observation(baseline=line_pool(9.5, speculative=False)), NOW,
               facts=FACTS)  # fmt: skip
    assert d.transition is None and d.deferred is not None and d.deferred.reason is Reason.PROBE_STARTED
    assert "probe held back" in d.assessment.message


def test_no_probe_the_other_baseline_replica_could_not_carry() -> None:
    """A baseline replica that serves at most 10 req/s (a steeper line than the chat pair's: the
    crossover is then far away): at 7.5 req/s per replica one of two alone would carry 15."""
    weak = replace(baseline_after(7.5), baseline_steps=fit(on_line(0.6, 0.06, SPREAD)))
    obs = Observation(baseline=line_pool(7.5, speculative=False, line=(0.6, 0.06)))
    d = decide(POLICY, weak, obs, NOW, facts=FACTS)
    assert d.transition is None and d.deferred is not None and "out of service" in d.deferred.message
    d = decide(POLICY, weak, obs, NOW, facts=SURGE_FACTS)
    assert d.transition is not None and d.transition.reason is Reason.PROBE_STARTED


def test_a_probe_starts_at_low_load() -> None:
    d = decide(POLICY, baseline_after(2.0), Observation(baseline=line_pool(2.0, speculative=False)), NOW,
               facts=FACTS)  # fmt: skip
    assert d.transition is not None and d.deferred is None


# ------------------------------------------------------------------------------ the plan


def test_the_evaluation_posts_one_switch_deferred_event() -> None:
    late = replace(learned(STEADY + FAST[:5]), breaches=2)
    doc = make_doc()
    doc["metadata"].update(uid="u1", generation=1)
    doc["status"] = policy_status_fields(late)
    obs = Observation(speculative=line_pool(4.5))
    ev = plan_evaluation(doc, obs, late.load.at + 30 if late.load else NOW, 60.0)
    assert ev is not None and ev.decision.transition is None
    assert [e.reason for e in ev.events] == [EventReason.SWITCH_DEFERRED]
    assert "would switch Speculative -> Baseline" in ev.events[0].message
    assert ev.status.switch_deferred_since is not None and ev.status.headroom is not None
    assert ev.status.headroom.crossover_requests_per_replica is not None


def test_a_spec_change_drops_the_lines_but_keeps_the_trend() -> None:
    d = decide(PolicySpec(), replace(RAMPING, spec_fingerprint="old"), at(RAMPING, 5.0), NOW, "new", FACTS)
    assert d.state.load is not None and d.state.speculative_steps is not None
    assert d.state.speculative_steps.weight == 1.0  # started afresh from this window


def test_a_day_later_the_lines_still_know_the_crossover() -> None:
    """Yesterday's ramp is remembered (a week's memory), so today's is anticipated from its start;
    with referenceMaxAge's six hours it would be forgotten."""
    ramped = learned(STEADY + SLOW[:14], facts=SURGE_FACTS)
    tomorrow = ramped.load.at + 86400 if ramped.load else NOW
    d = decide(POLICY, ramped, at(ramped, 2.0), tomorrow, facts=SURGE_FACTS)
    h = window_headroom(POLICY, d.state, at(ramped, 2.0), SURGE_FACTS, tomorrow)
    assert h.crossover is not None and 9.0 < h.crossover < 12.0


@pytest.mark.parametrize(
    ("seconds", "load", "absorbed"),
    [
        (70.0, 6.9, True),  # within the room (7 req/s per replica): any length
        (70.0, 7.5, False),  # 0.5 over it for 70 s: 70 requests would queue on the one replica left
        (1.0, 7.4, True),  # a hot swap's second: 0.8 requests queued, under maxWaitingPerReplica (1)
        (1.0, 7.6, False),
    ],
)
def test_a_dip_is_absorbed_when_it_fits_or_queues_little(seconds: float, load: float, absorbed: bool) -> None:
    facts = replace(FACTS, switch_seconds_per_replica=seconds)
    assert dip_absorbed(POLICY, facts, load, 7.0) is absorbed

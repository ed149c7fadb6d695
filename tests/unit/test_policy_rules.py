"""One table test per policy rule (the Argo Rollouts analysis tests are the model).

Each rule is called on its own, with states built the way the operator reads them back from status
(``policy_state_from_status``) and the pools each mode actually runs: Speculative serves with the
speculative pool alone (a baseline pool beside it exists only during a switch, which settles),
Baseline with the baseline pool alone, Probing with both (one replica speculative), or with the
speculative pool alone when the service has a single replica.  A row's expectation is the rule's
(verdict, reason), or None where the rule does not apply; the four verdicts stay distinct.
"""

from __future__ import annotations

from typing import Any

import pytest

from specops.api.v1alpha1 import PolicySpec, ServingMode
from specops.policy import rules
from specops.policy.rules import RULES, Window, assess
from specops.policy.state import Observation, PolicyState, Reason
from tests.support.policy_states import (
    BASELINE,
    NEW,
    NOW,
    POLICY,
    PROBE_STARTED,
    PROBING,
    SPECULATING,
    B,
    E,
    Expected,
    H,
    N,
    baseline_only,
    pool,
    probing,
    spec_pool,
    speculating,
    status_state,
    trial,
)


def judge(rule: rules.Rule, state: PolicyState, obs: Observation) -> Expected:
    found = rule(Window(POLICY, state, obs, NOW))
    return None if found is None else (found.verdict, found.reason)


def table(*rows: tuple[str, PolicyState, Observation, Expected]) -> Any:
    return pytest.mark.parametrize(
        ("state", "obs", "expected"), [pytest.param(s, o, e, id=i) for i, s, o, e in rows]
    )


# ---------------------------------------------------------------------------------- hold rules


@table(
    ("prometheus-down", SPECULATING, Observation(error="connection refused"), (E, Reason.METRICS_UNAVAILABLE)),
    ("down-while-probing", PROBING, Observation(error="HTTP 503"), (E, Reason.METRICS_UNAVAILABLE)),
    ("answers", SPECULATING, speculating(), None),
    ("answers-empty", SPECULATING, Observation(), None),
)  # fmt: skip
def test_metrics_unavailable(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.metrics_unavailable, state, obs) == expected


@table(
    ("nothing-scraped", NEW, Observation(), (N, Reason.NO_SERIES)),
    # The pool judged is the one serving: a lingering baseline series is not the speculative pool.
    ("only-baseline-series", SPECULATING, baseline_only(), (N, Reason.NO_SERIES)),
    ("baseline-mode-only-spec-series", BASELINE, speculating(), (N, Reason.NO_SERIES)),
    ("speculative-series", SPECULATING, speculating(), None),
    ("baseline-series", BASELINE, baseline_only(), None),
    ("probe-series", PROBING, probing(), None),
)  # fmt: skip
def test_no_series(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.no_series, state, obs) == expected


@pytest.mark.parametrize(
    ("policy", "obs", "expected"),
    [
        # Scraped (the pool's series exist), but rate() over the window is empty.
        ({"window": "1m", "scrapeInterval": "30s"}, speculating(request_rate=None, acceptance=None),
         (N, Reason.WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL)),
        ({"window": "1m", "scrapeInterval": "30s"}, baseline_only(request_rate=float("nan")), None),  # not judged
        ({"window": "1m", "scrapeInterval": "30s"}, speculating(), None),  # rate() answered
        ({}, speculating(request_rate=None, acceptance=None), None),  # 20 scrapes: no traffic, not this
    ],
)  # fmt: skip
def test_window_too_short(policy: dict[str, str], obs: Observation, expected: Expected) -> None:
    found = rules.window_too_short(Window(PolicySpec.model_validate(policy), SPECULATING, obs, NOW))
    assert (None if found is None else (found.verdict, found.reason)) == expected


@table(
    ("idle", SPECULATING, speculating(request_rate=0.0), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("below-floor", SPECULATING, speculating(request_rate=0.04), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("nan-acceptance", SPECULATING, speculating(acceptance=float("nan")), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("no-acceptance", SPECULATING, speculating(acceptance=None), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("scaled-to-zero", SPECULATING, speculating(replicas=0), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("baseline-idle", BASELINE, baseline_only(request_rate=0.0), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("probe-idle", PROBING, probing(request_rate=0.0), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("at-floor", SPECULATING, speculating(request_rate=0.05), None),
    ("baseline-serving", BASELINE, baseline_only(), None),
)  # fmt: skip
def test_insufficient_traffic(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.insufficient_traffic, state, obs) == expected


def test_settling() -> None:
    # Window 5m + 2 x 30 s after a switch: nothing is judged.
    switched = PolicyState(mode=ServingMode.SPECULATIVE, mode_since=NOW - 359)
    found = rules.settling(POLICY, switched, NOW)
    assert found is not None and (found.verdict, found.reason) == (N, Reason.SETTLING)
    assert (
        rules.settling(POLICY, PolicyState(mode=ServingMode.SPECULATIVE, mode_since=NOW - 360), NOW) is None
    )
    assert rules.settling(POLICY, SPECULATING, NOW) is None


# ---------------------------------------------------------------------------- speculative rules


@table(
    ("below-minimum", SPECULATING, speculating(acceptance=0.49), (B, Reason.ACCEPTANCE_BELOW_THRESHOLD)),
    ("at-minimum", SPECULATING, speculating(acceptance=0.5), None),
    ("break-even-band", SPECULATING, speculating(acceptance=0.6), None),
    ("good", SPECULATING, speculating(acceptance=0.8), None),
)  # fmt: skip
def test_acceptance_below_threshold(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.acceptance_below_threshold, state, obs) == expected


@table(
    ("queueing", SPECULATING, speculating(waiting=6.0), (B, Reason.LOAD_SATURATION)),
    ("at-limit", SPECULATING, speculating(waiting=2.0), (B, Reason.LOAD_SATURATION)),  # 1 per replica
    ("under-limit", SPECULATING, speculating(waiting=1.9), None),
    ("no-gauge", SPECULATING, speculating(waiting=None), None),
    ("nan-gauge", SPECULATING, speculating(waiting=float("nan")), None),
)  # fmt: skip
def test_load_saturation(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.load_saturation, state, obs) == expected


@table(
    # The recorded reference (30 ms at 1 req/s per replica) in the break-even band.
    ("band-slow", SPECULATING, speculating(acceptance=0.6, tpot_p99=0.05), (B, Reason.TAIL_LATENCY_REGRESSION)),
    ("band-within-limit", SPECULATING, speculating(acceptance=0.6, tpot_p99=0.0325), None),
    ("band-no-reference", NEW, speculating(acceptance=0.6, tpot_p99=0.05), None),
    # At three times the recorded load the reference says nothing.
    ("band-other-load", SPECULATING, speculating(acceptance=0.6, tpot_p99=0.05, request_rate=6.0), None),
    ("band-no-p99", SPECULATING, speculating(acceptance=0.6, tpot_p99=float("nan")), None),
)  # fmt: skip
def test_tail_latency_regression(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.tail_latency_regression, state, obs) == expected


@table(
    # P50 improves, P99 regresses: ratio 0.032/0.01 = 3.2 vs the reference's 1.5.
    ("band-mixed", SPECULATING, speculating(acceptance=0.6, tpot_p50=0.01, tpot_p99=0.032),
     (B, Reason.TAIL_GAP_WIDENING)),
    # A wider gap with a P99 no worse than the reference's is a pure win (coarse TPOT buckets).
    ("band-better-tail", SPECULATING, speculating(acceptance=0.6, tpot_p50=0.0099, tpot_p99=0.0299), None),
    ("band-narrow", SPECULATING, speculating(acceptance=0.6, tpot_p50=0.02, tpot_p99=0.032), None),
    ("band-no-reference", NEW, speculating(acceptance=0.6, tpot_p50=0.01, tpot_p99=0.032), None),
    ("band-no-p50", SPECULATING, speculating(acceptance=0.6, tpot_p50=None, tpot_p99=0.032), None),
)  # fmt: skip
def test_tail_gap_widening(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.tail_gap_widening, state, obs) == expected


@table(
    ("good", SPECULATING, speculating(), (H, Reason.HEALTHY)),
    ("band-nothing-to-compare", NEW, speculating(acceptance=0.6), (H, Reason.HEALTHY)),
)  # fmt: skip
def test_healthy(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.healthy, state, obs) == expected


# ------------------------------------------------------------------------------- baseline rule


@table(("serving", BASELINE, baseline_only(), (H, Reason.BASELINE_SERVING)))
def test_baseline_serving(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.baseline_serving, state, obs) == expected


# ------------------------------------------------------------------------------- probing rules


@table(
    ("probe-queues", PROBING, probing(waiting=3.0), (B, Reason.PROBE_LOST)),
    ("trial-queues", PROBING, trial(waiting=3.0), (B, Reason.PROBE_LOST)),
    ("calm", PROBING, probing(), None),
)  # fmt: skip
def test_probe_lost_by_queueing(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.probe_lost_by_queueing, state, obs) == expected


@table(
    # Re-enabling needs the break-even acceptance, whatever the latency (hysteresis).
    ("band-fast", PROBING, probing(acceptance=0.6, tpot_p99=0.02), (B, Reason.PROBE_LOST)),
    ("trial-band", PROBING, trial(acceptance=0.6), (B, Reason.PROBE_LOST)),
    ("at-break-even", PROBING, probing(acceptance=0.65), None),
)  # fmt: skip
def test_probe_lost_below_break_even(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.probe_lost_below_break_even, state, obs) == expected


@table(
    ("baseline-queues", PROBING, probing(base={"waiting": 5.0}), (N, Reason.BASELINE_QUEUEING)),
    ("baseline-calm", PROBING, probing(), None),
    ("trial", PROBING, trial(), None),  # no baseline pool to queue
)  # fmt: skip
def test_baseline_queueing(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.baseline_queueing, state, obs) == expected


@table(
    ("no-spec-p99", PROBING, probing(tpot_p99=None), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("no-base-p99", PROBING, probing(base={"tpot_p99": float("nan")}), (N, Reason.INSUFFICIENT_TRAFFIC)),
    ("both", PROBING, probing(), None),
    ("trial", PROBING, trial(tpot_p99=None), None),
)  # fmt: skip
def test_probe_tpot_missing(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.probe_tpot_missing, state, obs) == expected


@table(
    ("faster", PROBING, probing(tpot_p99=0.02), (H, Reason.PROBE_WON)),
    ("slower", PROBING, probing(tpot_p99=0.04), (B, Reason.PROBE_LOST)),
    ("equal", PROBING, probing(tpot_p99=0.03), (B, Reason.PROBE_LOST)),
    ("trial", PROBING, trial(tpot_p99=0.02), None),  # no baseline pool: the trial rule judges
    ("baseline-scaled-to-zero", PROBING,
     Observation(speculative=spec_pool(1, tpot_p99=0.02), baseline=pool(0)), None),
)  # fmt: skip
def test_probe_ab_p99(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.probe_ab_p99, state, obs) == expected


@table(
    ("faster-than-reference", PROBING, trial(tpot_p99=0.02), (H, Reason.PROBE_WON)),
    ("slower-than-reference", PROBING, trial(tpot_p99=0.03), (B, Reason.PROBE_LOST)),
    ("no-reference", status_state("Probing", decisions=PROBE_STARTED), trial(tpot_p99=0.05), (H, Reason.PROBE_WON)),
    ("reference-at-other-load", PROBING, trial(tpot_p99=0.05, request_rate=3.0), (H, Reason.PROBE_WON)),
)  # fmt: skip
def test_probe_trial(state: PolicyState, obs: Observation, expected: Expected) -> None:
    assert judge(rules.probe_trial, state, obs) == expected


# ---------------------------------------------------------------------------------- the order


def test_every_mode_tries_the_hold_rules_first_and_ends_on_a_rule_that_always_applies() -> None:
    assert set(RULES) == set(ServingMode)
    for mode, ordered in RULES.items():
        assert ordered[: len(rules.HOLD_RULES)] == rules.HOLD_RULES, mode
    # Measured harm first, then the leading indicator before the queue it anticipates, measured
    # latency before the model's prediction (which applies only without a measured reference).
    assert RULES[ServingMode.SPECULATIVE][len(rules.HOLD_RULES):] == (
        rules.acceptance_below_threshold, rules.headroom_closing, rules.load_saturation,
        rules.tail_latency_regression, rules.tail_gap_widening, rules.acceptance_spread_below_threshold,
        rules.predicted_slowdown, rules.healthy,
    )  # fmt: skip
    assert RULES[ServingMode.BASELINE][-1] is rules.baseline_serving
    assert RULES[ServingMode.PROBING][-1] is rules.probe_trial


@pytest.mark.parametrize(
    ("state", "obs", "reason"),
    [
        # An error hides everything else; no series comes before too little traffic.
        (SPECULATING, Observation(error="down", speculative=spec_pool(acceptance=0.1)), Reason.METRICS_UNAVAILABLE),
        # Low acceptance and queueing at once: acceptance is the first breach rule.
        (SPECULATING, speculating(acceptance=0.3, waiting=6.0), Reason.ACCEPTANCE_BELOW_THRESHOLD),
        (SPECULATING, speculating(acceptance=0.6, waiting=6.0, tpot_p99=0.09), Reason.LOAD_SATURATION),
        (SPECULATING, speculating(acceptance=0.6, tpot_p50=0.01, tpot_p99=0.05), Reason.TAIL_LATENCY_REGRESSION),
        # A queueing probe loses even when the baseline queues too.
        (PROBING, probing(waiting=3.0, base={"waiting": 5.0}), Reason.PROBE_LOST),
        (PROBING, probing(tpot_p99=0.02, base={"waiting": 5.0}), Reason.BASELINE_QUEUEING),
        (PROBING, probing(tpot_p99=0.02), Reason.PROBE_WON),
        (PROBING, trial(tpot_p99=0.02), Reason.PROBE_WON),
        (BASELINE, baseline_only(request_rate=0.0), Reason.INSUFFICIENT_TRAFFIC),
    ],
)  # fmt: skip
def test_assess_takes_the_first_rule_that_applies(
    state: PolicyState, obs: Observation, reason: Reason
) -> None:
    assert assess(POLICY, state, obs, NOW).reason is reason


def test_the_tail_rules_need_a_tail_of_several_requests() -> None:
    """2 req/s over a 5-minute window: 600 requests, a P99 resting on 6 of them, is judged; over a
    1-minute window, 120 requests, a P99 resting on one slow request, is not."""
    slow = speculating(tpot_p99=0.09)
    assert assess(POLICY, SPECULATING, slow, NOW).reason is Reason.TAIL_LATENCY_REGRESSION
    short = PolicySpec(window="1m", interval="10s")
    assert assess(short, SPECULATING, slow, NOW).reason is Reason.HEALTHY
    gap = speculating(tpot_p50=0.01, tpot_p99=0.032)
    assert assess(POLICY, SPECULATING, gap, NOW).reason is Reason.TAIL_GAP_WIDENING
    assert assess(short, SPECULATING, gap, NOW).reason is Reason.HEALTHY

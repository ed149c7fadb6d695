"""Probes: how they end, and what a window must show to count as a win (issue 13, defects 3 and 5)."""

from __future__ import annotations

from dataclasses import replace

from specops.api.v1alpha1 import PolicySpec, ServingMode
from specops.policy.decide import decide
from specops.policy.state import Observation, PolicyState, Reason
from tests.support.policy_states import POLICY, PROBE_STARTED, REFERENCE, probing, status_state

DURATION = 600.0  # probe.duration 10m


def probe_since(t0: float, lost_probes: int = 0) -> PolicyState:
    state = status_state("Probing", baselineReference=REFERENCE, decisions=PROBE_STARTED)
    return replace(state, mode_since=t0, lost_probes=lost_probes)


def run(state: PolicyState, windows: list[Observation], start: float, policy: PolicySpec = POLICY,
        step: float = 30.0) -> tuple[PolicyState, list[Reason]]:  # fmt: skip
    reasons = []
    now = start
    for obs in windows:
        d = decide(policy, state, obs, now)
        state = d.state
        if d.transition is not None:
            reasons.append(d.transition.reason)
        now += step
    return state, reasons


IDLE = probing(request_rate=0.0, base={"request_rate": 0.0})
DOWN = Observation(error="Prometheus at http://prometheus:9090 unavailable: timed out")
LOSS = probing(tpot_p99=0.05)


# ------------------------------------------------------------------ defect 3: probes that end


def test_a_probe_on_an_idle_night_ends_inconclusive_at_its_deadline() -> None:
    t0 = 1_000_000.0
    state, reasons = run(probe_since(t0, lost_probes=1), [IDLE] * 40, start=t0 + 400)
    assert reasons == [Reason.PROBE_INCONCLUSIVE]
    assert state.mode == ServingMode.BASELINE
    assert state.lost_probes == 1  # not a loss: the cooldown is not doubled again
    end = state.history[-1]
    assert end.at - t0 >= DURATION and end.at - t0 < DURATION + 30


def test_a_probe_during_a_prometheus_outage_ends_inconclusive_at_its_deadline() -> None:
    t0 = 1_000_000.0
    state, reasons = run(probe_since(t0), [DOWN] * 40, start=t0 + 400)  # onMetricsUnavailable: Hold
    assert reasons == [Reason.PROBE_INCONCLUSIVE]
    assert state.mode == ServingMode.BASELINE and state.lost_probes == 0


def test_the_first_real_window_after_an_idle_probe_does_not_lose_it() -> None:
    """Before the fix the probe stayed up all night and the morning's first window lost it."""
    t0 = 1_000_000.0
    state, reasons = run(probe_since(t0), [IDLE] * 100 + [LOSS] * 3, start=t0 + 400)
    assert Reason.PROBE_LOST not in reasons
    assert reasons[0] == Reason.PROBE_INCONCLUSIVE and state.lost_probes == 0


def test_a_probe_whose_last_windows_lose_still_ends_lost_at_its_deadline() -> None:
    win = probing(tpot_p99=0.02)
    t0 = 1_000_000.0
    # Windows from 400 s: win, loss, win, loss, ...; the deadline (600 s) falls on a loss.
    state, reasons = run(probe_since(t0), [win, LOSS] * 12, start=t0 + 390)
    assert reasons == [Reason.PROBE_LOST] and state.lost_probes == 1

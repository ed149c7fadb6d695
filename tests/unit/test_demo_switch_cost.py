"""The demo's reading of status.switchCost: one figure per measured switch, and a line in words."""

from __future__ import annotations

from typing import Any

from specops_testkit.testbed.demo import DemoResult, Tick


def tick(t: float, cost: dict[str, Any] | None) -> Tick:
    return Tick(t, "ramp", 3.0, 3.0, "Baseline", 0, 2, None, None, 0.05, "Healthy", switch_cost=cost)


ESTIMATE = {"source": "Estimate", "secondsPerReplica": 80.0, "estimatedSecondsPerReplica": 80.0, "samples": 0}


def measured(decision: str, seconds: float) -> dict[str, Any]:
    return ESTIMATE | {
        "source": "Measured",
        "secondsPerReplica": seconds / 2,
        "measuredSecondsPerReplica": seconds / 2,
        "samples": 1,
        "lastSwitchSeconds": seconds,
        "lastReplicasMoved": 2,
        "lastUnavailableReplicaSeconds": seconds,
        "measuredFor": decision,
    }


def test_each_measured_switch_is_kept_with_its_decision() -> None:
    result = DemoResult(
        ticks=[
            tick(0, ESTIMATE),
            tick(2, measured("2026-01-01T00:00:10Z", 12.0)),
            tick(4, measured("2026-01-01T00:00:10Z", 12.0)),
            tick(6, measured("2026-01-01T00:02:00Z", 9.0)),
        ]
    )
    assert result.switch_costs() == {"2026-01-01T00:00:10Z": 12.0, "2026-01-01T00:02:00Z": 9.0}
    line = result.switch_cost_line()
    assert "4.5 s per replica (Measured" in line
    assert "last switch 9.0 s from decision to pools settled, 2 replica(s) moved" in line


def test_before_any_switch_the_estimate_is_said_to_be_one() -> None:
    result = DemoResult(ticks=[tick(0, None), tick(2, ESTIMATE)])
    assert result.switch_costs() == {}
    assert result.switch_cost_line() == "status.switchCost: 80.0 s per replica (Estimate; estimate 80.0 s)"
    assert DemoResult(ticks=[tick(0, None)]).switch_cost_line() == "status.switchCost: not written"


def test_the_verdict_says_why_and_whether_a_fallback_is_held() -> None:
    held = Tick(1, "peak", 4.6, 3.0, "Speculative", 2, 0, 0.7, 0.3, None, "Breach", None, None, None,
                verdict_reason="LoadSaturation", switch_held=True)  # fmt: skip
    assert held.verdict_text == "Breach LoadSaturation (switch held)"
    assert tick(2, None).verdict_text == "Healthy"

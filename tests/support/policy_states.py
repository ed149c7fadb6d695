"""Policy states and observations as the operator produces them, for the policy's tests.

States are read back from a status the operator writes (``policy_state_from_status``); each
mode's observation has the pools that mode actually runs: Speculative the speculative pool alone,
Baseline the baseline pool alone, Probing both (one replica speculative) or, for a one-replica
service, the speculative pool alone (a timed trial).
"""

from __future__ import annotations

from typing import Any

from specops.api.v1alpha1 import PolicySpec
from specops.plan.status import policy_state_from_status
from specops.policy.state import Observation, PolicyState, PoolMetrics, Reason, Verdict

POLICY = PolicySpec()  # min acceptance 0.5, break-even 0.65, +10% P99, +50% gap, 1 waiting/replica
NOW = 1_767_232_800.0  # 2026-01-01T02:00:00Z
SINCE = "2026-01-01T01:00:00Z"  # an hour in the mode: long settled
RECORDED = "2026-01-01T00:58:00Z"


def decisions(*steps: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"time": SINCE, "from": a, "to": b, "reason": r, "message": ""} for a, b, r in steps]


FELL_BACK = decisions(("Speculative", "Baseline", "AcceptanceBelowThreshold"))
PROBE_STARTED = [*FELL_BACK, *decisions(("Baseline", "Probing", "ProbeStarted"))]
PROBE_WON = [*PROBE_STARTED, *decisions(("Probing", "Speculative", "ProbeWon"))]
# What a Baseline period or a probe records: the baseline's TPOT at 1 req/s per replica.
REFERENCE = {
    "p50TpotSeconds": 0.02,
    "p99TpotSeconds": 0.03,
    "requestsPerReplica": 1.0,
    "recordedAt": RECORDED,
}


def status_state(mode: str, **extra: Any) -> PolicyState:
    """A PolicyState read back from a status the operator writes."""
    status = {"mode": mode, "modeSince": SINCE, "counters": {"breaches": 0, "recoveries": 0, "errors": 0},
              **extra}  # fmt: skip
    return policy_state_from_status(status)


NEW = status_state("Speculative")  # a new resource: no reference, no history
SPECULATING = status_state("Speculative", baselineReference=REFERENCE, decisions=PROBE_WON)
BASELINE = status_state("Baseline", decisions=FELL_BACK)
PROBING = status_state("Probing", baselineReference=REFERENCE, decisions=PROBE_STARTED)


def pool(replicas: int = 2, **kw: Any) -> PoolMetrics:
    """A pool serving 1 req/s per replica, TPOT P50 20 ms / P99 30 ms, nothing queued."""
    figures: dict[str, Any] = {
        "request_rate": 1.0 * replicas,
        "tpot_p50": 0.02,
        "tpot_p99": 0.03,
        "waiting": 0.0,
    }
    figures.update(kw)
    return PoolMetrics(replicas=replicas, **figures)


def spec_pool(replicas: int = 2, acceptance: float = 0.8, **kw: Any) -> PoolMetrics:
    return pool(replicas, acceptance=acceptance, **kw)


def speculating(**kw: Any) -> Observation:
    """Speculative mode: the speculative pool alone."""
    return Observation(speculative=spec_pool(**kw))


def baseline_only(**kw: Any) -> Observation:
    return Observation(baseline=pool(**kw))


def probing(base: dict[str, Any] | None = None, **kw: Any) -> Observation:
    """A probe of a two-replica service: one replica speculative beside one baseline replica."""
    return Observation(speculative=spec_pool(1, **kw), baseline=pool(1, **(base or {})))


def trial(**kw: Any) -> Observation:
    """A probe of a one-replica service: a timed trial, no baseline pool beside it."""
    return Observation(speculative=spec_pool(1, **kw))


H, B, N, E = Verdict.HEALTHY, Verdict.BREACH, Verdict.NO_DATA, Verdict.ERROR
Expected = tuple[Verdict, Reason] | None

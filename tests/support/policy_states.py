"""Policy states and observations as the operator produces them, for the policy's tests.

States are read back from a status the operator writes (``policy_state_from_status``); each
mode's observation has the pools that mode actually runs: Speculative the speculative pool alone,
Baseline the baseline pool alone, Probing both (one replica speculative) or, for a one-replica
service, the speculative pool alone (a timed trial).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from specops.api.v1alpha1 import PolicySpec
from specops.plan.status import policy_state_from_status, policy_status_fields
from specops.policy.decide import decide
from specops.policy.headroom import service_facts
from specops.policy.state import Observation, PolicyState, PoolMetrics, Reason, ServiceFacts, Verdict
from tests.support.resources import make_si

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


# -------------------------------------------------------------------------------- headroom

# The chat pair the simulator serves (Llama-3.1-70B INT8 with an 8B draft, k = 5, two replicas of two
# H100s), as plan_evaluation hands it to the policy: no surge pod, a switch estimated at 70 s per
# replica, the step-cost model's ratios for the pair.
FACTS = service_facts(make_si().spec, 70.0, measured=False)
SURGE_FACTS = replace(FACTS, surge=True)
# Step lines of that pair in the emulator (docs/operator.md, "Headroom"): r / (E b) against r / E for
# the speculative pool, against r for the baseline; mean TPOT equal near 15 req/s per replica.
SPEC_LINE = (0.25, 0.065)
BASE_LINE = (0.6, 0.029)
ACCEPTANCE = 0.71  # the chat scenarios at temperature 0.3: E = 1 + 0.71 x 5 = 4.55


def line_pool(
    rate: float,
    replicas: int = 2,
    speculative: bool = True,
    line: tuple[float, float] | None = None,
    **kw: Any,
) -> PoolMetrics:
    """A pool serving ``rate`` req/s per replica on its step line (``line``: (A, B), default the chat
    pair's): the running requests Little's law gives (b = r / (E (A - B x))), nothing queued, TPOT
    from the same line."""
    acceptance = kw.pop("acceptance", ACCEPTANCE) if speculative else None
    e = 1.0 + 5 * acceptance if acceptance is not None else 1.0
    a, b = line or (SPEC_LINE if speculative else BASE_LINE)
    y = a - b * rate / e
    figures: dict[str, Any] = {
        "request_rate": rate * replicas,
        "running": replicas * rate / (e * y),
        "tpot_p50": 1.0 / (100 * e * y),  # 100 output tokens a request
        "tpot_p99": 2.0 / (100 * e * y),
        "waiting": 0.0,
        "acceptance": acceptance,
    }
    figures.update(kw)
    return PoolMetrics(replicas=replicas, **figures)


def learned(
    rates: list[float],
    mode: str = "Speculative",
    facts: ServiceFacts = FACTS,
    policy: PolicySpec = POLICY,
    start: float = NOW - 7200,
    step: float | None = None,
) -> PolicyState:
    """The state after one evaluation per rate (req/s per replica) of the pool ``mode`` serves, each
    decided by ``decide`` and written to status and read back, as the operator does."""
    step = step or policy.interval_seconds
    state = status_state(mode)
    state = replace(state, mode_since=start - 3600)
    for i, rate in enumerate(rates):
        pool = line_pool(rate, speculative=mode != "Baseline")
        obs = Observation(speculative=pool) if mode != "Baseline" else Observation(baseline=pool)
        state = decide(policy, state, obs, start + i * step, facts=facts).state
        state = policy_state_from_status(policy_status_fields(state))
    return state

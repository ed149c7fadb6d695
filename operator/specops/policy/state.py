"""The policy's vocabulary and state: verdicts, reasons, what a window shows, what status keeps.

Everything here is a frozen value.  The rules (``rules.py``) read these types and the decision
(``decide.py``) returns new ones; nothing in the policy keeps state of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from specops.api.v1alpha1 import ConditionStatus, ServingMode

# How many decisions status keeps (newest last).
HISTORY_LIMIT = 20


class Verdict(StrEnum):
    """One evaluation's outcome, kept distinct all the way to ``status.verdict``."""

    HEALTHY = "Healthy"
    BREACH = "Breach"
    NO_DATA = "NoData"
    ERROR = "Error"


class Reason(StrEnum):
    """Why a verdict, a transition or the MetricsAvailable condition says what it says.

    CamelCase nouns a user can grep: the same words are the Event reasons of transitions."""

    # Healthy
    HEALTHY = "Healthy"
    BASELINE_SERVING = "BaselineServing"
    PROBE_WON = "ProbeWon"
    # Breach (the first four are also the reasons of a fallback)
    ACCEPTANCE_BELOW_THRESHOLD = "AcceptanceBelowThreshold"
    LOAD_SATURATION = "LoadSaturation"
    TAIL_LATENCY_REGRESSION = "TailLatencyRegression"
    TAIL_GAP_WIDENING = "TailGapWidening"
    PROBE_LOST = "ProbeLost"
    # A probe that reached its deadline without a verdict either way (transitions only)
    PROBE_INCONCLUSIVE = "ProbeInconclusive"
    # NoData: hold, count nothing
    NO_SERIES = "NoSeries"
    INSUFFICIENT_TRAFFIC = "InsufficientTraffic"
    BASELINE_QUEUEING = "BaselineQueueing"
    INSUFFICIENT_SAMPLE = "InsufficientSample"
    SETTLING = "Settling"
    # Error
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    # Transitions only
    MANUAL_OVERRIDE = "ManualOverride"
    PROBE_STARTED = "ProbeStarted"
    # The MetricsAvailable condition only
    EVALUATED = "Evaluated"
    PROMETHEUS_ERROR = "PrometheusError"


def finite(x: float | None) -> bool:
    """A usable number: present, not NaN, not infinite (Prometheus answers all three)."""
    return x is not None and not math.isnan(x) and not math.isinf(x)


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    """One pool's figures over the evaluation window (None: no such series)."""

    replicas: int = 0
    request_rate: float | None = None
    acceptance: float | None = None
    mean_acceptance_length: float | None = None
    per_position: tuple[float, ...] = ()
    tpot_p50: float | None = None
    tpot_p99: float | None = None
    e2e_p50: float | None = None
    e2e_p99: float | None = None
    ttft_p99: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None

    @property
    def rate_per_replica(self) -> float | None:
        if self.request_rate is None or self.replicas <= 0:
            return None
        return self.request_rate / self.replicas

    @property
    def tail_ratio(self) -> float | None:
        if not finite(self.tpot_p50) or not finite(self.tpot_p99) or not self.tpot_p50:
            return None
        assert self.tpot_p99 is not None
        return self.tpot_p99 / self.tpot_p50


@dataclass(frozen=True, slots=True)
class Observation:
    """What one evaluation window shows: each pool's figures, or why there are none."""

    speculative: PoolMetrics | None = None
    baseline: PoolMetrics | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Reference:
    """The baseline's latency at some load, recorded while the baseline pool served traffic."""

    tpot_p50: float
    tpot_p99: float
    rate_per_replica: float
    at: float


@dataclass(frozen=True, slots=True)
class Assessment:
    """One window's verdict, the rule that gave it, and the evidence in words."""

    verdict: Verdict
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Transition:
    """One mode switch, as ``status.decisions`` keeps it."""

    at: float
    from_mode: ServingMode
    to_mode: ServingMode
    reason: Reason
    message: str

    @property
    def is_fallback(self) -> bool:
        """Speculation switched off by the policy (a Warning event), not by a pin."""
        return self.to_mode == ServingMode.BASELINE and self.reason != Reason.MANUAL_OVERRIDE


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything the policy remembers between evaluations; all of it lives in status."""

    mode: ServingMode = ServingMode.SPECULATIVE
    mode_since: float = 0.0
    breaches: int = 0
    recoveries: int = 0
    errors: int = 0
    reference: Reference | None = None
    # Requests/s per replica at which the speculative pool last saturated (None: never seen).
    saturation_rate: float | None = None
    lost_probes: int = 0  # probes lost in a row since the last fallback
    history: tuple[Transition, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # A mode read back from status is a plain string; keep the enum member.
        object.__setattr__(self, "mode", ServingMode(self.mode))


@dataclass(frozen=True, slots=True)
class MetricsCondition:
    """The MetricsAvailable condition an evaluation leaves: status, reason and message."""

    status: ConditionStatus
    reason: Reason
    message: str

    # Temporary: callers that still read the former (status, reason, message) tuple by index.
    def __getitem__(self, index: int) -> str:
        return (self.status, self.reason, self.message)[index]

    def __iter__(self) -> Iterator[str]:
        return iter((self.status, self.reason, self.message))


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome of one evaluation: the next state, the window's verdict, the switch (if any)
    and the MetricsAvailable condition."""

    state: PolicyState
    assessment: Assessment
    transition: Transition | None
    metrics_available: MetricsCondition

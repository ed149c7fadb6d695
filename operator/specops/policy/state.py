"""The policy's vocabulary and state: verdicts, reasons, what a window shows, what status keeps.

Everything here is a frozen value.  The rules (``rules.py``) read these types and the decision
(``decide.py``) returns new ones; nothing in the policy keeps state of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum

from specops.api.v1alpha1 import ConditionStatus, ServingMode, SpeculativeInferenceSpec

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
    WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL = "WindowTooShortForScrapeInterval"
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
    # Requests/s per replica at which the speculative pool last saturated (None: never seen), and
    # when (None: not known, a status written before the time was kept).
    saturation_rate: float | None = None
    lost_probes: int = 0  # probes lost in a row since the last fallback
    history: tuple[Transition, ...] = field(default_factory=tuple)
    saturation_at: float | None = None
    # policy_fingerprint() of the spec the evidence above was recorded under (None: not known).
    spec_fingerprint: str | None = None

    def __post_init__(self) -> None:
        # A mode read back from status is a plain string; keep the enum member.
        object.__setattr__(self, "mode", ServingMode(self.mode))


def policy_fingerprint(spec: SpeculativeInferenceSpec) -> str:
    """A digest of the spec fields the recorded evidence depends on: the server (image, version,
    arguments, environment), the target, the speculation (method, draft, k) and the GPUs.  Not the
    replica count, the policy, the rollout or the pods' labels: those change no latency."""
    relevant = {
        "vllm": spec.vllm.model_dump(mode="json", exclude={"port", "served_model_name", "startup_timeout"}),
        "target": spec.target.model_dump(mode="json"),
        "speculation": spec.speculation.model_dump(mode="json"),
        "gpus": spec.resources.model_dump(
            mode="json",
            include={"gpus_per_replica", "gpu_type", "gpu_memory_gib", "gpu_memory_utilization"},
        ),
    }
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reset_for_new_spec(state: PolicyState, fingerprint: str) -> PolicyState:
    """The state once the spec changed what the evidence measured (another draft, k, vLLM version,
    target or GPU): the baseline reference, the saturation load, the lost-probe backoff and the
    counts go; the mode, its start and the history of decisions stay."""
    return replace(
        state,
        breaches=0,
        recoveries=0,
        reference=None,
        saturation_rate=None,
        saturation_at=None,
        lost_probes=0,
        spec_fingerprint=fingerprint,
    )


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

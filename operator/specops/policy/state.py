"""The policy's vocabulary and state: verdicts, reasons, what a window shows, what status keeps.

Everything here is a frozen value.  The rules (``rules.py``) read these types and the decision
(``decide.py``) returns new ones; nothing in the policy keeps state of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
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
    # Leading indicators and evidence without a baseline (also reasons of a fallback)
    HEADROOM_CLOSING = "HeadroomClosing"
    ACCEPTANCE_SPREAD = "AcceptanceSpread"
    PREDICTED_SLOWDOWN = "PredictedSlowdown"
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
    # A switch the policy would make but holds back (an Event, not a transition)
    SWITCH_DEFERRED = "SwitchDeferred"
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
class LoadTrend:
    """The service's load per replica over the last window, and its smoothed rate of change."""

    rate: float  # requests/s per replica of spec.replicas, every serving pod counted
    slope: float  # requests/s per replica, per second
    at: float


@dataclass(frozen=True, slots=True)
class Overloads:
    """Episodes of load-driven breaches while speculating (``HeadroomClosing``, ``LoadSaturation``,
    ``PredictedSlowdown`` in a row): when the current one began, and how long past ones lasted (a
    running mean, weight 1/2 on the newest), so that a regime shorter than a switch is ridden out."""

    since: float | None = None
    typical_seconds: float | None = None
    seen: int = 0


@dataclass(frozen=True, slots=True)
class StepLine:
    """One pool's decode step rate ``y`` (1 / step time) against its load ``x``, as a running
    exponentially weighted least-squares fit: the weight of the windows in it, the means, the
    variances and the covariance (``policy/headroom.py`` updates and reads it)."""

    weight: float
    mean_x: float
    mean_y: float
    var_x: float
    cov_xy: float
    at: float
    mean_acceptance: float | None = None
    var_y: float = 0.0


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    """What the policy knows of the service beyond one window: how many replicas a switch moves,
    whether a moved replica is out of service meanwhile (no surge pod stands in), what moving one
    costs, and the step-cost model's ratios for the pair (``policy/headroom.py``)."""

    replicas: int
    surge: bool
    switch_seconds_per_replica: float
    switch_cost_measured: bool = False
    num_speculative_tokens: int = 1
    # A speculative step's time over a plain one's: at batch 1, and per extra running sequence at
    # large batch (None: the model's shapes are unknown).
    zero_load_step_ratio: float | None = None
    per_sequence_step_ratio: float | None = None

    @property
    def dip(self) -> bool:
        """A moved replica serves nothing while it drains and starts."""
        return not self.surge and self.replicas > 1

    def switch_seconds(self, replicas_moved: int) -> float:
        """How long moving ``replicas_moved`` replicas takes (one at a time)."""
        return max(1, replicas_moved) * self.switch_seconds_per_replica


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
    # The load and its trend, and each pool's step rate against its load (policy/headroom.py).
    load: LoadTrend | None = None
    speculative_steps: StepLine | None = None
    baseline_steps: StepLine | None = None
    # Since when a switch the policy would make is held back (None: none is).
    deferred_since: float | None = None
    overloads: Overloads = field(default_factory=Overloads)

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
    target or GPU): the baseline reference, the saturation load, the pools' step lines, the
    lost-probe backoff and the counts go; the mode, its start, the load trend and the history of
    decisions stay."""
    return replace(
        state,
        breaches=0,
        recoveries=0,
        reference=None,
        saturation_rate=None,
        saturation_at=None,
        lost_probes=0,
        spec_fingerprint=fingerprint,
        speculative_steps=None,
        baseline_steps=None,
        deferred_since=None,
    )


@dataclass(frozen=True, slots=True)
class MetricsCondition:
    """The MetricsAvailable condition an evaluation leaves: status, reason and message."""

    status: ConditionStatus
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Deferral:
    """A switch the policy would have made and did not: from and to which mode, the reason it
    would have had, and why it was held back (words)."""

    at: float
    from_mode: ServingMode
    to_mode: ServingMode
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome of one evaluation: the next state, the window's verdict, the switch (if any),
    the MetricsAvailable condition, and a switch newly held back (``deferred``: set on the first
    window of a deferral only, for one ``SwitchDeferred`` Event; later windows say it in the
    verdict message)."""

    state: PolicyState
    assessment: Assessment
    transition: Transition | None
    metrics_available: MetricsCondition
    deferred: Deferral | None = None

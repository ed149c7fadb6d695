"""`specops.dev/v1alpha1` `SpeculativeInference`: the source of truth for the API.

The CRD in ``crds/`` is generated from these models (``specops crd``); never edit it by hand.  Every
field carries a description, which becomes ``kubectl explain`` text.  Field names are camelCase on
the wire (aliases) and snake_case in Python.
"""

from __future__ import annotations

import itertools
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from specops.api.catalog import GPU_TYPES

GROUP = "specops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpeculativeInference"
PLURAL = "speculativeinferences"
SINGULAR = "speculativeinference"
SHORT_NAMES = ("specinf", "si")

_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PARAMS = re.compile(r"^\s*(\d+(\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_PARAM_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}

DURATION_PATTERN = _DURATION.pattern
# rate() needs two samples inside its window; four scrape intervals keep it filled when a scrape is
# late or fails.  Fewer than two and it is always empty.
MIN_SCRAPES_PER_WINDOW = 4
MIN_SCRAPES_FOR_RATE = 2


def parse_duration(value: str) -> float:
    """'1m30s' -> 90.0 seconds (the Go/metav1.Duration subset users write)."""
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '5m' or '1h30m'")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


# Far above any model (the largest are a few T): past it the figures stop being numbers.
MAX_PARAMETERS = 10**15


def parse_parameter_count(value: int | str) -> int:
    """'70.6B' -> 70_600_000_000; an integer is a plain count."""
    if isinstance(value, int):
        count = value
    else:
        m = _PARAMS.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a parameter count; write e.g. '70.6B', '500M' or 8030000000")
        number = float(m.group(1)) * _PARAM_SCALE[m.group(3).upper()]
        count = round(number) if number <= MAX_PARAMETERS else MAX_PARAMETERS + 1
    if not 1 <= count <= MAX_PARAMETERS:
        raise ValueError(f"{value!r}: a parameter count is between 1 and 1000T")
    return count


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, json_schema_extra={"format": "duration"})]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=False,
    )


# --------------------------------------------------------------------------------------------- spec


class Quantization(StrEnum):
    NONE = "none"
    FP8 = "fp8"
    INT8 = "int8"
    AWQ = "awq"
    GPTQ = "gptq"
    BITSANDBYTES = "bitsandbytes"


class DraftQuantization(StrEnum):
    NONE = "none"
    FP8 = "fp8"
    AWQ = "awq"
    GPTQ = "gptq"


class DType(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class KVCacheDType(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"


class Method(StrEnum):
    DRAFT_MODEL = "draft_model"
    NGRAM = "ngram"
    EAGLE = "eagle"
    EAGLE3 = "eagle3"
    MTP = "mtp"
    MEDUSA = "medusa"
    SUFFIX = "suffix"


class Mode(StrEnum):
    AUTO = "Auto"
    SPECULATIVE = "Speculative"
    BASELINE = "Baseline"


class ServingMode(StrEnum):
    """What the service runs now (status.mode): all replicas speculate, none do, or some do beside
    baseline ones to see whether speculation wins again."""

    SPECULATIVE = "Speculative"
    BASELINE = "Baseline"
    PROBING = "Probing"


def pinned_mode(pin: Mode) -> ServingMode | None:
    """The serving mode ``spec.policy.mode`` pins (None: Auto, the policy decides)."""
    return {Mode.SPECULATIVE: ServingMode.SPECULATIVE, Mode.BASELINE: ServingMode.BASELINE}.get(pin)


class TokensPerBatchSizeMode(StrEnum):
    MANUAL = "Manual"
    AUTO = "Auto"


class DraftSampling(StrEnum):
    """How the proposer picks its draft tokens (vLLM's ``draft_sample_method``)."""

    GREEDY = "Greedy"
    PROBABILISTIC = "Probabilistic"


# The --speculative-config key and values of DraftSampling (vLLM >= 0.32.0: vllm/dialect.py).
DRAFT_SAMPLE_METHOD_KEY = "draft_sample_method"


class OnMetricsUnavailable(StrEnum):
    HOLD = "Hold"
    BASELINE = "Baseline"


class Architecture(_Model):
    """Shape of a model outside the catalog, for its KV cache size."""

    layers: int = Field(ge=1, description="Number of decoder layers (num_hidden_layers).")
    kv_heads: int = Field(ge=1, description="Key/value heads per layer (num_key_value_heads).")
    head_dim: int = Field(ge=1, description="Dimension of one attention head (head_dim).")


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, description="Name of a Secret in the resource's namespace.")
    key: str = Field(default="token", min_length=1, description="Key in the Secret holding the value.")


class EnvVar(_Model):
    """A container environment variable (the core/v1 EnvVar shape, value or valueFrom)."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None, description="Source of the value (core/v1 EnvVarSource), e.g. secretKeyRef."
    )


class VLLMSpec(_Model):
    """The vLLM server: image and the version whose command-line dialect SpecOps renders."""

    image: str = Field(
        default="vllm/vllm-openai:v0.32.0",
        min_length=1,
        description="Container image running vLLM's OpenAI-compatible server.",
    )
    version: str = Field(
        default="0.32.0",
        pattern=r"^v?\d+\.\d+(\.\d+)?([.+-].*)?$",
        description=(
            "vLLM version inside the image. Selects the flag dialect: --speculative-config JSON "
            "from 0.8.3, the legacy --speculative-model flags before; only flags and keys this "
            "version accepts are rendered."
        ),
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP server and /metrics.")
    served_model_name: str | None = Field(
        default=None,
        description="Model name clients send; defaults to target.model. Both pools serve the same name.",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description=(
            "Additional vLLM arguments, appended after the rendered ones. Flags SpecOps manages "
            "(model, parallelism, speculation, port) are refused here: set the matching field."
        ),
    )
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")
    startup_timeout: Duration | None = Field(
        default=None,
        description="Longest model load before the pod is restarted; estimated from weight size if unset.",
    )


class TargetSpec(_Model):
    """The model being served."""

    model: str = Field(min_length=1, description="Hugging Face id or local path of the target model.")
    revision: str | None = Field(default=None, description="Model revision (branch, tag or commit).")
    quantization: Quantization = Field(
        default=Quantization.NONE,
        description=(
            "Weight quantization of the target. Lowers acceptance: a quantized target drifts from "
            "the distribution the draft imitates (prefer quantizing the draft)."
        ),
    )
    dtype: DType = Field(default=DType.AUTO, description="Activation/weight dtype (auto = bfloat16 here).")
    kv_cache_dtype: KVCacheDType = Field(default=KVCacheDType.AUTO, description="KV cache element type.")
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="GPUs one replica shards the target over."
    )
    max_model_len: int | None = Field(
        default=None,
        ge=128,
        description="Context length per sequence; concurrency is counted at this length.",
    )
    parameters: int | str | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-int-or-string": True},
        description="Parameter count (e.g. '70.6B') for a model outside the catalog, or to override it.",
    )
    architecture: Architecture | None = Field(
        default=None, description="Layer shape for a model outside the catalog (KV cache size)."
    )
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer id for the pairing check, for a model outside the catalog.",
    )

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_parameter_count(v)
        return v


class DraftSpec(_Model):
    """The proposer model (a small model of the same family, or an EAGLE/Medusa head)."""

    model: str = Field(min_length=1, description="Hugging Face id or local path of the draft model or head.")
    revision: str | None = Field(default=None, description="Draft model revision.")
    quantization: DraftQuantization = Field(
        default=DraftQuantization.NONE,
        description="Draft quantization; safe for acceptance, and it returns KV cache.",
    )
    tensor_parallel_size: int | None = Field(
        default=None,
        ge=1,
        description="1 or the target's tensorParallelSize (default: the target's).",
    )
    parameters: int | str | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-int-or-string": True},
        description="Parameter count for a draft outside the catalog (e.g. '1.2B').",
    )
    architecture: Architecture | None = Field(
        default=None, description="Layer shape for a draft outside the catalog."
    )
    tokenizer: str | None = Field(default=None, description="Tokenizer id for a draft outside the catalog.")

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_parameter_count(v)
        return v


class NgramSpec(_Model):
    """Prompt-lookup window for method ngram."""

    prompt_lookup_min: int = Field(
        default=2, ge=1, le=16, description="Shortest n-gram matched in the prompt."
    )
    prompt_lookup_max: int = Field(
        default=5, ge=1, le=16, description="Longest n-gram matched in the prompt."
    )

    @model_validator(mode="after")
    def _order(self) -> NgramSpec:
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError("promptLookupMin must not exceed promptLookupMax")
        return self


class BatchSizeTokens(_Model):
    """One row of vLLM's dynamic table (vLLM >= 0.24): k for running batches in a range."""

    min_batch_size: int = Field(ge=1, description="Smallest running batch this row applies to.")
    max_batch_size: int = Field(ge=1, description="Largest running batch this row applies to (inclusive).")
    num_speculative_tokens: int = Field(ge=0, le=16, description="k in this range; 0 switches drafting off.")

    @model_validator(mode="after")
    def _range(self) -> BatchSizeTokens:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError("minBatchSize must not exceed maxBatchSize")
        return self


class SpeculationSpec(_Model):
    """How tokens are proposed."""

    method: Method = Field(description="Proposer: draft_model, ngram, eagle, eagle3, mtp, medusa or suffix.")
    num_speculative_tokens: int = Field(default=5, ge=1, le=16, description="Tokens proposed per step (k).")
    draft: DraftSpec | None = Field(
        default=None,
        description="Draft model or head; required for draft_model, eagle, eagle3 and medusa.",
    )
    ngram: NgramSpec | None = Field(default=None, description="N-gram window (method ngram).")
    tokens_per_batch_size: list[BatchSizeTokens] | None = Field(
        default=None,
        description="vLLM's own k-by-batch-size table, rendered only for versions that support it.",
    )
    draft_sampling: DraftSampling | None = Field(
        default=None,
        description=(
            "How the draft model or head picks its proposals. Unset: vLLM's default, Greedy (the "
            "argmax, its distribution counted as one-hot by rejection sampling), which lowers "
            "acceptance at high temperature. Probabilistic samples from the draft's distribution "
            "and uses it in the acceptance test, at the cost of GPU memory for the draft logits. "
            "vLLM >= 0.32.0; not for ngram or suffix (a lookup has no distribution)."
        ),
    )
    tokens_per_batch_size_mode: TokensPerBatchSizeMode = Field(
        default=TokensPerBatchSizeMode.MANUAL,
        description=(
            "Manual renders tokensPerBatchSize as written (none: k at every batch size). Auto lets "
            "SpecOps derive vLLM's k-by-batch-size table from the pool's per-position acceptance "
            "and a step-cost model (k = 0 where drafting does not pay) and render it; vLLM >= 0.24, "
            "and not together with tokensPerBatchSize."
        ),
    )

    @model_validator(mode="after")
    def _method_fields(self) -> SpeculationSpec:
        needs_draft = {Method.DRAFT_MODEL, Method.EAGLE, Method.EAGLE3, Method.MEDUSA}
        if self.method in needs_draft and self.draft is None:
            raise ValueError(f"method {self.method.value} needs speculation.draft.model")
        if self.method in {Method.NGRAM, Method.MTP, Method.SUFFIX} and self.draft is not None:
            raise ValueError(f"method {self.method.value} takes no draft model; remove speculation.draft")
        if self.method is not Method.NGRAM and self.ngram is not None:
            raise ValueError("speculation.ngram applies only to method ngram")
        if self.draft_sampling is not None and self.method in {Method.NGRAM, Method.SUFFIX}:
            raise ValueError(
                f"speculation.draftSampling applies to a draft model or head; method {self.method.value} "
                "looks tokens up and has no distribution to sample: remove speculation.draftSampling"
            )
        if self.tokens_per_batch_size_mode is TokensPerBatchSizeMode.AUTO and self.tokens_per_batch_size:
            raise ValueError(
                "speculation.tokensPerBatchSizeMode Auto derives the table itself: remove "
                "speculation.tokensPerBatchSize, or set tokensPerBatchSizeMode: Manual to keep yours"
            )
        rows = self.tokens_per_batch_size or []
        for prev, row in itertools.pairwise(rows):
            if row.min_batch_size <= prev.max_batch_size:
                raise ValueError("tokensPerBatchSize rows must be in increasing, non-overlapping ranges")
        for row in rows:
            if row.num_speculative_tokens > self.num_speculative_tokens:
                raise ValueError("a tokensPerBatchSize row cannot propose more than numSpeculativeTokens")
        return self


class GPUResources(_Model):
    """GPUs and host resources of one replica."""

    gpus_per_replica: int = Field(default=1, ge=1, le=64, description="GPUs one pod requests.")
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", min_length=1, description="Extended resource name of the GPU."
    )
    gpu_type: Literal[GPU_TYPES] | None = Field(  # type: ignore[valid-type]
        default=None, description="Known GPU type, which gives its memory. Or set gpuMemoryGiB."
    )
    gpu_memory_gib: float | None = Field(
        default=None,
        alias="gpuMemoryGiB",
        gt=0,
        description="Memory of one GPU in GiB, for a card not in the gpuType list.",
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0.0,
        le=0.99,
        description="Share of GPU memory vLLM may use (weights + KV cache).",
    )
    cpu: str | None = Field(default=None, description="CPU request and limit, e.g. '8'.")
    memory: str | None = Field(default=None, description="Memory request and limit, e.g. '64Gi'.")
    shm_size: str = Field(default="16Gi", description="Size of the /dev/shm memory volume (NCCL, workers).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod tolerations (core/v1).")
    affinity: dict[str, Any] | None = Field(default=None, description="Pod affinity (core/v1 Affinity).")

    @model_validator(mode="after")
    def _memory_source(self) -> GPUResources:
        if self.gpu_type is None and self.gpu_memory_gib is None:
            raise ValueError("set resources.gpuType (e.g. H100-80GB) or resources.gpuMemoryGiB")
        return self


class ModelCache(_Model):
    """Where weights are cached, mounted at the Hugging Face cache path."""

    persistent_volume_claim: str | None = Field(default=None, description="Name of an existing PVC.")
    host_path: str | None = Field(default=None, description="Node path (pre-staged weights).")
    empty_dir: bool = Field(default=False, description="Use a per-pod emptyDir (downloads on every start).")
    read_only: bool = Field(default=False, description="Mount read-only (pre-staged weights).")

    @model_validator(mode="after")
    def _one_source(self) -> ModelCache:
        chosen = [
            self.persistent_volume_claim is not None,
            self.host_path is not None,
            self.empty_dir,
        ]
        if sum(chosen) != 1:
            raise ValueError("set exactly one of persistentVolumeClaim, hostPath or emptyDir")
        return self


class ProbePolicy(_Model):
    """How speculation is re-tried after a fallback."""

    replicas: int = Field(default=1, ge=1, description="Replicas that turn speculative during a probe.")
    duration: Duration = Field(
        default="10m", description="Length of a timed trial (single-replica services)."
    )

    min_win_margin: Fraction = Field(
        default=0.05,
        description="A probe window is won only when the speculative pool's P99 TPOT is at least this "
        "fraction below the baseline's (0.05 = 5% lower); closer than that it counts as lost.",
    )
    min_requests: int = Field(
        default=100,
        ge=1,
        description="Requests each compared pool must complete in one window before its P99 TPOT "
        "decides a probe window; fewer is NoData (InsufficientSample). No probe starts while the load "
        "per replica cannot reach it in one window.",
    )

    @property
    def duration_seconds(self) -> float:
        return parse_duration(self.duration)


class PolicySpec(_Model):
    """When speculation is switched off and back on."""

    mode: Mode = Field(
        default=Mode.AUTO,
        description="Auto lets SpecOps decide; Speculative and Baseline pin the mode.",
    )
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus base URL; defaults to the operator's --prometheus-url.",
    )
    interval: Duration = Field(default="30s", description="Time between evaluations.")
    window: Duration = Field(default="5m", description="PromQL rate window of each evaluation.")
    scrape_interval: Duration | None = Field(
        default=None,
        description="How often Prometheus scrapes the pods. Default: the interval of the PodMonitor "
        "SpecOps renders, min(15s, window/4) in whole seconds. Set it when the scrape configuration "
        "is managed outside SpecOps, so the window is checked against the real interval (under 4 "
        "intervals a warning, under 2 a refusal: rate() needs two samples in its window); the "
        "rendered PodMonitor uses it too.",
    )
    min_acceptance_rate: Fraction = Field(
        default=0.5, description="Below this acceptance speculation is net negative: a breach."
    )
    break_even_acceptance_rate: Fraction = Field(
        default=0.65,
        description="From minAcceptanceRate up to this, speculation must also win on P99 TPOT.",
    )
    max_p99_tpot_regression: float = Field(
        default=0.1,
        ge=0.0,
        description="Largest tolerated P99 TPOT excess over the baseline, as a fraction (0.1 = 10%).",
    )
    max_tail_gap_widening: float = Field(
        default=0.5,
        ge=0.0,
        description="Largest tolerated growth of the P99/P50 TPOT ratio over the baseline's, as a fraction.",
    )
    min_request_rate: float = Field(
        default=0.05,
        ge=0.0,
        description="Requests per second below which a window counts as no data.",
    )
    max_waiting_per_replica: float = Field(
        default=1.0,
        gt=0.0,
        description="Mean queued requests per speculative replica at which the pool counts as saturated.",
    )
    consecutive_breaches: int = Field(
        default=3,
        ge=2,
        description="Breaches (or probe losses) in a row before falling back; never one sample.",
    )
    consecutive_recoveries: int = Field(
        default=3, ge=2, description="Probe wins in a row before re-enabling."
    )
    consecutive_errors: int = Field(
        default=5, ge=2, description="Metric errors in a row before onMetricsUnavailable=Baseline falls back."
    )
    cooldown: Duration = Field(default="10m", description="Time in Baseline before a probe may start.")
    reference_max_age: Duration = Field(
        default="6h",
        description="Age after which recorded evidence stops counting: the baseline's latency (the "
        "reference speculation is judged against while no baseline pool serves) and the load at which "
        "speculation saturated (which holds probes off).",
    )
    on_metrics_unavailable: OnMetricsUnavailable = Field(
        default=OnMetricsUnavailable.HOLD,
        description="Hold keeps the mode while Prometheus is unavailable; Baseline falls back.",
    )
    probe: ProbePolicy = Field(default_factory=ProbePolicy, description="Probe settings.")

    @model_validator(mode="after")
    def _band(self) -> PolicySpec:
        if self.break_even_acceptance_rate < self.min_acceptance_rate:
            raise ValueError("breakEvenAcceptanceRate must be at least minAcceptanceRate")
        return self

    # The durations in seconds.  Each string was checked against the duration pattern when the
    # model was built, so these never fail; callers read them instead of parsing the strings.
    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    @property
    def window_seconds(self) -> float:
        return parse_duration(self.window)

    @property
    def cooldown_seconds(self) -> float:
        return parse_duration(self.cooldown)

    @property
    def reference_max_age_seconds(self) -> float:
        return parse_duration(self.reference_max_age)

    @property
    def scrape_interval_seconds(self) -> float:
        """``scrapeInterval``, or the interval of the PodMonitor SpecOps renders: often enough that a
        rate() over the window sees at least four samples, at most every 15 s, whole seconds."""
        if self.scrape_interval is not None:
            return parse_duration(self.scrape_interval)
        return float(max(1, math.floor(min(15.0, self.window_seconds / MIN_SCRAPES_PER_WINDOW))))

    @property
    def scrapes_per_window(self) -> float:
        return self.window_seconds / self.scrape_interval_seconds


class RolloutStrategy(StrEnum):
    """How a mode switch moves a replica (docs/operator.md, Rollout strategies)."""

    RESTART = "Restart"
    SURGE = "Surge"
    HOT_SWAP = "HotSwap"


# vLLM sleep level of the hot swap's sleeping engine.  Fixed at 1 (weights kept in host RAM): level 2
# discards the weights and is reported broken with a draft model (acceptance 0 after wake, vLLM
# issue 52479), docs/domain.md#switching.
HOT_SWAP_SLEEP_LEVEL = 1


class HotSwapSpec(_Model):
    """Settings of the HotSwap strategy: two vLLM engines per pod, one awake, one asleep."""

    proxy_image: str = Field(
        default="nginx:1.27-alpine",
        min_length=1,
        description="Image of the nginx sidecar that exposes only the public API, /health, /metrics "
        "and /version of each engine, and the sleep endpoints on a token-guarded admin port.",
    )


class RolloutSpec(_Model):
    """How a mode switch moves replicas between the pools."""

    strategy: RolloutStrategy | None = Field(
        default=None,
        description="Restart: a moved replica's pod stops and a pod of the other pool starts (out of "
        "service for its drain and cold start). Surge: the same with one extra pod started first "
        "(maxSurge 1; needs GPUs for one more pod). HotSwap: every pod holds both engines on its "
        "GPUs, one asleep (vLLM sleep mode, level 1); a switch drains the awake engine, puts it to "
        "sleep and wakes the other, in seconds, with no pod restart and no extra GPU (vLLM >= 0.8.0; "
        "host RAM for the sleeping weights). Unset: Surge when maxSurge is 1, else Restart.",
    )
    max_surge: int = Field(
        default=0,
        ge=0,
        le=1,
        description="Extra pod a mode switch may start before it stops one. 0 keeps the pods (and GPUs) "
        "at spec.replicas: each moved replica is out of service for its drain and start-up. 1 needs "
        "GPUs for one more pod (without them the new pod stays Pending and the switch waits) and "
        "switches without losing capacity. strategy Surge sets it to 1; Restart and HotSwap take 0.",
    )
    hot_swap: HotSwapSpec | None = Field(
        default=None, description="HotSwap settings (strategy HotSwap only; defaults apply when unset)."
    )

    @model_validator(mode="before")
    @classmethod
    def _surge_from_strategy(cls, data: Any) -> Any:
        # Surge is maxSurge 1.  The apiserver fills maxSurge's default 0 in, so 0 beside Surge is
        # read as "not set" rather than refused.
        if isinstance(data, dict) and data.get("strategy") == RolloutStrategy.SURGE.value:
            key = "max_surge" if "max_surge" in data else "maxSurge"
            if data.get(key, 0) == 0:
                data = {**data, key: 1}
        return data

    @model_validator(mode="after")
    def _combination(self) -> RolloutSpec:
        if self.strategy in (RolloutStrategy.RESTART, RolloutStrategy.HOT_SWAP) and self.max_surge:
            raise ValueError(
                f"strategy {self.strategy.value} starts no extra pod but maxSurge is "
                f"{self.max_surge}: set strategy: Surge, or remove maxSurge"
            )
        if self.hot_swap is not None and self.effective_strategy is not RolloutStrategy.HOT_SWAP:
            raise ValueError(
                "rollout.hotSwap applies only to strategy HotSwap: remove it or set strategy: HotSwap"
            )
        return self

    @property
    def effective_strategy(self) -> RolloutStrategy:
        """The strategy in force: the declared one, else the one maxSurge implies."""
        if self.strategy is not None:
            return self.strategy
        return RolloutStrategy.SURGE if self.max_surge else RolloutStrategy.RESTART

    @property
    def hot_swap_settings(self) -> HotSwapSpec:
        return self.hot_swap or HotSwapSpec()


class SpeculativeInferenceSpec(_Model):
    """Desired state: a vLLM service with a speculative and a baseline pool."""

    replicas: int = Field(
        default=1, ge=0, description="Total serving replicas over both pools (scale subresource)."
    )
    vllm: VLLMSpec = Field(default_factory=VLLMSpec, description="vLLM image, version and extra arguments.")
    target: TargetSpec = Field(description="The served model.")
    speculation: SpeculationSpec = Field(description="The proposer and k.")
    resources: GPUResources = Field(description="GPUs and host resources per replica.")
    policy: PolicySpec = Field(default_factory=PolicySpec, description="Fallback and re-enable policy.")
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="How mode switches move replicas between the pools."
    )
    model_cache: ModelCache | None = Field(default=None, description="Model weight cache volume.")
    hf_token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding the Hugging Face token (exposed as HF_TOKEN only via secretKeyRef).",
    )
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the pods.")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on the pods."
    )
    service_account_name: str | None = Field(default=None, description="ServiceAccount of the pods.")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Names of image pull Secrets.")


# ------------------------------------------------------------------------------------------- status


class _StatusModel(_Model):
    # The operator owns status; fields from an older or newer operator version are tolerated.
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel), populate_by_name=True, extra="ignore", frozen=True
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_StatusModel):
    """A Kubernetes API convention condition."""

    type: str = Field(description="Ready, BudgetFits, SpeculationActive or MetricsAvailable.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason a user can grep.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="Generation the condition was computed for."
    )


class PoolStatus(_StatusModel):
    replicas: int = Field(default=0, description="Desired replicas of the pool.")
    ready_replicas: int = Field(default=0, description="Ready replicas of the pool.")


class PoolsStatus(_StatusModel):
    speculative: PoolStatus = Field(default_factory=PoolStatus, description="The speculative pool.")
    baseline: PoolStatus = Field(default_factory=PoolStatus, description="The plain pool.")


class BudgetStatus(_StatusModel):
    """Per-replica memory figures from the budget check."""

    vram_gib: float | None = Field(default=None, alias="vramGiB", description="GPU memory per replica.")
    target_weights_gib: float | None = Field(
        default=None, alias="targetWeightsGiB", description="Target weights."
    )
    draft_weights_gib: float | None = Field(
        default=None, alias="draftWeightsGiB", description="Draft weights."
    )
    kv_cache_gib: float | None = Field(
        default=None, alias="kvCacheGiB", description="KV cache with the draft."
    )
    kv_cache_gib_without_draft: float | None = Field(
        default=None, alias="kvCacheGiBWithoutDraft", description="KV cache of a baseline pod."
    )
    max_concurrent_sequences: int | None = Field(
        default=None, description="Sequences at maxModelLen, speculative pod."
    )
    max_concurrent_sequences_without_draft: int | None = Field(
        default=None, description="Sequences at maxModelLen, baseline pod."
    )


class ObservedMetrics(_StatusModel):
    """The latest evaluation's figures."""

    acceptance_rate: float | None = Field(
        default=None, description="Draft acceptance rate, speculative pool."
    )
    mean_acceptance_length: float | None = Field(
        default=None, description="Tokens per speculative step (accepted drafts per draft + 1)."
    )
    acceptance_per_position: list[float] = Field(
        default_factory=list, description="Conditional acceptance at each draft position."
    )
    p50_tpot_seconds: float | None = Field(default=None, description="P50 request TPOT, speculative pool.")
    p99_tpot_seconds: float | None = Field(default=None, description="P99 request TPOT, speculative pool.")
    baseline_p50_tpot_seconds: float | None = Field(
        default=None, description="P50 request TPOT, baseline pool."
    )
    baseline_p99_tpot_seconds: float | None = Field(
        default=None, description="P99 request TPOT, baseline pool."
    )
    tail_ratio: float | None = Field(default=None, description="P99/P50 TPOT ratio, speculative pool.")
    p99_ttft_seconds: float | None = Field(
        default=None, description="P99 time to first token, speculative pool."
    )
    p99_e2e_seconds: float | None = Field(
        default=None, description="P99 end-to-end latency, speculative pool."
    )
    request_rate: float | None = Field(default=None, description="Requests per second over both pools.")
    waiting_per_replica: float | None = Field(
        default=None, description="Mean queued requests per speculative replica."
    )
    kv_cache_usage: float | None = Field(
        default=None, description="Highest KV cache usage, speculative pool."
    )
    window_end: str | None = Field(default=None, description="End of the evaluated window (RFC 3339).")


class DecisionRecord(_StatusModel):
    """One mode decision, kept in status (newest last, at most 20)."""

    time: str = Field(description="When it was taken (RFC 3339).")
    from_mode: ServingMode = Field(alias="from", description="Mode before.")
    to_mode: ServingMode = Field(alias="to", description="Mode after.")
    reason: str = Field(description="CamelCase reason, also the Event reason.")
    message: str = Field(default="", description="Evidence in words.")


class BaselineReference(_StatusModel):
    """The baseline pool's latency at a load, recorded while it served traffic."""

    p50_tpot_seconds: float = Field(description="P50 request TPOT of the baseline pool.")
    p99_tpot_seconds: float = Field(description="P99 request TPOT of the baseline pool.")
    requests_per_replica: float = Field(description="Request rate per replica when recorded.")
    recorded_at: str = Field(description="When it was recorded (RFC 3339).")


class Counters(_StatusModel):
    breaches: int = Field(default=0, description="Consecutive breach verdicts.")
    recoveries: int = Field(default=0, description="Consecutive probe wins.")
    errors: int = Field(default=0, description="Consecutive metric errors.")
    lost_probes: int = Field(
        default=0,
        description="Probes lost in a row since the last fallback; each doubles the next cooldown "
        "(up to x8).",
    )


class SpeculationTableRow(_StatusModel):
    """One row of a derived k-by-batch-size table."""

    min_batch_size: int = Field(description="Smallest running batch of the row.")
    max_batch_size: int = Field(description="Largest running batch of the row (inclusive).")
    num_speculative_tokens: int = Field(description="k in this range; 0: drafting off.")
    expected_speedup_min: float = Field(
        description="Lowest expected decode speedup in the range, against k = 0 at the same batch."
    )
    expected_speedup_max: float = Field(
        description="Highest expected decode speedup in the range, against k = 0 at the same batch."
    )


class DerivedSpeculationTable(_StatusModel):
    """vLLM's k-by-batch-size table as derived from an acceptance profile and the step-cost model."""

    rows: list[SpeculationTableRow] = Field(default_factory=list, description="The table, by batch size.")
    acceptance_per_position: list[float] = Field(
        default_factory=list, description="Conditional acceptance at each draft position it came from."
    )
    acceptance_source: str = Field(
        description="Live (the speculative pool's per-position counters) or Default (the catalog's prior)."
    )
    context_tokens: int = Field(description="Mean context of a running sequence the step costs assume.")
    derived_at: str | None = Field(default=None, description="When it was derived (RFC 3339).")


class SwitchCostSource(StrEnum):
    ESTIMATE = "Estimate"
    MEASURED = "Measured"


class SwitchCostStatus(_StatusModel):
    """What moving one replica between the pools costs: drain, then start to Ready (a model load),
    during which that replica serves nothing (with maxSurge 0).  Estimated from the model's size
    until a switch has been measured (docs/operator.md, "Switch cost")."""

    source: SwitchCostSource = Field(description="Estimate (no switch measured yet) or Measured.")
    seconds_per_replica: float = Field(
        description="The figure decisions use: the measured mean, else the estimate."
    )
    estimated_seconds_per_replica: float = Field(
        description="From the weights per GPU and documented defaults: drain + container start + "
        "weight load + CUDA graph capture."
    )
    measured_seconds_per_replica: float | None = Field(
        default=None, description="Running mean (weight 1/2 on the newest) of measured switches."
    )
    samples: int = Field(default=0, description="Switches measured.")
    last_switch_seconds: float | None = Field(
        default=None, description="The last switch, from its decision to every replica Ready."
    )
    last_replicas_moved: int | None = Field(default=None, description="Replicas the last switch moved.")
    last_unavailable_replica_seconds: float | None = Field(
        default=None,
        description="Serving capacity the last switch cost: replica-seconds without a ready pod "
        "(0 with a surge pod).",
    )
    measured_for: str | None = Field(
        default=None, description="Time of the decision last measured (RFC 3339), so each is measured once."
    )


class LoadTrendStatus(_StatusModel):
    """The service's load and where it is heading, as the last evaluations saw it."""

    requests_per_replica: float = Field(
        description="Requests/s over every serving pod in the last window, per replica of spec.replicas."
    )
    slope_per_minute: float = Field(
        description="Its trend: change in requests/s per replica per minute, smoothed over a few windows."
    )
    recorded_at: str = Field(description="When it was last updated (RFC 3339).")


class StepLineStatus(_StatusModel):
    """One pool's step rate against its load, fitted online by exponentially weighted least squares
    (docs/operator.md, "Headroom"): the figures of the running fit.  The step rate is the request
    rate over (tokens per step x running requests), per replica: 1 / (output tokens x step time)."""

    weight: float = Field(description="Windows in the fit, each weighted down as it ages.")
    mean_load: float = Field(
        description="Mean load: requests/s per replica (divided by the tokens per step when speculative)."
    )
    mean_step_rate: float = Field(description="Mean step rate (1 / (output tokens x step time)).")
    load_variance: float = Field(description="Weighted variance of the load (the fit's spread).")
    step_rate_variance: float = Field(default=0.0, description="Weighted variance of the step rate.")
    covariance: float = Field(description="Weighted covariance of load and step rate.")
    mean_acceptance: float | None = Field(
        default=None, description="Mean acceptance of the windows in the fit (speculative pool)."
    )
    updated_at: str = Field(description="Newest window in the fit (RFC 3339).")


class HeadroomStatus(_StatusModel):
    """What the policy knows of the load at which speculation stops paying, learned from the
    pools' own figures; read back by the next evaluation (docs/operator.md, "Headroom")."""

    load: LoadTrendStatus | None = Field(default=None, description="The load and its trend.")
    speculative_steps: StepLineStatus | None = Field(
        default=None, description="The speculative pool's step rate against its load."
    )
    baseline_steps: StepLineStatus | None = Field(
        default=None, description="The baseline pool's step rate against its load."
    )
    crossover_requests_per_replica: float | None = Field(
        default=None,
        description="Load per replica above which the baseline is expected to have the lower TPOT "
        "at the current acceptance (with a margin for the P99); derived from the lines above.",
    )
    speculative_capacity_requests_per_replica: float | None = Field(
        default=None, description="Load per replica a speculative replica can serve (its line's limit)."
    )
    baseline_capacity_requests_per_replica: float | None = Field(
        default=None, description="Load per replica a baseline replica can serve (its line's limit)."
    )
    source: str | None = Field(
        default=None,
        description="Where the crossover comes from: Measured (both pools' lines), Estimated (the "
        "baseline's line from the speculative one and the step-cost model), or what is missing.",
    )
    overload_since: str | None = Field(
        default=None,
        description="Start of the current episode of load-driven breaches while speculating (RFC 3339).",
    )
    typical_overload_seconds: float | None = Field(
        default=None,
        description="How long such episodes lasted when they ended by themselves (running mean); a "
        "fallback that takes longer is not made for one (bursts are ridden out).",
    )
    overloads_seen: int = Field(default=0, description="Episodes in that mean.")


class SpeculativeInferenceStatus(_StatusModel):
    """Observed state, written only by the operator."""

    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    mode: ServingMode | None = Field(default=None, description="Speculative, Baseline or Probing.")
    mode_since: str | None = Field(default=None, description="When the current mode began (RFC 3339).")
    replicas: int | None = Field(
        default=None, description="Serving replicas over both pools (scale subresource)."
    )
    selector: str | None = Field(default=None, description="Label selector of all pods (scale subresource).")
    pools: PoolsStatus | None = Field(default=None, description="Replicas per pool.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    budget: BudgetStatus | None = Field(default=None, description="Memory budget per replica.")
    switch_cost: SwitchCostStatus | None = Field(
        default=None, description="What a mode switch costs per replica, estimated then measured."
    )
    observed: ObservedMetrics | None = Field(default=None, description="Latest observed metrics.")
    verdict: str | None = Field(default=None, description="Latest verdict: Healthy, Breach, NoData or Error.")
    counters: Counters | None = Field(default=None, description="Hysteresis counters.")
    baseline_reference: BaselineReference | None = Field(
        default=None, description="Recorded baseline latency, the reference while no baseline pool runs."
    )
    saturation_requests_per_replica: float | None = Field(
        default=None,
        description="Requests/s per replica at which the speculative pool last saturated; probes wait "
        "until the load is below 80% of it. Cleared by a won probe; ignored once older than "
        "policy.referenceMaxAge.",
    )
    saturation_recorded_at: str | None = Field(
        default=None, description="When saturationRequestsPerReplica was recorded (RFC 3339)."
    )
    spec_fingerprint: str | None = Field(
        default=None,
        description="Digest of the spec fields the recorded evidence depends on (vLLM, target, "
        "speculation, GPUs); when the spec's differs, the reference, the saturation load and the "
        "probe backoff are dropped.",
    )
    headroom: HeadroomStatus | None = Field(
        default=None,
        description="The load, its trend and the load at which speculation stops paying, learned "
        "from the pools' figures (the leading-indicator rule and the switch gate read them).",
    )
    switch_deferred_since: str | None = Field(
        default=None,
        description="Since when the policy has held back a switch it would otherwise make, because "
        "the switch would overload the service or cost more than the regime it answers (RFC 3339; "
        "the reason is in verdictMessage).",
    )
    verdict_reason: str | None = Field(default=None, description="Reason of the latest verdict.")
    verdict_message: str | None = Field(default=None, description="Evidence of the latest verdict.")
    decisions: list[DecisionRecord] = Field(
        default_factory=list, description="Last 20 decisions, newest last."
    )
    derived_speculation_table: DerivedSpeculationTable | None = Field(
        default=None,
        description="vLLM's k-by-batch-size table derived from the speculative pool's acceptance "
        "(spec.speculation.tokensPerBatchSizeMode Auto), with the data it came from.",
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SpeculativeInference(BaseModel):
    """A vLLM service whose speculative decoding SpecOps budgets, watches and falls back."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["specops.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SpeculativeInference"]
    metadata: ObjectMeta
    spec: SpeculativeInferenceSpec
    status: SpeculativeInferenceStatus | None = None

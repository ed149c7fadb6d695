"""GPU memory budget and draft/target pairing checks for one replica (pure).

vLLM's KV cache budget is ``VRAM x gpu_memory_utilization - weights``, and every byte of draft
weights is a byte of KV cache lost, one for one.  vLLM sizes the KV cache by its fullest GPU: with
``draft.tensorParallelSize: 1`` under a target sharded over N GPUs, the draft sits on one GPU and
the others' KV is capped to match, so the draft costs N times its size in KV cache.  Figures are
per replica, in GiB (2^30 bytes).  They leave out vLLM's activation and CUDA graph reserve (a few
GiB per GPU), so real KV capacity is somewhat lower: treat concurrency as an upper bound.

With ``spec.rollout.strategy: HotSwap`` each pod runs both engines on the same GPUs, one asleep
(``plan_hot_swap``, docs/operator.md "Hot swap"): the awake engine's share plus what the sleeping
one still holds (its CUDA context and CUDA graphs) must fit each GPU, and the sleeping engine's
weights sit in host RAM.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from specops.api.catalog import GIB, GPUS, ModelInfo, lookup_model
from specops.api.findings import Finding, HasFindings, error, warning
from specops.api.v1alpha1 import (
    Architecture,
    DraftQuantization,
    DType,
    KVCacheDType,
    Method,
    Quantization,
    RolloutStrategy,
    SpeculativeInferenceSpec,
    parse_parameter_count,
)
from specops.vllm.dialect import DRAFT_TP_MUST_MATCH_SINCE, parse_version

# Rules of thumb (docs/domain.md#memory).
DRAFT_VRAM_SHARE_LIMIT = 0.15
TARGET_VRAM_SHARE_LIMIT = 0.70
# "About 1:8 to 1:12": warn outside 1:7 .. 1:14 so the well-known pairs (8B->70B is 1:8.8,
# 7B->72B is 1:9.6) pass and 13B->70B (1:5.4) or 1B->70B (1:57) do not.
SIZE_RATIO_MIN = 7.0
SIZE_RATIO_MAX = 14.0
# A draft that costs more than this share of concurrent sequences is worth a warning.
CONCURRENCY_COST_WARN = 0.10
# vLLM defaults max_model_len to the model's own context (128K for Llama 3.1); figures assume this.
ASSUMED_MAX_MODEL_LEN = 8192
# Far beyond any GPU, context or model shape; past them the figures overflow floating point.
MAX_GPU_MEMORY_GIB = 4096.0
MAX_MODEL_LEN = 2**24
MAX_ARCHITECTURE = {"layers": 4096, "kvHeads": 4096, "headDim": 65536}

_QUANT_BYTES = {
    Quantization.FP8: 1.0,
    Quantization.INT8: 1.0,
    Quantization.AWQ: 0.5,
    Quantization.GPTQ: 0.5,
    Quantization.BITSANDBYTES: 0.5,
}
_DRAFT_QUANT_BYTES = {
    DraftQuantization.FP8: 1.0,
    DraftQuantization.AWQ: 0.5,
    DraftQuantization.GPTQ: 0.5,
}
_DTYPE_BYTES = {DType.AUTO: 2.0, DType.BFLOAT16: 2.0, DType.FLOAT16: 2.0, DType.FLOAT32: 4.0}

F_TARGET = "spec.target"
F_DRAFT = "spec.speculation.draft"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Figures for one model after catalog lookup and overrides; None where unknown."""

    name: str
    parameters: int | None
    tokenizer: str | None
    kv_elements_per_token: int | None
    info: ModelInfo | None
    # The shape, where known: how the KV cache splits over tensor-parallel GPUs depends on it.
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    latent_per_layer: int | None = None  # DeepSeek's latent cache: one vector per layer, not split

    def kv_elements_per_token_on(self, tensor_parallel_size: int) -> int | None:
        """KV cache elements one token takes over ``tensor_parallel_size`` GPUs, as vLLM stores it:
        heads split over the GPUs but never below one per GPU (fewer KV heads than GPUs are
        replicated), and a latent cache held whole on every GPU (docs/domain.md#memory)."""
        tp = max(1, tensor_parallel_size)
        if self.layers is None:
            return self.kv_elements_per_token
        if self.latent_per_layer is not None:
            return tp * self.layers * self.latent_per_layer
        if self.kv_heads is None or self.head_dim is None:
            return self.kv_elements_per_token
        return tp * self.layers * 2 * max(1, self.kv_heads // tp) * self.head_dim


@dataclass(frozen=True, slots=True)
class BudgetPlan(HasFindings):
    """The per-replica memory plan, with the findings that came from it."""

    findings: tuple[Finding, ...]
    vram_gib: float | None
    target_weights_gib: float | None
    draft_weights_gib: float | None
    kv_cache_gib: float | None
    kv_cache_gib_without_draft: float | None
    draft_share_of_vram: float | None
    size_ratio: float | None
    max_concurrent_sequences: int | None
    max_concurrent_sequences_without_draft: int | None
    max_model_len: int
    extras: dict[str, Any] = field(default_factory=dict)
    hot_swap: HotSwapBudget | None = None  # strategy HotSwap only

    @property
    def fits(self) -> bool:
        return not self.errors


def resolve_model(
    name: str,
    parameters: int | str | None,
    architecture: Architecture | None,
    tokenizer: str | None,
) -> ResolvedModel:
    info = lookup_model(name)
    params = parse_parameter_count(parameters) if parameters is not None else None
    if params is None and info is not None:
        params = info.parameters
    if architecture is not None:
        kv: int | None = architecture.layers * 2 * architecture.kv_heads * architecture.head_dim
        shape: tuple[int | None, int | None, int | None, int | None] = (
            architecture.layers, architecture.kv_heads, architecture.head_dim, None,
        )  # fmt: skip
    else:
        kv = info.kv_elements_per_token if info else None
        shape = (
            (info.layers, info.kv_heads, info.head_dim, info.kv_elements_per_layer) if info else (None,) * 4
        )
    return ResolvedModel(
        name=name,
        parameters=params,
        tokenizer=tokenizer or (info.tokenizer if info else None),
        kv_elements_per_token=kv,
        info=info,
        layers=shape[0],
        kv_heads=shape[1],
        head_dim=shape[2],
        latent_per_layer=shape[3],
    )


def _gib(n_bytes: float) -> float:
    return n_bytes / GIB


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def vram_per_gpu_gib(spec: SpeculativeInferenceSpec) -> float:
    res = spec.resources
    if res.gpu_memory_gib is not None:
        return res.gpu_memory_gib
    assert res.gpu_type is not None  # the model validator requires one of the two
    return GPUS[res.gpu_type].memory_gib


def _out_of_range(spec: SpeculativeInferenceSpec) -> list[Finding]:
    """Sizes no hardware or model has: refused before any arithmetic on them."""
    out = []
    gib = spec.resources.gpu_memory_gib
    if gib is not None and not gib <= MAX_GPU_MEMORY_GIB:
        out.append(
            error(
                "OutOfRange",
                "spec.resources.gpuMemoryGiB",
                f"{gib:g} GiB is not the memory of one GPU; at most {MAX_GPU_MEMORY_GIB:g}",
            )
        )
    max_len = spec.target.max_model_len
    if max_len is not None and max_len > MAX_MODEL_LEN:
        out.append(
            error("OutOfRange", f"{F_TARGET}.maxModelLen", f"{max_len} tokens: at most {MAX_MODEL_LEN}")
        )
    draft = spec.speculation.draft
    archs = ((F_TARGET, spec.target.architecture), (F_DRAFT, draft.architecture if draft else None))
    for where, arch in archs:
        if arch is None:
            continue
        values = {"layers": arch.layers, "kvHeads": arch.kv_heads, "headDim": arch.head_dim}
        for key, value in values.items():
            if value > MAX_ARCHITECTURE[key]:
                out.append(
                    error(
                        "OutOfRange",
                        f"{where}.architecture.{key}",
                        f"{value} is beyond any model; at most {MAX_ARCHITECTURE[key]}",
                    )
                )
    return out


def plan_budget(spec: SpeculativeInferenceSpec) -> BudgetPlan:
    """Memory plan and pairing checks for one replica of ``spec``."""
    out_of_range = _out_of_range(spec)
    if out_of_range:
        return BudgetPlan(
            findings=tuple(out_of_range),
            vram_gib=None,
            target_weights_gib=None,
            draft_weights_gib=None,
            kv_cache_gib=None,
            kv_cache_gib_without_draft=None,
            draft_share_of_vram=None,
            size_ratio=None,
            max_concurrent_sequences=None,
            max_concurrent_sequences_without_draft=None,
            max_model_len=spec.target.max_model_len or ASSUMED_MAX_MODEL_LEN,
        )
    findings: list[Finding] = []
    target_spec = spec.target
    spec_cfg = spec.speculation
    tp = target_spec.tensor_parallel_size
    gpus = spec.resources.gpus_per_replica
    util = spec.resources.gpu_memory_utilization

    target = resolve_model(
        target_spec.model, target_spec.parameters, target_spec.architecture, target_spec.tokenizer
    )
    if target.parameters is None:
        findings.append(
            error(
                "UnknownModel",
                f"{F_TARGET}.parameters",
                f"target {target_spec.model!r} is not in the catalog; set spec.target.parameters "
                "(e.g. '70.6B') and spec.target.architecture {layers, kvHeads, headDim}",
            )
        )

    draft: ResolvedModel | None = None
    if spec_cfg.draft is not None:
        d = spec_cfg.draft
        draft = resolve_model(d.model, d.parameters, d.architecture, d.tokenizer)
        if draft.parameters is None:
            findings.append(
                error(
                    "UnknownModel",
                    f"{F_DRAFT}.parameters",
                    f"draft {d.model!r} is not in the catalog; set spec.speculation.draft.parameters "
                    "(e.g. '8B') and spec.speculation.draft.architecture",
                )
            )

    # ---- pairing -------------------------------------------------------------------------------
    draft_tp = tp
    if spec_cfg.draft is not None and spec_cfg.draft.tensor_parallel_size is not None:
        draft_tp = spec_cfg.draft.tensor_parallel_size
        if draft_tp not in (1, tp):
            findings.append(
                error(
                    "DraftTensorParallelSize",
                    f"{F_DRAFT}.tensorParallelSize",
                    f"draft tensorParallelSize {draft_tp} must be 1 or the target's "
                    f"tensorParallelSize ({tp}); vLLM accepts nothing else",
                )
            )
            draft_tp = tp
    if gpus < tp:
        findings.append(
            error(
                "TensorParallelExceedsGPUs",
                "spec.resources.gpusPerReplica",
                f"target.tensorParallelSize is {tp} but each replica gets {gpus} GPU(s); "
                f"set resources.gpusPerReplica to {tp}",
            )
        )
    elif gpus > tp:
        findings.append(
            warning(
                "IdleGPUs",
                "spec.resources.gpusPerReplica",
                f"{gpus - tp} of {gpus} GPUs per replica are idle (tensorParallelSize {tp}); "
                f"lower gpusPerReplica or raise tensorParallelSize",
            )
        )

    if draft is not None and spec_cfg.method in (Method.DRAFT_MODEL, Method.EAGLE, Method.EAGLE3):
        if target.tokenizer and draft.tokenizer and target.tokenizer != draft.tokenizer:
            findings.append(
                error(
                    "TokenizerMismatch",
                    f"{F_DRAFT}.model",
                    f"draft {draft.name!r} uses the {draft.tokenizer} tokenizer, the target uses "
                    f"{target.tokenizer}; speculation needs one vocabulary: pick a draft of the "
                    "target's family",
                )
            )
        elif not (target.tokenizer and draft.tokenizer):
            findings.append(
                warning(
                    "TokenizerUnverified",
                    f"{F_DRAFT}.tokenizer",
                    "cannot check that draft and target share a tokenizer (a model is outside "
                    "the catalog); set spec.target.tokenizer and spec.speculation.draft.tokenizer",
                )
            )

    if spec_cfg.method is Method.MTP and target.info is not None and not target.info.has_mtp:
        findings.append(
            error(
                "MethodUnsupportedByModel",
                "spec.speculation.method",
                f"{target_spec.model!r} has no multi-token-prediction layers; use draft_model, "
                "eagle or ngram instead of mtp",
            )
        )

    size_ratio: float | None = None
    if spec_cfg.method is Method.DRAFT_MODEL and draft is not None and draft.parameters and target.parameters:
        size_ratio = target.parameters / draft.parameters
        if size_ratio < SIZE_RATIO_MIN:
            findings.append(
                warning(
                    "SizeRatioOutOfRange",
                    f"{F_DRAFT}.model",
                    f"draft is 1:{size_ratio:.1f} of the target: too large, each draft step costs "
                    "too much; aim for about 1:8 to 1:12 (e.g. 8B for a 70B target)",
                )
            )
        elif size_ratio > SIZE_RATIO_MAX:
            findings.append(
                warning(
                    "SizeRatioOutOfRange",
                    f"{F_DRAFT}.model",
                    f"draft is 1:{size_ratio:.0f} of the target: too small, it will draft weakly "
                    "(low acceptance); aim for about 1:8 to 1:12 (e.g. 8B for a 70B target)",
                )
            )

    if target_spec.quantization is not Quantization.NONE:
        findings.append(
            warning(
                "QuantizedTarget",
                "spec.target.quantization",
                f"a target quantized to {target_spec.quantization.value} drifts from the "
                "distribution the draft imitates and lowers acceptance; compare acceptance before "
                "and after, prefer INT8 over INT4 for the target, and quantize the draft instead "
                "where memory is short",
            )
        )

    # ---- memory --------------------------------------------------------------------------------
    per_gpu = vram_per_gpu_gib(spec)
    used_gpus = min(gpus, tp)
    vram = per_gpu * gpus
    dtype_bytes = _DTYPE_BYTES[target_spec.dtype]
    target_bpp = _QUANT_BYTES.get(target_spec.quantization, dtype_bytes)
    target_w = _gib(target.parameters * target_bpp) if target.parameters else None

    draft_w: float | None = 0.0
    if draft is not None:
        assert spec_cfg.draft is not None
        draft_bpp = _DRAFT_QUANT_BYTES.get(spec_cfg.draft.quantization, dtype_bytes)
        draft_w = _gib(draft.parameters * draft_bpp) if draft.parameters else None

    kv_dtype_bytes = 1.0 if target_spec.kv_cache_dtype is KVCacheDType.FP8 else dtype_bytes
    max_len = target_spec.max_model_len or ASSUMED_MAX_MODEL_LEN
    if target_spec.max_model_len is None:
        findings.append(
            warning(
                "MaxModelLenUnset",
                "spec.target.maxModelLen",
                "vLLM will use the model's full context length, which may not fit; figures assume "
                f"{ASSUMED_MAX_MODEL_LEN} tokens: set spec.target.maxModelLen",
            )
        )

    kv_with = kv_without = None
    seqs_with = seqs_without = None
    draft_share = None
    extras: dict[str, Any] = {}
    if target_w is not None and draft_w is not None:
        usable = per_gpu * util
        target_per_gpu = target_w / used_gpus
        # The draft lives on draft_tp GPUs; vLLM caps every GPU's KV at the fullest one's.
        draft_per_gpu = draft_w / draft_tp if draft_tp > 1 else draft_w
        kv_without = used_gpus * (usable - target_per_gpu)
        kv_with = used_gpus * (usable - target_per_gpu - draft_per_gpu)
        draft_share = draft_w / vram if vram else None
        extras["free_after_weights_gib"] = round(vram - target_w - draft_w, 2)
        # V1 (vLLM >= 0.10) refuses this split outright; validation reports that as an error.
        v1 = parse_version(spec.vllm.version) >= DRAFT_TP_MUST_MATCH_SINCE
        if draft_tp == 1 < used_gpus and draft_w > 0 and not v1:
            findings.append(
                warning(
                    "DraftTensorParallelImbalance",
                    f"{F_DRAFT}.tensorParallelSize",
                    f"a draft on 1 of {used_gpus} GPUs costs {draft_w * used_gpus:.1f} GiB of KV "
                    f"cache, not {draft_w:.1f}: vLLM sizes every GPU's cache by the fullest; set "
                    f"draft.tensorParallelSize to {used_gpus} unless the draft's speed needs 1",
                )
            )

        kv_elems_t = target.kv_elements_per_token_on(used_gpus)
        draft_kv_elems = 0
        if draft is not None and spec_cfg.method is not Method.MEDUSA:
            draft_kv_elems = draft.kv_elements_per_token_on(min(draft_tp, used_gpus)) or 0
        if kv_elems_t is not None:
            per_seq_without = kv_elems_t * kv_dtype_bytes * max_len
            per_seq_with = (kv_elems_t + draft_kv_elems) * kv_dtype_bytes * max_len
            seqs_without = max(0, math.floor(kv_without * GIB / per_seq_without))
            seqs_with = max(0, math.floor(kv_with * GIB / per_seq_with))
        else:
            findings.append(
                warning(
                    "ArchitectureUnknown",
                    f"{F_TARGET}.architecture",
                    "cannot count concurrent sequences without the target's layer shape; set "
                    "spec.target.architecture {layers, kvHeads, headDim}",
                )
            )

        needed = target_w + draft_w
        if kv_without <= 0 or kv_with <= 0:
            findings.append(
                error(
                    "DoesNotFit",
                    "spec.resources",
                    f"weights need {needed:.1f} GiB per replica but vLLM may use "
                    f"{vram * util:.1f} GiB ({gpus} x {per_gpu:g} GiB x {util}): quantize the "
                    "target (target.quantization: int8 or fp8), quantize the draft, or add GPUs "
                    "(resources.gpusPerReplica, target.tensorParallelSize)",
                )
            )
        elif seqs_with is not None and seqs_with < 1:
            findings.append(
                error(
                    "ContextDoesNotFit",
                    "spec.target.maxModelLen",
                    f"{kv_with:.1f} GiB of KV cache cannot hold one {max_len}-token sequence; "
                    "lower spec.target.maxModelLen, set spec.target.kvCacheDtype: fp8, or add GPUs",
                )
            )
        else:
            if draft_share is not None and draft_share > DRAFT_VRAM_SHARE_LIMIT:
                findings.append(
                    warning(
                        "DraftOverVRAMShare",
                        f"{F_DRAFT}.model",
                        f"draft weights are {draft_share:.0%} of GPU memory (rule of thumb: at most "
                        f"{DRAFT_VRAM_SHARE_LIMIT:.0%}); quantize the draft or pick a smaller one",
                    )
                )
            target_share = target_w / vram
            if target_share > TARGET_VRAM_SHARE_LIMIT and draft_w > 0:
                findings.append(
                    warning(
                        "TargetOverVRAMShare",
                        f"{F_TARGET}.quantization",
                        f"target weights are {target_share:.0%} of GPU memory (over "
                        f"{TARGET_VRAM_SHARE_LIMIT:.0%}): the draft will cut concurrency hard; "
                        "quantize the target or add GPUs",
                    )
                )
            if seqs_with is not None and seqs_without:
                cost = 1 - seqs_with / seqs_without
                extras["concurrency_cost"] = round(cost, 4)
                if cost > CONCURRENCY_COST_WARN:
                    findings.append(
                        warning(
                            "DraftConcurrencyCost",
                            f"{F_DRAFT}.model",
                            f"the draft costs {cost:.0%} of concurrent sequences "
                            f"({seqs_without} -> {seqs_with} at {max_len} tokens); under load "
                            "the baseline pool serves more requests per GPU",
                        )
                    )

    hot_swap = None
    if spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP and target_w and draft_w is not None:
        draft_per_gpu_w = draft_w / draft_tp if draft_tp > 1 else draft_w
        hot_swap = plan_hot_swap(
            spec,
            gpus=used_gpus,
            per_gpu_gib=per_gpu,
            target_weights_gib=target_w,
            draft_weights_gib=draft_w,
            draft_weights_per_gpu_gib=draft_per_gpu_w,
            sequences=(seqs_with, seqs_without),
        )
        findings += hot_swap.findings

    return BudgetPlan(
        findings=tuple(findings),
        vram_gib=_r(vram),
        target_weights_gib=_r(target_w),
        draft_weights_gib=_r(draft_w),
        kv_cache_gib=_r(kv_with),
        kv_cache_gib_without_draft=_r(kv_without),
        draft_share_of_vram=_r(draft_share, 4),
        size_ratio=_r(size_ratio),
        max_concurrent_sequences=seqs_with,
        max_concurrent_sequences_without_draft=seqs_without,
        max_model_len=max_len,
        extras=extras,
        hot_swap=hot_swap,
    )


# ------------------------------------------------------------------------------------ hot swap

# What a sleeping engine keeps on each GPU (level 1 frees weights and KV cache, not the CUDA context
# nor the CUDA graphs): a line through two reported figures, about 1.2 GiB for a 3B model (6 GiB of
# BF16 weights on one GPU) and "several GiB per GPU" for very large models, read as 4 GiB for 55 GiB
# of weights per GPU (Qwen3-235B-A22B-FP8 on 4 GPUs).  docs/domain.md#switching.
SLEEP_RESIDUAL_BASE_GIB = 0.85
SLEEP_RESIDUAL_PER_WEIGHT_GIB = 0.057
F_UTIL = "spec.resources.gpuMemoryUtilization"
F_STRATEGY = "spec.rollout.strategy"
F_HOST_MEMORY = "spec.resources.memory"
_BYTE_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?\s*$")


def sleeping_residual_gib(weights_per_gpu_gib: float) -> float:
    """GPU memory per GPU that a level-1 sleeping engine with these weights per GPU still holds."""
    return SLEEP_RESIDUAL_BASE_GIB + SLEEP_RESIDUAL_PER_WEIGHT_GIB * weights_per_gpu_gib


def quantity_gib(text: str) -> float | None:
    """A Kubernetes memory quantity ('64Gi', '70G', '1.5Ti') in GiB; None when not one."""
    m = _BYTES.match(text)
    if not m:
        return None
    return float(m.group(1)) * _BYTE_SUFFIX[m.group(2) or ""] / GIB


@dataclass(frozen=True, slots=True)
class EngineShare:
    """One engine of a hot-swap pod: its --gpu-memory-utilization and what it holds."""

    gpu_memory_utilization: float
    weights_per_gpu_gib: float
    sleeping_residual_gib: float  # per GPU, while asleep
    other_residual_gib: float  # per GPU: what the other engine holds asleep beside it
    kv_cache_gib: float  # per replica, while awake
    max_concurrent_sequences: int | None
    host_memory_asleep_gib: float  # per replica: its weights, offloaded while asleep


@dataclass(frozen=True, slots=True)
class HotSwapBudget(HasFindings):
    """Both engines of a hot-swap pod on the same GPUs, one asleep (sleep level 1).

    Per GPU, an awake engine may use its share (``utilization x GPU``, vLLM's requested memory: it
    sizes its KV cache to fill it) while the other sleeps beside it, so each share is capped at
    ``1 - residual(other) / GPU``.  The same bound lets the second engine start: it starts while
    the first sleeps, and vLLM refuses to start with less free memory than its share.  Host RAM
    peaks mid-swap, when the awake engine has gone to sleep and the other has not woken yet: both
    engines' weights (target twice, draft once).  Process memory outside the weights is not counted.
    """

    findings: tuple[Finding, ...]
    speculative: EngineShare
    baseline: EngineShare
    host_memory_peak_gib: float  # per replica

    def as_dict(self) -> dict[str, Any]:
        def engine(e: EngineShare) -> dict[str, Any]:
            return {
                "gpu_memory_utilization": e.gpu_memory_utilization,
                "weights_per_gpu_gib": round(e.weights_per_gpu_gib, 2),
                "sleeping_residual_gib_per_gpu": round(e.sleeping_residual_gib, 2),
                "kv_cache_gib": round(e.kv_cache_gib, 2),
                "max_concurrent_sequences": e.max_concurrent_sequences,
                "host_memory_asleep_gib": round(e.host_memory_asleep_gib, 2),
            }

        return {
            "speculative": engine(self.speculative),
            "baseline": engine(self.baseline),
            "host_memory_peak_gib": round(self.host_memory_peak_gib, 2),
        }


def _share_cap(per_gpu_gib: float, other_residual_gib: float) -> float:
    """The largest share (two decimals, rounded down) that leaves room for the other's residual."""
    return math.floor((1 - other_residual_gib / per_gpu_gib) * 100) / 100


def plan_hot_swap(
    spec: SpeculativeInferenceSpec,
    *,
    gpus: int,
    per_gpu_gib: float,
    target_weights_gib: float,
    draft_weights_gib: float,
    draft_weights_per_gpu_gib: float,
    sequences: tuple[int | None, int | None],
) -> HotSwapBudget:
    """Each engine's share, KV cache and host RAM in a hot-swap pod, with what cannot work.

    ``sequences``: the speculative and baseline pods' concurrency at the resource's own share, which
    the engines' concurrency is scaled from (both come from the same KV bytes per sequence)."""
    util = spec.resources.gpu_memory_utilization
    base_w = target_weights_gib / gpus
    spec_w = base_w + draft_weights_per_gpu_gib
    residual = {"spec": sleeping_residual_gib(spec_w), "base": sleeping_residual_gib(base_w)}
    findings: list[Finding] = []

    def share(weights: float, other: str, seqs_at_util: int | None, host: float, what: str) -> EngineShare:
        cap = _share_cap(per_gpu_gib, residual[other])
        u = min(util, cap)
        if u < util:
            findings.append(
                warning(
                    "HotSwapShareLowered",
                    F_UTIL,
                    f"the {what} engine runs at --gpu-memory-utilization {u:g}, not {util:g}, so the "
                    f"other engine's {residual[other]:.1f} GiB per GPU (its CUDA context and graphs "
                    f"while asleep) fits beside it",
                )
            )
        kv = gpus * (u * per_gpu_gib - weights)
        kv_at_util = gpus * (util * per_gpu_gib - weights)
        seqs = None
        if seqs_at_util is not None and kv_at_util > 0:
            seqs = max(0, math.floor(seqs_at_util * max(kv, 0.0) / kv_at_util))
        return EngineShare(
            gpu_memory_utilization=u,
            weights_per_gpu_gib=weights,
            sleeping_residual_gib=residual["spec" if other == "base" else "base"],
            other_residual_gib=residual[other],
            kv_cache_gib=kv,
            max_concurrent_sequences=seqs,
            host_memory_asleep_gib=host,
        )

    speculative = share(spec_w, "base", sequences[0], target_weights_gib + draft_weights_gib, "speculative")
    baseline = share(base_w, "spec", sequences[1], target_weights_gib, "baseline")
    for what, engine in (("speculative", speculative), ("baseline", baseline)):
        if engine.kv_cache_gib <= 0 or engine.max_concurrent_sequences == 0:
            problem = (
                "cannot hold its weights"
                if engine.kv_cache_gib <= 0
                else "leaves no KV cache for one sequence"
            )
            findings.append(
                error(
                    "HotSwapDoesNotFit",
                    F_STRATEGY,
                    f"with both engines on each GPU the {what} engine gets "
                    f"{engine.gpu_memory_utilization:g} of {per_gpu_gib:g} GiB per GPU beside the "
                    f"other's {engine.other_residual_gib:.1f} GiB asleep, which {problem} "
                    f"({engine.weights_per_gpu_gib:.1f} GiB of weights per GPU): quantize the target "
                    "or the draft, add GPUs (resources.gpusPerReplica, "
                    "target.tensorParallelSize), or use strategy Restart or Surge",
                )
            )
    peak = 2 * target_weights_gib + draft_weights_gib
    limit_text = spec.resources.memory
    if limit_text:
        limit = quantity_gib(limit_text)
        needed = speculative.host_memory_asleep_gib
        if limit is not None and limit < needed:
            findings.append(
                error(
                    "HostMemoryTooSmall",
                    F_HOST_MEMORY,
                    f"each engine container gets {limit_text} of host memory, but the speculative "
                    f"engine asleep holds {needed:.1f} GiB of weights (target and draft) in it: set "
                    f"spec.resources.memory to at least {math.ceil(needed + 8)}Gi (weights plus the "
                    "process), or use strategy Restart or Surge",
                )
            )
    return HotSwapBudget(
        findings=tuple(findings), speculative=speculative, baseline=baseline, host_memory_peak_gib=peak
    )

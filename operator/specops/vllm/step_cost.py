"""What one vLLM decode step costs, with and without drafting (pure; docs/speculation-table.md).

A forward pass of one GPU's shard of a model, over ``batch`` sequences that each add ``n`` tokens
(1 for plain decode, ``k + 1`` to verify ``k`` draft tokens) on ``context`` cached tokens, takes

    T = layers x (t_layer + [n > 1] x t_verify) + (M^p + C^p)^(1/p)

* ``M`` is the memory time: the shard's weights plus the KV cache the batch attends to, over the
  GPU's effective HBM bandwidth.  It does not grow with ``n``: at small batch, verifying ``k + 1``
  positions costs about as much as generating one.
* ``C`` is the compute time: ``batch x n`` tokens times 2 FLOP per parameter of the shard, over the
  GPU's effective dense 16-bit throughput.  At large batch it dominates, and every draft position
  costs as much as a real token.
* ``(M^p + C^p)^(1/p)`` is a smooth maximum: the two overlap, imperfectly, near the turn.
* ``t_layer`` is a fixed cost per layer (kernel launches, small-kernel inefficiency); ``t_verify``
  the extra per layer of the multi-position path, measured at about 5% of a small-batch step.

The constants (``STEP_CONSTANTS``) were fitted to measured step times of Llama-3.1-8B shapes on one
H200 (tensor parallel 1 and 2, batch 1-256, 1-6 new tokens, 2,048 cached tokens): the hardware floor
of a step, without vLLM's scheduler, sampler or tensor-parallel all-reduce.  Other GPUs scale the
same efficiencies by their data-sheet peaks (``GPU_PERFORMANCE``).

A step with ``k`` draft tokens is the target's pass with ``n = k + 1`` plus the proposer's work: a
draft model or an EAGLE/MTP head runs ``k`` passes of one token per sequence (Medusa one pass), and
prompt lookup (n-gram, suffix) costs no GPU time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specops.api.catalog import GIB
from specops.api.v1alpha1 import KVCacheDType, Method, SpeculativeInferenceSpec
from specops.vllm.budget import plan_budget, resolve_model


@dataclass(frozen=True, slots=True)
class GPUPerformance:
    """Data-sheet peaks of one GPU: HBM bandwidth and dense (no sparsity) 16-bit tensor FLOP/s."""

    key: str
    hbm_bytes_per_s: float
    dense_flops_per_s: float


# Vendor data sheets, dense BF16 tensor throughput (the "with sparsity" figures are twice these).
# The A10G has no data sheet of its own: the A10's figures.
GPU_PERFORMANCE: dict[str, GPUPerformance] = {
    g.key: g
    for g in (
        GPUPerformance("A10G-24GB", 600e9, 125e12),
        GPUPerformance("L4-24GB", 300e9, 121e12),
        GPUPerformance("L40S-48GB", 864e9, 362e12),
        GPUPerformance("A100-40GB", 1555e9, 312e12),
        GPUPerformance("A100-80GB", 2039e9, 312e12),
        GPUPerformance("H100-80GB", 3350e9, 989e12),
        GPUPerformance("H100-94GB", 3900e9, 835e12),
        GPUPerformance("H200-141GB", 4800e9, 989e12),
        GPUPerformance("B200-180GB", 8000e9, 2250e12),
        GPUPerformance("MI300X-192GB", 5300e9, 1307e12),
    )
}
# A resource that gives only gpuMemoryGiB is costed as this GPU (and `specops plan` says so).
FALLBACK_GPU = "H100-80GB"


@dataclass(frozen=True, slots=True)
class StepConstants:
    """The fitted constants of the step model (see the module docstring and
    docs/speculation-table.md for the fit and how far it is from the measurements)."""

    # Shares of the data-sheet peaks a decode step reaches (H200: 4.47 TB/s, 6.0e14 FLOP/s).
    bandwidth_efficiency: float = 0.93
    compute_efficiency: float = 0.61
    # Fixed seconds per decoder layer per pass, and extra per layer when a pass verifies drafts.
    layer_seconds: float = 67.3e-6
    verify_layer_seconds: float = 6.7e-6
    # Exponent of the smooth maximum of memory and compute time (large: a hard maximum).
    overlap_exponent: float = 1.74


STEP_CONSTANTS = StepConstants()


@dataclass(frozen=True, slots=True)
class Shard:
    """One GPU's share of a model: what a pass streams and computes on that GPU."""

    layers: int
    weight_bytes: float
    flops_per_token: float
    kv_bytes_per_token: float


def pass_seconds(
    shard: Shard,
    gpu: GPUPerformance,
    batch: int,
    tokens_per_sequence: int,
    context_tokens: int,
    c: StepConstants = STEP_CONSTANTS,
) -> float:
    """One forward pass of ``shard`` over ``batch`` sequences adding ``tokens_per_sequence`` each."""
    bandwidth = gpu.hbm_bytes_per_s * c.bandwidth_efficiency
    flops = gpu.dense_flops_per_s * c.compute_efficiency
    memory = (shard.weight_bytes + batch * context_tokens * shard.kv_bytes_per_token) / bandwidth
    compute = batch * tokens_per_sequence * shard.flops_per_token / flops
    p = c.overlap_exponent
    fixed = shard.layers * (c.layer_seconds + (c.verify_layer_seconds if tokens_per_sequence > 1 else 0.0))
    return fixed + float((memory**p + compute**p) ** (1.0 / p))


@dataclass(frozen=True, slots=True)
class StepCostModel:
    """Decode step time of one engine at a batch size, for every k (0: a plain step)."""

    target: Shard
    gpu: GPUPerformance
    proposer: Shard | None = None  # None: prompt lookup, no GPU pass
    single_pass: bool = False  # the proposer drafts all k tokens in one pass (Medusa), not k passes
    context_tokens: int = 1024
    constants: StepConstants = field(default=STEP_CONSTANTS)

    def step_seconds(self, batch: int, k: int) -> float:
        """A decode step of ``batch`` sequences each verifying ``k`` draft tokens."""
        t = pass_seconds(self.target, self.gpu, batch, k + 1, self.context_tokens, self.constants)
        if k > 0 and self.proposer is not None:
            passes = 1 if self.single_pass else k
            t += passes * pass_seconds(self.proposer, self.gpu, batch, 1, self.context_tokens, self.constants)
        return t


# The mean context of a running sequence the table is derived for.  The step's memory time grows
# with it (the KV cache read), so a longer context turns compute-bound later.
DEFAULT_CONTEXT_TOKENS = 1024


def step_cost_model(
    spec: SpeculativeInferenceSpec, context_tokens: int = DEFAULT_CONTEXT_TOKENS
) -> StepCostModel | None:
    """The step model of ``spec``'s speculative pod; None when a model's size or shape is unknown."""
    plan = plan_budget(spec)
    t = spec.target
    target = resolve_model(t.model, t.parameters, t.architecture, t.tokenizer)
    layers = t.architecture.layers if t.architecture else (target.info.layers if target.info else None)
    if target.parameters is None or plan.target_weights_gib is None or target.kv_elements_per_token is None:
        return None
    if layers is None:
        return None
    kv_bytes = 1.0 if t.kv_cache_dtype is KVCacheDType.FP8 else 2.0
    tp = t.tensor_parallel_size
    target_shard = Shard(
        layers=layers,
        weight_bytes=plan.target_weights_gib * GIB / tp,
        flops_per_token=2.0 * target.parameters / tp,
        kv_bytes_per_token=target.kv_elements_per_token * kv_bytes / tp,
    )
    gpu = GPU_PERFORMANCE[spec.resources.gpu_type or FALLBACK_GPU]
    s = spec.speculation
    proposer: Shard | None = None
    if s.method is Method.MTP:
        # The model's own multi-token-prediction layer: about one decoder layer of the target.
        proposer = Shard(
            layers=1,
            weight_bytes=target_shard.weight_bytes / layers,
            flops_per_token=target_shard.flops_per_token / layers,
            kv_bytes_per_token=target_shard.kv_bytes_per_token / layers,
        )
    elif s.draft is not None:
        d = s.draft
        draft = resolve_model(d.model, d.parameters, d.architecture, d.tokenizer)
        d_layers = d.architecture.layers if d.architecture else (draft.info.layers if draft.info else None)
        if draft.parameters is None or plan.draft_weights_gib is None or d_layers is None:
            return None
        d_tp = d.tensor_parallel_size or tp
        proposer = Shard(
            layers=d_layers,
            weight_bytes=plan.draft_weights_gib * GIB / d_tp,
            flops_per_token=2.0 * draft.parameters / d_tp,
            # Medusa heads keep no KV cache of their own.
            kv_bytes_per_token=0.0
            if s.method is Method.MEDUSA
            else (draft.kv_elements_per_token or 0) * kv_bytes / d_tp,
        )
    return StepCostModel(
        target=target_shard,
        gpu=gpu,
        proposer=proposer,
        single_pass=s.method is Method.MEDUSA,
        context_tokens=context_tokens,
    )

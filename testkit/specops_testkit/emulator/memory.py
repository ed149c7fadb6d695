"""GPU memory as vLLM sizes it at start-up: the emulator's own accounting (pure).

Written from what vLLM does, not from the operator's ``specops.vllm.budget``: the emulator is what
the operator's figures are tested against, so a mistake in the budget must not be copied into the
test world (an import-linter contract keeps the two apart; a unit test holds them within a stated
tolerance of each other).  Model figures (parameters, layers, KV heads, head size) come from
``specops.api.catalog`` or are given explicitly.  docs/emulator.md, "Memory", says where each rule
comes from.

Per GPU, for the fullest one (vLLM gives every GPU of a pod the same number of KV blocks, the
smallest any of them can hold):

* **weights**: parameters x bytes per parameter (BF16/FP16 2, FP8/INT8 1, AWQ/GPTQ/bitsandbytes 0.5),
  split over the tensor parallel size; a draft at tensor parallel 1 sits whole on the first GPU;
* **reserve**: the profile run's activation peak (grows with ``max_num_batched_tokens``), the
  memory outside PyTorch (CUDA context, NCCL buffers: more with more GPUs), and from vLLM 0.21.0
  the CUDA graphs' estimated memory (none with ``--enforce-eager``);
* **KV cache** = total x ``gpu_memory_utilization`` - weights - reserve, cut into blocks of 16
  tokens; a token costs 2 (K and V) x layers x KV heads on this GPU x head size x bytes per
  element, the draft's layers included (one pool serves both); KV heads are split over the tensor
  parallel size but never below one per GPU; a latent-attention cache (DeepSeek's MLA) is not
  split: every GPU holds all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from specops.api.catalog import GIB, GPUS, ModelInfo
from specops.api.v1alpha1 import DType, GPUResources, KVCacheDType, Quantization

BLOCK_SIZE = 16  # vLLM's default --block-size on GPUs
# The profile run's activation peak per GPU, linear in the tokens of its dummy batch: about 1.3 GiB
# at 2,048 tokens (V0-era logs: 0.4-1.4 GiB) and 4.3 GiB at 8,192 (V1 on large GPUs: 2.3-5.6 GiB).
ACTIVATION_BASE_GIB = 0.25
ACTIVATION_GIB_PER_BATCHED_TOKEN = 0.5 / 1024
# Memory outside PyTorch per GPU: CUDA context alone, plus NCCL's buffers with tensor parallelism
# (measured 0.13 GiB at TP 1, 0.55 at TP 2, 2.1 at TP 8).
NON_TORCH_GIB_ALONE = 0.13
NON_TORCH_GIB_TP2 = 0.55
NON_TORCH_GIB_PER_FURTHER_GPU = 0.25
# From 0.21.0 vLLM estimates the CUDA graphs' memory before sizing the KV cache and takes it off;
# before, graphs were captured afterwards, on top of the utilization share.  Logged estimates for
# dense models are a few hundred MiB per GPU.
CUDA_GRAPHS_COUNTED_SINCE = (0, 21, 0)
CUDA_GRAPH_GIB = 0.5

WEIGHT_BYTES_PER_PARAMETER: dict[Quantization, float] = {
    Quantization.FP8: 1.0,
    Quantization.INT8: 1.0,
    Quantization.AWQ: 0.5,
    Quantization.GPTQ: 0.5,
    Quantization.BITSANDBYTES: 0.5,
}
DTYPE_BYTES: dict[DType, float] = {
    DType.AUTO: 2.0,  # the checkpoint's 16-bit type (vLLM serves FP32 checkpoints in 16 bits)
    DType.BFLOAT16: 2.0,
    DType.FLOAT16: 2.0,
    DType.FLOAT32: 4.0,
}


def weight_bytes_per_parameter(quantization: Quantization, dtype: DType) -> float:
    return WEIGHT_BYTES_PER_PARAMETER.get(quantization, DTYPE_BYTES[dtype])


def kv_bytes_per_element(kv_cache_dtype: KVCacheDType, dtype: DType) -> float:
    """``--kv-cache-dtype auto`` stores the cache in the model's dtype, ``fp8`` in one byte."""
    return 1.0 if kv_cache_dtype is KVCacheDType.FP8 else DTYPE_BYTES[dtype]


def gpu_memory_gib(resources: GPUResources) -> float:
    """The memory of one GPU as a pod of these resources sees it (the pod runner's rule)."""
    if resources.gpu_memory_gib is not None:
        return resources.gpu_memory_gib
    if resources.gpu_type is None:
        raise ValueError("spec.resources needs gpuType or gpuMemoryGiB")
    return GPUS[resources.gpu_type].memory_gib


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What memory needs to know of one model."""

    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    # A latent-attention cache's elements per token per layer (K and V in one vector, not split
    # over GPUs); None for ordinary attention.
    latent_kv_elements: int | None = None

    @classmethod
    def of(cls, info: ModelInfo) -> ModelShape:
        return cls(info.parameters, info.layers, info.kv_heads, info.head_dim, info.kv_elements_per_layer)

    def layer(self) -> ModelShape:
        """One decoder layer of this model (a multi-token-prediction module is about that)."""
        per_layer = self.parameters // self.layers
        return ModelShape(per_layer, 1, self.kv_heads, self.head_dim, self.latent_kv_elements)

    def kv_elements_per_token(self, tensor_parallel_size: int) -> int:
        """KV cache elements one token takes on one GPU of ``tensor_parallel_size``."""
        if self.latent_kv_elements is not None:
            return self.layers * self.latent_kv_elements
        heads = max(1, self.kv_heads // tensor_parallel_size)
        return self.layers * 2 * heads * self.head_dim


@dataclass(frozen=True, slots=True)
class Proposer:
    """A proposer with weights of its own: a draft model, an EAGLE/Medusa head, an MTP module."""

    shape: ModelShape
    bytes_per_parameter: float
    tensor_parallel_size: int
    has_kv_cache: bool = True  # Medusa heads attend to nothing of their own


@dataclass(frozen=True, slots=True)
class MemoryInputs:
    gpu_memory_gib: float
    gpu_memory_utilization: float
    tensor_parallel_size: int
    target: ModelShape
    bytes_per_parameter: float
    kv_bytes_per_element: float
    max_model_len: int
    max_num_batched_tokens: int
    proposer: Proposer | None = None
    cuda_graphs_counted: bool = False


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Figures per GPU (the fullest), as vLLM's start-up log gives them, and per pod."""

    inputs: MemoryInputs
    usable_gib: float  # total x gpu_memory_utilization
    target_weights_gib: float
    proposer_weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    kv_cache_gib: float  # what is left for the cache on this GPU; negative: nothing is
    kv_bytes_per_token: float  # on this GPU, the proposer's layers included
    num_blocks: int

    @property
    def reserve_gib(self) -> float:
        return self.activation_gib + self.non_torch_gib + self.cuda_graph_gib

    @property
    def weights_gib(self) -> float:
        return self.target_weights_gib + self.proposer_weights_gib

    @property
    def kv_tokens(self) -> int:
        """vLLM's "GPU KV cache size: N tokens": the pool every running sequence draws from."""
        return self.num_blocks * BLOCK_SIZE

    @property
    def max_concurrency(self) -> float:
        """vLLM's "Maximum concurrency for max_model_len tokens per request"."""
        return self.kv_tokens / self.inputs.max_model_len

    @property
    def max_concurrent_sequences(self) -> int:
        return self.kv_tokens // self.inputs.max_model_len

    @property
    def pod_kv_cache_gib(self) -> float:
        """KV cache over all the pod's GPUs, each capped at the fullest one's."""
        return max(0.0, self.kv_cache_gib) * self.inputs.tensor_parallel_size

    @property
    def pod_reserve_gib(self) -> float:
        return self.reserve_gib * self.inputs.tensor_parallel_size


def activation_gib(max_num_batched_tokens: int) -> float:
    return ACTIVATION_BASE_GIB + ACTIVATION_GIB_PER_BATCHED_TOKEN * max_num_batched_tokens


def non_torch_gib(tensor_parallel_size: int) -> float:
    if tensor_parallel_size == 1:
        return NON_TORCH_GIB_ALONE
    return NON_TORCH_GIB_TP2 + NON_TORCH_GIB_PER_FURTHER_GPU * (tensor_parallel_size - 2)


def plan_memory(inputs: MemoryInputs) -> MemoryPlan:
    """Size the pod's memory the way vLLM does at start-up."""
    tp = inputs.tensor_parallel_size
    target_w = inputs.target.parameters * inputs.bytes_per_parameter / tp / GIB
    kv_elements = inputs.target.kv_elements_per_token(tp)
    proposer_w = 0.0
    p = inputs.proposer
    if p is not None:
        # A proposer at tensor parallel 1 under a sharded target lives whole on the first GPU.
        proposer_w = p.shape.parameters * p.bytes_per_parameter / p.tensor_parallel_size / GIB
        if p.has_kv_cache:
            kv_elements += p.shape.kv_elements_per_token(p.tensor_parallel_size)
    usable = inputs.gpu_memory_gib * inputs.gpu_memory_utilization
    activation = activation_gib(inputs.max_num_batched_tokens)
    non_torch = non_torch_gib(tp)
    graphs = CUDA_GRAPH_GIB if inputs.cuda_graphs_counted else 0.0
    kv_gib = usable - target_w - proposer_w - activation - non_torch - graphs
    per_token = kv_elements * inputs.kv_bytes_per_element
    blocks = math.floor(kv_gib * GIB / (per_token * BLOCK_SIZE)) if kv_gib > 0 else 0
    return MemoryPlan(
        inputs=inputs,
        usable_gib=usable,
        target_weights_gib=target_w,
        proposer_weights_gib=proposer_w,
        activation_gib=activation,
        non_torch_gib=non_torch,
        cuda_graph_gib=graphs,
        kv_cache_gib=kv_gib,
        kv_bytes_per_token=per_token,
        num_blocks=blocks,
    )


def startup_failure(plan: MemoryPlan, v1: bool) -> str | None:
    """What vLLM says when it cannot start with this memory plan; None when it can."""
    inputs = plan.inputs
    if plan.weights_gib > inputs.gpu_memory_gib:
        return (
            f"CUDA out of memory loading the weights: {plan.weights_gib:.2f} GiB on one GPU of "
            f"{inputs.gpu_memory_gib:g} GiB; raise --tensor-parallel-size or quantize the model"
        )
    if plan.num_blocks <= 0:
        return (
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
            f"initializing the engine. (per GPU: {plan.usable_gib:.2f} GiB usable, weights "
            f"{plan.weights_gib:.2f} GiB, activation and other reserve {plan.reserve_gib:.2f} GiB)"
        )
    if plan.kv_tokens < inputs.max_model_len:
        if v1:
            needed = inputs.max_model_len * plan.kv_bytes_per_token / GIB
            return (
                f"To serve at least one request with the models's max seq len ({inputs.max_model_len}), "
                f"({needed:.2f} GiB KV cache is needed, which is larger than the available KV cache "
                f"memory ({plan.kv_cache_gib:.2f} GiB). Based on the available memory, the estimated "
                f"maximum model length is {plan.kv_tokens}. Try increasing `gpu_memory_utilization` "
                "or decreasing `max_model_len` when initializing the engine."
            )
        return (
            f"The model's max seq len ({inputs.max_model_len}) is larger than the maximum number of "
            f"tokens that can be stored in KV cache ({plan.kv_tokens}). Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
        )
    return None

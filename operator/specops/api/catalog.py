"""Figures for well-known models and GPUs, used by the memory budget and the pairing checks.

Parameter counts are the published totals (model cards / config.json), not the rounded names:
Llama-3.1-70B has 70.6e9 parameters, so its BF16 weights are 141.2 GB = 131.5 GiB.  Architecture
figures (layers, KV heads, head dim) give the KV cache bytes per token; they come from each model's
config.json.  Sliding-window layers (Gemma 2/3, Mistral's older releases) are counted as full
attention, so their concurrency figures are a lower bound.

A model outside this table can still be planned: ``target.parameters`` (and ``architecture``,
``tokenizer``) on the resource supply the figures.  Lookup is by Hugging Face id, tolerant of the
organisation prefix, ``Meta-`` and instruction/quantization suffixes, so
``hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4`` finds ``llama-3.1-70b``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Figures for one model architecture."""

    key: str
    family: str
    tokenizer: str
    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    # Elements of KV cache per token per layer; None means 2 x kv_heads x head_dim (K and V).
    # DeepSeek's multi-head latent attention caches one compressed vector (512 + 64 rope).
    kv_elements_per_layer: int | None = None
    # Speculative heads (EAGLE, EAGLE-3, Medusa) name the target family they were trained for.
    head_for: str | None = None
    # The model carries its own multi-token-prediction layers (method: mtp).
    has_mtp: bool = False

    @property
    def kv_elements_per_token(self) -> int:
        per_layer = self.kv_elements_per_layer or 2 * self.kv_heads * self.head_dim
        return self.layers * per_layer


def _m(
    key: str,
    family: str,
    tokenizer: str,
    params_b: float,
    layers: int,
    kv_heads: int,
    head_dim: int,
    **extra: object,
) -> ModelInfo:
    return ModelInfo(
        key=key,
        family=family,
        tokenizer=tokenizer,
        parameters=round(params_b * 1e9),
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        **extra,  # type: ignore[arg-type]
    )


MODELS: dict[str, ModelInfo] = {
    m.key: m
    for m in (
        # Llama 3.x: one tokenizer (128,256 tokens) across 3.0-3.3 and all sizes.
        _m("llama-3-8b", "llama3", "llama3", 8.03, 32, 8, 128),
        _m("llama-3-70b", "llama3", "llama3", 70.6, 80, 8, 128),
        _m("llama-3.1-8b", "llama3", "llama3", 8.03, 32, 8, 128),
        _m("llama-3.1-70b", "llama3", "llama3", 70.6, 80, 8, 128),
        _m("llama-3.1-405b", "llama3", "llama3", 405.9, 126, 8, 128),
        _m("llama-3.2-1b", "llama3", "llama3", 1.24, 16, 8, 64),
        _m("llama-3.2-3b", "llama3", "llama3", 3.21, 28, 8, 128),
        _m("llama-3.3-70b", "llama3", "llama3", 70.6, 80, 8, 128),
        # Qwen2.5: one tokenizer across sizes (embedding padding differs, vocabulary does not).
        _m("qwen2.5-0.5b", "qwen2.5", "qwen2", 0.49, 24, 2, 64),
        _m("qwen2.5-1.5b", "qwen2.5", "qwen2", 1.54, 28, 2, 128),
        _m("qwen2.5-3b", "qwen2.5", "qwen2", 3.09, 36, 2, 128),
        _m("qwen2.5-7b", "qwen2.5", "qwen2", 7.61, 28, 4, 128),
        _m("qwen2.5-14b", "qwen2.5", "qwen2", 14.7, 48, 8, 128),
        _m("qwen2.5-32b", "qwen2.5", "qwen2", 32.5, 64, 8, 128),
        _m("qwen2.5-72b", "qwen2.5", "qwen2", 72.7, 80, 8, 128),
        # Qwen3 (dense and MoE share one tokenizer).
        _m("qwen3-0.6b", "qwen3", "qwen3", 0.6, 28, 8, 128),
        _m("qwen3-1.7b", "qwen3", "qwen3", 1.7, 28, 8, 128),
        _m("qwen3-4b", "qwen3", "qwen3", 4.0, 36, 8, 128),
        _m("qwen3-8b", "qwen3", "qwen3", 8.2, 36, 8, 128),
        _m("qwen3-14b", "qwen3", "qwen3", 14.8, 40, 8, 128),
        _m("qwen3-32b", "qwen3", "qwen3", 32.8, 64, 8, 128),
        _m("qwen3-30b-a3b", "qwen3", "qwen3", 30.5, 48, 4, 128),
        _m("qwen3-235b-a22b", "qwen3", "qwen3", 235.1, 94, 4, 128),
        # Mistral / Mixtral: v0.1 tokenizer (32,000) vs v3 (32,768) vs Tekken (131,072).
        _m("mistral-7b-v0.1", "mistral", "mistral-v1", 7.24, 32, 8, 128),
        _m("mistral-7b-v0.3", "mistral", "mistral-v3", 7.25, 32, 8, 128),
        _m("mixtral-8x7b-v0.1", "mistral", "mistral-v1", 46.7, 32, 8, 128),
        _m("mixtral-8x22b-v0.1", "mistral", "mistral-v3", 141.0, 56, 8, 128),
        _m("mistral-large-2407", "mistral", "mistral-v3", 122.6, 88, 8, 128),
        _m("mistral-small-24b-2501", "mistral", "mistral-tekken", 23.6, 40, 8, 128),
        _m("ministral-8b-2410", "mistral", "mistral-tekken", 8.02, 36, 8, 128),
        # Gemma 2 and 3: different tokenizers (256,000 vs 262,144).
        _m("gemma-2-2b", "gemma2", "gemma2", 2.61, 26, 4, 256),
        _m("gemma-2-9b", "gemma2", "gemma2", 9.24, 42, 8, 256),
        _m("gemma-2-27b", "gemma2", "gemma2", 27.2, 46, 16, 128),
        _m("gemma-3-1b", "gemma3", "gemma3", 1.0, 26, 1, 256),
        _m("gemma-3-4b", "gemma3", "gemma3", 4.3, 34, 4, 256),
        _m("gemma-3-12b", "gemma3", "gemma3", 12.2, 48, 8, 256),
        _m("gemma-3-27b", "gemma3", "gemma3", 27.4, 62, 16, 128),
        # DeepSeek: V3/R1 use MLA and ship one MTP layer; the R1 distills keep their base's shape
        # but not its tokenizer (added special tokens).
        _m(
            "deepseek-v3",
            "deepseek-v3",
            "deepseek-v3",
            671.0,
            61,
            1,
            576,
            kv_elements_per_layer=576,
            has_mtp=True,
        ),
        _m(
            "deepseek-r1",
            "deepseek-v3",
            "deepseek-v3",
            671.0,
            61,
            1,
            576,
            kv_elements_per_layer=576,
            has_mtp=True,
        ),
        _m(
            "deepseek-r1-distill-qwen-1.5b",
            "deepseek-r1-distill-qwen",
            "deepseek-r1-qwen",
            1.78,
            28,
            2,
            128,
        ),
        _m(
            "deepseek-r1-distill-qwen-7b",
            "deepseek-r1-distill-qwen",
            "deepseek-r1-qwen",
            7.62,
            28,
            4,
            128,
        ),
        _m(
            "deepseek-r1-distill-qwen-14b",
            "deepseek-r1-distill-qwen",
            "deepseek-r1-qwen",
            14.8,
            48,
            8,
            128,
        ),
        _m(
            "deepseek-r1-distill-qwen-32b",
            "deepseek-r1-distill-qwen",
            "deepseek-r1-qwen",
            32.8,
            64,
            8,
            128,
        ),
        _m(
            "deepseek-r1-distill-llama-8b",
            "deepseek-r1-distill-llama",
            "deepseek-r1-llama",
            8.03,
            32,
            8,
            128,
        ),
        _m(
            "deepseek-r1-distill-llama-70b",
            "deepseek-r1-distill-llama",
            "deepseek-r1-llama",
            70.6,
            80,
            8,
            128,
        ),
        # Speculative heads: one decoder layer (EAGLE/EAGLE-3) or a few MLP heads (Medusa).
        _m("eagle-llama3.1-instruct-8b", "llama3", "llama3", 0.25, 1, 8, 128, head_for="llama3"),
        _m("eagle3-llama3.1-instruct-8b", "llama3", "llama3", 0.42, 1, 8, 128, head_for="llama3"),
        _m("eagle-llama3-instruct-70b", "llama3", "llama3", 0.99, 1, 8, 128, head_for="llama3"),
        _m("eagle3-llama3.3-instruct-70b", "llama3", "llama3", 1.6, 1, 8, 128, head_for="llama3"),
    )
}

# Hugging Face ids of the speculative heads, which do not normalise to their catalog key.
_ALIASES: dict[str, str] = {
    "yuhuili/eagle-llama3.1-instruct-8b": "eagle-llama3.1-instruct-8b",
    "yuhuili/eagle3-llama3.1-instruct-8b": "eagle3-llama3.1-instruct-8b",
    "yuhuili/eagle-llama3-instruct-70b": "eagle-llama3-instruct-70b",
    "yuhuili/eagle3-llama3.3-instruct-70b": "eagle3-llama3.3-instruct-70b",
    "deepseek-ai/deepseek-v3-0324": "deepseek-v3",
    "deepseek-ai/deepseek-r1-0528": "deepseek-r1",
    "mistralai/mistral-large-instruct-2411": "mistral-large-2407",
    "mistralai/mistral-small-24b-instruct-2501": "mistral-small-24b-2501",
    "mistralai/ministral-8b-instruct-2410": "ministral-8b-2410",
    "mistralai/mistral-large-instruct-2407": "mistral-large-2407",
}

# Suffixes that name a fine-tune or a quantized export of the same architecture.
_SUFFIX = re.compile(
    r"(-(instruct|chat|it|base|hf|awq|gptq|int4|int8|w4a16|w8a8|w8a16|fp8|fp8-dynamic|dynamic|"
    r"bnb|4bit|8bit|quantized(\.w\d+a\d+)?|gguf))+$"
)


def normalise_model_id(model_id: str) -> str:
    """``Org/Meta-Llama-3.1-70B-Instruct-AWQ-INT4`` -> ``llama-3.1-70b``."""
    name = model_id.strip().lower().rstrip("/").rsplit("/", 1)[-1]
    name = name.removeprefix("meta-")
    name = name.replace("_", "-")
    # Mixtral/Mistral carry their release in the name; strip suffixes only after it.
    return _SUFFIX.sub("", name)


def lookup_model(model_id: str) -> ModelInfo | None:
    """The catalog entry for a Hugging Face id or local path, or None when it is unknown."""
    lowered = model_id.strip().lower()
    if lowered in _ALIASES:
        return MODELS[_ALIASES[lowered]]
    key = normalise_model_id(model_id)
    if key in MODELS:
        return MODELS[key]
    # "mistral-7b-instruct-v0.3": the release tag follows the suffix.
    m = re.fullmatch(r"(.+?)(-instruct|-chat)?(-v\d+(\.\d+)?)", key)
    if m and (m.group(1) + m.group(3)) in MODELS:
        return MODELS[m.group(1) + m.group(3)]
    return None


@dataclass(frozen=True, slots=True)
class GPUInfo:
    key: str
    memory_gib: float


# Marketed capacities; NVIDIA's and AMD's HBM sizes are binary (80 GB on an H100 is 80 GiB).
GPUS: dict[str, GPUInfo] = {
    g.key: g
    for g in (
        GPUInfo("A10G-24GB", 24),
        GPUInfo("L4-24GB", 24),
        GPUInfo("L40S-48GB", 48),
        GPUInfo("A100-40GB", 40),
        GPUInfo("A100-80GB", 80),
        GPUInfo("H100-80GB", 80),
        GPUInfo("H100-94GB", 94),
        GPUInfo("H200-141GB", 141),
        GPUInfo("B200-180GB", 180),
        GPUInfo("MI300X-192GB", 192),
    )
}

GPU_TYPES: tuple[str, ...] = tuple(GPUS)

# Acceptance assumed for a pool that has not reported its own yet (the derived speculation table
# that `specops plan` shows and `tokensPerBatchSizeMode: Auto` renders first), keyed by method: the
# counter acceptance vLLM reports (accepted / proposed draft tokens) at the resource's k, for a
# well-matched proposer at moderate temperature.  Priors, not measurements: a draft model reads
# about 0.81 at temperature 0 and 0.71 at 0.4 in published figures; heads trained on the target
# (EAGLE, EAGLE-3, MTP) accept more, Medusa less; prompt lookup depends on how much the output
# copies the prompt (0.4 sits between chat and summarization).  The live pool's per-position
# acceptance replaces them as soon as it exists.
DEFAULT_ACCEPTANCE_RATE: dict[str, float] = {
    "draft_model": 0.70,
    "eagle": 0.72,
    "eagle3": 0.75,
    "mtp": 0.75,
    "medusa": 0.60,
    "ngram": 0.40,
    "suffix": 0.45,
}

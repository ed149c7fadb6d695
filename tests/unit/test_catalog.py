import pytest

from specops.api.catalog import GPUS, MODELS, lookup_model, normalise_model_id


@pytest.mark.parametrize(
    ("model_id", "key"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "llama-3.1-70b"),
        ("neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8", "llama-3.1-70b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b"),
        ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b"),
        ("Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4", "qwen2.5-0.5b"),
        ("Qwen/Qwen3-8B-FP8", "qwen3-8b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b-v0.1"),
        ("google/gemma-2-9b-it", "gemma-2-9b"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "deepseek-r1-distill-llama-70b"),
        ("yuhuili/EAGLE3-LLaMA3.1-Instruct-8B", "eagle3-llama3.1-instruct-8b"),
    ],
)
def test_lookup_finds_known_models(model_id: str, key: str) -> None:
    info = lookup_model(model_id)
    assert info is not None, normalise_model_id(model_id)
    assert info.key == key


@pytest.mark.parametrize("model_id", ["/models/my-finetune", "acme/secret-model-13b", ""])
def test_unknown_models_are_none(model_id: str) -> None:
    assert lookup_model(model_id) is None


def test_llama_kv_bytes_per_token() -> None:
    # 80 layers x (K+V) x 8 KV heads x 128 dims = 163,840 elements: 320 KiB per token in BF16.
    assert MODELS["llama-3.1-70b"].kv_elements_per_token * 2 == 320 * 1024


def test_families_share_tokenizers_where_they_should() -> None:
    assert MODELS["llama-3.2-1b"].tokenizer == MODELS["llama-3.1-405b"].tokenizer
    assert MODELS["qwen2.5-0.5b"].tokenizer == MODELS["qwen2.5-72b"].tokenizer
    assert MODELS["gemma-2-9b"].tokenizer != MODELS["gemma-3-27b"].tokenizer
    # R1 distills add special tokens: not interchangeable with their base.
    assert MODELS["deepseek-r1-distill-llama-70b"].tokenizer != MODELS["llama-3.1-8b"].tokenizer


def test_gpu_memory_is_marketed_capacity() -> None:
    assert GPUS["H100-80GB"].memory_gib == 80
    assert GPUS["H200-141GB"].memory_gib == 141

"""Budget table tests. The worked figures of docs/domain.md#memory are in nominal GB (1e9 bytes) with
GPU capacities read as GB; SpecOps computes in GiB with exact parameter counts.  Each test below
states which unit it checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specops.api.catalog import GIB, MODELS
from specops.api.v1alpha1 import SpeculativeInferenceSpec
from specops.vllm.budget import plan_budget
from tests.support.resources import make_si

GB = 1e9


def codes(plan: Any) -> set[str]:
    return {f.code for f in plan.findings}


def weights_gb(model: str, quant: str) -> float:
    # Seed: Llama-3.1-70B 140 / 70 / 35 GB, Llama-3.1-8B 16 / 8 / 4 GB (BF16 / INT8 / INT4).
    si = make_si(
        target={"model": model, "quantization": quant, "tensorParallelSize": 8},
        resources={"gpusPerReplica": 8, "gpuType": "H200-141GB"},
        speculation={"method": "ngram", "draft": None},
    )
    plan = plan_budget(si.spec)
    assert plan.target_weights_gib is not None
    return plan.target_weights_gib * GIB / GB


@pytest.mark.parametrize(
    ("model", "quant", "seed_gb"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", "none", 140),
        ("meta-llama/Llama-3.1-70B-Instruct", "int8", 70),
        ("meta-llama/Llama-3.1-70B-Instruct", "awq", 35),
        ("meta-llama/Llama-3.1-8B-Instruct", "none", 16),
        ("meta-llama/Llama-3.1-8B-Instruct", "fp8", 8),
        ("meta-llama/Llama-3.1-8B-Instruct", "gptq", 4),
    ],
)
def test_weight_bytes_match_seed(model: str, quant: str, seed_gb: float) -> None:
    # Exact counts (70.6e9, 8.03e9) sit within 1% of the seed's rounded figures.
    assert weights_gb(model, quant) == pytest.approx(seed_gb, rel=0.01)


def test_seed_example_70b_int8_with_8b_bf16_on_2xh100_fits() -> None:
    plan = plan_budget(make_si().spec)
    assert plan.fits
    # Seed: "70B INT8 + 8B BF16 = 86 GB, ~74 GB left" of 160 GB.
    total_gb = (plan.target_weights_gib + plan.draft_weights_gib) * GIB / GB  # type: ignore[operator]
    assert total_gb == pytest.approx(86, rel=0.01)
    assert 160 - total_gb == pytest.approx(74, abs=1)
    # Exact GiB figures: 70.6e9 B = 65.75 GiB, 8.03e9 x 2 B = 14.96 GiB on 2 x 80 GiB.
    assert plan.vram_gib == 160
    assert plan.target_weights_gib == pytest.approx(65.75, abs=0.01)
    assert plan.draft_weights_gib == pytest.approx(14.96, abs=0.01)
    # KV = 160 x 0.9 - weights (draft sharded over both GPUs, as the target is).
    assert plan.kv_cache_gib == pytest.approx(144 - 65.75 - 14.96, abs=0.02)
    assert plan.kv_cache_gib_without_draft == pytest.approx(144 - 65.75, abs=0.02)
    # 320 KiB/token (target) and 128 KiB/token (draft) at 8192 tokens: 2.5 and 1.0 GiB a sequence.
    assert plan.max_concurrent_sequences_without_draft == 31  # floor(78.25 / 2.5)
    assert plan.max_concurrent_sequences == 18  # floor(63.29 / 3.5)
    assert plan.size_ratio == pytest.approx(8.79, abs=0.01)
    assert plan.draft_share_of_vram == pytest.approx(14.96 / 160, abs=1e-3)
    assert {"QuantizedTarget", "DraftConcurrencyCost"} <= codes(plan)
    assert "SizeRatioOutOfRange" not in codes(plan)


def test_seed_example_70b_bf16_with_8b_bf16_on_2xh100_does_not_fit() -> None:
    plan = plan_budget(make_si(target={"quantization": "none"}).spec)
    assert not plan.fits
    assert [f.code for f in plan.errors] == ["DoesNotFit"]
    assert plan.errors[0].field == "spec.resources"
    # Seed: 156 GB of weights, "~4 GB left, unusable".
    total_gb = (plan.target_weights_gib + plan.draft_weights_gib) * GIB / GB  # type: ignore[operator]
    assert total_gb == pytest.approx(156, rel=0.01)
    assert plan.kv_cache_gib is not None
    assert plan.kv_cache_gib < 0


def test_seed_example_on_2xh200_leaves_room() -> None:
    plan = plan_budget(make_si(target={"quantization": "none"}, resources={"gpuType": "H200-141GB"}).spec)
    assert plan.fits
    total_gb = (plan.target_weights_gib + plan.draft_weights_gib) * GIB / GB  # type: ignore[operator]
    # Seed: "2xH200 (282 GB): 70B BF16 + 8B BF16 leaves ~126 GB".
    assert 282 - total_gb == pytest.approx(126, rel=0.02)
    assert plan.extras["free_after_weights_gib"] == pytest.approx(282 - 146.46, abs=0.05)


@pytest.mark.parametrize(
    ("patch", "expected_code", "expected_field"),
    [
        # 1B -> 70B (1:57) drafts too weakly.
        (
            {"speculation": {"draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}}},
            "SizeRatioOutOfRange",
            "spec.speculation.draft.model",
        ),
        # A 13B-class draft for a 70B target (1:5.4) costs too much per step.
        (
            {
                "speculation": {
                    "draft": {
                        "model": "acme/llama3-13b-draft",
                        "parameters": "13B",
                        "tokenizer": "llama3",
                        "architecture": {"layers": 40, "kvHeads": 8, "headDim": 128},
                    }
                }
            },
            "SizeRatioOutOfRange",
            "spec.speculation.draft.model",
        ),
        # Draft over 15% of VRAM: 8B BF16 (14.96 GiB) next to an AWQ 70B on 2 x L40S (96 GiB).
        (
            {"target": {"quantization": "awq"}, "resources": {"gpuType": "L40S-48GB"}},
            "DraftOverVRAMShare",
            "spec.speculation.draft.model",
        ),
        # Target over 70% of VRAM: FP8 70B on one A100-80GB with a 1B draft.
        (
            {
                "target": {"quantization": "fp8", "tensorParallelSize": 1},
                "speculation": {"draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}},
                "resources": {"gpusPerReplica": 1, "gpuType": "A100-80GB"},
            },
            "TargetOverVRAMShare",
            "spec.target.quantization",
        ),
        (
            {"speculation": {"draft": {"tensorParallelSize": 1}}, "vllm": {"version": "0.9.2"}},
            "DraftTensorParallelImbalance",
            "spec.speculation.draft.tensorParallelSize",
        ),
        (
            {"resources": {"gpusPerReplica": 4}},
            "IdleGPUs",
            "spec.resources.gpusPerReplica",
        ),
        ({"target": {"maxModelLen": None}}, "MaxModelLenUnset", "spec.target.maxModelLen"),
    ],
)
def test_warnings(patch: dict[str, Any], expected_code: str, expected_field: str) -> None:
    plan = plan_budget(make_si(**patch).spec)
    found = [f for f in plan.warnings if f.code == expected_code]
    assert found, [str(f) for f in plan.findings]
    assert found[0].field == expected_field
    assert plan.fits, [str(f) for f in plan.errors]


@pytest.mark.parametrize(
    ("patch", "expected_code", "expected_field"),
    [
        (
            {"speculation": {"draft": {"model": "Qwen/Qwen2.5-7B-Instruct"}}},
            "TokenizerMismatch",
            "spec.speculation.draft.model",
        ),
        (
            {
                "target": {"tensorParallelSize": 4},
                "resources": {"gpusPerReplica": 4},
                "speculation": {"draft": {"tensorParallelSize": 2}},
            },
            "DraftTensorParallelSize",
            "spec.speculation.draft.tensorParallelSize",
        ),
        (
            {"target": {"tensorParallelSize": 4}},
            "TensorParallelExceedsGPUs",
            "spec.resources.gpusPerReplica",
        ),
        (
            {"target": {"model": "/models/in-house-70b"}},
            "UnknownModel",
            "spec.target.parameters",
        ),
        (
            {"speculation": {"draft": {"model": "acme/tiny-draft"}}},
            "UnknownModel",
            "spec.speculation.draft.parameters",
        ),
        (
            {"speculation": {"method": "mtp", "draft": None}},
            "MethodUnsupportedByModel",
            "spec.speculation.method",
        ),
        (
            {
                "target": {"maxModelLen": 131072, "quantization": "fp8", "tensorParallelSize": 1},
                "resources": {"gpusPerReplica": 1, "gpuType": "H100-80GB"},
                "speculation": {"draft": {"model": "meta-llama/Llama-3.2-1B-Instruct"}},
            },
            "ContextDoesNotFit",
            "spec.target.maxModelLen",
        ),
    ],
)
def test_errors(patch: dict[str, Any], expected_code: str, expected_field: str) -> None:
    plan = plan_budget(make_si(**patch).spec)
    found = [f for f in plan.errors if f.code == expected_code]
    assert found, [str(f) for f in plan.findings]
    assert found[0].field == expected_field
    assert not plan.fits


def test_draft_on_one_gpu_costs_tp_times_its_size() -> None:
    sharded = plan_budget(make_si().spec)
    single = plan_budget(
        make_si(speculation={"draft": {"tensorParallelSize": 1}}, vllm={"version": "0.9.2"}).spec
    )
    assert sharded.kv_cache_gib is not None
    assert single.kv_cache_gib is not None
    lost = sharded.kv_cache_gib_without_draft - single.kv_cache_gib  # type: ignore[operator]
    assert lost == pytest.approx(2 * 14.96, abs=0.05)


def test_unknown_target_with_figures_is_planned() -> None:
    plan = plan_budget(
        make_si(
            target={
                "model": "/models/in-house-70b",
                "parameters": "70.6B",
                "architecture": {"layers": 80, "kvHeads": 8, "headDim": 128},
            }
        ).spec
    )
    assert plan.fits
    assert plan.target_weights_gib == pytest.approx(65.75, abs=0.01)
    assert plan.max_concurrent_sequences == 18
    assert "TokenizerUnverified" in codes(plan)


def test_mtp_on_deepseek_v3() -> None:
    plan = plan_budget(
        make_si(
            target={
                "model": "deepseek-ai/DeepSeek-V3",
                "quantization": "fp8",
                "tensorParallelSize": 8,
            },
            speculation={"method": "mtp", "draft": None, "numSpeculativeTokens": 1},
            resources={"gpusPerReplica": 8, "gpuType": "H200-141GB"},
        ).spec
    )
    assert plan.fits, [str(f) for f in plan.errors]
    assert plan.draft_weights_gib == 0
    # MLA caches 576 elements per layer: 61 x 576 x 2 B = 68.6 KiB per token.
    assert MODELS["deepseek-v3"].kv_elements_per_token == 61 * 576


def test_fp8_kv_cache_doubles_concurrency() -> None:
    plain = plan_budget(make_si().spec)
    fp8 = plan_budget(make_si(target={"kvCacheDtype": "fp8"}).spec)
    assert fp8.max_concurrent_sequences_without_draft == pytest.approx(
        2 * plain.max_concurrent_sequences_without_draft,
        abs=1,  # type: ignore[operator]
    )


_targets = [k for k, m in MODELS.items() if m.head_for is None and not m.has_mtp]


@settings(max_examples=150, deadline=None)
@given(
    target=st.sampled_from(_targets),
    draft=st.sampled_from(_targets),
    quant=st.sampled_from(["none", "fp8", "int8", "awq"]),
    tp=st.sampled_from([1, 2, 4, 8]),
    gpu=st.sampled_from(["L40S-48GB", "A100-80GB", "H100-80GB", "H200-141GB"]),
    util=st.floats(min_value=0.5, max_value=0.95),
    max_len=st.sampled_from([2048, 8192, 32768]),
    draft_tp_one=st.booleans(),
)
def test_draft_never_adds_kv_cache(
    target: str,
    draft: str,
    quant: str,
    tp: int,
    gpu: str,
    util: float,
    max_len: int,
    draft_tp_one: bool,
) -> None:
    spec = SpeculativeInferenceSpec.model_validate(
        {
            "target": {
                "model": target,
                "quantization": quant,
                "tensorParallelSize": tp,
                "maxModelLen": max_len,
            },
            "speculation": {
                "method": "draft_model",
                "draft": {"model": draft, "tensorParallelSize": 1 if draft_tp_one else tp},
            },
            "resources": {"gpusPerReplica": tp, "gpuType": gpu, "gpuMemoryUtilization": util},
        }
    )
    plan = plan_budget(spec)
    assert plan.kv_cache_gib is not None
    assert plan.kv_cache_gib_without_draft is not None
    assert plan.kv_cache_gib < plan.kv_cache_gib_without_draft
    if plan.max_concurrent_sequences is not None and plan.fits:
        assert plan.max_concurrent_sequences <= plan.max_concurrent_sequences_without_draft  # type: ignore[operator]
        assert plan.max_concurrent_sequences >= 1
    # Whatever the verdict, an error always names a field under spec.
    assert all(f.field.startswith("spec.") for f in plan.findings)


def test_kv_cache_per_token_follows_how_vllm_splits_it_over_gpus() -> None:
    """Heads split over tensor-parallel GPUs but never below one per GPU; DeepSeek's latent cache
    is held whole on every GPU (the emulator's independent memory model found both over-counted)."""
    from specops.vllm.budget import resolve_model

    llama8b = resolve_model("meta-llama/Llama-3.1-8B-Instruct", None, None, None)  # 8 KV heads
    per_gpu = llama8b.kv_elements_per_token_on(1)
    assert per_gpu == llama8b.kv_elements_per_token
    assert llama8b.kv_elements_per_token_on(8) == per_gpu  # split evenly: the replica holds it once
    assert llama8b.kv_elements_per_token_on(16) == 2 * per_gpu  # one head per GPU, replicated
    v3 = resolve_model("deepseek-ai/DeepSeek-V3", None, None, None)
    assert v3.kv_elements_per_token_on(8) == 8 * v3.kv_elements_per_token  # latent: on every GPU

"""Hypothesis strategies for SpeculativeInference documents meant to be valid: every speculation
method, vLLM version, quantization and GPU type of the catalog, the optional knobs on or off.  A
few combinations are still refused by the models or the checks; the tests say what they expect
of those.  Hostile documents, built on these: ``tests.support.hostile``."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from specops.api.catalog import GPU_TYPES, MODELS

VERSIONS = [
    "0.6.2",
    "0.6.6",
    "0.7.3",
    "0.8.2",
    "0.8.3",
    "0.8.5",
    "0.9.2",
    "0.10.1",
    "0.11.0",
    "0.11.1",
    "0.15.0",
    "0.16.0",
    "0.17.0",
    "0.24.0",
    "0.32.0",
    "0.33.0",
]
_dense = sorted(k for k, m in MODELS.items() if m.head_for is None)
_heads = sorted(k for k, m in MODELS.items() if m.head_for is not None)
_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
_label_values = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?", fullmatch=True)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["draft_model", "ngram", "eagle", "eagle3", "mtp", "medusa", "suffix"]))
    tp = draw(st.sampled_from([1, 2, 4, 8]))
    k = draw(st.integers(1, 8))
    speculation: dict[str, Any] = {"method": method, "numSpeculativeTokens": k}
    if method in ("draft_model", "eagle", "eagle3", "medusa"):
        pool = _dense if method == "draft_model" else _heads
        draft: dict[str, Any] = {"model": draw(st.sampled_from(pool))}
        if method == "medusa":
            draft = {"model": "acme/medusa-heads", "parameters": "0.5B"}
        if draw(st.booleans()):
            draft["tensorParallelSize"] = draw(st.sampled_from([1, tp]))
        if draw(st.booleans()):
            draft["quantization"] = draw(st.sampled_from(["none", "fp8", "awq"]))
        speculation["draft"] = draft
    if method == "ngram" and draw(st.booleans()):
        lo = draw(st.integers(1, 5))
        speculation["ngram"] = {"promptLookupMin": lo, "promptLookupMax": draw(st.integers(lo, 8))}
    if draw(st.booleans()):
        split = draw(st.integers(2, 64))
        speculation["tokensPerBatchSize"] = [
            {"minBatchSize": 1, "maxBatchSize": split, "numSpeculativeTokens": k},
            {"minBatchSize": split + 1, "maxBatchSize": 4096, "numSpeculativeTokens": 0},
        ]
    version = draw(st.sampled_from(VERSIONS))
    spec: dict[str, Any] = {
        "replicas": draw(st.integers(0, 6)),
        "vllm": {
            "version": version,
            "image": f"vllm/vllm-openai:v{version}",
            "port": draw(st.integers(1024, 65535)),
            "extraArgs": draw(st.sampled_from([[], ["--enable-prefix-caching"], ["--max-num-seqs", "128"]])),
            "env": draw(st.sampled_from([[], [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]])),
        },
        "target": {
            "model": draw(st.sampled_from(_dense)),
            "quantization": draw(st.sampled_from(["none", "fp8", "int8", "awq", "gptq", "bitsandbytes"])),
            "dtype": draw(st.sampled_from(["auto", "bfloat16", "float16"])),
            "kvCacheDtype": draw(st.sampled_from(["auto", "fp8"])),
            "tensorParallelSize": tp,
            "maxModelLen": draw(st.sampled_from([2048, 8192, 32768])),
        },
        "speculation": speculation,
        "resources": {
            "gpusPerReplica": tp,
            "gpuType": draw(st.sampled_from(GPU_TYPES)),
            "gpuMemoryUtilization": draw(st.sampled_from([0.8, 0.9, 0.95])),
            "cpu": draw(st.sampled_from([None, "8", "500m"])),
            "memory": draw(st.sampled_from([None, "64Gi"])),
            "nodeSelector": draw(st.dictionaries(_names, _label_values, max_size=2)),
            "tolerations": draw(
                st.sampled_from(
                    [[], [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]]
                )
            ),
        },
        "policy": {"mode": draw(st.sampled_from(["Auto", "Speculative", "Baseline"]))},
        "podLabels": draw(
            st.dictionaries(st.sampled_from(["team", "env", "example.com/tier"]), _label_values, max_size=2)
        ),
    }
    spec["resources"] = {k: v for k, v in spec["resources"].items() if v is not None}
    if draw(st.booleans()):
        spec["modelCache"] = draw(
            st.sampled_from(
                [
                    {"persistentVolumeClaim": "models"},
                    {"hostPath": "/mnt/models", "readOnly": True},
                    {"emptyDir": True},
                ]
            )
        )
    if draw(st.booleans()):
        spec["hfTokenSecret"] = {"name": "hf"}
    return {
        "apiVersion": "specops.dev/v1alpha1",
        "kind": "SpeculativeInference",
        "metadata": {"name": draw(_names), "namespace": draw(_names)},
        "spec": spec,
    }

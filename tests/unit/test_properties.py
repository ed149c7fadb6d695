"""Property tests: every resource the models accept renders valid manifests, and the
--speculative-config value is JSON holding only keys the declared vLLM version accepts."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from specops.api.catalog import GPU_TYPES, MODELS
from specops.api.v1alpha1 import SpeculativeInference
from specops.checks.validation import check_resource
from specops.render.manifests import Pool, PoolSplit, RenderError, render_all, vllm_args
from specops.vllm.dialect import (
    Dialect,
    dialect_for,
    flag_allowed,
    parse_version,
    speculative_config_keys,
)
from tests.conftest import make_si

K8S_VERSION = "1.32.0"
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


def _accept(doc: dict[str, Any]) -> SpeculativeInference:
    try:
        return SpeculativeInference.model_validate(doc)
    except ValidationError:
        assume(False)
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=resources(), spec_replicas=st.integers(0, 4), base_replicas=st.integers(0, 4))
def test_accepted_resources_render_valid_manifests(
    doc: dict[str, Any], spec_replicas: int, base_replicas: int
) -> None:
    si = _accept(doc)
    try:
        manifests = render_all(si, PoolSplit(spec_replicas, base_replicas))
    except RenderError:
        # Only resources that the checks refuse may be unrenderable.
        assert not check_resource(si).ok
        return
    for manifest in manifests:
        # Raises kubernetes_validate.ValidationError (naming the path) on any schema violation.
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@settings(max_examples=300, deadline=None)
@given(doc=resources())
def test_rendered_flags_and_keys_are_accepted_by_the_declared_version(doc: dict[str, Any]) -> None:
    si = _accept(doc)
    report = check_resource(si)
    if not report.ok:
        # Refused resources are never rendered by the operator; each refusal names a field.
        assert all(f.field.startswith(("spec.", "metadata.")) and f.message for f in report.errors)
        return
    version = parse_version(si.spec.vllm.version)
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    rendered = [a for a in args if a.startswith("--") and a not in si.spec.vllm.extra_args]
    assert all(flag_allowed(version, f) for f in rendered), rendered
    if dialect_for(version) is Dialect.CURRENT:
        cfg = json.loads(args[args.index("--speculative-config") + 1])
        assert isinstance(cfg, dict)
        assert set(cfg) <= speculative_config_keys(version)
        assert cfg["num_speculative_tokens"] == si.spec.speculation.num_speculative_tokens
    else:
        assert "--speculative-config" not in args


@pytest.mark.parametrize("hostile", ['a"b', "x\\ny", "{{.}}", "'; rm -rf /", "model with spaces"])
def test_hostile_model_names_stay_one_argument(hostile: str) -> None:
    si = make_si(speculation={"draft": {"model": hostile, "parameters": "8B", "tokenizer": "llama3"}})
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    cfg = json.loads(args[args.index("--speculative-config") + 1])
    assert cfg["model"] == hostile

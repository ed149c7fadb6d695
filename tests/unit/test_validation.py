from __future__ import annotations

from typing import Any

import pytest

from specops.checks.validation import ResourceError, check_resource, load_resource
from tests.support.resources import deep_merge, make_doc, make_si


def fields_of(exc: ResourceError) -> list[str]:
    return [f.field for f in exc.findings]


@pytest.mark.parametrize(
    ("patch", "field", "fragment"),
    [
        ({"spec": {"target": None}}, "spec.target", "required"),
        (
            {"spec": {"target": {"tensorParallelSize": 0}}},
            "spec.target.tensorParallelSize",
            "greater than",
        ),
        ({"spec": {"target": {"quantization": "int3"}}}, "spec.target.quantization", "none"),
        (
            {"spec": {"speculation": {"method": "lookahead"}}},
            "spec.speculation.method",
            "draft_model",
        ),
        (
            {"spec": {"speculation": {"draft": None}}},
            "spec.speculation",
            "needs speculation.draft.model",
        ),
        (
            {"spec": {"speculation": {"numSpeculativeTokens": 40}}},
            "spec.speculation.numSpeculativeTokens",
            "16",
        ),
        ({"spec": {"resources": {"gpuType": None}}}, "spec.resources", "gpuMemoryGiB"),
        ({"spec": {"resources": {"gpuType": "H100"}}}, "spec.resources.gpuType", "H100-80GB"),
        (
            {"spec": {"resources": {"gpuMemoryUtilization": 1.5}}},
            "spec.resources.gpuMemoryUtilization",
            "0.99",
        ),
        ({"spec": {"policy": {"interval": "30 seconds"}}}, "spec.policy.interval", "pattern"),
        (
            {"spec": {"policy": {"minAcceptanceRate": 0.7}}},
            "spec.policy",
            "breakEvenAcceptanceRate",
        ),
        ({"spec": {"targt": {}}}, "spec.targt", "unknown field"),
        (
            {"spec": {"target": {"parameters": "seventy"}}},
            "spec.target.parameters",
            "parameter count",
        ),
        (
            {"spec": {"modelCache": {"emptyDir": True, "hostPath": "/x"}}},
            "spec.modelCache",
            "exactly one",
        ),
        ({"spec": {"vllm": {"version": "latest"}}}, "spec.vllm.version", "pattern"),
    ],
)
def test_schema_errors_name_the_field(patch: dict[str, Any], field: str, fragment: str) -> None:
    doc = deep_merge(make_doc(), patch)
    with pytest.raises(ResourceError) as info:
        load_resource(doc)
    assert field in fields_of(info.value), info.value.findings
    assert any(fragment in f.message for f in info.value.findings), info.value.findings


def test_wrong_kind() -> None:
    with pytest.raises(ResourceError) as info:
        load_resource({"apiVersion": "apps/v1", "kind": "Deployment"})
    assert fields_of(info.value) == ["apiVersion/kind"]


@pytest.mark.parametrize(
    ("patch", "code", "field"),
    [
        ({"vllm": {"version": "0.5.5"}}, "UnsupportedVersion", "spec.vllm.version"),
        # The V1 engine ran no draft models from 0.10.0 until 0.15.0.
        ({"vllm": {"version": "0.11.0"}}, "MethodUnsupportedByVersion", "spec.speculation.method"),
        (
            {
                "vllm": {"version": "0.8.2"},
                "speculation": {
                    "method": "eagle3",
                    "draft": {"model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"},
                },
            },
            "MethodUnsupportedByVersion",
            "spec.speculation.method",
        ),
        (
            {
                "vllm": {"version": "0.33.0"},
                "speculation": {
                    "method": "medusa",
                    "draft": {"model": "acme/medusa", "parameters": "1B"},
                },
            },
            "MethodUnsupportedByVersion",
            "spec.speculation.method",
        ),
        (
            {
                "vllm": {"version": "0.23.0"},
                "speculation": {
                    "tokensPerBatchSize": [{"minBatchSize": 1, "maxBatchSize": 8, "numSpeculativeTokens": 3}]
                },
            },
            "KeyUnsupportedByVersion",
            "spec.speculation.tokensPerBatchSize",
        ),
        (
            {"speculation": {"draft": {"tensorParallelSize": 1}}},
            "DraftTensorParallelSize",
            "spec.speculation.draft.tensorParallelSize",
        ),
        (
            {"target": {"quantization": "bitsandbytes"}},
            "QuantizationUnsupportedByVersion",
            "spec.target.quantization",
        ),
        (
            {"vllm": {"extraArgs": ["--max-num-seqs", "64", "--speculative-config={}"]}},
            "ManagedFlagInExtraArgs",
            "spec.vllm.extraArgs[2]",
        ),
        (
            {"vllm": {"extraArgs": ["--tensor-parallel-size", "4"]}},
            "ManagedFlagInExtraArgs",
            "spec.vllm.extraArgs[0]",
        ),
        (
            {"podLabels": {"specops.dev/pool": "x"}},
            "ReservedLabel",
            "spec.podLabels.specops.dev/pool",
        ),
    ],
)
def test_semantic_errors(patch: dict[str, Any], code: str, field: str) -> None:
    report = check_resource(make_si(**patch))
    assert not report.ok
    matching = [f for f in report.errors if f.code == code]
    assert matching, [str(f) for f in report.findings]
    assert matching[0].field == field


def test_managed_flag_message_names_the_field_to_use() -> None:
    report = check_resource(make_si(vllm={"extraArgs": ["--tensor-parallel-size", "4"]}))
    assert "spec.target.tensorParallelSize" in report.errors[0].message


@pytest.mark.parametrize("name", ["Llama", "9lives", "a" * 59, "has_underscore"])
def test_bad_names(name: str) -> None:
    si = make_si()
    si = si.model_copy(update={"metadata": si.metadata.model_copy(update={"name": name})})
    assert [f.code for f in check_resource(si).errors] == ["InvalidName"]


def test_valid_example_versions() -> None:
    for version in ("0.9.2", "0.15.0", "0.32.0", "0.33.0"):
        assert check_resource(make_si(vllm={"version": version})).ok, version

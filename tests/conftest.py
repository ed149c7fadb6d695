"""Shared fixtures: example resources and a builder for specs in tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from specops.api.v1alpha1 import SpeculativeInference

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"

BASE_DOC: dict[str, Any] = {
    "apiVersion": "specops.dev/v1alpha1",
    "kind": "SpeculativeInference",
    "metadata": {"name": "demo", "namespace": "serving"},
    "spec": {
        "replicas": 2,
        "vllm": {"version": "0.32.0"},
        "target": {
            "model": "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8",
            "quantization": "int8",
            "tensorParallelSize": 2,
            "maxModelLen": 8192,
        },
        "speculation": {
            "method": "draft_model",
            "numSpeculativeTokens": 5,
            "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
        },
        "resources": {"gpusPerReplica": 2, "gpuType": "H100-80GB"},
    },
}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Test helper: patch values replace, nested dicts merge, None deletes."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_doc(**spec_patch: Any) -> dict[str, Any]:
    return deep_merge(BASE_DOC, {"spec": spec_patch})


def make_si(**spec_patch: Any) -> SpeculativeInference:
    return SpeculativeInference.model_validate(make_doc(**spec_patch))


def load_example(name: str) -> SpeculativeInference:
    return SpeculativeInference.model_validate(yaml.safe_load((EXAMPLES / name).read_text()))


@pytest.fixture
def base_doc() -> dict[str, Any]:
    return copy.deepcopy(BASE_DOC)


VALID_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("invalid"))


@pytest.fixture(params=VALID_EXAMPLES)
def example(request: pytest.FixtureRequest) -> SpeculativeInference:
    return load_example(request.param)

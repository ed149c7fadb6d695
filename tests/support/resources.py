"""SpeculativeInference documents for tests: a base document patched per test, the shipped
examples, and the object as the API server stores it."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from specops.api.v1alpha1 import SpeculativeInference
from specops.checks.validation import load_resource
from tests.support.paths import EXAMPLES, SCENARIO_RESOURCES

DEFAULT_EXAMPLE = "llama70b-int8-h100.yaml"

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
    """``base`` with ``patch`` laid over it: patch values replace, nested dicts merge, None deletes."""
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
    """The base document (``demo`` in ``serving``) with ``spec_patch`` merged into its spec."""
    return deep_merge(BASE_DOC, {"spec": spec_patch})


def make_si(**spec_patch: Any) -> SpeculativeInference:
    return SpeculativeInference.model_validate(make_doc(**spec_patch))


def example_doc(name: str = DEFAULT_EXAMPLE, namespace: str | None = None) -> dict[str, Any]:
    """A shipped example (manifests/examples) as the YAML document a user applies."""
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    if namespace is not None:
        doc["metadata"]["namespace"] = namespace
    return doc


def load_example(name: str = DEFAULT_EXAMPLE) -> SpeculativeInference:
    """A shipped example, validated (a ResourceError naming each bad field if it does not load)."""
    return load_resource(example_doc(name))


def load_scenario_resource(name: str) -> SpeculativeInference:
    """A resource the scenarios run (scenarios/resources), validated."""
    return load_resource(yaml.safe_load((SCENARIO_RESOURCES / name).read_text()))


def as_stored(
    doc: dict[str, Any],
    *,
    namespace: str | None = None,
    status: dict[str, Any] | None = None,
    uid: str = "u-1",
    generation: int = 1,
) -> dict[str, Any]:
    """A copy of ``doc`` with what the API server adds when it stores it (a uid, the generation)
    and, when given, a namespace and a status (written earlier by the operator)."""
    body = copy.deepcopy(doc)
    body["metadata"].update(uid=uid, generation=generation)
    if namespace is not None:
        body["metadata"]["namespace"] = namespace
    if status is not None:
        body["status"] = copy.deepcopy(status)
    return body

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from specops.api.crd import build_crd
from specops.cli import dump_yaml
from tests.support.paths import CRD_SOURCE, ROOT


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += walk(child, f"{path}.{name}")
    if "items" in node:
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def schema() -> dict[str, Any]:
    s: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return s


def test_checked_in_crd_matches_the_models() -> None:
    # Byte for byte: the file is the generator's output, not merely equivalent YAML.
    assert yaml.safe_load(Path(CRD_SOURCE).read_text()) == build_crd()
    assert Path(CRD_SOURCE).read_text() == dump_yaml(build_crd()), (
        "crds/ drifted from the models: run `specops crd > " + str(CRD_SOURCE.relative_to(ROOT)) + "`"
    )


def test_identity() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "speculativeinferences.specops.dev"
    names = crd["spec"]["names"]
    assert names["kind"] == "SpeculativeInference"
    assert names["plural"] == "speculativeinferences"
    assert names["shortNames"] == ["specinf", "si"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Mode", "Spec", "Base", "Acceptance", "P99/P50", "Ready", "Age"]


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
        if node.get("type") == "object":
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
                or path == ".metadata"
            ), path


def test_every_spec_field_is_described() -> None:
    spec = schema()["properties"]["spec"]
    missing = [p for p, n in walk(spec, ".spec") if "description" not in n and not p.endswith(("[]", "{}"))]
    assert missing == []


def test_fixed_field_paths_exist() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    assert {"replicas", "vllm", "target", "speculation", "resources", "policy"} <= spec.keys()
    assert {"image", "version", "extraArgs", "env", "port"} <= spec["vllm"]["properties"].keys()
    assert {
        "model",
        "revision",
        "quantization",
        "dtype",
        "tensorParallelSize",
        "maxModelLen",
        "parameters",
    } <= spec["target"]["properties"].keys()
    spec_props = spec["speculation"]["properties"]
    assert {
        "method",
        "draft",
        "numSpeculativeTokens",
        "ngram",
        "tokensPerBatchSize",
    } <= spec_props.keys()
    assert {"model", "quantization", "tensorParallelSize", "parameters"} <= spec_props["draft"][
        "properties"
    ].keys()
    assert {"promptLookupMin", "promptLookupMax"} <= spec_props["ngram"]["properties"].keys()
    res = spec["resources"]["properties"]
    assert {
        "gpusPerReplica",
        "gpuResourceName",
        "gpuType",
        "gpuMemoryGiB",
        "gpuMemoryUtilization",
        "cpu",
        "memory",
        "nodeSelector",
        "tolerations",
        "affinity",
    } <= res.keys()
    pol = spec["policy"]["properties"]
    assert {
        "mode",
        "prometheusUrl",
        "interval",
        "window",
        "minAcceptanceRate",
        "breakEvenAcceptanceRate",
        "consecutiveBreaches",
        "consecutiveRecoveries",
        "cooldown",
        "onMetricsUnavailable",
        "probe",
    } <= pol.keys()
    assert pol["minAcceptanceRate"]["default"] == 0.5
    assert pol["breakEvenAcceptanceRate"]["default"] == 0.65
    assert pol["mode"]["enum"] == ["Auto", "Speculative", "Baseline"]
    assert spec["speculation"]["required"] == ["method"]
    assert set(schema()["properties"]["spec"]["required"]) == {"target", "speculation", "resources"}


def test_bounds_are_openapi_v3() -> None:
    util = schema()["properties"]["spec"]["properties"]["resources"]["properties"]["gpuMemoryUtilization"]
    assert util["minimum"] == 0.0
    assert util["exclusiveMinimum"] is True
    assert util["maximum"] == 0.99
    params = schema()["properties"]["spec"]["properties"]["target"]["properties"]["parameters"]
    assert params["x-kubernetes-int-or-string"] is True
    assert "type" not in params


def test_status_fields() -> None:
    status = schema()["properties"]["status"]["properties"]
    assert {
        "observedGeneration",
        "mode",
        "replicas",
        "selector",
        "pools",
        "conditions",
        "budget",
        "observed",
        "decisions",
        "counters",
    } <= status.keys()
    assert status["conditions"]["items"]["required"] == ["type", "status", "reason"]


def test_api_reference_is_current() -> None:
    from specops.api.docs import api_reference

    assert (ROOT / "docs" / "api.md").read_text() == api_reference(), "run `specops docs > docs/api.md`"

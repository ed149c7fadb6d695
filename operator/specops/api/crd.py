"""Generate the CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema (``$ref``, ``anyOf`` with ``null``, numeric ``exclusiveMinimum``);
Kubernetes wants a structural OpenAPI v3 schema (everything inlined, a ``type`` on every node,
boolean ``exclusiveMinimum``).  ``to_structural`` converts one into the other.  The checked-in
``crds/`` file is this module's output; a test fails when they differ.
"""

from __future__ import annotations

from typing import Any

from specops.api.v1alpha1 import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    SpeculativeInferenceSpec,
    SpeculativeInferenceStatus,
)

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return node


def to_structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 schema node."""
    node = _resolve(node, defs)
    if node.get("x-kubernetes-int-or-string"):
        return {k: node[k] for k in ("description", "default") if k in node} | {
            "x-kubernetes-int-or-string": True
        }
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {options!r} structurally")
        inner = to_structural(options[0], defs)
        for key in ("description", "default"):
            if key in node and node[key] is not None:
                inner[key] = node[key]
        return inner
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
    if out.get("default", 0) is None:
        del out["default"]
    if "exclusiveMinimum" in node:
        out["minimum"] = node["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node:
        out["maximum"] = node["exclusiveMaximum"]
        out["exclusiveMaximum"] = True
    kind = node.get("type")
    if kind is None and "enum" in node:
        out["type"] = "string"
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties")
        if props:
            out["properties"] = {k: to_structural(v, defs) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = to_structural(extra, defs)
        elif not props:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if kind == "array":
        out["items"] = to_structural(node.get("items", {}), defs)
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["x-kubernetes-preserve-unknown-fields"] = True
        out["type"] = "object"
    return out


def _schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, raw.get("$defs", {}))


def _without_defaults(node: Any) -> Any:
    """Status is written only by the operator: schema defaults there would only add noise (and
    kube-apiserver 1.20 rejects an empty-string default as null)."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Mode", "type": "string", "jsonPath": ".status.mode", "description": "Current mode."},
    {
        "name": "Spec",
        "type": "integer",
        "jsonPath": ".status.pools.speculative.replicas",
        "description": "Speculative replicas.",
    },
    {
        "name": "Base",
        "type": "integer",
        "jsonPath": ".status.pools.baseline.replicas",
        "description": "Baseline replicas.",
    },
    {
        "name": "Acceptance",
        "type": "number",
        "jsonPath": ".status.observed.acceptanceRate",
        "description": "Draft acceptance rate of the speculative pool.",
    },
    {
        "name": "P99/P50",
        "type": "number",
        "jsonPath": ".status.observed.tailRatio",
        "description": "P99/P50 TPOT ratio of the speculative pool.",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Ready condition.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CRD for SpeculativeInference."""
    spec_schema = _schema_of(SpeculativeInferenceSpec)
    status_schema = _without_defaults(_schema_of(SpeculativeInferenceStatus))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "specops", "app.kubernetes.io/part-of": "specops"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "specops"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A vLLM service whose speculative decoding SpecOps budgets, "
                                "watches, and rolls back when it hurts."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }

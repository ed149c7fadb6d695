"""Markdown field reference generated from the CRD schema (``docs/api.md``; a test checks drift)."""

from __future__ import annotations

from typing import Any

from specops.api.crd import build_crd


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"list of {_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type_of(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "default" in node:
        parts.append(f"default `{node['default']}`")
    if "minimum" in node:
        parts.append(("> " if node.get("exclusiveMinimum") else ">= ") + str(node["minimum"]))
    if "maximum" in node:
        parts.append(("< " if node.get("exclusiveMaximum") else "<= ") + str(node["maximum"]))
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return "; ".join(parts).replace("|", "\\|")


def _rows(node: dict[str, Any], path: str, required: set[str], out: list[str]) -> None:
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}"
        desc = " ".join(str(child.get("description", "")).split()).replace("|", "\\|")
        req = "yes" if name in required else ""
        out.append(f"| `{child_path}` | {_type_of(child)} | {req} | {desc} | {_constraints(child)} |")
        target = child.get("items", child) if child.get("type") == "array" else child
        if target.get("properties"):
            _rows(
                target,
                child_path + ("[]" if child.get("type") == "array" else ""),
                set(target.get("required", [])),
                out,
            )


def api_reference() -> str:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = [
        "# SpeculativeInference API reference (specops.dev/v1alpha1)",
        "",
        "Generated from the models by `specops docs`; do not edit by hand.",
        "",
    ]
    for section in ("spec", "status"):
        node = schema["properties"][section]
        lines += [
            f"## {section}",
            "",
            " ".join(str(node.get("description", "")).split()),
            "",
            "| field | type | required | description | constraints |",
            "|---|---|---|---|---|",
        ]
        _rows(node, section, set(node.get("required", [])), lines)
        lines.append("")
    return "\n".join(lines)

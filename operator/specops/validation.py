"""Every check beyond the CRD schema, in one pure function the CLI and the webhook share.

``load_resource`` turns untrusted YAML/JSON into a typed resource or a list of field errors;
``check_resource`` adds the version, argument, name and budget checks to a typed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from specops.api.v1alpha1 import (
    API_VERSION,
    KIND,
    Method,
    Quantization,
    SpeculativeInference,
)
from specops.budget import BudgetPlan, plan_budget
from specops.dialect import (
    BITSANDBYTES_REMOVED,
    DRAFT_TP_MUST_MATCH_SINCE,
    MANAGED_FLAGS,
    MIN_SUPPORTED,
    Dialect,
    dialect_for,
    format_version,
    method_gate,
    parse_version,
    speculative_config_keys,
)
from specops.findings import Finding, HasFindings, error
from specops.render import RESERVED_LABELS

# Pools are named <name>-spec / <name>-base and the Service <name>: DNS-1035 labels of <= 63.
MAX_NAME_LENGTH = 58
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ResourceError(ValueError):
    """Input that cannot be read as a SpeculativeInference; each finding names a field."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__("; ".join(str(f) for f in findings))


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("int", "str", "literal[...]"):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _fix_hint(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "this field is required"
    if kind == "extra_forbidden":
        return "unknown field; check its spelling against `kubectl explain specinf.spec`"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '')}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def findings_from_validation_error(exc: ValidationError, prefix: str = "") -> list[Finding]:
    out = []
    for err in exc.errors():
        path = _loc_to_path(tuple(err["loc"]))
        field = ".".join(p for p in (prefix, path) if p) or "(document)"
        out.append(error("InvalidField", field, _fix_hint(err)))
    return out


def load_resource(doc: Any) -> SpeculativeInference:
    """Validate one parsed document; raise ResourceError naming each bad field."""
    if not isinstance(doc, dict):
        raise ResourceError([error("InvalidDocument", "(document)", "expected a YAML mapping")])
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ResourceError(
            [
                error(
                    "WrongKind",
                    "apiVersion/kind",
                    f"expected apiVersion {API_VERSION} and kind {KIND}, got "
                    f"{doc.get('apiVersion')!r} / {doc.get('kind')!r}",
                )
            ]
        )
    try:
        return SpeculativeInference.model_validate(doc)
    except ValidationError as exc:
        raise ResourceError(findings_from_validation_error(exc)) from None


def check_name(name: str) -> list[Finding]:
    if len(name) > MAX_NAME_LENGTH or not _DNS1035.match(name):
        return [
            error(
                "InvalidName",
                "metadata.name",
                f"{name!r} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(lower case letters, digits and '-', starting with a letter): the pools are "
                "named <name>-spec and <name>-base",
            )
        ]
    return []


def check_version(si: SpeculativeInference) -> list[Finding]:
    spec = si.spec
    out: list[Finding] = []
    version = parse_version(spec.vllm.version)
    vtext = format_version(version)
    if version < MIN_SUPPORTED:
        return [
            error(
                "UnsupportedVersion",
                "spec.vllm.version",
                f"vLLM {vtext} is older than the oldest supported release "
                f"{format_version(MIN_SUPPORTED)}; upgrade the image",
            )
        ]
    method = spec.speculation.method
    gate = method_gate(version, method)
    if gate is None or not gate.allows(version):
        where = gate.describe() if gate else "the --speculative-config dialect (vLLM >= 0.8.3)"
        out.append(
            error(
                "MethodUnsupportedByVersion",
                "spec.speculation.method",
                f"method {method.value} is not available in vLLM {vtext}; it needs {where}: "
                "raise spec.vllm.version (and the image) or choose another method",
            )
        )
    if spec.speculation.tokens_per_batch_size and (
        dialect_for(version) is Dialect.LEGACY
        or ("num_speculative_tokens_per_batch_size" not in speculative_config_keys(version))
    ):
        out.append(
            error(
                "KeyUnsupportedByVersion",
                "spec.speculation.tokensPerBatchSize",
                f"vLLM {vtext} has no k-by-batch-size table; remove "
                "spec.speculation.tokensPerBatchSize or raise spec.vllm.version",
            )
        )
    draft = spec.speculation.draft
    tp = spec.target.tensor_parallel_size
    if (
        method is Method.DRAFT_MODEL
        and draft is not None
        and draft.tensor_parallel_size not in (None, tp)
        and version >= DRAFT_TP_MUST_MATCH_SINCE
    ):
        out.append(
            error(
                "DraftTensorParallelSize",
                "spec.speculation.draft.tensorParallelSize",
                f"vLLM {vtext} (V1 engine) runs a draft model only at the target's tensor "
                f"parallel size; set draft.tensorParallelSize to {tp} or remove it",
            )
        )
    if spec.target.quantization is Quantization.BITSANDBYTES and version >= BITSANDBYTES_REMOVED:
        out.append(
            error(
                "QuantizationUnsupportedByVersion",
                "spec.target.quantization",
                f"vLLM {vtext} no longer has bitsandbytes (removed in "
                f"{format_version(BITSANDBYTES_REMOVED)}); use awq, gptq or fp8",
            )
        )
    return out


def check_extra_args(si: SpeculativeInference) -> list[Finding]:
    out = []
    for i, arg in enumerate(si.spec.vllm.extra_args):
        flag = arg.split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            out.append(
                error(
                    "ManagedFlagInExtraArgs",
                    f"spec.vllm.extraArgs[{i}]",
                    f"{flag} is rendered by SpecOps; set {MANAGED_FLAGS[flag]} instead",
                )
            )
    return out


def check_pod_labels(si: SpeculativeInference) -> list[Finding]:
    return [
        error(
            "ReservedLabel",
            f"spec.podLabels.{key}",
            f"{key} is set by SpecOps to select the pools; remove it from spec.podLabels",
        )
        for key in si.spec.pod_labels
        if key in RESERVED_LABELS
    ]


@dataclass(frozen=True, slots=True)
class CheckReport(HasFindings):
    """All findings for a resource, with the budget they came from."""

    findings: tuple[Finding, ...]
    budget: BudgetPlan

    @property
    def ok(self) -> bool:
        return not self.errors


def check_resource(si: SpeculativeInference) -> CheckReport:
    """Name, version, argument, pairing and budget checks (everything the schema cannot say)."""
    budget = plan_budget(si.spec)
    findings = [
        *check_name(si.metadata.name),
        *check_version(si),
        *check_extra_args(si),
        *check_pod_labels(si),
        *budget.findings,
    ]
    return CheckReport(findings=tuple(findings), budget=budget)

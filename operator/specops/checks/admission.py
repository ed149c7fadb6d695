"""Admission review (pure): what the validating webhook answers for a resource or a /scale write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specops.checks.validation import ResourceError, check_resource, load_resource


@dataclass(frozen=True, slots=True)
class AdmissionReview:
    """The webhook's answer: allowed or not, why, and warnings shown to the user."""

    allowed: bool
    message: str = ""
    warnings: list[str] = field(default_factory=list)


def review(operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> AdmissionReview:
    """CREATE/UPDATE of a SpeculativeInference: schema, pairing, version and budget checks.

    An UPDATE that leaves the spec alone (labels, annotations, finalizers) is always allowed: an
    object admitted under older rules must stay editable, or nothing could ever clean it up.
    """
    if new is None or operation not in ("CREATE", "UPDATE"):
        return AdmissionReview(True)
    if operation == "UPDATE" and old is not None and old.get("spec") == new.get("spec"):
        return AdmissionReview(True)
    body = {k: v for k, v in new.items() if k != "status"}
    try:
        si = load_resource(body)
    except ResourceError as exc:
        return AdmissionReview(False, "; ".join(str(f) for f in exc.findings))
    report = check_resource(si)
    warnings = [str(w) for w in report.warnings]
    if report.errors:
        return AdmissionReview(False, "; ".join(str(e) for e in report.errors), warnings)
    return AdmissionReview(True, warnings=warnings)


def review_scale(new: dict[str, Any] | None) -> AdmissionReview:
    """A write through /scale (kubectl scale, an HPA) bypasses the main validator."""
    replicas = ((new or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        return AdmissionReview(False, f"spec.replicas: must be a whole number >= 0, got {replicas!r}")
    return AdmissionReview(True)

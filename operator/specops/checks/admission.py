"""Admission review (pure): what the validating webhook answers for a resource or a /scale write."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from specops.api.findings import Finding, error
from specops.api.v1alpha1 import SpeculativeInference
from specops.checks.validation import ResourceError, check_resource, load_resource

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class AdmissionReview:
    """The webhook's answer: allowed or not, why, and warnings shown to the user."""

    allowed: bool
    message: str = ""
    warnings: list[str] = field(default_factory=list)


def normalise_prometheus_url(url: str) -> str | None:
    """The form two Prometheus URLs are compared in: scheme and host lower-cased, the default port
    and a trailing slash dropped, no fragment.  None for anything but an http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is not a number, an unbalanced IPv6 bracket
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}{query}"


def prometheus_url_allowed(url: str, allowed: Collection[str]) -> bool:
    """Is ``url`` one of ``allowed`` (compared normalised; never a prefix or pattern match)?"""
    want = normalise_prometheus_url(url)
    return want is not None and want in {normalise_prometheus_url(a) for a in allowed}


def check_prometheus_url(si: SpeculativeInference, allowed: Collection[str]) -> list[Finding]:
    """spec.policy.prometheusUrl must be on the operator's allowlist: the operator fetches it, so
    an arbitrary URL would let anyone who can create a resource make it call any address."""
    url = si.spec.policy.prometheus_url
    if url is None or prometheus_url_allowed(url, allowed):
        return []
    listed = ", ".join(sorted(allowed)) if allowed else "none"
    return [
        error(
            "PrometheusUrlNotAllowed",
            "spec.policy.prometheusUrl",
            f"{url!r} is not a Prometheus this operator may query (allowed: {listed}). Remove the "
            "field to use the operator's own Prometheus, or have the operator's administrator allow "
            "this URL (specops run --allowed-prometheus-url, chart value prometheus.allowedUrls)",
        )
    ]


def review(
    operation: str,
    new: dict[str, Any] | None,
    old: dict[str, Any] | None,
    allowed_prometheus_urls: Collection[str] | None = None,
) -> AdmissionReview:
    """CREATE/UPDATE of a SpeculativeInference: schema, pairing, version and budget checks, and
    (when ``allowed_prometheus_urls`` is given: the operator's configuration) the Prometheus URL.

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
    errors = list(report.errors)
    if allowed_prometheus_urls is not None:
        errors += check_prometheus_url(si, allowed_prometheus_urls)
    if errors:
        return AdmissionReview(False, "; ".join(str(e) for e in errors), warnings)
    return AdmissionReview(True, warnings=warnings)


def review_scale(new: dict[str, Any] | None) -> AdmissionReview:
    """A write through /scale (kubectl scale, an HPA) bypasses the main validator."""
    replicas = ((new or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        return AdmissionReview(False, f"spec.replicas: must be a whole number >= 0, got {replicas!r}")
    return AdmissionReview(True)

"""Bad input, property-based: SpeculativeInference documents as users apply them, valid-ish and
hostile (``strategies.hostile_resources``), through every path the operator takes.

Each document is either refused (by the schema models, the checks or the admission review) with
a message naming the field, or accepted, and then rendered into manifests Kubernetes accepts
(``k8s.manifest_problems``: JSON schemas plus the apiserver's own rules) and reconciled into the
whole set of objects.  Nothing ever raises.

Admission is judged against oracles that share none of its code: the CRD's OpenAPI schema, run
by a JSON Schema validator as the apiserver would run it, and the pydantic models alone; what
either refuses, admission must refuse.  Policy evaluations on every stored document keep their
invariants: a transition always changes the mode and starts from the stored one, a Healthy
verdict never leaves Speculative (unless pinned elsewhere), counters are never negative, and the
status stores the mode decided.

The example count comes from SPECOPS_FUZZ_EXAMPLES (default 250, about half a minute); the
reliability run uses 10,000:

    SPECOPS_FUZZ_EXAMPLES=10000 pytest tests/reliability/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import jsonschema
import pydantic
from hypothesis import HealthCheck, given, settings

from specops.api.crd import build_crd
from specops.api.findings import Finding
from specops.api.v1alpha1 import ServingMode, SpeculativeInference, pinned_mode
from specops.checks.admission import review
from specops.checks.validation import load_resource
from specops.controller.evaluator import Evaluator
from specops.controller.reconciler import Reconciler
from specops.policy.decide import Observation, PolicyDecision, PoolMetrics, Verdict
from specops.render.manifests import OwnerRef, PoolSplit, render_all
from tests.support.fake_kube import FakeKube
from tests.support.fuzz_stats import _TIMES, STATS
from tests.support.hostile import Hostile, hostile_resources, refusal
from tests.support.k8s import is_dns1123_subdomain, manifest_problems
from tests.support.resources import as_stored

HF_TOKEN_ENV = "HF_TOKEN"
EXAMPLES = int(os.environ.get("SPECOPS_FUZZ_EXAMPLES", "250"))
_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
_PART = re.compile(r"\[\d+\]|[^.\[\]]+")
# An argument that would carry a Hugging Face token (vLLM and huggingface_hub spellings).
_TOKEN_ARG = re.compile(r"^--(hf[-_])?token\b|HF_TOKEN=|HUGGING_FACE_HUB_TOKEN=", re.IGNORECASE)
# A Prometheus range-selector duration (no fractions, no zero).
_PROMQL_DURATION = re.compile(r"([1-9][0-9]*(ms|s|m|h))+")


def _as_json_schema(node: Any) -> Any:
    """The CRD's structural schema (OpenAPI 3.0) as JSON Schema draft 4, the draft whose
    ``exclusiveMinimum`` is a flag as in OpenAPI 3.0: Kubernetes' extensions become what they mean
    (``x-kubernetes-int-or-string``: an integer or a string; preserved unknown fields: anything)."""
    if isinstance(node, list):
        return [_as_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _as_json_schema(sub) for name, sub in value.items()}
        elif key in ("description", "default") or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = _as_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


# The apiserver's integer check takes a JSON number with no fraction (1.0) as an integer.
_TYPES = jsonschema.Draft4Validator.TYPE_CHECKER.redefine(
    "integer",
    lambda _, v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
)
_CRD_VALIDATOR = jsonschema.validators.extend(jsonschema.Draft4Validator, type_checker=_TYPES)(
    _as_json_schema(_SCHEMA)
)


def _without_nulls(value: Any) -> Any:
    """The object as the apiserver validates it: a null for a field the schema does not mark
    nullable is pruned first (Kubernetes' CRD "Defaulting and Nullable"; this CRD marks none)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def crd_schema_problems(doc: dict[str, Any]) -> list[str]:
    """What the apiserver's validation against the CRD's schema would refuse (unknown fields are
    pruned there, not refused, and JSON Schema ignores them alike; so are nulls)."""
    pruned = _without_nulls(doc)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _CRD_VALIDATOR.iter_errors(pruned)]


def pydantic_refuses(doc: dict[str, Any]) -> bool:
    try:
        SpeculativeInference.model_validate(doc)
    except (pydantic.ValidationError, ValueError, TypeError):
        return True
    return False


def check_admission_against_oracles(h: Hostile, allowed: bool) -> None:
    submitted = {k: v for k, v in h.doc.items() if k != "status"}
    schema = crd_schema_problems(submitted)
    typed = pydantic_refuses(submitted)
    STATS["oracle: crd schema refuses"] += bool(schema)
    STATS["oracle: models refuse"] += typed
    if allowed:
        assert not schema, f"{h.describe()}: admitted what the CRD's schema refuses: {schema[:3]}"
        assert not typed, f"{h.describe()}: admitted what the models refuse"


def check_decision(
    before: ServingMode, decision: PolicyDecision, pin: ServingMode | None, status: dict[str, Any]
) -> None:
    """One evaluation's invariants, whatever the resource and the metrics."""
    state, t = decision.state, decision.transition
    if t is None:
        assert state.mode == before, f"mode {before} -> {state.mode} without a transition"
    else:
        assert t.from_mode != t.to_mode, f"a transition that keeps the mode: {t}"
        assert (t.from_mode, t.to_mode) == (before, state.mode), (before, t, state.mode)
    healthy = decision.assessment.verdict is Verdict.HEALTHY
    if healthy and before == ServingMode.SPECULATIVE and pin in (None, ServingMode.SPECULATIVE):
        assert state.mode == ServingMode.SPECULATIVE, f"left Speculative on a Healthy verdict: {t}"
    assert min(state.breaches, state.recoveries, state.errors, state.lost_probes) >= 0, state
    counters = status.get("counters") or {}
    assert all(v >= 0 for v in counters.values()), counters
    assert status.get("mode") == state.mode, (status.get("mode"), state.mode)


def parts(path: str) -> list[str]:
    return _PART.findall(path)


def resolves(field: str) -> bool:
    """Does a finding's field name a place in the resource's schema (or, for an unknown field,
    in a place that exists)?"""
    if field in ("(document)", "apiVersion/kind"):
        return True
    names = parts(field)

    def walk(names: list[str]) -> bool:
        node = _SCHEMA
        for i, part in enumerate(names):
            if (i == 1 and names[0] == "metadata") or node.get("x-kubernetes-preserve-unknown-fields"):
                return True
            if "additionalProperties" in node:
                return True
            if part.startswith("["):
                if node.get("type") != "array":
                    return False
                node = node["items"]
                continue
            if part not in node.get("properties", {}):
                return False
            node = node["properties"][part]
        return True

    return walk(names) or walk(names[:-1])


def related(field: str, changed: list[str]) -> bool:
    """A finding is about a change when one path contains the other (a model validator reports
    on the object holding the field it checks), or it is a sibling inside a nested object (a field
    set in an object that was not there leaves the object's required fields missing)."""
    if field in ("(document)", "apiVersion/kind") or "(document)" in changed:
        return True
    f = parts(field)
    for path in changed:
        p = parts(path)
        n = min(len(f), len(p))
        if f[:n] == p[:n] or (len(p) >= 3 and f[: len(p) - 1] == p[:-1]):
            return True
    return False


def stored(doc: Any) -> dict[str, Any] | None:
    """The object as the apiserver would store it, or None for what it never stores (a CR's
    name is a DNS-1123 subdomain; kind and group are fixed)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return None
    if not is_dns1123_subdomain(doc["metadata"].get("name")):
        return None
    body = as_stored(doc, namespace="fuzz", uid="0a0b0c0d")
    body.update(apiVersion="specops.dev/v1alpha1", kind="SpeculativeInference")
    body.pop("status", None)
    return body


def check_refusal(h: Hostile, stage: str, findings: list[Finding], message: str) -> None:
    assert findings, "a refusal without findings"
    for f in findings:
        assert f.field and f.message and f.code, f
        assert f.field in message, f"the refusal message does not name {f.field}: {message}"
        assert resolves(f.field), f"{f.field!r} is not a field of the resource"
    if stage == "refused_schema" and h.changed and refusal(Hostile(h.base, h.base))[0] != "refused_schema":
        assert any(related(f.field, h.changed) for f in findings), (
            f"{h.describe()} refused for unrelated fields: {[f.field for f in findings]}"
        )


def check_manifests(h: Hostile) -> None:
    si = load_resource({k: v for k, v in h.doc.items() if k != "status"})
    owner = OwnerRef(name=si.metadata.name, uid="0a0b0c0d")
    for split in (None, PoolSplit(1, 1)):
        manifests = render_all(si, split, owner)
        assert [m["kind"] for m in manifests] == ["Deployment", "Deployment", "Service"]
        for m in manifests:
            problems = manifest_problems(m, owner.as_dict())
            assert not problems, f"{h.describe()}: {m['kind']} {m['metadata']['name']}: {problems[:5]}"
        for dep in manifests[:2]:
            container = dep["spec"]["template"]["spec"]["containers"][0]
            tokens = [e for e in container.get("env", []) if e["name"] == HF_TOKEN_ENV]
            if si.spec.hf_token_secret is None:
                assert not tokens
            else:
                ref = si.spec.hf_token_secret
                assert tokens[0] == {
                    "name": HF_TOKEN_ENV,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            managed = container["args"][: len(container["args"]) - len(si.spec.vllm.extra_args)]
            assert not [a for a in managed if _TOKEN_ARG.search(a)], managed


def check_reconcile(h: Hostile, accepted: bool) -> None:
    body = stored(h.doc)
    if body is None:
        return
    # What the apiserver stores may differ from what was sent (kind, namespace): judge that.
    accepted = refusal(Hostile(body, h.base))[0] == "accepted"
    kube = FakeKube(body)
    reconciler = Reconciler(kube, clock=lambda: "2025-01-01T00:00:00Z")
    out = reconciler.reconcile("fuzz", body["metadata"]["name"])
    assert out is not None
    kinds = [m["kind"] for m in kube.applied]
    fits = next(c for c in kube.body["status"]["conditions"] if c["type"] == "BudgetFits")
    if accepted:
        assert kinds == ["Deployment", "Deployment", "Service", "PodMonitor"], kinds
        assert not out.refused and fits["status"] == "True"
    else:
        assert kinds == [], f"a refused resource created {kinds}"
        assert out.refused and fits["status"] == "False"
        assert "SpecRejected" in kube.reasons
    # Policy evaluations on the same resource: no data, an outage, breaches in a row, then good
    # windows with a baseline pool beside (a probe's), then outages again.
    slow = PoolMetrics(replicas=1, request_rate=2.0, acceptance=0.2, tpot_p50=0.02, tpot_p99=0.09)
    fast = PoolMetrics(replicas=1, request_rate=2.0, acceptance=0.9, tpot_p50=0.01, tpot_p99=0.015)
    base = PoolMetrics(replicas=1, request_rate=2.0, acceptance=None, tpot_p50=0.02, tpot_p99=0.03)
    observations = [
        Observation(),
        Observation(error="down"),
        *[Observation(speculative=slow)] * 4,
        *[Observation(speculative=fast, baseline=base)] * 4,
        *[Observation(error="down")] * 3,
    ]
    pin = pinned_mode(load_resource(body).spec.policy.mode) if accepted else None
    for i, obs in enumerate(observations):
        before = ServingMode((kube.body.get("status") or {}).get("mode") or ServingMode.SPECULATIVE)
        decision = reconciler.evaluate("fuzz", body["metadata"]["name"], obs, 1.7e9 + 300 * i)
        assert (decision is not None) == accepted, f"evaluated: {decision is not None}, accepted: {accepted}"
        if decision is not None:
            check_decision(before, decision, pin, kube.body["status"])
    evaluator = Evaluator(reconciler, "http://prometheus.invalid", query=lambda url, q: [])
    evaluator.track(
        "fuzz", body["metadata"]["name"], body.get("spec") if isinstance(body.get("spec"), dict) else None
    )
    window = evaluator.tracked[("fuzz", body["metadata"]["name"])].window
    assert _PROMQL_DURATION.fullmatch(window), f"window {window!r} would break every PromQL query"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None if EXAMPLES > 1000 else settings.default.database,
)
@given(h=hostile_resources())
def test_hostile_resources_are_refused_naming_a_field_or_deploy_valid_objects(h: Hostile) -> None:
    now = time.monotonic()
    _TIMES[1:] = [now] if _TIMES else []
    if not _TIMES:
        _TIMES.append(now)
    stage, findings = refusal(h)
    STATS[stage] += 1
    accepted = stage == "accepted"
    if isinstance(h.doc, dict):
        verdict = review("CREATE", h.doc, None)
        assert verdict.allowed == accepted, verdict.message
        check_admission_against_oracles(h, verdict.allowed)
        if not accepted:
            check_refusal(h, stage, findings, verdict.message)
        same_spec = h.doc.get("spec") == h.base.get("spec")
        assert review("UPDATE", h.doc, h.base).allowed == (accepted or same_spec)
    else:
        check_refusal(h, stage, findings, "; ".join(map(str, findings)))
    if accepted:
        check_manifests(h)
    check_reconcile(h, accepted)

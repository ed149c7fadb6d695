"""Generated bad resources against the real apiserver with the operator running (the cluster-level
companion of tests/reliability/test_fuzz.py): each is refused at creation (CRD schema or webhook)
with a message naming a field, or, when it gets through, the operator either deploys all of its
objects or marks it refused in status and creates none, without an error loop."""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from specops_testkit.testbed.stack import Testbed
from tests.support.hostile import Hostile, hostile_resources, refusal
from tests.support.live_cluster import condition, create_si, get_si, local_only, operator_writes, wait_for
from tests.support.resources import example_doc

pytestmark = pytest.mark.integration
PER_TEST = 20
# A refusal names where: a field path (spec.x, metadata.name), or kind/apiVersion for a wrong one.
_NAMES_A_FIELD = re.compile(r"\b(spec|metadata)(\.[A-Za-z]|\b)|\bkind\b|apiVersion|\bbody\b")


def draw_documents(n: int) -> list[Hostile]:
    """``n`` documents the apiserver can be sent (mappings with a metadata mapping), the same on
    every run."""
    out: list[Hostile] = []

    @settings(
        max_examples=n * 3,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(h=hostile_resources())
    def collect(h: Hostile) -> None:
        if len(out) < n and isinstance(h.doc, dict) and isinstance(h.doc.get("metadata"), dict):
            out.append(h)

    collect()
    assert len(out) == n
    return out


def prepare(h: Hostile, i: int) -> dict[str, Any]:
    """A unique name unless the name is what is under test; accepted ones at 0 replicas (no pods:
    the point is the objects, and CPU is scarce)."""
    doc = copy.deepcopy(h.doc)
    if "metadata.name" not in h.changed:
        doc["metadata"]["name"] = f"hostile-{i}"
    if refusal(Hostile(doc, h.base))[0] == "accepted":
        doc["spec"]["replicas"] = 0
    return doc


def objects(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    found = []
    for kind, read, obj in (
        ("Deployment", apps.read_namespaced_deployment, f"{name}-spec"),
        ("Deployment", apps.read_namespaced_deployment, f"{name}-base"),
        ("Service", core.read_namespaced_service, name),
    ):
        try:
            read(obj, namespace)
            found.append(f"{kind}/{obj}")
        except ApiException as exc:
            if exc.status != 404:
                raise
    return found


def _wait_webhook_effective(api: client.ApiClient, namespace: str) -> None:
    """The API server calls a new webhook only once its informer has the configuration (and, with
    failurePolicy Ignore, lets everything in until then): dry-run the invalid example until refused."""
    bad = example_doc("invalid-bf16-on-h100.yaml", namespace)
    custom = client.CustomObjectsApi(api)

    def refused() -> bool:
        try:
            custom.create_namespaced_custom_object(
                "specops.dev", "v1alpha1", namespace, "speculativeinferences", bad, dry_run="All"
            )
        except ApiException as exc:
            return exc.status in (400, 403, 422)
        return False

    wait_for(refused, 30, "the admission webhook in effect", every=0.5)


def run_batch(
    api: client.ApiClient,
    testbed: Testbed,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
    docs: list[Hostile],
    webhooks: bool,
) -> Counter[str]:
    caplog.set_level(logging.INFO)
    if webhooks:
        _wait_webhook_effective(api, namespace)
    t0 = time.time()
    outcomes: Counter[str] = Counter()
    created: dict[str, bool] = {}  # name -> accepted by the checks
    for i, h in enumerate(docs):
        doc = prepare(h, i)
        try:
            stored, refused = create_si(api, namespace, doc), None
        except ApiException as exc:
            stored, refused = {}, exc
        if refused is not None:
            assert refused.status in (400, 409, 422), (refused.status, refused.body)
            if refused.status == 409:  # a drawn name that an earlier document already took
                outcomes["duplicate name"] += 1
                continue
            message = json.loads(refused.body).get("message", "")
            assert _NAMES_A_FIELD.search(message), f"{h.describe()}: refusal names no field: {message}"
            outcomes["refused at creation"] += 1
            continue
        # Judged as stored: the apiserver prunes unknown fields and applies the schema's defaults.
        accepted = refusal(Hostile(stored, h.base))[0] == "accepted"
        if webhooks:
            assert accepted, f"{h.describe()}: the webhook let in {json.dumps(stored)[:2000]}"
        created[stored["metadata"]["name"]] = accepted

    def settled() -> bool:
        for name in created:
            si = get_si(api, namespace, name)
            if (si.get("status") or {}).get("observedGeneration") != si["metadata"]["generation"]:
                return False
        return True

    wait_for(settled, 60, "every created resource reconciled")
    time.sleep(4)  # two resyncs: a loop would show as writes and logged errors
    for name, accepted in created.items():
        si = get_si(api, namespace, name)
        found = objects(api, namespace, name)
        fits, ready = condition(si, "BudgetFits"), condition(si, "Ready")
        if accepted:
            assert len(found) == 3, f"{name}: accepted but deployed only {found}; status {si.get('status')}"
            assert fits["status"] == "True" and ready["reason"] == "ScaledToZero", si["status"]
            outcomes["deployed"] += 1
        else:
            assert found == [], f"{name}: refused but created {found}"
            assert fits.get("status") == "False" or ready.get("reason") in ("Refused", "ManifestRejected"), si
            outcomes["refused in status"] += 1
    # Bounded writes per resource (its objects, status) and events: a loop would exceed them.
    writes = Counter(
        (
            w["objectRef"]["resource"],
            w["objectRef"].get("name", "").removesuffix("-spec").removesuffix("-base"),
        )
        for w in operator_writes(testbed, t0, namespace)
        if w["objectRef"]["resource"] != "events"
    )
    for event in client.CoreV1Api(api).list_namespaced_event(namespace).items:
        writes[("events", event.involved_object.name)] += event.count or 1
    for (resource, name), count in writes.items():
        assert count <= 4, f"{count} writes of {resource} for {name}: a loop? {writes}"
    # Kopf logs each webhook refusal at ERROR ("... failed permanently: <the findings>"): those are
    # answers, not failures.
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and r.name.startswith(("specops", "kopf"))
        and not (r.getMessage().startswith("Webhook ") and "failed permanently" in r.getMessage())
    ]
    assert not errors, [r.getMessage()[:300] for r in errors]
    assert outcomes["deployed"] and outcomes["refused at creation"], outcomes
    return outcomes


@local_only
def test_hostile_resources_with_the_webhook(
    api: client.ApiClient,
    testbed: Testbed,
    namespace: str,
    start_operator: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    docs = draw_documents(PER_TEST)  # before the operator's thread runs (Hypothesis watches `random`)
    start_operator()
    print(run_batch(api, testbed, namespace, caplog, docs, webhooks=True))


@local_only
def test_hostile_resources_without_the_webhook(
    api: client.ApiClient,
    testbed: Testbed,
    namespace: str,
    start_operator: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The webhook down (failurePolicy Ignore): what the CRD schema lets in reaches the operator."""
    docs = draw_documents(PER_TEST)
    start_operator(webhooks=False)
    outcomes = run_batch(api, testbed, namespace, caplog, docs, webhooks=False)
    print(outcomes)
    assert outcomes["refused in status"], outcomes


@local_only
def test_a_deployment_the_apiserver_refuses_is_reported_once(
    api: client.ApiClient,
    testbed: Testbed,
    namespace: str,
    start_operator: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the checks (they look at an affinity's top level only), refused by the apiserver: the
    status says why, one event, nothing created, no errors; the apply is retried once a resync."""
    caplog.set_level(logging.INFO)
    start_operator(resync_seconds=2.0)
    doc = example_doc("ngram-summarization.yaml")
    doc["spec"]["resources"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
    }
    t0 = time.time()
    create_si(api, namespace, doc)
    name = doc["metadata"]["name"]
    si = wait_for(lambda: condition(s := get_si(api, namespace, name), "Ready").get("reason") == "ManifestRejected" and s,
                  30, "Ready=False ManifestRejected")  # fmt: skip
    ready = condition(si, "Ready")
    assert ready["status"] == "False"
    assert f"Deployment {name}-spec" in ready["message"] and "nodeSelectorTerms" in ready["message"], ready
    time.sleep(6)  # three resyncs
    assert objects(api, namespace, name) == []
    reasons = [e.reason for e in client.CoreV1Api(api).list_namespaced_event(namespace).items]
    assert reasons == ["SpecRejected"], reasons
    writes = Counter(w["objectRef"]["resource"] for w in operator_writes(testbed, t0, namespace))
    assert writes["speculativeinferences"] <= 2, writes  # the refusal, and the first evaluation's state
    # One refused apply per reconcile: each resync (every 2 s), plus the creation, the status write
    # and the first evaluations, with slack for a loaded machine (a hot retry loop or a per-apply
    # event would be many times more).
    assert writes["deployments"] <= (time.time() - t0) / 1.5 + 5, writes
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(("specops", "kopf"))
    ]

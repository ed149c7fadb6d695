"""The read cache on a real kube-apiserver: its informers follow creates, updates and deletes, and
an operator whose resource has settled reconciles and evaluates it without a single GET."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from specops.api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from specops.controller import metrics
from specops.controller.cache import DEPLOYMENT, ReadCache
from specops_testkit.testbed.stack import Testbed
from tests.support.live_cluster import (
    create_settled_example,
    create_si,
    operator_writes,
    patch_si,
    wait_for,
)
from tests.support.resources import example_doc

pytestmark = pytest.mark.integration

NAME = "llama70b-chat"


def _reads(verb: str) -> dict[str, float]:
    """The operator's read requests of ``verb`` sent so far in this process, by kind."""
    out: dict[str, float] = {}
    for family in metrics.API_READS.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels["verb"] == verb:
                out[s.labels["kind"]] = out.get(s.labels["kind"], 0.0) + s.value
    return out


def _evaluations() -> float:
    return sum(s.value for m in metrics.EVALUATIONS.collect() for s in m.samples if s.name.endswith("_total"))


@pytest.fixture
def cache(api: client.ApiClient) -> Iterator[ReadCache]:
    rc = ReadCache.watching(api, (), pod_monitors=False)
    rc.start()
    try:
        assert rc.wait_synced(30), "the informers did not list"
        yield rc
    finally:
        rc.stop()


def _cached(cache: ReadCache, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
    informer = cache.informer(kind, namespace)
    assert informer is not None
    return informer.get(namespace, name)


def test_the_cache_follows_create_update_delete(
    api: client.ApiClient, namespace: str, cache: ReadCache
) -> None:
    custom = client.CustomObjectsApi(api)
    doc = example_doc()
    doc["spec"]["replicas"] = 1
    create_si(api, namespace, doc)
    found = wait_for(lambda: _cached(cache, KIND, namespace, NAME)[1], 10, "the resource in the cache")
    assert found["spec"]["replicas"] == 1
    assert "managedFields" not in found["metadata"]
    patch_si(api, namespace, NAME, {"spec": {"replicas": 3}})
    wait_for(
        lambda: (_cached(cache, KIND, namespace, NAME)[1] or {}).get("spec", {}).get("replicas") == 3,
        10,
        "the update in the cache",
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    wait_for(lambda: _cached(cache, KIND, namespace, NAME) == (True, None), 10, "the delete in the cache")

    # Deployments: only those labelled managed-by=specops are watched.
    apps = client.AppsV1Api(api)

    def dep(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }

    apps.create_namespaced_deployment(namespace, dep("ours", {"app.kubernetes.io/managed-by": "specops"}))
    apps.create_namespaced_deployment(namespace, dep("theirs", {}))
    wait_for(lambda: _cached(cache, DEPLOYMENT, namespace, "ours")[1], 10, "the labelled Deployment cached")
    assert _cached(cache, DEPLOYMENT, namespace, "theirs") == (True, None)
    apps.delete_namespaced_deployment("ours", namespace)
    wait_for(lambda: _cached(cache, DEPLOYMENT, namespace, "ours") == (True, None), 10, "its delete cached")


def test_a_settled_resource_is_reconciled_and_evaluated_without_a_get(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    # A resync every second and an evaluation every two; no traffic, so once the pod's series are
    # scraped every evaluation has the same verdict and the status stops changing.
    start_operator(resync_seconds=1.0, status_refresh_seconds=3600.0)
    create_settled_example(api, namespace, "2s")

    def recent_writes() -> list[str]:  # the operator's writes in this namespace in the last three seconds
        since = time.time() - 3
        return [
            f"{w['verb']} {w['objectRef'].get('resource')}/{w['objectRef'].get('subresource', '')}"
            f" {w['objectRef'].get('name')}"
            for w in operator_writes(testbed, since)
            if w["objectRef"].get("namespace") == namespace
        ]

    time.sleep(3)
    deadline = time.monotonic() + 30
    while (noisy := recent_writes()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not noisy, f"the operator's writes did not stop: {noisy}"
    gets, evaluations = _reads("get"), _evaluations()
    t0 = time.time()
    time.sleep(6)  # about six resyncs and three evaluations
    assert _evaluations() - evaluations >= 2, "fewer than two evaluations ran"
    writes = [w for w in operator_writes(testbed, t0) if w["objectRef"].get("namespace") == namespace]
    assert writes == [], writes[:3]
    after = _reads("get")
    sent = {kind: after.get(kind, 0.0) - n for kind, n in gets.items() if after.get(kind, 0.0) != n}
    sent.update({kind: n for kind, n in after.items() if kind not in gets})
    assert sent == {}, f"GETs in a steady period: {sent}"

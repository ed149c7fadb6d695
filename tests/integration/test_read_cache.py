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
from specops.controller.cache import (
    CONFIG_MAP,
    DEPLOYMENT,
    ENDPOINT_SLICE,
    NETWORK_POLICY,
    NETWORKING,
    OWN_SLICES,
    SWAP_OBJECTS,
    CachedKube,
    ReadCache,
)
from specops.controller.hotswap import served_endpoint_slice_version
from specops.controller.kube import Kube
from specops_testkit.testbed.stack import Testbed
from tests.support.live_cluster import (
    api_reads,
    create_settled_example,
    create_si,
    operator_writes,
    patch_si,
    reads_since,
    wait_for,
    wait_until_quiet,
)
from tests.support.resources import example_doc

pytestmark = pytest.mark.integration

NAME = "llama70b-chat"


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

    wait_until_quiet(testbed, namespace)
    gets, evaluations = api_reads("get"), _evaluations()
    t0 = time.time()
    time.sleep(6)  # about six resyncs and three evaluations
    assert _evaluations() - evaluations >= 2, "fewer than two evaluations ran"
    writes = operator_writes(testbed, t0, namespace)
    assert writes == [], writes[:3]
    sent = reads_since(gets, "get")
    assert sent == {}, f"GETs in a steady period: {sent}"


def test_the_hot_swap_objects_are_watched_from_their_first_read(
    api: client.ApiClient, namespace: str
) -> None:
    """The ConfigMap, NetworkPolicy and EndpointSlice informers (lazy: started by the first read of
    a hot-swap resource's objects) list and follow those SpecOps labelled, in the EndpointSlice
    version the cluster serves; a read before their first list goes to the API server."""
    slices = served_endpoint_slice_version(Kube(api))
    assert slices is not None
    rc = ReadCache.watching(api, (), pod_monitors=False, endpoint_slices=slices)
    rc.start()
    kube = CachedKube(Kube(api), rc)
    try:
        labels = {**SWAP_OBJECTS, "app.kubernetes.io/instance": "demo"}
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "ours", "labels": labels},
                                                      "data": {"nginx.conf": "x"}})  # fmt: skip
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "theirs"}, "data": {"a": "b"}})
        client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, {
            "metadata": {"name": "ours", "labels": labels},
            "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"]},
        })  # fmt: skip
        custom = client.CustomObjectsApi(api)
        group, version = slices.split("/")
        custom.create_namespaced_custom_object(group, version, namespace, "endpointslices", {
            "apiVersion": slices, "kind": ENDPOINT_SLICE,
            "metadata": {"name": "ours-ipv4", "labels": {**OWN_SLICES, "kubernetes.io/service-name": "ours"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        })  # fmt: skip
        before = api_reads("get")
        first = kube.get_object("v1", CONFIG_MAP, namespace, "ours")  # starts the informer
        assert first is not None and first["data"] == {"nginx.conf": "x"}
        assert reads_since(before, "get") == {CONFIG_MAP: 1.0}
        for kind, api_version in ((NETWORK_POLICY, NETWORKING), (ENDPOINT_SLICE, slices)):
            kube.get_object(api_version, kind, namespace, "ours" if kind == NETWORK_POLICY else "ours-ipv4")
        wait_for(lambda: all(i.synced for i in rc.informers.values() if i.lazy and i.kind != "Pod"), 30,
                 "the hot-swap informers listed")  # fmt: skip
        before = api_reads("get")
        held = kube.get_object("v1", CONFIG_MAP, namespace, "ours")
        assert held is not None and held["data"] == first["data"]
        assert held["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        assert kube.get_object("v1", CONFIG_MAP, namespace, "theirs") is None  # not labelled: not held
        policy = kube.get_object(NETWORKING, NETWORK_POLICY, namespace, "ours")
        assert policy is not None and policy["spec"]["podSelector"] == {"matchLabels": labels}
        sliced = kube.get_object(slices, ENDPOINT_SLICE, namespace, "ours-ipv4")
        assert sliced is not None and sliced["endpoints"][0]["addresses"] == ["10.0.0.1"]
        assert sliced["addressType"] == "IPv4" and "spec" not in sliced
        assert reads_since(before, "get") == {}
        core.patch_namespaced_config_map("ours", namespace, {"data": {"nginx.conf": "y"}})
        wait_for(lambda: (kube.get_object("v1", CONFIG_MAP, namespace, "ours") or {}).get("data")
                 == {"nginx.conf": "y"}, 10, "the ConfigMap's update in the cache")  # fmt: skip
        core.delete_namespaced_config_map("ours", namespace)
        informer = rc.informer(CONFIG_MAP, namespace)
        assert informer is not None
        wait_for(lambda: informer.get(namespace, "ours") == (True, None), 10, "its delete in the cache")
    finally:
        rc.stop()

"""The read cache (specops.controller.cache): what it keeps of each object, how its store follows a
list and a watch, and the rules that keep a stale read from causing a wrong write: the operator's
own writes, the versions Kopf's events carry, and a 409's retry are read from the API server until
the cache holds them.  The informers are fed by hand here (no threads, no API server); the
integration test runs them on a real one."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import KIND
from specops.controller.cache import (
    CONFIG_MAP,
    DEPLOYMENT,
    ENDPOINT_SLICE,
    LAST_APPLIED,
    NETWORK_POLICY,
    NETWORKING,
    OWN_SLICES,
    OWNED,
    POD,
    POD_MONITOR,
    SERVICE,
    SWAP_OBJECTS,
    SWAP_PODS,
    CachedKube,
    Informer,
    ReadCache,
    strip_owned,
    strip_pod,
    strip_resource,
)
from specops.controller.hotswap import HotSwapExecutor, SwapTimings
from specops.controller.reconciler import Reconciler
from specops.plan.drift import needs_apply
from specops.plan.hotswap_reconcile import AWAKE_ANNOTATION, pod_view
from specops.policy.decide import Observation
from specops.render.hotswap import ENDPOINT_SLICE_V1
from specops.render.manifests import Pool, render_all
from tests.support.fake_kube import FakeKube
from tests.support.hotswap import FakeEngines
from tests.support.hotswap import swap_pod as engine_pod
from tests.support.resources import as_stored, make_doc, make_si

NOW = "2026-01-01T00:00:00Z"


class CountingKube(FakeKube):
    """FakeKube that records every read request (kind, name): what would go to the API server."""

    def __init__(self, *objects: dict[str, Any], pod_monitors: bool = False) -> None:
        super().__init__(*objects, pod_monitors=pod_monitors)
        self.reads: list[tuple[str, str]] = []

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((KIND, name))
        return super().get_resource(namespace, name)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((DEPLOYMENT, name))
        return super().get_deployment(namespace, name)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((SERVICE, name))
        return super().get_service(namespace, name)

    def get_pod_monitor(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((POD_MONITOR, name))
        return super().get_pod_monitor(namespace, name)

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self.reads.append((POD, "*"))
        return super().list_pods(namespace, labels)

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        return super().get_object(api_version, kind, namespace, name)


def hand_fed_cache() -> ReadCache:
    return ReadCache([
        Informer(KIND, strip_resource),
        Informer(DEPLOYMENT, strip_owned(DEPLOYMENT, "apps/v1"), labels=OWNED, api_version="apps/v1"),
        Informer(SERVICE, strip_owned(SERVICE, "v1"), labels=OWNED, api_version="v1"),
        Informer(POD, strip_pod, labels=SWAP_PODS),
    ])  # fmt: skip


def relist(cache: ReadCache, kube: FakeKube) -> None:
    """Every informer lists again: the store becomes what the fake API server holds (as a label
    selector would list it)."""
    for (kind, _), informer in cache.informers.items():
        items = [
            copy.deepcopy(obj)
            for (k, _, _), obj in sorted(kube.objects.items())
            if k == kind and informer.labels.items() <= (obj["metadata"].get("labels") or {}).items()
        ]
        informer.replace(items, since_epoch=informer.epoch())


def watch_delivers(cache: ReadCache, kube: FakeKube, kind: str, name: str) -> None:
    """The watch event of the object's current version (MODIFIED, or DELETED when it is gone)."""
    informer = cache.informer(kind, "serving")
    assert informer is not None
    obj = kube.objects.get((kind, "serving", name))
    if obj is None:
        informer.event("DELETED", {"metadata": {"namespace": "serving", "name": name}})
    else:
        informer.event("MODIFIED", copy.deepcopy(obj))


def stored_resource(**status: Any) -> dict[str, Any]:
    return as_stored(make_doc(replicas=2), status=status or None)


# ------------------------------------------------------------------------- what is kept


def test_a_deployment_is_kept_with_what_the_drift_check_and_the_pool_state_read() -> None:
    kube = FakeKube(stored_resource(), pod_monitors=False)
    manifest = render_all(make_si())[0]
    kube.apply(manifest)
    live = kube.objects[("Deployment", "serving", manifest["metadata"]["name"])]
    live["metadata"]["managedFields"] += [
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {},
        },
        {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
    ]
    live["metadata"]["annotations"] = {LAST_APPLIED: "{" + "x" * 5000 + "}", "keep": "me"}
    live["status"]["conditions"] = [{"type": "Available", "status": "True", "message": "x" * 500}]
    kept = strip_owned(DEPLOYMENT, "apps/v1")(copy.deepcopy(live))
    assert [m["manager"] for m in kept["metadata"]["managedFields"]] == ["specops"]
    assert kept["metadata"]["annotations"] == {"keep": "me"}
    assert set(kept["status"]) == {"replicas", "readyReplicas", "updatedReplicas", "availableReplicas",
                                   "observedGeneration"}  # fmt: skip
    assert kept["spec"] == live["spec"]
    assert not needs_apply(manifest, kept) and not needs_apply(manifest, live)
    # A field of SpecOps' changed by someone else is still seen as drift in what is kept.
    live["spec"]["template"]["spec"]["containers"][0]["args"].append("--edited")
    assert needs_apply(manifest, strip_owned(DEPLOYMENT, "apps/v1")(copy.deepcopy(live)))


def test_a_resource_is_kept_whole_but_its_managed_fields_and_last_applied() -> None:
    body = stored_resource(mode="Speculative")
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    body["metadata"]["annotations"] = {LAST_APPLIED: "{}", "team": "a"}
    kept = strip_resource(copy.deepcopy(body))
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"team": "a"}
    del body["metadata"]["managedFields"]
    body["metadata"]["annotations"] = {"team": "a"}
    assert kept == body


def test_a_pod_is_kept_with_what_the_hot_swap_reads() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "serving", "resourceVersion": "7", "labels": SWAP_PODS,
                     "annotations": {AWAKE_ANNOTATION: "speculative"}, "managedFields": [{"manager": "kubelet"}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "vllm", "image": "x", "args": ["--a"] * 50}]},
        "status": {"podIP": "10.0.0.1", "phase": "Running", "containerStatuses": [{"name": "vllm"}],
                   "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}]},
    }  # fmt: skip
    kept = strip_pod(copy.deepcopy(pod))
    assert pod_view(kept) == pod_view(pod)
    assert "containers" not in kept["spec"] and "containerStatuses" not in kept["status"]
    assert "managedFields" not in kept["metadata"]


# ------------------------------------------------------------------------------- the store


def test_the_store_follows_the_list_and_the_watch_and_hands_out_copies() -> None:
    informer = Informer(KIND, strip_resource)
    assert informer.get("serving", "demo") == (False, None)  # not listed yet: ask the API server
    body = stored_resource()
    body["metadata"]["resourceVersion"] = "1"
    informer.replace([copy.deepcopy(body)])
    hit, obj = informer.get("serving", "demo")
    assert hit and obj is not None and obj["spec"] == body["spec"]
    obj["spec"]["replicas"] = 99  # the caller's copy
    assert informer.get("serving", "demo")[1]["spec"]["replicas"] == 2  # type: ignore[index]
    body["metadata"]["resourceVersion"] = "2"
    body["spec"]["replicas"] = 3
    informer.event("MODIFIED", copy.deepcopy(body))
    assert informer.get("serving", "demo")[1]["spec"]["replicas"] == 3  # type: ignore[index]
    informer.event("DELETED", copy.deepcopy(body))
    assert informer.get("serving", "demo") == (True, None)  # known to be absent
    informer.unsync()  # a watch failed: the store may have missed something
    assert informer.get("serving", "demo") == (False, None)


def test_a_read_waits_for_the_version_expected() -> None:
    informer = Informer(KIND, strip_resource)
    body = stored_resource()
    body["metadata"]["resourceVersion"] = "5"
    informer.replace([copy.deepcopy(body)])
    informer.expect("serving", "demo", "5")  # seen already: answered at once
    assert informer.get("serving", "demo")[0]
    informer.expect("serving", "demo", "7")  # a write's version, or a Kopf event's
    assert not informer.get("serving", "demo")[0]
    body["metadata"]["resourceVersion"] = "6"
    informer.event("MODIFIED", copy.deepcopy(body))
    assert not informer.get("serving", "demo")[0]  # an older one
    body["metadata"]["resourceVersion"] = "7"
    informer.event("MODIFIED", copy.deepcopy(body))
    assert informer.get("serving", "demo")[0]
    # A version not known (a 409): the fresh read says which one to wait for.
    informer.expect("serving", "demo", None)
    assert not informer.get("serving", "demo")[0]
    body["metadata"]["resourceVersion"] = "8"
    informer.read_fresh("serving", "demo", copy.deepcopy(body))
    assert not informer.get("serving", "demo")[0]
    informer.event("MODIFIED", copy.deepcopy(body))
    assert informer.get("serving", "demo")[0]
    # An expectation made before a list is met by it; one made after it is not.
    informer.expect("serving", "demo", "9")
    since = informer.epoch()  # the list is asked for here
    informer.expect("serving", "other", "3")
    informer.replace([copy.deepcopy(body)], since_epoch=since)
    assert informer.get("serving", "demo")[0]
    assert not informer.get("serving", "other")[0]


# -------------------------------------------------------------------- CachedKube and reconciles


OWNED_OBJECTS = [(KIND, "demo"), (SERVICE, "demo"), (DEPLOYMENT, "demo-spec"), (DEPLOYMENT, "demo-base")]


def test_a_steady_reconcile_and_evaluation_send_no_read() -> None:
    kube = CountingKube(stored_resource())
    cache = hand_fed_cache()
    relist(cache, kube)
    rec = Reconciler(CachedKube(kube, cache), clock=lambda: NOW)
    first = rec.reconcile("serving", "demo")
    assert first is not None and first.applied
    assert kube.reads == []  # everything came from the cache, which knew nothing was there
    for kind, name in OWNED_OBJECTS:
        watch_delivers(cache, kube, kind, name)
    rec.reconcile("serving", "demo")  # the pools' readiness reaches status
    rec.evaluate("serving", "demo", Observation(), 1767225600.0)  # the first verdict too
    for kind, name in OWNED_OBJECTS:
        watch_delivers(cache, kube, kind, name)
    kube.reads.clear()
    writes = len(kube.writes)
    out = rec.reconcile("serving", "demo")
    assert out is not None and not out.applied and not out.status_patched
    rec.evaluate("serving", "demo", Observation(), 1767225601.0)
    assert kube.reads == []
    assert len(kube.writes) == writes


def test_the_operators_own_writes_are_read_back_before_the_watch_delivers_them() -> None:
    kube = CountingKube(stored_resource())
    cache = hand_fed_cache()
    relist(cache, kube)
    rec = Reconciler(CachedKube(kube, cache), clock=lambda: NOW)
    plain = FakeKube(stored_resource(), pod_monitors=False)  # the same without a cache
    plain_rec = Reconciler(plain, clock=lambda: NOW)
    rec.reconcile("serving", "demo")
    plain_rec.reconcile("serving", "demo")
    kube.reads.clear()
    # The watch has delivered nothing yet: the cache still says no Deployment and no status.  Read
    # from it, the next reconcile would create the pools again and post Deployed twice.
    out = rec.reconcile("serving", "demo")
    plain_rec.reconcile("serving", "demo")
    assert out is not None and not out.applied and not out.events
    assert kube.writes == plain.writes and kube.status_patches == plain.status_patches
    assert sorted(kube.reads) == sorted([(KIND, "demo"), (DEPLOYMENT, "demo-spec"), (DEPLOYMENT, "demo-base"),
                                         (SERVICE, "demo")])  # fmt: skip
    # Once the watch delivered them, the cache answers again.
    for kind, name in OWNED_OBJECTS:
        watch_delivers(cache, kube, kind, name)
    kube.reads.clear()
    rec.reconcile("serving", "demo")
    assert kube.reads == []


FOREIGN = {"type": "ExternalCheck", "status": "True", "reason": "Checked", "message": "by another writer",
           "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def test_the_retry_after_a_conflict_reads_fresh() -> None:
    kube = CountingKube(stored_resource())
    cache = hand_fed_cache()
    relist(cache, kube)
    rec = Reconciler(CachedKube(kube, cache), clock=lambda: NOW)
    # Another writer's status patch lands between the read and the patch; the watch has not
    # delivered it.  A retry from the cache would conflict again, every time.
    kube.interleave("patch_status", lambda: kube.write_status({"conditions": [FOREIGN]}))
    out = rec.reconcile("serving", "demo")
    assert out is not None and out.status_patched
    assert kube.conflicts == 1
    assert (KIND, "demo") in kube.reads
    assert "ExternalCheck" in [c["type"] for c in kube.body["status"]["conditions"]]


def test_a_failed_write_makes_the_next_read_fresh() -> None:
    kube = CountingKube(stored_resource())
    cache = hand_fed_cache()
    relist(cache, kube)
    cached = CachedKube(kube, cache)

    def refuse(_: Any) -> None:
        raise ApiException(status=504, reason="Gateway Timeout")  # made or not: unknown

    kube.before_write = refuse
    with pytest.raises(ApiException):
        cached.patch_status("serving", "demo", {"mode": "Baseline"}, None)
    assert cached.get_resource("serving", "demo") is not None
    assert kube.reads == [(KIND, "demo")]


def swap_pod(name: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "serving", "labels": dict(SWAP_PODS)},
            "spec": {"nodeName": "n1"}, "status": {"podIP": "10.0.0.1"}}  # fmt: skip


def test_pods_are_listed_from_the_cache_once_it_holds_the_hot_swaps_writes() -> None:
    kube = CountingKube()
    kube.add(swap_pod("a"))
    kube.add(swap_pod("b"))
    cache = hand_fed_cache()
    relist(cache, kube)
    cached = CachedKube(kube, cache)
    assert [p["metadata"]["name"] for p in cached.list_pods("serving", SWAP_PODS)] == ["a", "b"]
    assert kube.reads == []
    cached.patch_pod_annotations("serving", "a", {AWAKE_ANNOTATION: "baseline"})
    pods = cached.list_pods("serving", SWAP_PODS)
    assert kube.reads == [(POD, "*")]  # the patch is not in the cache yet
    assert pods[0]["metadata"]["annotations"] == {AWAKE_ANNOTATION: "baseline"}
    watch_delivers(cache, kube, POD, "a")
    assert cached.list_pods("serving", SWAP_PODS)[0]["metadata"]["annotations"] == {
        AWAKE_ANNOTATION: "baseline"
    }
    assert len(kube.reads) == 1
    cached.delete_pod("serving", "b")
    assert [p["metadata"]["name"] for p in cached.list_pods("serving", SWAP_PODS)] == ["a"]
    assert len(kube.reads) == 2
    watch_delivers(cache, kube, POD, "b")
    assert [p["metadata"]["name"] for p in cached.list_pods("serving", SWAP_PODS)] == ["a"]
    assert len(kube.reads) == 2
    # Pods outside the cached selection are never answered from it.
    cached.list_pods("serving", {"specops.dev/pool": "hot-swap"})
    assert len(kube.reads) == 3


def test_a_steady_hot_swap_reconcile_reads_only_its_secret() -> None:
    """A HotSwap resource's ConfigMap, NetworkPolicy and EndpointSlices come from the cache as its
    pools do; the admin Secret alone is read by name (watching Secrets would need the right to
    list them all), once per reconcile."""
    kube = CountingKube(as_stored(make_doc(rollout={"strategy": "HotSwap"})))
    engines = FakeEngines()
    cache = ReadCache([
        *hand_fed_cache().informers.values(),
        Informer(CONFIG_MAP, strip_owned(CONFIG_MAP, "v1"), labels=SWAP_OBJECTS, api_version="v1"),
        Informer(NETWORK_POLICY, strip_owned(NETWORK_POLICY, NETWORKING), labels=SWAP_OBJECTS,
                 api_version=NETWORKING),
        Informer(ENDPOINT_SLICE, strip_owned(ENDPOINT_SLICE, ENDPOINT_SLICE_V1), labels=OWN_SLICES,
                 api_version=ENDPOINT_SLICE_V1),
    ])  # fmt: skip
    cached = CachedKube(kube, cache)
    executor = HotSwapExecutor(cached, engines.client, SwapTimings(drain_seconds=0, poll_seconds=0),
                               lambda s: None, lambda: 0.0)  # fmt: skip
    rec = Reconciler(cached, clock=lambda: NOW, hot_swap=executor)
    for i in (1, 2):
        kube.add(engine_pod(f"demo-swap-{i}", f"10.0.0.{i}", "speculative"))
        engines.pod(f"10.0.0.{i}", Pool.SPECULATIVE)
    relist(cache, kube)
    for _ in range(4):  # the Secret, the objects, routing and status: then nothing left to do
        rec.reconcile("serving", "demo")
        relist(cache, kube)  # the watches deliver what was written
    kube.reads.clear()
    out = rec.reconcile("serving", "demo")
    assert out is not None and out.applied == [] and not out.status_patched, out
    assert kube.reads == [("Secret", "demo-hotswap-admin")]
    # A kind the cache holds in another version than asked for goes to the API server.
    assert cached.get_object("discovery.k8s.io/v1beta1", ENDPOINT_SLICE, "serving", "demo-spec-ipv4")
    assert kube.reads[-1] == (ENDPOINT_SLICE, "demo-spec-ipv4")


# ------------------------------------------------------------------- the informer's own thread


class _Response:
    """A client response: a list's body, or a watch's lines (then, optionally, a wait)."""

    def __init__(self, data: Any = None, events: tuple[dict[str, Any], ...] = (), hold: Any = None) -> None:
        self.status = 200
        self.data = json.dumps(data).encode() if data is not None else b""
        self._events = events
        self._hold = hold

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        for event in self._events:
            yield (json.dumps(event) + "\n").encode()
        if self._hold is not None:
            self._hold.wait(5)

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _si(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "serving", "name": name, "resourceVersion": version}, "spec": {}}


class _Server:
    """Answers an informer's list and watch calls from a script, recording how it was called."""

    def __init__(self, lists: list[Any], watches: list[tuple[dict[str, Any], ...]]) -> None:
        self.lists, self.watches = lists, watches
        self.calls: list[dict[str, Any]] = []
        self.done = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> _Response:
        self.calls.append(kwargs)
        if kwargs.get("watch"):
            if self.watches:
                return _Response(events=self.watches.pop(0))
            return _Response(hold=self.done)  # nothing more happens
        return _Response(data=self.lists.pop(0))


def test_the_informer_lists_watches_and_lists_again_after_410() -> None:
    server = _Server(
        lists=[
            {"metadata": {"resourceVersion": "1"}, "items": [_si("a", "1")]},
            {"metadata": {"resourceVersion": "5"}, "items": [_si("a", "1"), _si("c", "4")]},
        ],
        watches=[
            ({"type": "ADDED", "object": _si("b", "2")},),  # then the watch ends (its timeout)
            ({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}},),
        ],
    )  # fmt: skip
    informer = Informer(KIND, strip_resource, list_fn=server)
    informer.start()
    try:
        deadline = time.monotonic() + 5
        while informer.get("serving", "c")[1] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert informer.get("serving", "c")[1] is not None, "the second list is not in the store"
    finally:
        informer.stop()
        server.done.set()
        informer.join(5)
    assert informer.get("serving", "b") == (True, None)  # gone with the list after the 410
    assert informer.get("serving", "a")[1] is not None
    watches = [c for c in server.calls if c.get("watch")]
    # From the list's version, renewed from the last one seen, and from the new list's after the 410.
    assert [c["resource_version"] for c in watches[:3]] == ["1", "2", "5"]
    assert [c.get("watch", False) for c in server.calls[:4]] == [False, True, True, False]


def test_a_namespaced_cache_answers_for_its_namespace_while_its_store_is_empty() -> None:
    """In namespaced mode each informer is keyed by its namespace: found there even when it holds
    nothing yet (an empty store once made the lookup fall through, so every read went to the API
    server and the lazy informers, started by a read, never started)."""
    kube = CountingKube()
    informer = Informer(CONFIG_MAP, strip_owned(CONFIG_MAP, "v1"), "serving", SWAP_OBJECTS, api_version="v1")
    cache = ReadCache([informer])
    assert cache.informer(CONFIG_MAP, "serving") is informer
    assert cache.informer(CONFIG_MAP, "elsewhere") is None
    informer.replace([], since_epoch=informer.epoch())
    assert CachedKube(kube, cache).get_object("v1", CONFIG_MAP, "serving", "demo-hotswap") is None
    assert kube.reads == []  # the empty store answered

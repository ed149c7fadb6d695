"""Reads from watches, not from GETs: a memory-bounded cache of what the reconciler reads.

Every reconcile and evaluation reads the resource, its two Deployments, its Service and its
PodMonitor: four or five GETs, each decoded, per resource per cycle (an evaluation cycle over 1,000
resources took 13.6 s, and a steady one was never free of requests).  Here one
informer per kind lists it once and then follows its watch (from the list's resourceVersion; the
watch is renewed every ``WATCH_SECONDS`` from the last version seen, and a 410 Gone or any error
makes it list again), each in a daemon thread.  ``CachedKube`` answers ``KubeApi`` reads from the
informers and hands every write to ``Kube``; a steady reconcile sends no request at all.

What is watched: SpeculativeInferences (all of them), and Deployments, Services, PodMonitors (when
the kind is served) labelled ``app.kubernetes.io/managed-by=specops``; pods only those of hot-swap
pools (``specops.dev/pool=hot-swap`` too: the only pods the operator lists).  A hot-swap resource's
ConfigMap and NetworkPolicy (labelled as its pods) and EndpointSlices (labelled
``endpointslice.kubernetes.io/managed-by=specops.dev``, in the version the cluster serves) are
watched too, from the first read of one (``get_object``); its admin Secret is not (a watch of
Secrets needs the right to list every Secret in scope): one GET of it per hot-swap reconcile.
Pods and the hot-swap kinds are watched lazily, so an operator without hot-swap resources needs no
right to list them.  In namespaced mode, one informer per kind and watched namespace.  An informer
refused its list or watch (RBAC without ``list``/``watch``, a kind not served) answers nothing:
reads of that kind go to the API server.

What is kept, to bound memory (each object as compact JSON, decoded afresh for each read, so a
caller can never change what is stored): for a SpeculativeInference, everything but
``metadata.managedFields`` and kubectl's last-applied annotation.  For the owned objects:
``metadata`` (name, namespace, uid, resourceVersion, generation, labels, annotations but the
last-applied one, ownerReferences, deletionTimestamp, and of ``managedFields`` only SpecOps' own
Apply entry, which the drift check reads), every other top-level field but ``status`` (the drift
check compares them: ``spec``, a ConfigMap's ``data``, an EndpointSlice's endpoints), and of
a Deployment's ``status`` only replicas, readyReplicas, updatedReplicas, availableReplicas and
observedGeneration (the pool states).  Of a pod: that metadata, ``spec.nodeName``, and of its
status the phase, podIP(s) and the conditions' type and status (the hot swap's pod view).

Why a stale read cannot cause a wrong write:

1. Each cached object is a version the object really had (the watch delivers versions in order);
   a read from the cache is a GET made a moment earlier, never a mix of versions.
2. The operator reads its own writes.  Every write hands back the object's new resourceVersion
   and, until the watch has delivered that version (or the informer has listed again since), reads
   of that object go to the API server.  So a reconcile never plans from a state older than its own
   last step: a rollout step (``plan.rollout.rollout_step``: scale one pool from the applied split
   and the growing pool's readiness) cannot be repeated from a stale split or undone from a stale
   mode in status, and a hot-swap plan sees its own pod annotations and deletions.
3. What triggers a reconcile is read too: the Kopf handlers tell the cache the resourceVersion of
   the resource or Deployment event they act on (``ReadCache.expect``), and until the cache holds
   that version the read goes to the API server.
4. Status is patched only onto the resourceVersion it was computed from; a 409 Conflict makes the
   next read of that resource go to the API server, so the reconciler's retry
   (``Reconciler._on_fresh_read``) works on a fresh read, not on the same stale one.
5. What other writers did (the Deployment controller's readiness, a user's edit) may show a moment
   later than a GET would show it; a GET has the same race, only a shorter one.  Lagging readiness
   delays the next rollout step (it waits for ready pods), a lagging edit is applied when its own
   event arrives (3.); server-side applies are idempotent and no plan deletes an owned object (the
   hot swap deletes a pod only once its own annotation marked it, which 2. makes it see, and a
   delete of a pod already gone is a no-op).  An object the cache does not hold (deleted, or its
   managed-by label removed) is re-applied, which is what restores it, and the apply's version is
   then waited for (2.).
6. Before an informer's first list, after a watch error until the list again, and for whatever
   is not cached (the admin Secret, pods outside hot-swap pools, unwatched namespaces), reads go to
   the API server, counted in ``specops_api_reads_total`` as every request sent.
7. Every replica watches, leader or not.  A new leader acts at least ``lease_duration -
   renew_deadline`` (5 s by default) after the old one's last write, far beyond a watch's lag, and
   an informer whose watch is broken has stopped answering (6.).

A version waited for counts as delivered when it is among the last ``SEEN_VERSIONS`` the watch
delivered for that object (the watch may have been ahead already); a read that went to the API
server moves the wait to the version it found, so a wait always ends, at the latest at the next list.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from specops.controller import metrics
from specops.controller.hotswap import served_endpoint_slice_version
from specops.controller.kube import FIELD_MANAGER, Kube, KubeApi
from specops.render.hotswap import ENDPOINTSLICE_MANAGER, SWAP_POOL
from specops.render.manifests import LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY

log = logging.getLogger("specops.cache")

DEPLOYMENT, SERVICE, POD_MONITOR, POD = "Deployment", "Service", "PodMonitor", "Pod"
CONFIG_MAP, NETWORK_POLICY, ENDPOINT_SLICE = "ConfigMap", "NetworkPolicy", "EndpointSlice"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Server-side timeout of one watch request; it is then renewed from the last version seen.  The
# client gives up on a watch silent for longer than that plus WATCH_GRACE (a connection that died
# without closing): the store is then not trusted until it lists again.
WATCH_SECONDS = 240
WATCH_GRACE = 30
LIST_TIMEOUT = 120
# Items per page of a list (a big first list does not arrive as one huge answer).
LIST_PAGE = 500
# Versions of each object remembered, to tell whether a version asked for was seen already.
SEEN_VERSIONS = 8
# Seconds between attempts after a failed list or watch (the last repeats).
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
OWNED = {LABEL_MANAGED_BY: MANAGED_BY}
SWAP_PODS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_POOL: SWAP_POOL}
SWAP_OBJECTS = SWAP_PODS  # a hot-swap resource's ConfigMap and NetworkPolicy carry its pods' labels
OWN_SLICES = {"endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER}
_META_KEPT = ("name", "namespace", "uid", "resourceVersion", "generation", "labels", "ownerReferences",
              "deletionTimestamp")  # fmt: skip
_DEPLOYMENT_STATUS = (
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "availableReplicas",
    "observedGeneration",
)

Key = tuple[str, str]  # (namespace, name)


# ---------------------------------------------------------------------------------------- strip


def _annotations(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}


def strip_resource(obj: dict[str, Any]) -> dict[str, Any]:
    """A SpeculativeInference as kept: all but managedFields and the last-applied annotation."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("managedFields", "annotations")}
    if annotations := _annotations(obj.get("metadata") or {}):
        meta["annotations"] = annotations
    out = {k: v for k, v in obj.items() if k != "metadata"}
    out["metadata"] = meta
    return out


def _owned_meta(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: meta[k] for k in _META_KEPT if k in meta}
    if annotations := _annotations(meta):
        out["annotations"] = annotations
    mine = [
        m for m in meta.get("managedFields") or []
        if m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply" and not m.get("subresource")
    ]  # fmt: skip
    if mine:
        out["managedFields"] = mine
    return out


def strip_owned(kind: str, api_version: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An object SpecOps applies, as kept (list items carry no kind: it is set here): the kept
    metadata and every top-level field the apply sets (``spec``; a ConfigMap's ``data``, an
    EndpointSlice's ``addressType``, ``endpoints`` and ``ports``), no ``status`` but a
    Deployment's pool figures."""

    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": _owned_meta(obj.get("metadata") or {}),
            **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")},
        }
        if kind == DEPLOYMENT:
            status = obj.get("status") or {}
            out["status"] = {k: status[k] for k in _DEPLOYMENT_STATUS if k in status}
        return out

    return strip


def strip_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """A pod as kept: what the hot swap's pod view reads."""
    status = obj.get("status") or {}
    kept_status: dict[str, Any] = {k: status[k] for k in ("phase", "podIP", "podIPs") if k in status}
    conditions = [{"type": c.get("type"), "status": c.get("status")} for c in status.get("conditions") or []]
    if conditions:
        kept_status["conditions"] = conditions
    spec = obj.get("spec") or {}
    return {
        "apiVersion": "v1",
        "kind": POD,
        "metadata": _owned_meta(obj.get("metadata") or {}),
        "spec": {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {},
        "status": kept_status,
    }


# ------------------------------------------------------------------------------------ informer


@dataclass(slots=True)
class _Entry:
    data: str  # the stripped object as JSON
    version: str
    labels: dict[str, str]
    terminating: bool


@dataclass(slots=True)
class _Pending:
    """Reads of an object go to the API server until the store holds ``version`` (None: a version
    not known, e.g. after a 409) or, with ``gone``, until the object is gone or terminating."""

    version: str | None
    gone: bool
    epoch: int


ListFn = Callable[..., Any]


class Informer:
    """One kind (in one namespace, or all): a store fed by a list, then by a watch.

    ``list_fn`` (a client list method; None: fed by hand, as the unit tests do) is called with
    ``args`` and the label selector of ``labels``.  ``lazy``: started by its first read, not with
    the others (the pods: watched only once a hot-swap resource asks for them, so an operator
    without hot-swap resources needs no permission to watch pods)."""

    def __init__(
        self,
        kind: str,
        strip: Callable[[dict[str, Any]], dict[str, Any]],
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        list_fn: ListFn | None = None,
        args: tuple[Any, ...] = (),
        lazy: bool = False,
        api_version: str | None = None,
    ) -> None:
        self.kind = kind
        self.api_version = api_version  # what ``get_object`` asks for; None: not read through it
        self.namespace = namespace
        self.labels = dict(labels or {})
        self._strip = strip
        self._list_fn = list_fn
        self._args = args
        self.lazy = lazy
        self._lock = threading.Lock()
        self._objects: dict[Key, _Entry] = {}
        self._seen: dict[Key, deque[str]] = {}
        self._pending: dict[Key, _Pending] = {}
        self._epoch = 0
        self._synced = False
        self.unavailable: str | None = None  # why the kind is not cached (403, 404), if so
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------- the store

    @property
    def synced(self) -> bool:
        return self._synced

    def __len__(self) -> int:
        return len(self._objects)

    def _store(self, obj: dict[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        if "name" not in meta:
            return None
        key = (str(meta.get("namespace") or ""), str(meta["name"]))
        kept = self._strip(obj)
        version = str(meta.get("resourceVersion") or "")
        self._objects[key] = _Entry(
            data=json.dumps(kept, separators=(",", ":")),
            version=version,
            labels=dict(meta.get("labels") or {}),
            terminating=bool(meta.get("deletionTimestamp")),
        )
        self._seen.setdefault(key, deque(maxlen=SEEN_VERSIONS)).append(version)
        return key

    def _satisfied(self, key: Key, pending: _Pending) -> bool:
        entry = self._objects.get(key)
        if pending.gone:
            return entry is None or entry.terminating
        return pending.version is not None and pending.version in self._seen.get(key, ())

    def _settle(self, key: Key) -> None:
        pending = self._pending.get(key)
        if pending is not None and self._satisfied(key, pending):
            del self._pending[key]

    def replace(self, items: list[dict[str, Any]], since_epoch: int | None = None) -> None:
        """The store becomes ``items`` (a complete list).  Expectations made before the list was
        asked for (``since_epoch``: ``epoch()`` then) are met by it: it is a read at least as new."""
        with self._lock:
            self._objects.clear()
            self._seen.clear()
            for item in items:
                self._store(item)
            if since_epoch is not None:
                self._pending = {k: p for k, p in self._pending.items() if p.epoch > since_epoch}
            for key in list(self._pending):
                self._settle(key)
            self._synced = True

    def event(self, type_: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        with self._lock:
            meta = obj.get("metadata") or {}
            if type_ == "DELETED":
                key = (str(meta.get("namespace") or ""), str(meta.get("name")))
                self._objects.pop(key, None)
                self._seen.pop(key, None)
            else:
                stored = self._store(obj)
                if stored is None:
                    return
                key = stored
            self._settle(key)

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def unsync(self) -> None:
        """The store may have missed events (a watch failed): reads go to the API server."""
        with self._lock:
            self._synced = False

    # ------------------------------------------------------------------------------ reads

    def get(self, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(True, the object or None when absent), or (False, None): ask the API server."""
        with self._lock:
            key = (namespace, name)
            if not self._synced or key in self._pending:
                return False, None
            entry = self._objects.get(key)
            data = entry.data if entry is not None else None
        return True, (json.loads(data) if data is not None else None)

    def select(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]] | None:
        """The objects of ``namespace`` whose labels include ``labels``, in name order; None: ask
        the API server (not synced, or one of that namespace's objects awaits a version)."""
        with self._lock:
            if not self._synced or any(ns == namespace for ns, _ in self._pending):
                return None
            found = [
                (name, e.data) for (ns, name), e in self._objects.items()
                if ns == namespace and all(e.labels.get(k) == v for k, v in labels.items())
            ]  # fmt: skip
        return [json.loads(data) for _, data in sorted(found)]

    # ----------------------------------------------------------------------- expectations

    def expect(self, namespace: str, name: str, version: str | None) -> None:
        """Answer for this object only once the store holds ``version`` (None: not known)."""
        self._expect((namespace, name), version, gone=False)

    def expect_gone(self, namespace: str, name: str) -> None:
        self._expect((namespace, name), None, gone=True)

    def _expect(self, key: Key, version: str | None, gone: bool) -> None:
        with self._lock:
            self._epoch += 1
            self._pending[key] = _Pending(version, gone, self._epoch)
            self._settle(key)

    def pending(self, namespace: str) -> list[str]:
        with self._lock:
            return [name for ns, name in self._pending if ns == namespace]

    def read_fresh(self, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        """A read of a pending object went to the API server and found ``obj``: from now on the
        cache may answer once it holds that version (or the object is gone)."""
        with self._lock:
            if (namespace, name) not in self._pending:
                return
        if obj is None:
            self.expect_gone(namespace, name)
        else:
            self.expect(
                namespace, name, str((obj.get("metadata") or {}).get("resourceVersion") or "") or None
            )

    # ------------------------------------------------------------------------- the thread

    def start(self) -> None:
        with self._lock:
            if self._list_fn is None or self._thread is not None or self._stop.is_set():
                return
            where = self.namespace or "all namespaces"
            self._thread = threading.Thread(
                target=self._run, name=f"specops-cache-{self.kind}-{where}", daemon=True
            )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _selector(self) -> dict[str, Any]:
        if not self.labels:
            return {}
        return {"label_selector": ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))}

    def _list(self) -> str:
        """List everything (in pages) into the store; the list's resourceVersion."""
        assert self._list_fn is not None
        since = self.epoch()
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            metrics.API_READS.labels("list", self.kind).inc()
            page_args: dict[str, Any] = {"limit": LIST_PAGE, **self._selector()}
            if token:
                page_args["_continue"] = token
            resp = self._list_fn(
                *self._args, _preload_content=False, _request_timeout=LIST_TIMEOUT, **page_args
            )
            page = json.loads(resp.data)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self.replace(items, since)
                return str(meta.get("resourceVersion") or "")

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        assert self._list_fn is not None
        metrics.API_READS.labels("watch", self.kind).inc()
        w = watch.Watch(return_type="object")  # the objects as plain dicts, no client models
        self._watch = w
        try:
            yield from w.stream(
                self._list_fn, *self._args, resource_version=version, timeout_seconds=WATCH_SECONDS,
                _request_timeout=(10, WATCH_SECONDS + WATCH_GRACE),
                allow_watch_bookmarks=True, **self._selector(),
            )  # fmt: skip
        finally:
            self._watch = None

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list()
                failures = 0
                if self.unavailable:
                    log.info("%s: cached again", self._describe())
                    self.unavailable = None
                while not self._stop.is_set():
                    for ev in self._events(version):
                        if self._stop.is_set():
                            break
                        obj = ev.get("raw_object") or {}
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self.event(ev["type"], obj)
            except ApiException as exc:
                self.unsync()
                if exc.status == 410:
                    continue  # the version is too old to watch from: list again at once
                failures += 1
                if exc.status in (401, 403, 404, 405):
                    if self.unavailable is None:
                        log.warning("%s: not cached (%s %s); its reads go to the API server",
                                    self._describe(), exc.status, exc.reason)  # fmt: skip
                    self.unavailable = f"{exc.status} {exc.reason}"
                else:
                    log.info("%s: list or watch failed (%s %s); listing again", self._describe(),
                             exc.status, exc.reason)  # fmt: skip
            except Exception as exc:
                self.unsync()
                failures += 1
                if not self._stop.is_set():
                    log.info("%s: list or watch failed (%s); listing again", self._describe(), exc)
            self._stop.wait(BACKOFF[min(failures, len(BACKOFF)) - 1] if failures else 0)

    def _describe(self) -> str:
        return f"{self.kind} informer ({self.namespace or 'all namespaces'})"


# ------------------------------------------------------------------------------------- cache


NETWORKING, MONITORING = "networking.k8s.io/v1", "monitoring.coreos.com/v1"


def _plural(api_version: str, namespace: str | None, plural: str) -> tuple[str, ...]:
    """The arguments of ``CustomObjectsApi``'s list calls (any kind of a named API group)."""
    group, version = api_version.split("/")
    return (group, version, namespace, plural) if namespace is not None else (group, version, plural)


class ReadCache:
    """The informers, by kind and namespace ("" for all namespaces)."""

    def __init__(self, informers: list[Informer]) -> None:
        self.informers = {(i.kind, i.namespace or ""): i for i in informers}
        self.started = False

    @classmethod
    def watching(
        cls,
        api: client.ApiClient,
        namespaces: tuple[str, ...],
        pod_monitors: bool,
        endpoint_slices: str | None = None,
    ) -> ReadCache:
        """The operator's informers: cluster-wide without ``namespaces``, else one per namespace.
        ``endpoint_slices``: the EndpointSlice version the hot swap writes (None: not cached)."""
        custom, apps, core = client.CustomObjectsApi(api), client.AppsV1Api(api), client.CoreV1Api(api)
        informers = []
        for ns in namespaces or (None,):
            scoped = ns is not None
            list_custom = (
                custom.list_namespaced_custom_object if scoped else custom.list_cluster_custom_object
            )
            list_deployments = (
                apps.list_namespaced_deployment if scoped else apps.list_deployment_for_all_namespaces
            )
            list_config_maps = (
                core.list_namespaced_config_map if scoped else core.list_config_map_for_all_namespaces
            )
            informers += [
                Informer(KIND, strip_resource, ns, None, list_custom,
                         (GROUP, VERSION, ns, PLURAL) if scoped else (GROUP, VERSION, PLURAL)),
                Informer(DEPLOYMENT, strip_owned(DEPLOYMENT, "apps/v1"), ns, OWNED, list_deployments,
                         (ns,) if scoped else (), api_version="apps/v1"),
                Informer(SERVICE, strip_owned(SERVICE, "v1"), ns, OWNED,
                         core.list_namespaced_service if scoped else core.list_service_for_all_namespaces,
                         (ns,) if scoped else (), api_version="v1"),
                Informer(POD, strip_pod, ns, SWAP_PODS,
                         core.list_namespaced_pod if scoped else core.list_pod_for_all_namespaces,
                         (ns,) if scoped else (), lazy=True),
                # The hot swap's other objects, watched from the first read (the admin Secret is
                # not: watching Secrets would need the right to list every Secret in scope).
                Informer(CONFIG_MAP, strip_owned(CONFIG_MAP, "v1"), ns, SWAP_OBJECTS,
                         list_config_maps, (ns,) if scoped else (), lazy=True, api_version="v1"),
                Informer(NETWORK_POLICY, strip_owned(NETWORK_POLICY, NETWORKING), ns, SWAP_OBJECTS,
                         list_custom, _plural(NETWORKING, ns, "networkpolicies"), lazy=True,
                         api_version=NETWORKING),
            ]  # fmt: skip
            if endpoint_slices is not None:
                informers.append(
                    Informer(ENDPOINT_SLICE, strip_owned(ENDPOINT_SLICE, endpoint_slices), ns, OWN_SLICES,
                             list_custom, _plural(endpoint_slices, ns, "endpointslices"), lazy=True,
                             api_version=endpoint_slices)
                )  # fmt: skip
            if pod_monitors:
                informers.append(
                    Informer(POD_MONITOR, strip_owned(POD_MONITOR, MONITORING), ns, OWNED,
                             list_custom, _plural(MONITORING, ns, "podmonitors"))
                )  # fmt: skip
        return cls(informers)

    def informer(self, kind: str, namespace: str) -> Informer | None:
        # Not ``a or b``: an informer with an empty store has a length of 0, so it is falsy.
        found = self.informers.get((kind, namespace))
        return found if found is not None else self.informers.get((kind, ""))

    def expect(self, kind: str, namespace: str, name: str, version: str | None) -> None:
        """Answer reads of that object from the cache only once it holds ``version``."""
        if (informer := self.informer(kind, namespace)) is not None:
            informer.expect(namespace, name, version)

    def start(self) -> None:
        self.started = True
        for informer in self.informers.values():
            if not informer.lazy:
                informer.start()

    def start_lazy(self, informer: Informer) -> None:
        """Start a lazy informer at its first read (once the cache runs)."""
        if self.started and informer.lazy:
            informer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every informer (a watch's socket is shut); wait ``timeout`` seconds for them all."""
        for informer in self.informers.values():
            informer.stop()
        deadline = time.monotonic() + timeout
        for informer in self.informers.values():
            informer.join(max(0.0, deadline - time.monotonic()))

    def synced(self) -> bool:
        """Every informer holds a complete list (those not allowed to list excepted)."""
        return all(i.synced or i.unavailable or i.lazy for i in self.informers.values())

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.synced() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.synced()


# ---------------------------------------------------------------------------------- CachedKube


class CachedKube:
    """``KubeApi`` with reads from ``cache`` where it can answer, else from ``kube`` (counted);
    writes go to ``kube``, and each tells the cache which version of the object to wait for."""

    def __init__(self, kube: KubeApi, cache: ReadCache) -> None:
        self.kube = kube
        self.cache = cache

    # ---------------------------------------------------------------------------- reads

    def _get(
        self, kind: str, namespace: str, name: str, fetch: Callable[[str, str], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        informer = self.cache.informer(kind, namespace)
        if informer is not None:
            hit, obj = informer.get(namespace, name)
            if hit:
                return obj
        obj = fetch(namespace, name)
        if informer is not None:
            informer.read_fresh(namespace, name, obj)
        return obj

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(KIND, namespace, name, self.kube.get_resource)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(DEPLOYMENT, namespace, name, self.kube.get_deployment)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(SERVICE, namespace, name, self.kube.get_service)

    def get_pod_monitor(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(POD_MONITOR, namespace, name, self.kube.get_pod_monitor)

    def pod_monitor_served(self) -> bool:
        return self.kube.pod_monitor_served()

    def serves(self, api_version: str, kind: str) -> bool:
        return self.kube.serves(api_version, kind)

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self.cache.informer(kind, namespace)
        if informer is None or informer.api_version != api_version:
            return self.kube.get_object(api_version, kind, namespace, name)
        self.cache.start_lazy(informer)
        return self._get(kind, namespace, name, lambda ns, n: self.kube.get_object(api_version, kind, ns, n))

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        informer = self.cache.informer(POD, namespace)
        if informer is not None and informer.labels.items() <= labels.items():
            self.cache.start_lazy(informer)
            cached = informer.select(namespace, labels)
            if cached is not None:
                return cached
        pods = self.kube.list_pods(namespace, labels)
        if informer is not None:
            found = {(p.get("metadata") or {}).get("name"): p for p in pods}
            for name in informer.pending(namespace):
                informer.read_fresh(namespace, name, found.get(name))
        return pods

    # --------------------------------------------------------------------------- writes

    def _wrote(self, kind: str, namespace: str, name: str, call: Callable[[], str | None]) -> str | None:
        """Make a write; the cache then answers for the object once it holds the version written.
        A write that failed may have been made or not (a timeout) or been refused because the
        object moved on (409): the next read of it goes to the API server either way."""
        try:
            version = call()
        except Exception:
            self.cache.expect(kind, namespace, name, None)
            raise
        self.cache.expect(kind, namespace, name, version)
        return version

    def apply(self, manifest: dict[str, Any]) -> str | None:
        meta = manifest["metadata"]
        return self._wrote(
            str(manifest["kind"]), str(meta.get("namespace") or ""), str(meta["name"]),
            lambda: self.kube.apply(manifest),
        )  # fmt: skip

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> str | None:
        return self._wrote(
            KIND, namespace, name, lambda: self.kube.patch_status(namespace, name, patch, resource_version)
        )

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> str | None:
        return self._wrote(
            POD, namespace, name, lambda: self.kube.patch_pod_annotations(namespace, name, annotations)
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        informer = self.cache.informer(POD, namespace)
        try:
            self.kube.delete_pod(namespace, name)
        finally:
            if informer is not None:
                informer.expect_gone(namespace, name)

    def post_event(self, resource: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.kube.post_event(resource, type_, reason, message)


def cached_kube(kube: Kube, namespaces: tuple[str, ...]) -> CachedKube:
    """The operator's ``CachedKube`` over ``kube`` (its informers not started yet)."""
    return CachedKube(
        kube,
        ReadCache.watching(
            kube.api, namespaces, kube.pod_monitor_served(), served_endpoint_slice_version(kube)
        ),
    )


def _cached_is_a_kube_api(kube: CachedKube) -> KubeApi:
    """Never called: mypy checks here that CachedKube offers everything a KubeApi does."""
    return kube

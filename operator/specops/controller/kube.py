"""The operator's Kubernetes I/O: reads, server-side apply, status patches and Events.

Every write goes through here, with one field manager, so it is easy to see (and to count) what the
operator writes; every read request sent is counted too (``specops_api_reads_total``).  Blocking
client calls; the handlers run them in threads.  ``specops.controller.cache.CachedKube`` answers
the reads from watches and hands the writes to ``Kube``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import API_VERSION, GROUP, KIND, PLURAL, VERSION
from specops.controller import metrics

FIELD_MANAGER = "specops"
log = logging.getLogger("specops.kube")


class NotLeaderError(RuntimeError):
    """A write refused because this replica does not hold the leader Lease (any more)."""


def gone_or_terminating(exc: BaseException) -> bool:
    """The API server's answer when the object was deleted (404) or its namespace is being deleted
    (403 NamespaceTerminating: writes there are refused): nothing left to act on, not a fault."""
    if not isinstance(exc, ApiException):
        return False
    return exc.status == 404 or (exc.status == 403 and "NamespaceTerminating" in str(exc.body or ""))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeApi(Protocol):
    """What the reconciler asks of Kubernetes: reads of the resource and the objects it owns, and
    the three kinds of write.  ``Kube`` is the real one; the tests run the reconciler on an
    in-memory one (tests/support/fake_kube.py) with the same signatures, checked by mypy."""

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_pod_monitor(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def pod_monitor_served(self) -> bool: ...

    def serves(self, api_version: str, kind: str) -> bool:
        """Does the API server serve ``kind`` at ``api_version`` (asked once per process)?"""
        ...

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Any namespaced object (the hot swap's Secret, ConfigMap, NetworkPolicy, EndpointSlices)."""
        ...

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The pods whose labels include ``labels`` (with their status: IP, conditions)."""
        ...

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> str | None:
        """A merge patch of a pod's annotations (None deletes one); the pod's new resourceVersion
        (None when not known), so a read cache can tell when it has seen the write."""
        ...

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def apply(self, manifest: dict[str, Any]) -> str | None:
        """Server-side apply; the object's resourceVersion after it (None when not known)."""
        ...

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> str | None: ...

    def post_event(self, resource: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class Kube:
    """``may_write``: the write fence of leader election (None: a single replica, always)."""

    def __init__(self, api: client.ApiClient, may_write: Callable[[], bool] | None = None) -> None:
        self.api = api
        self.may_write = may_write
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.dynamic = dynamic.DynamicClient(api)
        self._pod_monitor_served: bool | None = None
        self._served: dict[tuple[str, str], bool] = {}

    # ------------------------------------------------------------------------------------ reads

    def _read(self, kind: str, read: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        """An object as a plain dict (its JSON as the API server sent it), or None when it does
        not exist.  The client's typed models are skipped: building one and turning it back into a
        dict cost twice the request itself, and every reconcile and evaluation reads several."""
        metrics.API_READS.labels("get", kind).inc()
        try:
            resp = read(*args, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj: dict[str, Any] = json.loads(resp.data)
        return obj

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(
            KIND, self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read("Deployment", self.apps.read_namespaced_deployment, name, namespace)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read("Service", self.core.read_namespaced_service, name, namespace)

    def get_pod_monitor(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(
            "PodMonitor",
            self.custom.get_namespaced_custom_object,
            "monitoring.coreos.com",
            "v1",
            namespace,
            "podmonitors",
            name,
        )

    def pod_monitor_served(self) -> bool:
        """Is the Prometheus Operator's PodMonitor kind served?  Asked once per process; a discovery
        that fails counts as not served."""
        if self._pod_monitor_served is None:
            try:
                self._pod_monitor_served = self.serves("monitoring.coreos.com/v1", "PodMonitor")
            except Exception:
                self._pod_monitor_served = False
        return self._pod_monitor_served

    def serves(self, api_version: str, kind: str) -> bool:
        key = (api_version, kind)
        if key not in self._served:
            try:
                self.dynamic.resources.get(api_version=api_version, kind=kind)
                self._served[key] = True
            except dynamic.exceptions.ResourceNotFoundError:
                self._served[key] = False
        return self._served[key]

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        metrics.API_READS.labels("get", kind).inc()
        try:
            obj = resource.get(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out: dict[str, Any] = obj.to_dict()
        return out

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        metrics.API_READS.labels("list", "Pod").inc()
        resp: Any = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(resp.data).get("items") or []
        return items

    # ----------------------------------------------------------------------------------- writes

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> str | None:
        self._fence(f"annotations of pod {namespace}/{name}")
        resp: Any = self.core.patch_namespaced_pod(
            name, namespace, {"metadata": {"annotations": annotations}}, _preload_content=False
        )
        return _resource_version(json.loads(resp.data))

    def delete_pod(self, namespace: str, name: str) -> None:
        self._fence(f"pod {namespace}/{name}")
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _fence(self, what: str) -> None:
        """Refuse a write once leadership is lost, even mid-reconcile: the next leader may be
        acting already (``renew_deadline`` has passed since this replica last renewed)."""
        if self.may_write is not None and not self.may_write():
            raise NotLeaderError(f"not the leader: {what} not written")

    def apply(self, manifest: dict[str, Any]) -> str | None:
        self._fence(f"{manifest['kind']} {manifest['metadata']['name']}")
        resource = self.dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        out = resource.server_side_apply(
            body=manifest,
            name=manifest["metadata"]["name"],
            namespace=manifest["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return _resource_version(out.to_dict()) if out is not None else None

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> str | None:
        """A merge patch of status; with ``resource_version``, only onto that version of the
        resource (else 409 Conflict: someone wrote it since it was read).  The new version."""
        self._fence(f"status of {namespace}/{name}")
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        resp = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body, field_manager=FIELD_MANAGER
        )
        rv = (resp.get("metadata") or {}).get("resourceVersion") if isinstance(resp, dict) else None
        return str(rv) if rv else None

    def post_event(self, resource: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the resource; failures are logged, never raised (events are best
        effort), except the write fence's."""
        meta = resource["metadata"]
        self._fence(f"event {reason} on {meta['namespace']}/{meta['name']}")
        now = now_rfc3339()
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "specops"},
            "reportingComponent": "specops.dev/operator",
            "reportingInstance": f"specops-{uuid.getnode():x}",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            log.warning(
                "could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc.reason
            )


def _resource_version(obj: Any) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
    return str(rv) if rv else None


def _kube_is_a_kube_api(kube: Kube) -> KubeApi:
    """Never called: mypy checks here that the real client offers everything the reconciler asks
    of a KubeApi (a return-value error, which this package's mypy settings do not relax)."""
    return kube

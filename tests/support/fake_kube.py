"""``FakeKube``: the operator's Kubernetes I/O (``specops.controller.kube.KubeApi``) in memory, for
running the reconciler and the evaluator without an API server.

What it keeps of the API server, because the reconciler relies on it:

- objects by kind, namespace and name, returned as copies (a caller never edits what is stored);
  a uid and generation 1 for what is added without them;
- a resourceVersion per object, from one counter bumped at every write (as etcd's revision);
- status patches are JSON merge patches (RFC 7386: a null deletes the key) and, given the
  resourceVersion they were computed from, fail with 409 Conflict when the object has moved on;
- apply stores the manifest with the field manager's ``managedFields`` entry (a ``fieldsV1`` tree
  keyed as the API server keys list elements) and keeps other managers' entries; a Deployment's
  generation moves when its spec changes and its pods are ready at once;
- ``post_event`` is best effort, as the real one: an API error is swallowed.

Pods are added by the test (``add``); the hot swap lists them by labels, patches their
annotations (a merge patch) and deletes them.

What it does not do: merge an apply with fields other managers set (apply replaces the object),
defaulting, admission, watches, deletion of anything but pods, a Deployment's pods.

Faults and other writers come in through two hooks: ``before_write`` sees every write first and
may raise (the write is then not made), and ``interleave`` runs something once, just before the
next write of a kind (another writer between the reconciler's read and its write).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import KIND
from specops.controller.kube import FIELD_MANAGER, KubeApi

# The keys the API server identifies list elements by (patchMergeKey / listMapKeys); other lists
# are atomic.  Ports: containerPort or port, with the protocol defaulted.
_ELEMENT_KEYS = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
}


@dataclass(frozen=True)
class Write:
    """A write about to be made: ``verb`` is "apply", "patch_status", "post_event", "patch_pod" or
    "delete_pod"; ``kind`` and
    ``name`` are the object's (the Event's involved object for "post_event")."""

    verb: str
    kind: str
    name: str


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    name: str  # of the involved object


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` after the JSON merge patch ``patch`` (RFC 7386)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _element_key(list_name: str, item: dict[str, Any]) -> dict[str, Any] | None:
    if list_name == "ports":
        port = "containerPort" if "containerPort" in item else "port"
        return {port: item.get(port), "protocol": item.get("protocol", "TCP")}
    names = _ELEMENT_KEYS.get(list_name)
    return {n: item[n] for n in names if n in item} if names else None


def fields_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """The ``fieldsV1`` tree of the fields an apply of ``obj`` sets: ``f:<field>`` for each field,
    ``k:<key as JSON>`` for each element of a keyed list, ``{}`` for scalars and atomic lists."""
    out: dict[str, Any] = {}
    for name, value in obj.items():
        if isinstance(value, dict):
            out[f"f:{name}"] = fields_v1(value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            keys = [_element_key(name, v) for v in value]
            if all(keys):
                out[f"f:{name}"] = {
                    f"k:{json.dumps(k, sort_keys=True, separators=(',', ':'))}": {".": {}, **fields_v1(v)}
                    for k, v in zip(keys, value, strict=True)
                }
            else:
                out[f"f:{name}"] = {}
        else:
            out[f"f:{name}"] = {}
    return out


class FakeKube:
    """An in-memory API server holding ``objects`` (the first SpeculativeInference is ``body``).

    Records, in order: ``applied`` (copies of the manifests applied), ``status_patches``,
    ``events`` and ``writes`` (every write made; a write a hook refused is not in it); counts
    ``conflicts``, the status patches refused with 409.
    ``pod_monitors``: is the PodMonitor kind served?
    """

    def __init__(self, *objects: dict[str, Any], pod_monitors: bool = True) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pod_monitors = pod_monitors
        self.unserved: set[str] = set()  # API versions this "cluster" does not serve
        self.applied: list[dict[str, Any]] = []
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[Event] = []
        self.writes: list[Write] = []
        self.conflicts = 0
        self.before_write: Callable[[Write], None] | None = None
        self._interleaved: list[tuple[str, Callable[[], None]]] = []
        self._revision = 0
        self._uids = 0
        self._resource: tuple[str, str, str] | None = None
        for obj in objects:
            self.add(obj)

    # ------------------------------------------------------------------------- the store

    def _new_uid(self) -> str:
        self._uids += 1
        return f"uid-{self._uids}"

    def _bump(self, obj: dict[str, Any]) -> str:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        return str(self._revision)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as created by someone else (a user, another controller); the live object."""
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        if "uid" not in meta:
            meta["uid"] = self._new_uid()
        meta.setdefault("generation", 1)
        self._bump(stored)
        key = (stored["kind"], meta.get("namespace") or "", meta["name"])
        self.objects[key] = stored
        if stored["kind"] == KIND and self._resource is None:
            self._resource = key
        return stored

    def live(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself (not a copy): a test may change it, as someone else would."""
        return self.objects.get((kind, namespace, name))

    @property
    def body(self) -> dict[str, Any]:
        """The live SpeculativeInference the fake was made with."""
        assert self._resource is not None, "FakeKube holds no SpeculativeInference"
        return self.objects[self._resource]

    @property
    def reasons(self) -> list[str]:
        """The reasons of the Events posted, in order."""
        return [e.reason for e in self.events]

    def write_status(
        self, patch: dict[str, Any], namespace: str | None = None, name: str | None = None
    ) -> None:
        """Another writer's status patch (no hooks, no conflict check); ``body``'s by default."""
        body = self.body if name is None else self.objects[(KIND, namespace or "", name)]
        body["status"] = merge_patch(body.get("status"), patch)
        self._bump(body)

    # ---------------------------------------------------------------------------- hooks

    def interleave(self, verb: str, action: Callable[[], None]) -> None:
        """Run ``action`` once, just before the next write of ``verb`` is checked and made."""
        self._interleaved.append((verb, action))

    def _before(self, write: Write) -> None:
        for i, (verb, action) in enumerate(self._interleaved):
            if verb == write.verb:
                del self._interleaved[i]
                action()
                break
        if self.before_write is not None:
            self.before_write(write)

    # ---------------------------------------------------------------------------- reads

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(KIND, namespace, name)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Deployment", namespace, name)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Service", namespace, name)

    def get_pod_monitor(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("PodMonitor", namespace, name)

    def pod_monitor_served(self) -> bool:
        return self.pod_monitors

    def serves(self, api_version: str, kind: str) -> bool:
        return api_version not in self.unserved

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(kind, namespace, name)

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self.objects.items())
            if kind == "Pod"
            and ns == namespace
            and all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> str | None:
        write = Write("patch_pod", "Pod", name)
        self._before(write)
        pod = self.objects.get(("Pod", namespace, name))
        if pod is None:
            raise ApiException(status=404, reason="Not Found")
        meta = pod["metadata"]
        meta["annotations"] = merge_patch(meta.get("annotations") or {}, annotations)
        self.writes.append(write)
        return self._bump(pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        write = Write("delete_pod", "Pod", name)
        self._before(write)
        self.objects.pop(("Pod", namespace, name), None)
        self.writes.append(write)

    # --------------------------------------------------------------------------- writes

    def apply(self, manifest: dict[str, Any]) -> str | None:
        meta = manifest["metadata"]
        write = Write("apply", manifest["kind"], meta["name"])
        self._before(write)
        key = (manifest["kind"], meta.get("namespace") or "", meta["name"])
        live = self.objects.get(key)
        obj = copy.deepcopy(manifest)
        live_meta = live["metadata"] if live else {}
        others = [m for m in live_meta.get("managedFields") or [] if m.get("manager") != FIELD_MANAGER]
        mine = {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": manifest["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1({k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}),
        }
        generation = live_meta.get("generation", 1)
        if live is not None and live.get("spec") != obj.get("spec"):
            generation += 1
        uid = live_meta.get("uid") or self._new_uid()
        obj["metadata"].update(uid=uid, generation=generation, managedFields=[*others, mine])
        if manifest["kind"] == "Deployment":
            replicas = obj["spec"].get("replicas", 1)
            obj["status"] = {"observedGeneration": generation, "replicas": replicas,
                             "readyReplicas": replicas, "updatedReplicas": replicas,
                             "availableReplicas": replicas}  # fmt: skip
        elif live is not None and "status" in live:
            obj["status"] = live["status"]
        rv = self._bump(obj)
        self.objects[key] = obj
        self.applied.append(copy.deepcopy(manifest))
        self.writes.append(write)
        return rv

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> str | None:
        write = Write("patch_status", KIND, name)
        self._before(write)
        body = self.objects.get((KIND, namespace, name))
        if body is None:
            raise ApiException(status=404, reason="Not Found")
        if resource_version is not None and resource_version != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise ApiException(status=409, reason="Conflict")
        body["status"] = merge_patch(body.get("status"), patch)
        self.status_patches.append(copy.deepcopy(patch))
        self.writes.append(write)
        return self._bump(body)

    def post_event(self, resource: dict[str, Any], type_: str, reason: str, message: str) -> None:
        write = Write("post_event", resource.get("kind", KIND), resource["metadata"]["name"])
        try:
            self._before(write)
        except ApiException:
            return  # best effort, as Kube.post_event
        self.events.append(Event(type_, reason, message[:1024], resource["metadata"]["name"]))
        self.writes.append(write)


def _fake_is_a_kube_api(kube: FakeKube) -> KubeApi:
    """Never called: mypy checks here that FakeKube offers what the reconciler asks of Kubernetes."""
    return kube

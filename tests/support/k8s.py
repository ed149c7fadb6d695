"""An oracle for rendered manifests: Kubernetes' JSON schemas (kubernetes-validate, as the
packaging tests use them) plus the apiserver's own checks that no schema expresses (label syntax,
quantities, names, env sources, tolerations), written from k8s.io/apimachinery and the core/v1
validation of Kubernetes 1.20, the test world's apiserver (stricter than 1.32 where they differ).

Deliberately independent of ``specops.checks.validation``: it is what the operator's checks are tested
against, so it must not share their code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

K8S_VERSION = "1.32.0"  # as tests/packaging and tests/unit/test_properties.py
INT32_MAX = 2**31 - 1

_NAME_PART = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_ENV_NAME = r"[-._a-zA-Z][-._a-zA-Z0-9]*"  # IsEnvVarName before Kubernetes 1.34 relaxed it
_CONFIG_MAP_KEY = r"[-._a-zA-Z0-9]+"
_QUANTITY = r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?"
_IANA_SVC_NAME = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
ENV_FIELD_PATHS = {
    "metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations",
    "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.podIP", "status.podIPs",
}  # fmt: skip
# validateContainerResourceDivisor: the only divisors (as canonical quantities) it takes.
_CPU_DIVISORS = ("1m", "1")
_BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
ENV_RESOURCES = {
    f"{kind}.{res}" for kind in ("limits", "requests") for res in ("cpu", "memory", "ephemeral-storage")
}


def _full(pattern: str, value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(pattern, value, re.ASCII) is not None


def is_dns1123_label(value: object) -> bool:
    return _full(_DNS_LABEL, value) and len(str(value)) <= 63


def is_dns1123_subdomain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 253 and _full(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", value)


def is_dns1035_label(value: object) -> bool:
    return _full(_DNS1035, value) and len(str(value)) <= 63


def is_qualified_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    prefix, slash, name = value.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return _full(_NAME_PART, name) and len(name) <= 63


def is_label_value(value: object) -> bool:
    return isinstance(value, str) and (value == "" or (_full(_NAME_PART, value) and len(value) <= 63))


def is_quantity(value: object) -> bool:
    """A non-negative resource.Quantity (what resources and emptyDir sizes accept)."""
    return _full(_QUANTITY, value)


def is_config_map_key(value: object) -> bool:
    return (
        _full(_CONFIG_MAP_KEY, value)
        and len(str(value)) <= 253
        and value not in (".", "..")
        and not str(value).startswith("..")
    )


def is_extended_resource_name(value: object) -> bool:
    if not is_qualified_name(value) or "/" not in str(value):
        return False
    text = str(value)
    domain = text.split("/", 1)[0]
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io") or text.startswith("requests."):
        return False
    return is_qualified_name(f"requests.{text}")


# ------------------------------------------------------------------------------- JSON schemas


@functools.cache
def _schema(filename: str) -> Any:
    return kv_utils.schema_contents(filename, K8S_VERSION)


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """kubernetes_validate.validate(..., strict=True), with the schemas loaded once."""
    version = [v for v in kv_utils.all_versions() if v <= kv_utils.major_minor(K8S_VERSION)][-1]
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = _schema(f"{folder}/{kind.lower()}-{group_version}.json")
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(_schema(f"{folder}/_definitions.json")) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Kubernetes JSON-schema violations of one built-in object (as kubernetes-validate reports)."""
    validator = _validator(manifest["kind"], manifest["apiVersion"])
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(manifest)
    ]
    if errors:
        # The canonical tool agrees (a cross-check of the cached copy above).
        try:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError:
            pass
        else:
            raise AssertionError("cached schema validator disagrees with kubernetes-validate")
    return errors


# --------------------------------------------------------------------------------- invariants


def _labels(where: str, labels: object) -> Iterator[str]:
    if not isinstance(labels, Mapping):
        yield f"{where}: labels are not a map"
        return
    for key, value in labels.items():
        if not is_qualified_name(key):
            yield f"{where}: label key {key!r} is not a qualified name"
        if not is_label_value(value):
            yield f"{where}: label value {value!r} (key {key!r}) is not a valid label value"


def _annotations(where: str, annotations: object) -> Iterator[str]:
    if not isinstance(annotations, Mapping):
        yield f"{where}: annotations are not a map"
        return
    size = 0
    for key, value in annotations.items():
        if not is_qualified_name(str(key).lower()):
            yield f"{where}: annotation key {key!r} is not a qualified name"
        size += len(str(key)) + len(str(value))
    if size > 256 * 1024:
        yield f"{where}: annotations total {size} bytes, over 256 KiB"


def _owner(where: str, meta: Mapping[str, Any], owner: Mapping[str, Any] | None) -> Iterator[str]:
    if owner is None:
        return
    refs = meta.get("ownerReferences")
    if refs != [owner] or not owner.get("controller") or not owner.get("blockOwnerDeletion"):
        yield f"{where}: ownerReferences {refs!r}, expected [{owner!r}] as controller"


def _metadata(where: str, meta: Mapping[str, Any], owner: Mapping[str, Any] | None) -> Iterator[str]:
    ns = meta.get("namespace")
    if ns is not None and not is_dns1123_label(ns):
        yield f"{where}.namespace: {ns!r} is not a DNS-1123 label"
    yield from _labels(f"{where}.labels", meta.get("labels", {}))
    yield from _annotations(f"{where}.annotations", meta.get("annotations", {}))
    yield from _owner(where, meta, owner)


def _int32(where: str, value: object, minimum: int = 0) -> Iterator[str]:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= INT32_MAX:
        yield f"{where}: {value!r} is not an int32 >= {minimum}"


def _env_source(where: str, env: Mapping[str, Any]) -> Iterator[str]:
    src = env.get("valueFrom")
    if src is None:
        return
    if env.get("value"):
        yield f"{where}.valueFrom: may not be set with a value"
    if not isinstance(src, Mapping):
        yield f"{where}.valueFrom: not an object"
        return
    kinds = [
        k
        for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
        if src.get(k) is not None
    ]
    if len(kinds) != 1:
        yield f"{where}.valueFrom: exactly one source required, got {kinds}"
        return
    ref = src[kinds[0]]
    if not isinstance(ref, Mapping):
        return  # the JSON schema reports it
    if kinds[0] in ("configMapKeyRef", "secretKeyRef"):
        if not is_dns1123_subdomain(ref.get("name", "")):
            yield f"{where}.valueFrom.{kinds[0]}.name: {ref.get('name')!r} is not a DNS-1123 subdomain"
        if not is_config_map_key(ref.get("key")):
            yield f"{where}.valueFrom.{kinds[0]}.key: {ref.get('key')!r} is not a valid key"
    elif kinds[0] == "fieldRef":
        path = ref.get("fieldPath")
        subscripted = _full(r"metadata\.(labels|annotations)\['[^']*'\]", path)
        if path not in ENV_FIELD_PATHS and not subscripted:
            yield f"{where}.valueFrom.fieldRef.fieldPath: {path!r} is not supported"
    elif ref.get("resource") not in ENV_RESOURCES:
        yield f"{where}.valueFrom.resourceFieldRef.resource: {ref.get('resource')!r} is not supported"
    elif ref.get("divisor") not in (None, *(_CPU_DIVISORS if "cpu" in ref["resource"] else _BYTE_DIVISORS)):
        yield f"{where}.valueFrom.resourceFieldRef.divisor: {ref['divisor']!r} is not supported"


def _toleration(where: str, tol: object) -> Iterator[str]:
    if not isinstance(tol, Mapping):
        return  # the JSON schema reports it
    key, op, value = tol.get("key", ""), tol.get("operator", ""), tol.get("value", "")
    effect = tol.get("effect", "")
    if key and not is_qualified_name(key):
        yield f"{where}.key: {key!r} is not a qualified name"
    if not key and op != "Exists":
        yield f"{where}.operator: must be Exists when key is empty"
    if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
        yield f"{where}.effect: must be NoExecute with tolerationSeconds"
    if op in ("Equal", ""):
        if not is_label_value(value):
            yield f"{where}.value: {value!r} is not a label value"
    elif op == "Exists":
        if value:
            yield f"{where}.value: must be empty with operator Exists"
    else:
        yield f"{where}.operator: {op!r} is not supported"
    if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
        yield f"{where}.effect: {effect!r} is not supported"


def _container(where: str, c: Mapping[str, Any]) -> Iterator[str]:
    if not is_dns1123_label(c.get("name")):
        yield f"{where}.name: not a DNS-1123 label"
    image = c.get("image")
    if not isinstance(image, str) or not image or image != image.strip():
        yield f"{where}.image: {image!r} is empty or has surrounding whitespace"
    for i, arg in enumerate(c.get("args", [])):
        if not isinstance(arg, str) or "\x00" in arg:
            yield f"{where}.args[{i}]: {arg!r} cannot be passed to exec"
    for i, port in enumerate(c.get("ports", [])):
        if not 1 <= port.get("containerPort", 0) <= 65535:
            yield f"{where}.ports[{i}].containerPort: out of range"
        if not (_full(_IANA_SVC_NAME, port.get("name", "")) and len(port["name"]) <= 15):
            yield f"{where}.ports[{i}].name: not an IANA service name"
    for i, env in enumerate(c.get("env", [])):
        if not _full(_ENV_NAME, env.get("name")):
            yield f"{where}.env[{i}].name: {env.get('name')!r} is not a valid variable name"
        yield from _env_source(f"{where}.env[{i}]", env)
    res = c.get("resources", {})
    limits, requests = res.get("limits", {}), res.get("requests", {})
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, qty in values.items():
            if name not in ("cpu", "memory", "ephemeral-storage") and not is_extended_resource_name(name):
                yield f"{where}.resources.{kind}: {name!r} is not a standard or extended resource name"
            if not is_quantity(qty):
                yield f"{where}.resources.{kind}.{name}: {qty!r} is not a non-negative quantity"
    for name, qty in requests.items():
        if "/" in name and limits.get(name) != qty:
            yield f"{where}.resources: extended resource {name!r} needs requests == limits"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        for knob in ("periodSeconds", "timeoutSeconds", "failureThreshold"):
            if probe in c:
                yield from _int32(f"{where}.{probe}.{knob}", c[probe].get(knob), 1)


def _pod(where: str, pod: Mapping[str, Any]) -> Iterator[str]:
    volume_names = [v.get("name") for v in pod.get("volumes", [])]
    if len(set(volume_names)) != len(volume_names):
        yield f"{where}.volumes: duplicate names {volume_names}"
    for i, vol in enumerate(pod.get("volumes", [])):
        if not is_dns1123_label(vol.get("name")):
            yield f"{where}.volumes[{i}].name: not a DNS-1123 label"
        size = (vol.get("emptyDir") or {}).get("sizeLimit")
        if size is not None and not is_quantity(size):
            yield f"{where}.volumes[{i}].emptyDir.sizeLimit: {size!r} is not a non-negative quantity"
        if "hostPath" in vol:
            path = vol["hostPath"].get("path", "")
            if not path or ".." in path.split("/"):
                yield f"{where}.volumes[{i}].hostPath.path: {path!r} is empty or climbs with '..'"
        if "persistentVolumeClaim" in vol and not vol["persistentVolumeClaim"].get("claimName"):
            yield f"{where}.volumes[{i}].persistentVolumeClaim.claimName: required"
    for c in pod.get("containers", []):
        for mount in c.get("volumeMounts", []):
            if mount.get("name") not in volume_names:
                yield f"{where}: volumeMount {mount.get('name')!r} names no volume"
    for i, c in enumerate(pod.get("containers", [])):
        yield from _container(f"{where}.containers[{i}]", c)
    yield from _labels(f"{where}.nodeSelector", pod.get("nodeSelector", {}))
    for i, tol in enumerate(pod.get("tolerations", [])):
        yield from _toleration(f"{where}.tolerations[{i}]", tol)
    for knob in ("serviceAccountName", "priorityClassName"):
        if knob in pod and not is_dns1123_subdomain(pod[knob]):
            yield f"{where}.{knob}: {pod[knob]!r} is not a DNS-1123 subdomain"
    for i, ref in enumerate(pod.get("imagePullSecrets", [])):
        if not is_dns1123_subdomain(ref.get("name")):
            yield f"{where}.imagePullSecrets[{i}].name: {ref.get('name')!r} names no possible Secret"
    affinity = pod.get("affinity")
    if affinity is not None and not set(affinity) <= {"nodeAffinity", "podAffinity", "podAntiAffinity"}:
        yield f"{where}.affinity: unknown keys {sorted(affinity)}"


def manifest_problems(manifest: dict[str, Any], owner: Mapping[str, Any] | None) -> list[str]:
    """Everything about one rendered object that a Kubernetes apiserver would refuse (or that
    breaks SpecOps' own invariants); empty when the object is fine."""
    kind = manifest.get("kind")
    meta = manifest.get("metadata", {})
    name = meta.get("name")
    out: list[str] = []
    if kind in ("Deployment", "Service"):
        out += schema_errors(manifest)
    out += _metadata("metadata", meta, owner)
    if kind == "Service":
        if not is_dns1035_label(name):
            out.append(f"metadata.name: Service name {name!r} is not a DNS-1035 label")
        out += _labels("spec.selector", manifest["spec"].get("selector", {}))
        for i, port in enumerate(manifest["spec"].get("ports", [])):
            if not 1 <= port.get("port", 0) <= 65535:
                out.append(f"spec.ports[{i}].port: out of range")
    elif kind == "Deployment":
        # Pods are named <deployment>-<hash>-<suffix>: keep the name a DNS label.
        if not is_dns1123_label(name):
            out.append(f"metadata.name: Deployment name {name!r} is not a DNS-1123 label of <= 63")
        spec = manifest["spec"]
        out += _int32("spec.replicas", spec.get("replicas"))
        out += _int32("spec.progressDeadlineSeconds", spec.get("progressDeadlineSeconds"), 1)
        selector = spec["selector"]["matchLabels"]
        template = spec["template"]
        out += _labels("spec.selector.matchLabels", selector)
        out += _metadata("spec.template.metadata", template["metadata"], None)
        if not selector.items() <= template["metadata"].get("labels", {}).items():
            out.append("spec.selector does not select the template's labels")
        out += _pod("spec.template.spec", template["spec"])
    elif kind == "PodMonitor":
        out += _labels("spec.selector.matchLabels", manifest["spec"]["selector"]["matchLabels"])
    else:
        out.append(f"unexpected kind {kind!r}")
    return out

"""Plain helpers for tests on a real API server (the local test world or an external cluster):
SpeculativeInferences in and out, their conditions and Events, Deployments, the operator's writes
in the audit log, kubectl.  The fixtures that start the world and the operator are in
tests/cluster.py (a pytest plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.controller import metrics
from specops.controller.main import OperatorOptions
from specops_testkit.testbed.audit import writes_by
from specops_testkit.testbed.controlplane import OPERATOR_USER
from specops_testkit.testbed.stack import Testbed
from tests.support.resources import example_doc

T = TypeVar("T")

# SPECOPS_TEST_KUBECONFIG: an existing cluster in place of the local test world.
EXTERNAL = bool(os.environ.get("SPECOPS_TEST_KUBECONFIG"))
local_only = pytest.mark.skipif(EXTERNAL, reason="needs the local test world (audit log, pod runner)")
# The ValidatingWebhookConfiguration the operator registers by default.
WEBHOOK_CONFIG = OperatorOptions.webhook_config_name


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition", every: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create_si(api: client.ApiClient, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc["metadata"]["namespace"] = namespace
    return custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)


def get_si(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def patch_si(api: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return custom(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)


def condition(si: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (si.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def create_settled_example(api: client.ApiClient, namespace: str, interval: str) -> dict[str, Any]:
    """The default example with one replica, evaluated every ``interval``, created and waited for
    until it is Ready and has been evaluated on its pod's scraped series (no traffic: the verdict
    stays InsufficientTraffic and status stops changing).  The resource as created."""
    doc = example_doc()
    doc["spec"]["replicas"] = 1
    doc["spec"].setdefault("policy", {})["interval"] = interval
    created = create_si(api, namespace, doc)
    name = doc["metadata"]["name"]
    wait_for(lambda: condition(get_si(api, namespace, name), "Ready").get("status") == "True", 90, "Ready")
    # The first evaluation may run before Prometheus scraped the new pod (NoSeries); a later one
    # sees its series without traffic.
    wait_for(
        lambda: (
            condition(get_si(api, namespace, name), "MetricsAvailable").get("reason") == "InsufficientTraffic"
        ),
        75,
        "the pod's series scraped and evaluated",
    )
    return created


def deployment(api: client.ApiClient, namespace: str, name: str) -> Any:
    try:
        return client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def event_reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=SpeculativeInference"
    )
    return [e.reason for e in events.items]


def webhook_points_at(api: client.ApiClient, port: int, config: str = WEBHOOK_CONFIG) -> bool:
    """Does every webhook of the ValidatingWebhookConfiguration ``config`` call ``port``?"""
    try:
        cfg = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(config)
    except ApiException:
        return False
    return bool(cfg.webhooks) and all(f":{port}/" in (w.client_config.url or "") for w in cfg.webhooks)


def operator_writes(testbed: Testbed, since: float, namespace: str | None = None) -> list[dict[str, Any]]:
    """Write requests the operator's identity made since ``since`` (epoch seconds), per the audit
    log; with ``namespace``, only those to objects in it."""
    assert testbed.state is not None
    writes = writes_by(testbed.state.audit_log, OPERATOR_USER, since)
    if namespace is None:
        return writes
    return [w for w in writes if w["objectRef"].get("namespace") == namespace]


def wait_until_quiet(testbed: Testbed, namespace: str, quiet: float = 3.0, timeout: float = 30.0) -> None:
    """Wait until the operator has written nothing in ``namespace`` for ``quiet`` seconds."""

    def recent() -> list[str]:
        return [
            f"{w['verb']} {w['objectRef'].get('resource')}/{w['objectRef'].get('subresource', '')}"
            f" {w['objectRef'].get('name')}"
            for w in operator_writes(testbed, time.time() - quiet, namespace)
        ]

    time.sleep(quiet)
    deadline = time.monotonic() + timeout
    while (noisy := recent()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not noisy, f"the operator's writes did not stop: {noisy}"


def api_reads(verb: str) -> dict[str, float]:
    """The read requests of ``verb`` the operators in this process have sent so far, by kind."""
    out: dict[str, float] = {}
    for family in metrics.API_READS.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels["verb"] == verb:
                out[s.labels["kind"]] = out.get(s.labels["kind"], 0.0) + s.value
    return out


def reads_since(before: dict[str, float], verb: str) -> dict[str, float]:
    """The requests of ``verb`` sent since ``api_reads(verb)`` returned ``before``, by kind."""
    after = api_reads(verb)
    return {kind: n - before.get(kind, 0.0) for kind, n in after.items() if n != before.get(kind, 0.0)}


def kubectl(testbed: Testbed, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubectl"
    return subprocess.run(
        [str(exe), f"--kubeconfig={testbed.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


# A stand-in for the Prometheus Operator's CRD: with the kind served, the operator renders a
# PodMonitor per resource (only the kind matters to SpecOps).
POD_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "PodMonitor", "plural": "podmonitors", "singular": "podmonitor", "listKind": "PodMonitorList"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}  # fmt: skip

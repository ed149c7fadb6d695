"""Cluster fixtures (a pytest plugin, loaded with ``-p tests.cluster``): one real test world per
session, a namespace and an operator per test, shared by the integration and packaging suites.

The test world is started by the project's own code (specops_testkit.testbed); a missing binary or a
failed start is an error, never a skip.  Set SPECOPS_TEST_RUN_DIR to keep its files and logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from specops.api.crd import build_crd
from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.controller.main import OperatorOptions, OperatorThread
from specops_testkit.testbed.audit import writes_by
from specops_testkit.testbed.controlplane import OPERATOR_USER, free_port
from specops_testkit.testbed.stack import Testbed

T = TypeVar("T")


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


class ExternalCluster:
    """An existing cluster (SPECOPS_TEST_KUBECONFIG) and Prometheus (SPECOPS_TEST_PROMETHEUS_URL)
    in place of the local test world: a kind cluster, or a GPU cluster running real vLLM images.
    Tests that need the local world's insides (its audit log, the pod runner) are skipped there."""

    def __init__(self, kubeconfig: str, prometheus_url: str) -> None:
        from specops_testkit.testbed.controlplane import install_crds

        self.kubeconfig = Path(kubeconfig)
        self.prometheus_url = prometheus_url
        self.api = kube_config.new_client_from_config(config_file=kubeconfig)
        self.state = None
        self.runner = None
        install_crds(self.kubeconfig, [build_crd()])


EXTERNAL = bool(os.environ.get("SPECOPS_TEST_KUBECONFIG"))
local_only = pytest.mark.skipif(EXTERNAL, reason="needs the local test world (audit log, pod runner)")


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    if EXTERNAL:
        url = os.environ.get("SPECOPS_TEST_PROMETHEUS_URL")
        if not url:
            raise RuntimeError("SPECOPS_TEST_KUBECONFIG needs SPECOPS_TEST_PROMETHEUS_URL too")
        yield ExternalCluster(os.environ["SPECOPS_TEST_KUBECONFIG"], url)  # type: ignore[misc]
        return
    run_dir = Path(os.environ.get("SPECOPS_TEST_RUN_DIR") or tmp_path_factory.mktemp("testbed"))
    tb = Testbed(
        run_dir,
        crds=[build_crd()],
        emulator_env={"SPECOPS_EMULATOR_LOAD_SECONDS": "0.3"},
    )
    tb.up()
    try:
        yield tb
    finally:
        tb.down()


@pytest.fixture(scope="session")
def api(testbed: Testbed) -> client.ApiClient:
    return testbed.api


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def operator_options(testbed: Testbed, **overrides: Any) -> OperatorOptions:
    kubeconfig = testbed.state.operator_kubeconfig if testbed.state is not None else testbed.kubeconfig
    opts = OperatorOptions(
        kubeconfig=str(kubeconfig),
        metrics_port=None,
        liveness_port=None,
        resync_seconds=2.0,
        webhook_listen="127.0.0.1",
        webhook_port=free_port(),
        prometheus_url=testbed.prometheus_url,
    )
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


@pytest.fixture
def start_operator(testbed: Testbed) -> Iterator[Callable[..., OperatorThread]]:
    """Start an operator (fresh Kopf registry each time); all are stopped after the test."""
    started: list[OperatorThread] = []

    def start(**overrides: Any) -> OperatorThread:
        op = OperatorThread(operator_options(testbed, **overrides)).start()
        started.append(op)
        if op.opts.webhooks:
            wait_for(lambda: _webhook_points_at(testbed, op.opts.webhook_port), 20, "webhook registration")
        return op

    yield start
    for op in started:
        op.stop()


def _webhook_points_at(testbed: Testbed, port: int) -> bool:
    adm = client.AdmissionregistrationV1Api(testbed.api)
    try:
        cfg = adm.read_validating_webhook_configuration("specops.dev")
    except ApiException:
        return False
    return all(f":{port}/" in (w.client_config.url or "") for w in cfg.webhooks or [])


# ------------------------------------------------------------------------------------ helpers


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


def operator_writes(testbed: Testbed, since: float) -> list[dict[str, Any]]:
    """Write requests the operator's identity made since ``since`` (epoch seconds), per the audit log."""
    assert testbed.state is not None
    return writes_by(testbed.state.audit_log, OPERATOR_USER, since)


def kubectl(testbed: Testbed, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubectl"
    return subprocess.run(
        [str(exe), f"--kubeconfig={testbed.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def load_kube_defaults(testbed: Testbed) -> None:
    kube_config.load_kube_config(config_file=str(testbed.kubeconfig))


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

"""Cluster fixtures (a pytest plugin, loaded with ``-p tests.cluster``): one real test world per
session, a namespace and an operator per test, shared by the integration and packaging suites.

The test world is started by the project's own code (specops_testkit.testbed); a missing binary or a
failed start is an error, never a skip.  Set SPECOPS_TEST_RUN_DIR to keep its files and logs.
Only fixtures live here; the helpers tests call are in tests/support/live_cluster.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as kube_config

from specops.api.crd import build_crd
from specops.controller.main import OperatorOptions, OperatorThread
from specops_testkit.testbed.controlplane import free_port
from specops_testkit.testbed.stack import Testbed
from tests.support.live_cluster import EXTERNAL, wait_for, webhook_points_at
from tests.support.switching import OperatorProcess


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
            wait_for(
                lambda: webhook_points_at(testbed.api, op.opts.webhook_port, op.opts.webhook_config_name),
                20,
                "webhook registration",
            )
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator_processes() -> Iterator[list[OperatorProcess]]:
    """Operators run as processes of their own (``specops run``); all are stopped after the test."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        op.stop()

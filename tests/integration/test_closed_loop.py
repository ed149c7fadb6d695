"""The closed loop without the operator: rendered Deployments run as emulated GPU pods on the real
control plane, and the real Prometheus scrapes their vLLM metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from specops.controller.kube import Kube
from specops.metrics.promql import Signal, build_queries
from specops.render.manifests import PoolSplit, render_all
from specops_testkit.emulator.calibration import demo_acceptance
from specops_testkit.testbed.loadgen import endpoints_resolver, run_load
from specops_testkit.testbed.scenario import Scenario
from specops_testkit.testbed.stack import Testbed
from tests.support.live_cluster import local_only, wait_for
from tests.support.resources import load_example

pytestmark = pytest.mark.integration


def prom_query(testbed: Testbed, promql: str) -> list[dict[str, Any]]:
    url = f"{testbed.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@local_only
def test_pods_serve_and_are_scraped_then_stop(
    api: client.ApiClient, testbed: Testbed, namespace: str
) -> None:
    si = load_example("llama70b-int8-h100.yaml")
    si = si.model_copy(update={"metadata": si.metadata.model_copy(update={"namespace": namespace})})
    kube = Kube(api)
    for manifest in render_all(si, PoolSplit(speculative=2, baseline=1)):
        kube.apply(manifest)
    apps = client.AppsV1Api(api)
    for pool, n in (("spec", 2), ("base", 1)):
        wait_for(lambda p=pool, n=n: (apps.read_namespaced_deployment(f"llama70b-chat-{p}", namespace).status.available_replicas or 0) == n,
                 90, f"{pool} Deployment Available with {n} replicas")  # fmt: skip
    # Every pod is a Prometheus target, labelled by pool.
    sel = f'specops_name="llama70b-chat", namespace="{namespace}"'
    up = wait_for(
        lambda: len(r := prom_query(testbed, f"up{{{sel}}} == 1")) == 3 and r, 30, "three targets up"
    )
    assert sorted(r["metric"]["specops_pool"] for r in up) == ["baseline", "speculative", "speculative"]
    # Spec-decode series exist only on the speculative pod.
    wait_for(lambda: prom_query(testbed, f"vllm:num_requests_running{{{sel}}}"), 30, "vLLM gauges scraped")
    drafts = prom_query(testbed, f"vllm:spec_decode_num_draft_tokens_total{{{sel}}}")
    assert {r["metric"]["specops_pool"] for r in drafts} == {"speculative"}

    # Traffic through the Service's real Endpoints; acceptance from PromQL on the counters.
    scenario = Scenario.model_validate(
        {
            "name": "probe",
            "seed": 3,
            "phases": [{"name": "p", "duration": "20s", "qps": 3, "temperature": 0.2, "maxTokens": 64}],
        }
    )
    records = asyncio.run(
        run_load(scenario, endpoints_resolver(api, namespace, "llama70b-chat"), si.spec.target.model)
    )
    ok = [r for r in records if r.ok]
    assert len(ok) >= 0.95 * len(records) > 30, [r.error for r in records if not r.ok][:3]
    assert {r.target.split(":")[0] for r in ok} == {p.ip for p in testbed.runner.pods.values()}  # type: ignore[union-attr]
    queries = build_queries("30s", (namespace,))
    accepted = prom_query(testbed, queries[Signal.ACCEPTED])
    drafted = prom_query(testbed, queries[Signal.DRAFTED])
    assert accepted and drafted
    acceptance = float(accepted[0]["value"][1]) / float(drafted[0]["value"][1])
    expected, _ = demo_acceptance(0.2)  # what the emulator is configured to produce for this pair
    print(f"acceptance from PromQL at temperature 0.2: {acceptance:.3f} (configured {expected:.3f})")
    assert acceptance == pytest.approx(expected, abs=0.06)

    # Deleting the Deployments stops the emulator processes (after the preStop sleep and a drain)
    # and removes the targets.
    procs = [p.proc for p in testbed.runner.pods.values() if p.namespace == namespace]  # type: ignore[union-attr]
    assert len(procs) == 3
    for pool in ("spec", "base"):
        apps.delete_namespaced_deployment(f"llama70b-chat-{pool}", namespace)
    wait_for(lambda: not [p for p in testbed.runner.pods.values() if p.namespace == namespace], 60,  # type: ignore[union-attr]
             "pod runner forgot the pods")  # fmt: skip
    wait_for(lambda: all(p is None or p.poll() is not None for p in procs), 30, "emulator processes exited")
    wait_for(lambda: not prom_query(testbed, f"up{{{sel}}} == 1"), 30, "targets removed")

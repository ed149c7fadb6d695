"""The HotSwap strategy end to end on the local test world: the operator, the real API server and
Prometheus, and hot-swap pods as the pod runner runs them (both emulated engines started by the
rendered launcher, the real nginx with the rendered path filter, the operator's EndpointSlices).

What is checked: a mode switch swaps each replica's engines without restarting or adding a pod and
without a failed client request; clients reach only the public API (the sleep endpoints answer 404
through the Service, the admin port wants the operator's token, the engines' own ports are not on
the pod IP).  How long each replica's swap took is printed, never asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from specops.controller.main import OperatorThread
from specops.plan.hotswap_reconcile import HOT_SWAP_CONDITION
from specops.render.hotswap import ADMIN_PORT, ENGINE_PORTS, admin_secret_name, swap_labels
from specops.render.manifests import Pool
from specops_testkit.testbed.loadgen import Record, endpoints_resolver, run_load
from specops_testkit.testbed.scenario import Scenario
from specops_testkit.testbed.stack import Testbed
from tests.support.hotswap import http_status
from tests.support.live_cluster import (
    api_reads,
    condition,
    create_si,
    get_si,
    local_only,
    operator_writes,
    patch_si,
    reads_since,
    wait_for,
    wait_until_quiet,
)
from tests.support.resources import example_doc

pytestmark = pytest.mark.integration
NAME = "llama70b-chat"


def hot_swap_doc(mode: str) -> dict[str, Any]:
    doc = example_doc("demo-llama70b.yaml")
    doc["spec"]["rollout"] = {"strategy": "HotSwap"}
    doc["spec"]["policy"]["mode"] = mode
    return doc


def pods(api: client.ApiClient, namespace: str) -> list[Any]:
    selector = ",".join(f"{k}={v}" for k, v in swap_labels(NAME).items())
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def at_target(api: client.ApiClient, namespace: str, speculative: int, baseline: int) -> bool:
    cond = condition(get_si(api, namespace, NAME), HOT_SWAP_CONDITION)
    return cond.get("reason") == "AtTarget" and f"speculative={speculative}, baseline={baseline}" in cond.get(
        "message", ""
    )


class RouteWatch(threading.Thread):
    """Polls the Service's routing every 0.1 s: per pod, when it left one engine's slice and when
    it appeared on the other's (a replica's swap, as clients see it); and the most pods at once."""

    def __init__(self, resolve: Callable[[], list[str]], api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.resolve, self.api, self.namespace = resolve, api, namespace
        self.stop = threading.Event()
        self.seen: dict[str, list[tuple[float, str | None]]] = {}  # ip -> [(t, port or None)]
        self.max_pods = 0

    def run(self) -> None:
        last: dict[str, str | None] = {}
        while not self.stop.wait(0.1):
            now = time.monotonic()
            routed = dict(target.rsplit(":", 1)[::1] for target in self.resolve())  # ip -> port
            for ip in set(last) | set(routed):
                if last.get(ip) != routed.get(ip):
                    self.seen.setdefault(ip, []).append((now, routed.get(ip)))
            last = {ip: routed.get(ip) for ip in set(last) | set(routed)}
            self.max_pods = max(self.max_pods, len(pods(self.api, self.namespace)))

    def swap_seconds(self) -> list[float]:
        """Per pod, from leaving one engine's port to being routed on the other's."""
        out = []
        for changes in self.seen.values():
            for (t0, port0), (t1, port1) in itertools.pairwise(changes):
                if port0 is None and port1 is not None and t0 > 0:
                    out.append(t1 - t0)
        return out


@local_only
def test_a_switch_swaps_engines_in_place_without_a_failed_request(
    api: client.ApiClient,
    testbed: Testbed,
    namespace: str,
    start_operator: Callable[..., OperatorThread],
) -> None:
    start_operator(webhooks=False)
    create_si(api, namespace, hot_swap_doc("Speculative"))
    # The launcher starts the speculative engine, puts it to sleep, starts the baseline one; the
    # operator then finds the baseline engines awake and swaps each replica to speculative.
    wait_for(lambda: at_target(api, namespace, 2, 0), 240, "both replicas on the speculative engine")
    before = {p.metadata.name: (p.metadata.uid, p.status.container_statuses[0].restart_count)
              for p in pods(api, namespace)}  # fmt: skip
    assert len(before) == 2

    resolve = endpoints_resolver(api, namespace, NAME)
    assert len(resolve()) == 2
    watcher = RouteWatch(resolve, api, namespace)
    watcher.start()
    scenario = Scenario.model_validate(
        {"name": "through-the-swap", "seed": 5, "phases": [
            {"name": "load", "duration": "75s", "qps": 2, "temperature": 0.2, "maxTokens": 64}]}
    )  # fmt: skip
    records: list[Record] = []
    load = threading.Thread(
        target=lambda: records.extend(asyncio.run(run_load(scenario, resolve, "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"))),
        daemon=True,
    )  # fmt: skip
    load.start()
    time.sleep(10)
    t_switch = time.monotonic()
    patch_si(api, namespace, NAME, {"spec": {"policy": {"mode": "Baseline"}}})
    wait_for(lambda: at_target(api, namespace, 0, 2), 120, "both replicas on the baseline engine")
    switch_seconds = time.monotonic() - t_switch
    load.join(120)
    watcher.stop.set()
    watcher.join(5)

    failed = [r for r in records if not r.ok]
    swaps = watcher.swap_seconds()
    print(f"\nhot swap: {len(records)} requests, {len(failed)} failed; both replicas switched in "
          f"{switch_seconds:.1f} s; per replica (routed away -> routed back): "
          f"{', '.join(f'{s:.1f} s' for s in swaps)}; most pods at once: {watcher.max_pods}")  # fmt: skip
    assert len(records) > 100
    assert not failed, [r.error for r in failed][:5]
    after = {p.metadata.name: (p.metadata.uid, p.status.container_statuses[0].restart_count)
             for p in pods(api, namespace)}  # fmt: skip
    assert after == before, "no pod restarted, replaced or added"
    assert watcher.max_pods == 2
    assert len(swaps) == 2, watcher.seen
    assert all(port == str(8002) for ip_changes in watcher.seen.values() for _, port in ip_changes[-1:])
    si = get_si(api, namespace, NAME)
    assert si["status"]["mode"] == "Baseline"

    # Security: what a client can reach.
    targets = resolve()
    assert len(targets) == 2
    for target in targets:
        for path, method in (("/sleep?level=1", "POST"), ("/wake_up", "POST"), ("/is_sleeping", "GET"),
                             ("/collective_rpc", "POST"), ("/v1/../sleep", "POST")):  # fmt: skip
            assert http_status(f"http://{target}{path}", method) == 404, (target, path)
        assert http_status(f"http://{target}/v1/models") == 200
    token_b64 = client.CoreV1Api(api).read_namespaced_secret(admin_secret_name(NAME), namespace).data["token"]
    token = base64.b64decode(token_b64).decode()
    ip = targets[0].split(":")[0]
    admin = f"http://{ip}:{ADMIN_PORT}"
    assert http_status(f"{admin}/speculative/is_sleeping") == 401
    assert http_status(f"{admin}/speculative/wake_up", "POST", token="0" * 64) == 401
    assert http_status(f"{admin}/speculative/is_sleeping", token=token) == 200
    for pool in Pool:  # the engines listen on the pod's own loopback, not on its IP
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((ip, ENGINE_PORTS[pool]), timeout=2),
        ):
            pass

    # The read cache: once settled, the evaluations (every 2 s) read from the API server only the
    # admin Secret (not listed or watched: that would need the right to list every Secret); the
    # ConfigMap, NetworkPolicy, Deployment, Service, EndpointSlices and pods come from watches.
    wait_until_quiet(testbed, namespace)
    gets, lists, t0 = api_reads("get"), api_reads("list"), time.time()
    time.sleep(6)
    assert reads_since(lists, "list") == {}
    sent = reads_since(gets, "get")
    # A status write (a figure refreshed) makes the next read of the resource a GET, until the
    # watch has delivered it: allowed only if the operator wrote the resource meanwhile.
    wrote = {w["objectRef"].get("resource") for w in operator_writes(testbed, t0, namespace)}
    allowed = {"Secret"} | ({"SpeculativeInference"} if "speculativeinferences" in wrote else set())
    assert "Secret" in sent and set(sent) <= allowed, f"GETs in a steady period: {sent}, wrote {wrote}"

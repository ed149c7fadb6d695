"""The policy in the real closed loop: emulated pods, real Prometheus, the operator deciding.

Time scale: 2 s evaluations over 10 s windows (Prometheus scrapes every second), 3 breaches to
fall back, 3 probe wins to re-enable, 20 s cooldown.  Each test prints the time from the onset of
a breach to the Deployments changing.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client import REGISTRY

from specops_testkit.testbed.loadgen import Record, endpoints_resolver, run_load
from specops_testkit.testbed.scenario import Scenario
from specops_testkit.testbed.stack import Testbed
from tests.cluster import (
    condition,
    create_si,
    deployment,
    get_si,
    local_only,
    patch_si,
    wait_for,
)
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration
NAME = "llama70b-chat"
LOW_QPS = float(os.environ.get("SPECOPS_TEST_LOW_QPS", "2"))
SURGE_QPS = float(os.environ.get("SPECOPS_TEST_SURGE_QPS", "7"))
# Long prompts saturate the pods at a few requests/s (3.5 per replica: the speculative pod queues,
# the baseline keeps up), cheap enough in CPU for 2-core machines; see docs/emulator.md.
PROMPT = {"promptTokens": 2900, "maxTokens": 256}


def demo_doc(**policy: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "demo-llama70b.yaml").read_text())
    doc["spec"]["policy"].update(policy)
    return doc


class Load:
    """A scenario played in the background against the Service's ready pods."""

    def __init__(self, api: client.ApiClient, namespace: str, phases: list[dict[str, Any]]) -> None:
        self.scenario = Scenario.model_validate({"name": "test", "seed": 5, "phases": phases})
        self.records: list[Record] = []
        self.started = time.monotonic()
        resolver = endpoints_resolver(api, namespace, NAME)
        self.thread = threading.Thread(
            target=lambda: self.records.extend(
                asyncio.run(
                    run_load(self.scenario, resolver, "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8")
                )
            ),
            daemon=True,
        )
        self.thread.start()

    def phase_started(self, name: str) -> float:
        t = self.started
        for p in self.scenario.phases:
            if p.name == name:
                return t
            t += p.seconds
        raise KeyError(name)

    def join(self) -> None:
        self.thread.join(timeout=self.scenario.seconds + 120)


@pytest.fixture
def deployed(api: client.ApiClient, namespace: str, start_operator: Any) -> Iterator[str]:
    start_operator(resync_seconds=5.0)
    return namespace


def wait_mode(api: client.ApiClient, ns: str, mode: str, timeout: float) -> dict[str, Any]:
    return wait_for(lambda: (s := get_si(api, ns, NAME)).get("status", {}).get("mode") == mode and s,
                    timeout, f"mode {mode}", every=0.5)  # fmt: skip


def wait_split(api: client.ApiClient, ns: str, spec: int, base: int, timeout: float) -> float:
    def ok() -> bool:
        s, b = deployment(api, ns, f"{NAME}-spec"), deployment(api, ns, f"{NAME}-base")
        return bool(s and b and s.spec.replicas == spec and b.spec.replicas == base)

    wait_for(ok, timeout, f"Deployments at speculative={spec}, baseline={base}", every=0.25)
    return time.monotonic()


def reasons(si: dict[str, Any]) -> list[str]:
    return [d["reason"] for d in si.get("status", {}).get("decisions", [])]


def test_ramp_falls_back_then_returns_by_probe(api: client.ApiClient, deployed: str) -> None:
    ns = deployed
    create_si(api, ns, demo_doc())
    wait_for(lambda: condition(get_si(api, ns, NAME), "Ready").get("status") == "True", 120, "Ready")
    load = Load(api, ns, [
        {"name": "low", "duration": "30s", "qps": LOW_QPS, "temperature": 0.2, **PROMPT},
        {"name": "surge", "duration": "70s", "qps": SURGE_QPS, "temperature": 0.2, **PROMPT},
        {"name": "calm", "duration": "230s", "qps": LOW_QPS, "temperature": 0.2, **PROMPT},
    ])  # fmt: skip
    si = wait_mode(api, ns, "Speculative", 10)
    assert condition(si, "MetricsAvailable").get("status") in ("True", "Unknown")
    si = wait_mode(api, ns, "Baseline", 100)
    changed = wait_split(api, ns, 0, 2, 20)
    onset = load.phase_started("surge")
    print(f"\nsurge onset -> Deployments at baseline: {changed - onset:.1f} s")
    assert reasons(si)[-1] in ("LoadSaturation", "TailLatencyRegression", "TailGapWidening"), reasons(si)
    # Load drops; after the cooldown, once the baseline pool has worked off the queue the switch
    # left it (no probe while it queues), a probe runs one replica speculative beside it...
    wait_mode(api, ns, "Probing", 230)
    wait_split(api, ns, 1, 1, 20)
    # ...and wins its way back.
    si = wait_mode(api, ns, "Speculative", 180)
    wait_split(api, ns, 2, 0, 20)
    assert reasons(si)[-2:] == ["ProbeStarted", "ProbeWon"], reasons(si)
    # The operator's own metrics counted the decisions (same process: the in-process registry).
    won = REGISTRY.get_sample_value(
        "specops_decisions_total", {"reason": "ProbeWon", "from_mode": "Probing", "to_mode": "Speculative"}
    )
    assert won is not None and won >= 1
    load.join()
    failed = Counter((r.phase, (r.error or "")[:60]) for r in load.records if not r.ok)
    # Switches move one replica at a time and pods drain on termination: nothing is dropped.
    assert sum(failed.values()) <= 0.01 * len(load.records), failed.most_common(5)


def test_temperature_shift_falls_back_on_acceptance(api: client.ApiClient, deployed: str) -> None:
    ns = deployed
    create_si(api, ns, demo_doc(cooldown="10m"))
    wait_for(lambda: condition(get_si(api, ns, NAME), "Ready").get("status") == "True", 120, "Ready")
    load = Load(api, ns, [
        {"name": "cold", "duration": "25s", "qps": LOW_QPS, "temperature": 0.2},
        {"name": "hot", "duration": "45s", "qps": LOW_QPS, "temperature": 1.0},
    ])  # fmt: skip
    si = wait_mode(api, ns, "Baseline", 70)
    changed = wait_split(api, ns, 0, 2, 20)
    print(f"\ntemperature onset -> Deployments at baseline: {changed - load.phase_started('hot'):.1f} s")
    assert reasons(si) == ["AcceptanceBelowThreshold"], si["status"]["decisions"]
    assert changed > load.phase_started("hot"), "fell back before the temperature changed"
    load.join()


@local_only
def test_prometheus_outage_holds_then_recovers(
    api: client.ApiClient, testbed: Testbed, deployed: str
) -> None:
    ns = deployed
    outage = float(os.environ.get("SPECOPS_TEST_OUTAGE_SECONDS", "120"))
    create_si(api, ns, demo_doc())
    wait_for(lambda: condition(get_si(api, ns, NAME), "Ready").get("status") == "True", 120, "Ready")
    load = Load(
        api, ns, [{"name": "steady", "duration": f"{outage + 50:.0f}s", "qps": LOW_QPS, "temperature": 0.2}]
    )
    wait_for(lambda: condition(get_si(api, ns, NAME), "MetricsAvailable").get("status") == "True", 40,
             "MetricsAvailable=True")  # fmt: skip
    testbed.prometheus.stop()
    try:
        si = wait_for(lambda: condition(s := get_si(api, ns, NAME), "MetricsAvailable").get("status") == "False" and s,
                      20, "MetricsAvailable=False")  # fmt: skip
        assert condition(si, "MetricsAvailable")["reason"] == "PrometheusError"
        assert "unavailable" in condition(si, "MetricsAvailable")["message"]
        time.sleep(max(0.0, outage - 10))
        si = get_si(api, ns, NAME)
        assert si["status"]["mode"] == "Speculative"
        assert si["status"]["verdict"] == "Error"
        assert si["status"]["counters"]["errors"] >= 5
        assert reasons(si) == []
    finally:
        testbed.prometheus.start()
    wait_for(lambda: condition(get_si(api, ns, NAME), "MetricsAvailable").get("status") == "True", 60,
             "MetricsAvailable=True again")  # fmt: skip
    si = get_si(api, ns, NAME)
    assert si["status"]["mode"] == "Speculative" and reasons(si) == []
    load.join()


def test_manual_baseline_pin_is_respected(api: client.ApiClient, deployed: str) -> None:
    ns = deployed
    doc = demo_doc(mode="Baseline", cooldown="2s")
    create_si(api, ns, copy.deepcopy(doc))
    wait_split(api, ns, 0, 2, 30)
    wait_for(lambda: condition(get_si(api, ns, NAME), "Ready").get("status") == "True", 120, "Ready")
    load = Load(api, ns, [{"name": "good", "duration": "25s", "qps": LOW_QPS, "temperature": 0.1}])
    load.join()
    si = get_si(api, ns, NAME)
    assert si["status"]["mode"] == "Baseline"
    assert condition(si, "SpeculationActive")["reason"] == "PinnedBaseline"
    assert deployment(api, ns, f"{NAME}-spec").spec.replicas == 0
    assert reasons(si) == []  # the pin held from the start: nothing was switched
    # Unpinned, the policy takes over from Baseline: with traffic, the cooldown (2 s) leads to a probe.
    patch_si(api, ns, NAME, {"spec": {"policy": {"mode": "Auto"}}})
    load = Load(api, ns, [{"name": "more", "duration": "30s", "qps": LOW_QPS, "temperature": 0.1}])
    si = wait_mode(api, ns, "Probing", 30)
    assert reasons(si) == ["ProbeStarted"]
    load.join()

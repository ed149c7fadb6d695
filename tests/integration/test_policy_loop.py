"""The policy in the real closed loop: emulated pods, real Prometheus, the operator deciding.

Time scale: 2 s evaluations over 10 s windows (Prometheus scrapes every second), 3 breaches to
fall back, 3 probe wins to re-enable, 20 s cooldown.  Each test prints the time from the onset of
a breach to the Deployments changing.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from specops_testkit.testbed.stack import Testbed
from tests.support.closed_loop import (
    LOW_QPS,
    NAME,
    PROMPT,
    SURGE_QPS,
    Load,
    decision_reasons,
    demo_doc,
    wait_mode,
    wait_split,
)
from tests.support.live_cluster import (
    condition,
    create_si,
    deployment,
    get_si,
    local_only,
    patch_si,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def deployed(api: client.ApiClient, namespace: str, start_operator: Any) -> Iterator[str]:
    start_operator(resync_seconds=5.0)
    return namespace


def test_ramp_falls_back_then_returns_by_probe(api: client.ApiClient, deployed: str) -> None:
    """With a surge pod (the test world's emulated GPUs have room for one more), a switch costs no
    capacity: the surge that saturates the speculative pool is met by a fallback."""
    ns = deployed
    doc = demo_doc()
    doc["spec"]["rollout"] = {"maxSurge": 1}
    create_si(api, ns, doc)
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
    assert decision_reasons(si)[-1] in ("LoadSaturation", "TailLatencyRegression", "TailGapWidening"), (
        decision_reasons(si)
    )
    # Load drops; after the cooldown, once the baseline pool has worked off the queue the switch
    # left it (no probe while it queues), a probe runs one replica speculative beside it...
    wait_mode(api, ns, "Probing", 230)
    wait_split(api, ns, 1, 1, 20)
    # ...and wins its way back.
    si = wait_mode(api, ns, "Speculative", 180)
    wait_split(api, ns, 2, 0, 20)
    assert decision_reasons(si)[-2:] == ["ProbeStarted", "ProbeWon"], decision_reasons(si)
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
    assert decision_reasons(si) == ["AcceptanceBelowThreshold"], si["status"]["decisions"]
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
        assert decision_reasons(si) == []
    finally:
        testbed.prometheus.start()
    wait_for(lambda: condition(get_si(api, ns, NAME), "MetricsAvailable").get("status") == "True", 60,
             "MetricsAvailable=True again")  # fmt: skip
    si = get_si(api, ns, NAME)
    assert si["status"]["mode"] == "Speculative" and decision_reasons(si) == []
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
    assert decision_reasons(si) == []  # the pin held from the start: nothing was switched
    # Unpinned, the policy takes over from Baseline: with traffic, the cooldown (2 s) leads to a probe.
    patch_si(api, ns, NAME, {"spec": {"policy": {"mode": "Auto"}}})
    load = Load(api, ns, [{"name": "more", "duration": "30s", "qps": LOW_QPS, "temperature": 0.1}])
    si = wait_mode(api, ns, "Probing", 30)
    assert decision_reasons(si) == ["ProbeStarted"]
    load.join()

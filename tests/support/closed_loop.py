"""The policy in the closed loop, as the integration tests set it up: the demo resource
(manifests/examples/demo-llama70b.yaml), a scenario's load played against its Service's ready
pods, and waits on its mode and pool sizes.

Time scale: 2 s evaluations over 10 s windows (Prometheus scrapes every second).  Long prompts
saturate the pods at a few requests/s (3.5 per replica: the speculative pod queues, the baseline
keeps up), cheap enough in CPU for 2-core machines; see docs/emulator.md.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from kubernetes import client

from specops_testkit.testbed.loadgen import Record, endpoints_resolver, run_load
from specops_testkit.testbed.scenario import Scenario
from tests.support.live_cluster import deployment, get_si, wait_for
from tests.support.resources import example_doc

NAME = "llama70b-chat"  # the demo resource's name
LOW_QPS = float(os.environ.get("SPECOPS_TEST_LOW_QPS", "2"))
SURGE_QPS = float(os.environ.get("SPECOPS_TEST_SURGE_QPS", "7"))
PROMPT = {"promptTokens": 2900, "maxTokens": 256}


def demo_doc(**policy: Any) -> dict[str, Any]:
    """The demo resource with ``policy`` fields laid over its spec.policy."""
    doc = example_doc("demo-llama70b.yaml")
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


def wait_mode(api: client.ApiClient, ns: str, mode: str, timeout: float) -> dict[str, Any]:
    return wait_for(lambda: (s := get_si(api, ns, NAME)).get("status", {}).get("mode") == mode and s,
                    timeout, f"mode {mode}", every=0.5)  # fmt: skip


def wait_split(api: client.ApiClient, ns: str, spec: int, base: int, timeout: float) -> float:
    """Wait for the pool Deployments to ask for ``spec`` and ``base`` replicas; the time they did."""

    def ok() -> bool:
        s, b = deployment(api, ns, f"{NAME}-spec"), deployment(api, ns, f"{NAME}-base")
        return bool(s and b and s.spec.replicas == spec and b.spec.replicas == base)

    wait_for(ok, timeout, f"Deployments at speculative={spec}, baseline={base}", every=0.25)
    return time.monotonic()


def decision_reasons(si: dict[str, Any]) -> list[str]:
    """The reasons of the mode decisions recorded in the resource's status, oldest first."""
    return [d["reason"] for d in si.get("status", {}).get("decisions", [])]

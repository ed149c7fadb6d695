"""Prometheus faults in the closed loop, injected by a proxy between the operator and Prometheus.

The time scale of test_policy_loop (2 s evaluations over 10 s windows), one request per second
against two emulated replicas, and a 1 s query timeout.  What each fault must do:

* HTTP 500, an answer slower than the timeout, an answer trickling in a few bytes at a time (no
  read waits past the timeout, the whole answer takes longer than the evaluation's deadline), a
  body that is not JSON: Error verdicts, so
  ``MetricsAvailable=False`` (reason ``PrometheusError``, the cause in the message), the mode held
  with ``onMetricsUnavailable: Hold``; back to ``True`` and evaluating once Prometheus answers.
* NaN or +Inf in every sample, or empty vectors: Prometheus answers, but with no usable value: NoData
  (reason ``NoSeries``), ``MetricsAvailable=True``, never a breach, nothing counted.
* With ``onMetricsUnavailable: Baseline``: one ``MetricsUnavailable`` fallback after
  ``consecutiveErrors`` errors, and no other decision however long the fault lasts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from specops_testkit.testbed.faultproxy import Fault, FaultProxy
from specops_testkit.testbed.loadgen import endpoints_resolver, run_load
from specops_testkit.testbed.scenario import Scenario
from specops_testkit.testbed.stack import Testbed
from tests.support.closed_loop import NAME, decision_reasons, demo_doc, wait_mode, wait_split
from tests.support.live_cluster import condition, create_si, event_reasons, get_si, wait_for

pytestmark = pytest.mark.integration
MODEL = "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"
QUERY_TIMEOUT = 1.0
DEADLINE = 3.0  # all the queries of one evaluation


class SteadyLoad:
    """Light traffic (low temperature: a healthy speculative pool) until stopped."""

    def __init__(self, api: client.ApiClient, namespace: str, qps: float = 1.0) -> None:
        phase = {"name": "steady", "duration": "15m", "qps": qps, "temperature": 0.2, "maxTokens": 64}
        self.scenario = Scenario.model_validate({"name": "steady", "seed": 3, "phases": [phase]})
        self.resolve = endpoints_resolver(api, namespace, NAME)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        self._ready.wait(10)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        load = asyncio.create_task(run_load(self.scenario, self.resolve, MODEL))
        await asyncio.wait(
            [load, asyncio.create_task(self._stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        # asyncio.run cancels the load and its requests in flight.

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


@pytest.fixture
def proxy(testbed: Testbed) -> Iterator[FaultProxy]:
    with FaultProxy(testbed.prometheus_url) as p:
        yield p


@pytest.fixture
def faulty(namespace: str, proxy: FaultProxy, start_operator: Any) -> str:
    """An operator that reaches Prometheus through the fault proxy."""
    start_operator(
        resync_seconds=5.0,
        prometheus_url=proxy.url,
        prometheus_timeout=QUERY_TIMEOUT,
        prometheus_deadline=DEADLINE,
    )
    return namespace


def status(api: client.ApiClient, ns: str) -> dict[str, Any]:
    return dict(get_si(api, ns, NAME).get("status") or {})


def metrics_condition(api: client.ApiClient, ns: str) -> dict[str, Any]:
    return condition(get_si(api, ns, NAME), "MetricsAvailable")


def evaluations(verdict: str) -> float:
    return REGISTRY.get_sample_value("specops_evaluations_total", {"verdict": verdict}) or 0.0


def wait_verdict(api: client.ApiClient, ns: str, verdict: str, reason: str | None = None) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        s = status(api, ns)
        if s.get("verdict") == verdict and (reason is None or s.get("verdictReason") == reason):
            return s
        return None

    return wait_for(ok, 60, f"verdict {verdict} {reason or ''}", every=0.5)


def start(api: client.ApiClient, ns: str, load: bool, **policy: Any) -> SteadyLoad | None:
    create_si(api, ns, demo_doc(**policy))
    wait_for(lambda: condition(get_si(api, ns, NAME), "Ready").get("status") == "True", 120, "Ready")
    return SteadyLoad(api, ns) if load else None


def test_failing_prometheus_holds_the_mode_then_recovers(
    api: client.ApiClient, proxy: FaultProxy, faulty: str
) -> None:
    ns = faulty
    load = start(api, ns, load=True)
    assert load is not None
    try:
        wait_verdict(api, ns, "Healthy")
        for fault, delay, cause in [
            (Fault.ERROR, 0.0, "HTTP 500"),
            (Fault.SLOW, 4 * QUERY_TIMEOUT, "timed out: no answer within 1 s"),
            # 8 bytes every 0.3 s: each read well within the timeout, the answers far past the deadline.
            (Fault.TRICKLE, 0.3, f"within the {DEADLINE:g} s"),  # the client's or the evaluator's deadline
            (Fault.GARBAGE, 0.0, "bad answer"),
        ]:
            errors_before = evaluations("Error")
            proxy.set(fault, delay=delay)
            cond = wait_for(lambda: (c := metrics_condition(api, ns)).get("status") == "False" and c, 30,
                            f"MetricsAvailable=False on {fault}")  # fmt: skip
            assert cond["reason"] == "PrometheusError", cond
            assert cause in cond["message"], cond
            # Held through more errors than onMetricsUnavailable=Baseline would need to fall back.
            s = wait_for(lambda: (s := status(api, ns)).get("counters", {}).get("errors", 0) >= 6 and s, 60,
                         f"6 errors in a row on {fault}")  # fmt: skip
            assert (s["mode"], s["verdict"], s.get("decisions", [])) == ("Speculative", "Error", []), s
            wait_for(lambda n=errors_before: evaluations("Error") - n >= 6, 10, "6 Error evaluations counted")
            proxy.set(Fault.PASS)
            s = wait_verdict(api, ns, "Healthy")
            assert metrics_condition(api, ns)["status"] == "True"
            assert (s["mode"], decision_reasons({"status": s}), s.get("counters", {}).get("errors", 0)) == (
                "Speculative",
                [],
                0,
            )
        assert "MetricsUnavailable" in event_reasons(api, ns, NAME)  # a Warning when it went False
    finally:
        load.stop()


def test_nan_inf_and_empty_answers_are_no_data_never_a_breach(
    api: client.ApiClient, proxy: FaultProxy, faulty: str
) -> None:
    ns = faulty
    load = start(api, ns, load=True)
    assert load is not None
    try:
        wait_verdict(api, ns, "Healthy")
        for fault in (Fault.NAN, Fault.INF, Fault.EMPTY):
            breaches_before, no_data_before = evaluations("Breach"), evaluations("NoData")
            proxy.set(fault)
            s = wait_verdict(api, ns, "NoData", "NoSeries")
            cond = metrics_condition(api, ns)
            assert (cond["status"], cond["reason"]) == ("True", "NoSeries"), cond
            # Several evaluations on the fault: every one NoData, none a breach, nothing counted.
            wait_for(lambda n=no_data_before: evaluations("NoData") - n >= 5, 60, f"5 evaluations on {fault}")
            s = status(api, ns)
            assert evaluations("Breach") == breaches_before
            assert (s["mode"], s["verdict"], s.get("decisions", [])) == ("Speculative", "NoData", []), s
            assert not {k: v for k, v in s.get("counters", {}).items() if v}, s
            proxy.set(Fault.PASS)
            wait_verdict(api, ns, "Healthy")
            assert metrics_condition(api, ns)["reason"] == "Evaluated"
    finally:
        load.stop()


def test_baseline_policy_falls_back_once(api: client.ApiClient, proxy: FaultProxy, faulty: str) -> None:
    ns = faulty
    start(api, ns, load=False, onMetricsUnavailable="Baseline", consecutiveErrors=3, cooldown="10m")
    wait_for(lambda: metrics_condition(api, ns).get("status") == "True", 60, "MetricsAvailable=True")
    key = {"reason": "MetricsUnavailable", "from_mode": "Speculative", "to_mode": "Baseline"}
    fallbacks_before = REGISTRY.get_sample_value("specops_decisions_total", key) or 0.0
    proxy.set(Fault.ERROR)
    s = wait_mode(api, ns, "Baseline", 60)
    assert decision_reasons(s) == ["MetricsUnavailable"], s["status"]["decisions"]
    assert s["status"]["decisions"][-1]["message"].startswith("3 evaluations in a row without metrics")
    wait_split(api, ns, 0, 2, 60)
    # The fault lasts: errors keep counting, the fallback is not repeated.
    s = wait_for(lambda: (s := get_si(api, ns, NAME))["status"].get("counters", {}).get("errors", 0) >= 10 and s, 60,
                 "10 errors in a row")  # fmt: skip
    assert (s["status"]["mode"], decision_reasons(s)) == ("Baseline", ["MetricsUnavailable"]), s["status"]
    assert (REGISTRY.get_sample_value("specops_decisions_total", key) or 0.0) - fallbacks_before == 1
    proxy.set(Fault.PASS)
    wait_for(lambda: metrics_condition(api, ns).get("status") == "True", 60, "MetricsAvailable=True again")
    s = get_si(api, ns, NAME)
    assert (s["status"]["mode"], decision_reasons(s)) == ("Baseline", ["MetricsUnavailable"]), s["status"]
    assert not s["status"].get("counters", {}).get("errors"), s["status"]["counters"]

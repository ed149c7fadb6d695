"""The evaluation loop against a fake Prometheus: batching, and failures kept apart from breaches."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specops.controller.evaluator import Evaluator
from specops.controller.kube import NotLeaderError
from specops.policy.decide import Observation


class FakeReconciler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Observation]] = []

    def evaluate(self, ns: str, name: str, obs: Observation, now: float) -> None:
        self.calls.append((ns, name, obs))


def rows_for(names: list[str]) -> Any:
    def query(url: str, promql: str) -> Any:
        if "draft_acceptance_rate" in promql:
            return []  # a V1 pod exports no acceptance gauge
        out = []
        for n in names:
            for pool in ("speculative", "baseline"):
                value = "0.8" if "accepted" in promql else "1.0"
                out.append({"metric": {"namespace": "ns", "specops_name": n, "specops_pool": pool},
                            "value": [0, value]})  # fmt: skip
        return out

    return query


@pytest.mark.parametrize("n", [1, 10, 100])
def test_queries_per_cycle_do_not_grow_with_resources(n: int) -> None:
    names = [f"r{i}" for i in range(n)]
    sent: list[str] = []
    inner = rows_for(names)

    def query(url: str, promql: str) -> Any:
        sent.append(promql)
        return inner(url, promql)

    rec = FakeReconciler()
    ev = Evaluator(rec, "http://prom", query=query, clock=lambda: 1000.0)  # type: ignore[arg-type]
    for name in names:
        ev.track("ns", name, {"policy": {"interval": "30s", "window": "2m"}})
    report = ev.run_cycle()
    assert report.resources == n
    assert report.queries == len(sent) == 15  # one per signal
    assert all("[2m]" in q for q in sent if "[" in q)
    assert all(obs.speculative is not None and obs.speculative.acceptance == pytest.approx(0.8)
               for _, _, obs in rec.calls)  # fmt: skip
    # Not due again before the interval.
    assert ev.run_cycle().resources == 0


@pytest.mark.parametrize(
    ("answer", "expect_error"),
    [
        (RuntimeError("HTTP Status Code 500"), "unavailable"),
        (TimeoutError("read timed out"), "unavailable"),
        (ConnectionRefusedError(111, "refused"), "unavailable"),
        ({"not": "a vector"}, "bad answer"),
        ([{"metric": {}}], "bad answer"),
    ],
)
def test_prometheus_failures_become_errors_not_breaches(answer: Any, expect_error: str) -> None:
    def query(url: str, promql: str) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    rec = FakeReconciler()
    ev = Evaluator(rec, "http://prom", query=query)  # type: ignore[arg-type]
    ev.track("ns", "a", {})
    ev.track("ns", "b", {})
    report = ev.run_cycle()
    assert report.errors == 1
    assert [c[2].error is not None and expect_error in c[2].error for c in rec.calls] == [True, True]


def test_empty_and_nan_answers_are_no_data() -> None:
    def query(url: str, promql: str) -> Any:
        if "request_success" in promql:
            return [{"metric": {"namespace": "ns", "specops_name": "a", "specops_pool": "speculative"},
                     "value": [0, "NaN"]}]  # fmt: skip
        return []

    rec = FakeReconciler()
    ev = Evaluator(rec, "http://prom", query=query)  # type: ignore[arg-type]
    ev.track("ns", "a", {})
    ev.track("ns", "missing", {})
    ev.run_cycle()
    by_name = {name: obs for _, name, obs in rec.calls}
    # A NaN is no value: a resource with nothing else is as if it had no series (NoSeries).
    assert by_name["a"] == by_name["missing"] == Observation()


def test_no_url_is_an_error_with_the_fix() -> None:
    rec = FakeReconciler()
    ev = Evaluator(rec, None, query=rows_for([]))  # type: ignore[arg-type]
    ev.track("ns", "a", {})
    ev.run_cycle()
    assert "spec.policy.prometheusUrl" in (rec.calls[0][2].error or "")


def test_resources_with_their_own_prometheus_are_grouped_apart() -> None:
    urls: list[str] = []

    def query(url: str, promql: str) -> Any:
        urls.append(url)
        return []

    ev = Evaluator(FakeReconciler(), "http://default", query=query)  # type: ignore[arg-type]
    ev.track("ns", "a", {})
    ev.track("ns", "b", {"policy": {"prometheusUrl": "http://other"}})
    report = ev.run_cycle()
    assert report.queries == 30
    assert set(urls) == {"http://default", "http://other"}


class SlowReconciler(FakeReconciler):
    def __init__(self, seconds: float, fail: Exception | None = None) -> None:
        super().__init__()
        self.seconds, self.fail = seconds, fail

    def evaluate(self, ns: str, name: str, obs: Observation, now: float) -> None:
        time.sleep(self.seconds)
        self.calls.append((ns, name, obs))
        if self.fail is not None:
            raise self.fail


def test_resources_are_evaluated_concurrently() -> None:
    """Each evaluation waits on the API server, so eight run at once: here each waits at a barrier
    of eight, which opens only when eight evaluations are in it together (one at a time, the first
    would wait alone until the barrier's timeout breaks it, and every evaluation would fail)."""

    class Together(FakeReconciler):
        def __init__(self) -> None:
            super().__init__()
            self.barrier = threading.Barrier(8, timeout=10)

        def evaluate(self, ns: str, name: str, obs: Observation, now: float) -> None:
            self.barrier.wait()
            self.calls.append((ns, name, obs))

    rec = Together()
    ev = Evaluator(rec, "http://prom", query=rows_for([]), workers=8)  # type: ignore[arg-type]
    for i in range(16):
        ev.track("ns", f"r{i}", {})
    report = ev.run_cycle()
    assert report.resources == 16 and report.errors == 0 and len(rec.calls) == 16


def test_lost_leadership_ends_the_cycle() -> None:
    rec = SlowReconciler(0.05, fail=NotLeaderError("not the leader: status of ns/r0 not written"))
    ev = Evaluator(rec, "http://prom", query=rows_for([]), workers=2)  # type: ignore[arg-type]
    for i in range(20):
        ev.track("ns", f"r{i}", {})
    report = ev.run_cycle()
    assert report.resources == 0 and report.errors == 0
    assert len(rec.calls) < 20  # the rest never started
    assert all(t.last == 0.0 for t in ev.tracked.values())  # due again for the next leader


def _forbidden(cause: str) -> ApiException:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "code": 403, "details": {"causes": [{"reason": cause}]}})
    return exc


@pytest.mark.parametrize(
    ("fail", "errors"),
    [
        (_forbidden("NamespaceTerminating"), 0),  # what a write into a namespace being deleted gets
        (ApiException(status=404, reason="Not Found"), 0),  # deleted between the read and a write
        (_forbidden("Unknown"), 1),  # RBAC: a fault the operator's log must show
        (ApiException(status=500, reason="Internal Server Error"), 1),
    ],
)
def test_a_resource_deleted_meanwhile_is_no_error(
    fail: ApiException, errors: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A namespace being deleted refuses the evaluation's writes (403 NamespaceTerminating): the
    resource is on its way out, so that is logged as skipped, not as a failure with a traceback."""
    rec = SlowReconciler(0.0, fail=fail)
    ev = Evaluator(rec, "http://prom", query=rows_for([]))  # type: ignore[arg-type]
    ev.track("ns", "r0", {})
    report = ev.run_cycle()
    assert report.errors == errors
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == errors, logged

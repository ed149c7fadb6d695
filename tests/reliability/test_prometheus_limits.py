"""What a resource can make the operator fetch: only allowlisted Prometheus URLs (request forgery),
and never for longer than the evaluation's deadline (a Prometheus that trickles its answer).

The allowlist is checked twice: the admission webhook refuses a resource naming another URL, and
the evaluator never queries one that slipped past it (the webhook fails open when the operator is
down).  The deadline is checked twice too: the query client stops reading an answer still arriving
at the deadline, and the evaluator stops waiting for its queries there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from typer.testing import CliRunner

from specops.checks.admission import normalise_prometheus_url, prometheus_url_allowed, review
from specops.cli import app
from specops.controller.evaluator import (
    Evaluator,
    PrometheusDeadlineError,
    describe_failure,
    prometheus_query,
)
from specops.controller.main import OperatorOptions, prometheus_allowlist
from specops.policy.decide import Observation
from specops_testkit.testbed.faultproxy import Fault, FaultProxy
from tests.support.resources import make_doc

OWN = "http://prometheus.monitoring.svc:9090"


class RecordingReconciler:
    def __init__(self) -> None:
        self.calls: dict[str, Observation] = {}

    def evaluate(self, ns: str, name: str, obs: Observation, now: float) -> None:
        self.calls[name] = obs


# ----------------------------------------------------------------------------------- allowlist


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("http://prometheus.monitoring.svc:9090", "http://prometheus.monitoring.svc:9090"),
        ("HTTP://Prometheus.Monitoring.svc:9090/", "http://prometheus.monitoring.svc:9090"),
        ("https://prom.example:443/", "https://prom.example"),
        ("http://prom.example:80/prefix/", "http://prom.example/prefix"),
        ("http://[::1]:9090", "http://[::1]:9090"),
        ("http://prom:9090/#frag", "http://prom:9090"),
        ("file:///etc/passwd", None),
        ("gopher://prom:70", None),
        ("http://", None),
        ("http://prom:notaport", None),
        ("prom:9090", None),
        ("", None),
    ],
)
def test_urls_are_compared_normalised(url: str, normalised: str | None) -> None:
    assert normalise_prometheus_url(url) == normalised


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (OWN, True),
        (OWN + "/", True),
        ("http://PROMETHEUS.monitoring.svc:9090", True),
        ("http://prometheus.monitoring.svc:9091", False),  # another port
        ("https://prometheus.monitoring.svc:9090", False),  # another scheme
        (OWN + "/api/v1/admin", False),  # a longer path is not the same URL: no prefix match
        ("http://prometheus.monitoring.svc:9090@169.254.169.254", False),  # userinfo trick
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://127.0.0.1:10250", False),
    ],
)
def test_allowlist_matches_only_the_same_url(url: str, allowed: bool) -> None:
    assert prometheus_url_allowed(url, [OWN]) is allowed


def test_admission_refuses_a_url_off_the_list_naming_the_field_and_the_fix() -> None:
    doc = make_doc(policy={"prometheusUrl": "http://169.254.169.254/latest"})
    verdict = review("CREATE", doc, None, allowed_prometheus_urls=(OWN,))
    assert not verdict.allowed
    assert verdict.message.startswith("spec.policy.prometheusUrl: 'http://169.254.169.254/latest' is not")
    for fix in ("Remove the field", "--allowed-prometheus-url", "prometheus.allowedUrls", OWN):
        assert fix in verdict.message, fix
    assert "[PrometheusUrlNotAllowed]" in verdict.message
    # No allowlist at all (an operator without --prometheus-url): every URL refused, saying so.
    verdict = review("CREATE", doc, None, allowed_prometheus_urls=())
    assert not verdict.allowed and "(allowed: none)" in verdict.message
    # An UPDATE that changes the spec keeps being refused; one that leaves it alone is allowed
    # (an object admitted before the allowlist must stay editable and deletable).
    changed = make_doc(replicas=3, policy={"prometheusUrl": "http://169.254.169.254/latest"})
    assert not review("UPDATE", changed, doc, allowed_prometheus_urls=(OWN,)).allowed
    labelled = {**doc, "metadata": {**doc["metadata"], "labels": {"team": "a"}}}
    assert review("UPDATE", labelled, doc, allowed_prometheus_urls=(OWN,)).allowed


def test_admission_allows_listed_urls_and_resources_without_one() -> None:
    listed = make_doc(policy={"prometheusUrl": OWN + "/"})
    assert review("CREATE", listed, None, allowed_prometheus_urls=(OWN,)).allowed
    assert review("CREATE", make_doc(), None, allowed_prometheus_urls=()).allowed
    # Without an allowlist (specops validate, which knows no operator) the URL is not judged.
    assert review("CREATE", make_doc(policy={"prometheusUrl": "http://x"}), None).allowed


def test_the_allowlist_is_the_operators_own_prometheus_unless_more_are_allowed() -> None:
    assert prometheus_allowlist(OperatorOptions(prometheus_url=OWN)) == (OWN,)
    assert prometheus_allowlist(OperatorOptions()) == ()
    both = OperatorOptions(prometheus_url=OWN, allowed_prometheus_urls=["https://thanos:443", OWN])
    assert prometheus_allowlist(both) == (OWN, "https://thanos:443")


@pytest.mark.parametrize(
    ("flag", "value"), [("--allowed-prometheus-url", "ftp://prom"), ("--prometheus-url", "prom:9090")]
)
def test_run_refuses_an_allowlist_entry_that_is_not_a_url(flag: str, value: str) -> None:
    result = CliRunner().invoke(app, ["run", flag, value])
    assert result.exit_code == 2
    assert f"{flag} {value!r}: write an http:// or https:// URL with a host" in result.output


def test_evaluator_never_queries_a_url_off_the_list() -> None:
    """A resource that slipped past admission (the webhook fails open): an Error verdict saying
    why, and no request to its URL; the others in the same cycle are queried as usual."""
    asked: list[str] = []

    def query(url: str, promql: str) -> Any:
        asked.append(url)
        return []

    rec = RecordingReconciler()
    ev = Evaluator(rec, OWN, query=query, allowed_urls=(OWN,))  # type: ignore[arg-type]
    ev.track("ns", "forged", {"policy": {"prometheusUrl": "http://169.254.169.254/latest"}})
    ev.track("ns", "listed", {"policy": {"prometheusUrl": OWN + "/"}})
    ev.track("ns", "default", {})
    report = ev.run_cycle()
    assert set(asked) == {OWN, OWN + "/"}, asked
    assert report.resources == 3
    error = rec.calls["forged"].error or ""
    assert (
        "spec.policy.prometheusUrl 'http://169.254.169.254/latest' is not on the operator's allowlist"
        in error
    )
    assert "--allowed-prometheus-url" in error
    assert rec.calls["listed"].error is None and rec.calls["default"].error is None
    # Fixed by an edit: queried from the next evaluation on.
    ev.track("ns", "forged", {})
    ev.tracked[("ns", "forged")].last = 0.0
    ev.run_cycle()
    assert rec.calls["forged"].error is None


# ------------------------------------------------------------------------------------ deadline


def test_evaluator_stops_waiting_at_the_deadline() -> None:
    """Each query answers within any per-query timeout, but 15 of them take far longer than the
    deadline: the group is an Error at the deadline, naming it, not after every answer."""

    def query(url: str, promql: str) -> Any:
        time.sleep(0.4)
        return []

    rec = RecordingReconciler()
    ev = Evaluator(rec, OWN, query=query, deadline=0.6)  # type: ignore[arg-type]
    ev.track("ns", "a", {})
    t0 = time.monotonic()
    report = ev.run_cycle()
    took = time.monotonic() - t0
    assert took < 1.2, took  # 15 queries, 4 at a time, would take 1.6 s
    error = rec.calls["a"].error or ""
    assert "answered within the 0.6 s evaluation deadline" in error, error
    assert report.errors == 1
    assert report.queries < 15  # the ones not started by then are never sent


@pytest_asyncio.fixture
async def trickling() -> AsyncIterator[FaultProxy]:
    """A stub Prometheus with a ~1 KB answer behind the fault proxy."""
    rows = [
        {
            "metric": {"namespace": "ns", "specops_name": f"r{i}", "specops_pool": "speculative"},
            "value": [1.0, "0.75"],
        }
        for i in range(10)
    ]

    async def query(request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    p = FaultProxy(f"http://127.0.0.1:{runner.addresses[0][1]}")
    task = asyncio.create_task(p.serve())
    while not p.port:
        await asyncio.sleep(0.01)
    yield p
    p.stop()
    await task
    await runner.cleanup()


@pytest.mark.asyncio
async def test_a_trickling_answer_outlasts_the_timeout_but_not_the_deadline(trickling: FaultProxy) -> None:
    trickling.set(Fault.TRICKLE, delay=0.02)  # 8 bytes every 20 ms: about 2.5 s for the answer
    # The control: no read waits as long as the 0.5 s timeout, so without a deadline the answer
    # arrives whole, long after the timeout.
    t0 = time.monotonic()
    rows = await asyncio.to_thread(prometheus_query(timeout=0.5), trickling.url, "up")
    assert len(rows) == 10 and time.monotonic() - t0 > 1.0
    # With a deadline, the client stops reading there.
    t0 = time.monotonic()
    with pytest.raises(PrometheusDeadlineError) as info:
        await asyncio.to_thread(prometheus_query(timeout=0.5, deadline=0.8), trickling.url, "up")
    took = time.monotonic() - t0
    assert 0.8 <= took < 1.3, took
    assert describe_failure(info.value, 0.5) == (
        "deadline",
        "timed out: no complete answer within the 0.8 s deadline",
    )


@pytest.mark.asyncio
async def test_evaluator_through_a_trickling_prometheus(trickling: FaultProxy) -> None:
    trickling.set(Fault.TRICKLE, delay=0.02)
    rec = RecordingReconciler()
    ev = Evaluator(rec, trickling.url, query_timeout=0.5, deadline=1.0)  # type: ignore[arg-type]
    ev.track("ns", "r1", {})
    t0 = time.monotonic()
    await asyncio.to_thread(ev.run_cycle)
    took = time.monotonic() - t0
    assert took < 1.6, took
    error = rec.calls["r1"].error or ""
    assert error.startswith(f"Prometheus at {trickling.url} unavailable: timed out:"), error
    # The same Prometheus answering at once: evaluated.
    trickling.set(Fault.PASS)
    ev.tracked[("ns", "r1")].last = 0.0
    await asyncio.to_thread(ev.run_cycle)
    assert rec.calls["r1"].error is None and rec.calls["r1"].speculative is not None

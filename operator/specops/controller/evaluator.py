"""The evaluation loop: batched Prometheus queries for every due resource, then one decision each.

Resources are grouped by (Prometheus URL, rate window); each group costs one query per signal,
however many resources it holds.  A failed or malformed answer becomes an Error verdict for the
whole group (never a breach), an empty one a NoData verdict per resource.

Two limits protect the operator from what a resource points it at.  Only URLs on the operator's
allowlist are queried (the admission webhook refuses others; one that slipped past it, with the
webhook down, gets an Error verdict saying why, and no request).  And a group's queries share a
wall-clock deadline: a Prometheus that trickles its answer a few bytes at a time never trips the
per-read timeout, so the whole fetch is bounded as well (``prometheus_query`` stops reading at the
deadline; the evaluator stops waiting for it there too).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_EXCEPTION, CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from specops.api.v1alpha1 import PolicySpec
from specops.checks.admission import prometheus_url_allowed
from specops.controller import metrics
from specops.controller.kube import NotLeaderError, gone_or_terminating
from specops.controller.reconciler import Reconciler
from specops.metrics.observation import Key, build_observations
from specops.metrics.promql import Sample, Signal, build_queries, parse_vector, promql_duration
from specops.policy.decide import Observation

log = logging.getLogger("specops.evaluator")
QueryFn = Callable[[str, str], Any]  # (url, query) -> data.result
# Queries of one group in flight at once (15 per group: a few rounds, not 15 connections).
QUERY_CONCURRENCY = 4
# Resources evaluated at once (each evaluation waits on the API server most of its time).
EVALUATION_WORKERS = 8


class PrometheusDeadlineError(TimeoutError):
    """The answer did not arrive whole within the evaluation's deadline."""


@dataclass
class Tracked:
    url: str | None
    window: str
    interval: float
    last: float = 0.0
    refused: str | None = None  # why this resource's Prometheus is not queried


@dataclass
class CycleReport:
    resources: int = 0
    queries: int = 0
    errors: int = 0
    seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)


def _read_body(resp: requests.Response, until: float, deadline: float) -> bytes:
    """The body, read one socket read at a time so the deadline is checked between reads (each
    read is bounded by the per-read timeout); a body still arriving at ``until`` is abandoned."""
    chunks: list[bytes] = []
    while True:
        if time.monotonic() > until:
            raise PrometheusDeadlineError(f"no complete answer within the {deadline:g} s deadline")
        chunk = resp.raw.read1(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def prometheus_query(timeout: float, deadline: float | None = None) -> QueryFn:
    """Prometheus' instant-query API, with a short retry on 502-504, a per-read ``timeout`` and,
    when given, a total ``deadline`` per query however slowly the answer trickles in.

    A query that timed out is not sent again (``read=0``): a retry would double the wait for an
    evaluation and the load on a Prometheus that is already too slow.  The answer is asked for
    uncompressed so that every socket read returns what it got (a decoder could keep reading)."""
    local = threading.local()  # a session per thread: the evaluator queries from a pool
    limit = deadline if deadline is not None else math.inf

    def session() -> requests.Session:
        s: requests.Session | None = getattr(local, "session", None)
        if s is None:
            retry = Retry(
                total=1, read=0, backoff_factor=0.2, status_forcelist=(502, 503, 504), allowed_methods=None
            )
            s = requests.Session()
            for prefix in ("http://", "https://"):
                s.mount(prefix, HTTPAdapter(max_retries=retry))
            local.session = s
        return s

    def query(url: str, promql: str) -> Any:
        start = time.monotonic()
        with session().get(
            f"{url.rstrip('/')}/api/v1/query",
            params={"query": promql},
            headers={"Accept-Encoding": "identity"},
            timeout=timeout,
            stream=True,
        ) as resp:
            body = _read_body(resp, start + limit, limit)
            status = resp.status_code
        if status != 200:  # the message describe_failure reads: "HTTP Status Code 500 (b'...')"
            raise PrometheusApiClientException(f"HTTP Status Code {status} ({body!r})")
        return json.loads(body)["data"]["result"]

    return query


def describe_failure(exc: Exception, timeout: float) -> tuple[str, str]:
    """A failed query's kind (the label of specops_prometheus_errors_total) and cause, in words.

    requests reports urllib3's last error inside a message that quotes the whole URL-encoded
    query, so the part that matters (timed out, refused, which status) would be cut off."""
    if isinstance(exc, PrometheusDeadlineError):
        return "deadline", f"timed out: {exc}"
    cause: BaseException = exc
    if exc.args and isinstance(exc.args[0], MaxRetryError) and exc.args[0].reason is not None:
        cause = exc.args[0].reason
    if isinstance(cause, NewConnectionError | ConnectionError):  # (urllib3's is a timeout subclass)
        return "unreachable", f"cannot connect: {str(cause).rpartition(': ')[2] or cause}"[:200]
    if isinstance(exc, requests.Timeout | TimeoutError) or isinstance(cause, Urllib3Timeout | TimeoutError):
        return "timeout", f"timed out: no answer within {timeout:g} s"
    if isinstance(exc, PrometheusApiClientException):  # "HTTP Status Code 500 (b'...')"
        return "http_error", str(exc).replace("HTTP Status Code", "HTTP", 1)[:200]
    if isinstance(exc, requests.exceptions.RetryError):  # 502-504 again after the retry
        return "http_error", f"HTTP error: {cause}"[:200]
    return type(exc).__name__, f"{type(cause).__name__}: {str(cause)[:200]}"


def _failure(url: str, exc: Exception, timeout: float) -> str:
    """A failed query as the group's error (and counted by kind)."""
    if isinstance(exc, ValueError | KeyError | TypeError):  # not JSON, or not a query result
        metrics.PROMETHEUS_ERRORS.labels("bad_answer").inc()
        return f"bad answer from Prometheus at {url}: {type(exc).__name__}: {str(exc)[:200]}"
    kind, cause = describe_failure(exc, timeout)
    metrics.PROMETHEUS_ERRORS.labels(kind).inc()
    return f"Prometheus at {url} unavailable: {cause}"


class Evaluator:
    """Due resources evaluated in groups; ``allowed_urls`` None: any URL (tests, the demo)."""

    def __init__(
        self,
        reconciler: Reconciler,
        default_url: str | None,
        namespaces: tuple[str, ...] = (),
        query: QueryFn | None = None,
        clock: Callable[[], float] = time.time,
        query_timeout: float = 10.0,
        allowed_urls: Collection[str] | None = None,
        deadline: float = 30.0,
        workers: int = EVALUATION_WORKERS,
    ) -> None:
        self.reconciler = reconciler
        self.default_url = default_url
        self.namespaces = namespaces
        self.query = query or prometheus_query(query_timeout, deadline)
        self.query_timeout = query_timeout
        self.deadline = deadline
        self.allowed_urls = tuple(allowed_urls) if allowed_urls is not None else None
        self.clock = clock
        self.tracked: dict[Key, Tracked] = {}
        self._pool = ThreadPoolExecutor(QUERY_CONCURRENCY, thread_name_prefix="specops-prometheus")
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="specops-evaluate")

    def track(self, namespace: str, name: str, spec: dict[str, Any] | None) -> None:
        # The policy through its model (its defaults, its duration pattern); a policy the model
        # refuses is evaluated with the defaults until fixed (its resource is refused by its checks
        # and never switched, but its figures still show in status).
        raw = (spec or {}).get("policy")
        try:
            policy = PolicySpec.model_validate(raw if isinstance(raw, dict) else {})
        except ValidationError:
            policy = PolicySpec()
        url = policy.prometheus_url or self.default_url
        refused = None
        if (
            policy.prometheus_url is not None
            and self.allowed_urls is not None
            and not prometheus_url_allowed(policy.prometheus_url, self.allowed_urls)
        ):
            refused = (
                f"spec.policy.prometheusUrl {policy.prometheus_url!r} is not on the operator's allowlist, "
                "so it is not queried: remove the field to use the operator's own Prometheus, or have the "
                "operator's administrator allow it (--allowed-prometheus-url, chart prometheus.allowedUrls)"
            )
        # Only digits and a unit reach the queries (the model's duration pattern, then promql's).
        window = promql_duration(policy.window)
        interval = policy.interval_seconds
        key = (namespace, name)
        last = self.tracked[key].last if key in self.tracked else 0.0
        self.tracked[key] = Tracked(url=url, window=window, interval=interval, last=last, refused=refused)
        metrics.RESOURCES.set(len(self.tracked))

    def untrack(self, namespace: str, name: str) -> None:
        self.tracked.pop((namespace, name), None)
        metrics.set_mode(namespace, name, None)
        metrics.RESOURCES.set(len(self.tracked))

    def _fetch(self, url: str, window: str) -> tuple[dict[Signal, list[Sample]] | None, str | None, int]:
        """Every signal's answer, or why not; the queries of a group run a few at a time and all
        must be answered within ``deadline`` seconds of the first being sent."""
        queries = build_queries(window, self.namespaces)
        futures: dict[Future[Any], Signal] = {
            self._pool.submit(self.query, url, promql): signal for signal, promql in queries.items()
        }
        done, pending = wait(futures, timeout=self.deadline, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()  # not started yet: never sent
        sent = len(futures) - sum(f.cancelled() for f in pending)
        metrics.PROMETHEUS_QUERIES.inc(sent)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            # The first failure in signal order, so the message does not depend on thread timing.
            exc = failed[0].exception()
            assert isinstance(exc, Exception)
            return None, _failure(url, exc, self.query_timeout), sent
        if pending:
            metrics.PROMETHEUS_ERRORS.labels("deadline").inc()
            return None, (
                f"Prometheus at {url} unavailable: timed out: {len(done)} of {len(futures)} queries "
                f"answered within the {self.deadline:g} s evaluation deadline"
            ), sent  # fmt: skip
        results: dict[Signal, list[Sample]] = {}
        for f, signal in futures.items():
            try:
                results[signal] = parse_vector(f.result())
            except (ValueError, KeyError, TypeError) as exc:
                return None, _failure(url, exc, self.query_timeout), sent
        return results, None, sent

    def _evaluate(self, key: Key, obs: Observation, now: float) -> Any:
        """One resource's evaluation: its decision (None: nothing to evaluate) or what it raised."""
        ns, name = key
        try:
            return self.reconciler.evaluate(ns, name, obs, now)
        except NotLeaderError:
            raise
        except Exception as exc:
            if gone_or_terminating(exc):  # deleted meanwhile: the next cycle no longer tracks it
                log.info("evaluation of %s/%s skipped: %s", ns, name, getattr(exc, "reason", exc))
                return None
            log.exception("evaluating %s/%s failed", ns, name)
            return exc

    def run_cycle(self) -> CycleReport:
        """Every due resource: the queries of each group, then its resources' evaluations, up to
        ``workers`` at once (each reads the resource and its pools from the API server and may
        write: I/O-bound, so threads overlap the waits).  Leadership lost mid-cycle ends it."""
        start = time.monotonic()
        now = self.clock()
        report = CycleReport()
        groups: dict[tuple[str | None, str, str | None], list[Key]] = defaultdict(list)
        for key, t in list(self.tracked.items()):
            if now - t.last >= t.interval:
                groups[(t.url, t.window, t.refused)].append(key)
        for (url, window, refused), keys in groups.items():
            if refused is not None:
                results, error = None, refused
            elif url is None:
                results, error = None, "no Prometheus URL: set spec.policy.prometheusUrl or --prometheus-url"
            else:
                results, error, sent = self._fetch(url, window)
                report.queries += sent
            observations = build_observations(results) if results is not None else {}
            futures = {
                self._workers.submit(
                    self._evaluate,
                    key,
                    Observation(error=error) if error else observations.get(key, Observation()),
                    now,
                ): key
                for key in keys
            }
            stopped = False
            for future, key in futures.items():  # in submission order: reports do not depend on timing
                try:
                    outcome = future.result()
                except NotLeaderError as exc:  # the next leader goes on; the rest is not started
                    if not stopped:
                        log.info("evaluation cycle stopped: %s", exc)
                    stopped = True
                    for f in futures:
                        f.cancel()
                    continue
                except CancelledError:
                    continue
                if isinstance(outcome, Exception):
                    report.errors += 1
                    continue
                if key in self.tracked:
                    self.tracked[key].last = now
                report.resources += 1
                if outcome is not None:
                    v = outcome.assessment.verdict.value
                    report.verdicts[v] = report.verdicts.get(v, 0) + 1
            if stopped:
                report.seconds = time.monotonic() - start
                return report
            report.errors += int(error is not None)
        report.seconds = time.monotonic() - start
        if report.resources:
            metrics.EVALUATION_SECONDS.observe(report.seconds)
        return report

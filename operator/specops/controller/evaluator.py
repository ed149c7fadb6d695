"""The evaluation loop: batched Prometheus queries for every due resource, then one decision each.

Resources are grouped by (Prometheus URL, rate window); each group costs one query per signal,
however many resources it holds.  A failed or malformed answer becomes an Error verdict for the
whole group (never a breach), an empty one a NoData verdict per resource.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from pydantic import ValidationError
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from specops.api.v1alpha1 import PolicySpec
from specops.controller import metrics
from specops.controller.reconciler import Reconciler
from specops.metrics.observation import Key, build_observations
from specops.metrics.promql import Sample, Signal, build_queries, parse_vector, promql_duration
from specops.policy.decide import Observation

log = logging.getLogger("specops.evaluator")
QueryFn = Callable[[str, str], Any]  # (url, query) -> data.result


@dataclass
class Tracked:
    url: str | None
    window: str
    interval: float
    last: float = 0.0


@dataclass
class CycleReport:
    resources: int = 0
    queries: int = 0
    errors: int = 0
    seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)


def prometheus_query(timeout: float) -> QueryFn:
    """Queries through prometheus-api-client, with a short retry on 502-504 and a hard timeout.

    A query that timed out is not sent again (``read=0``): a retry would double the wait for an
    evaluation and the load on a Prometheus that is already too slow."""
    clients: dict[str, PrometheusConnect] = {}

    def query(url: str, promql: str) -> Any:
        if url not in clients:
            retry = Retry(
                total=1, read=0, backoff_factor=0.2, status_forcelist=(502, 503, 504), allowed_methods=None
            )
            clients[url] = PrometheusConnect(url=url, retry=retry, timeout=timeout)
        return clients[url].custom_query(promql)

    return query


def describe_failure(exc: Exception, timeout: float) -> tuple[str, str]:
    """A failed query's kind (the label of specops_prometheus_errors_total) and cause, in words.

    requests reports urllib3's last error inside a message that quotes the whole URL-encoded
    query, so the part that matters (timed out, refused, which status) would be cut off."""
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


class Evaluator:
    def __init__(
        self,
        reconciler: Reconciler,
        default_url: str | None,
        namespaces: tuple[str, ...] = (),
        query: QueryFn | None = None,
        clock: Callable[[], float] = time.time,
        query_timeout: float = 10.0,
    ) -> None:
        self.reconciler = reconciler
        self.default_url = default_url
        self.namespaces = namespaces
        self.query = query or prometheus_query(query_timeout)
        self.query_timeout = query_timeout
        self.clock = clock
        self.tracked: dict[Key, Tracked] = {}

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
        # Only digits and a unit reach the queries (the model's duration pattern, then promql's).
        window = promql_duration(policy.window)
        interval = policy.interval_seconds
        key = (namespace, name)
        last = self.tracked[key].last if key in self.tracked else 0.0
        self.tracked[key] = Tracked(url=url, window=window, interval=interval, last=last)
        metrics.RESOURCES.set(len(self.tracked))

    def untrack(self, namespace: str, name: str) -> None:
        self.tracked.pop((namespace, name), None)
        metrics.set_mode(namespace, name, None)
        metrics.RESOURCES.set(len(self.tracked))

    def _fetch(self, url: str, window: str) -> tuple[dict[Signal, list[Sample]] | None, str | None, int]:
        results: dict[Signal, list[Sample]] = {}
        sent = 0
        for signal, promql in build_queries(window, self.namespaces).items():
            sent += 1
            metrics.PROMETHEUS_QUERIES.inc()
            try:
                results[signal] = parse_vector(self.query(url, promql))
            except (ValueError, KeyError, TypeError) as exc:  # not JSON, or not a query result
                metrics.PROMETHEUS_ERRORS.labels("bad_answer").inc()
                what = f"{type(exc).__name__}: {str(exc)[:200]}"
                return None, f"bad answer from Prometheus at {url}: {what}", sent
            except Exception as exc:  # connection refused, timeout, HTTP 5xx: all mean "no metrics"
                kind, cause = describe_failure(exc, self.query_timeout)
                metrics.PROMETHEUS_ERRORS.labels(kind).inc()
                return None, f"Prometheus at {url} unavailable: {cause}", sent
        return results, None, sent

    def run_cycle(self) -> CycleReport:
        start = time.monotonic()
        now = self.clock()
        report = CycleReport()
        groups: dict[tuple[str | None, str], list[Key]] = defaultdict(list)
        for key, t in list(self.tracked.items()):
            if now - t.last >= t.interval:
                groups[(t.url, t.window)].append(key)
        for (url, window), keys in groups.items():
            if url is None:
                results, error = None, "no Prometheus URL: set spec.policy.prometheusUrl or --prometheus-url"
            else:
                results, error, sent = self._fetch(url, window)
                report.queries += sent
            observations = build_observations(results) if results is not None else {}
            for ns, name in keys:
                obs = Observation(error=error) if error else observations.get((ns, name), Observation())
                try:
                    decision = self.reconciler.evaluate(ns, name, obs, now)
                except Exception:
                    log.exception("evaluating %s/%s failed", ns, name)
                    report.errors += 1
                    continue
                if (ns, name) in self.tracked:
                    self.tracked[(ns, name)].last = now
                report.resources += 1
                if decision is not None:
                    v = decision.assessment.verdict.value
                    report.verdicts[v] = report.verdicts.get(v, 0) + 1
            report.errors += int(error is not None)
        report.seconds = time.monotonic() - start
        if report.resources:
            metrics.EVALUATION_SECONDS.observe(report.seconds)
        return report

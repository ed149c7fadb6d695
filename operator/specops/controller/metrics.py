"""The operator's own Prometheus metrics (served by ``specops run --metrics-port``)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from specops.api.v1alpha1 import ServingMode

DECISIONS = Counter(
    "specops_decisions", "Mode transitions taken by the policy.", ["reason", "from_mode", "to_mode"]
)
EVALUATIONS = Counter("specops_evaluations", "Per-resource policy evaluations by verdict.", ["verdict"])
EVALUATION_SECONDS = Histogram(
    "specops_evaluation_cycle_seconds",
    "Duration of one evaluation cycle over all due resources (queries + decisions + writes).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROMETHEUS_QUERIES = Counter("specops_prometheus_queries", "Queries sent to Prometheus.")
PROMETHEUS_ERRORS = Counter("specops_prometheus_errors", "Failed Prometheus queries.", ["kind"])
MODE = Gauge("specops_mode", "1 for the current mode of each resource.", ["namespace", "name", "mode"])
WRITES = Counter("specops_writes", "Write requests the operator made.", ["kind"])
API_READS = Counter(
    "specops_api_reads",
    "Read requests sent to the API server, by verb (get, list, watch) and kind: with the read cache "
    "(specops.controller.cache) a steady reconcile or evaluation of a Restart/Surge resource sends none.",
    ["verb", "kind"],
)
FIGURE_WRITES_DEFERRED = Counter(
    "specops_status_figure_writes_deferred",
    "Status writes of fresh figures only, put off by the figure-write rate limit.",
)
LEADER = Gauge("specops_leader", "1 while this replica holds the leader Lease (always 1 without election).")
RESOURCES = Gauge("specops_resources", "SpeculativeInference resources tracked by this operator.")


def set_mode(namespace: str, name: str, mode: ServingMode | None) -> None:
    """Mark the current mode (None: the resource is gone, drop its series)."""
    for m in ServingMode:
        if mode is None:
            with contextlib.suppress(KeyError):
                MODE.remove(namespace, name, m)
        else:
            MODE.labels(namespace, name, m).set(float(m == mode))

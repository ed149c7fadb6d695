"""PromQL for the policy (pure): one query per signal for every resource at once.

Queries group by ``namespace``, ``specops_name`` and ``specops_pool`` (the labels the rendered
PodMonitor gives vLLM's series) and never name a resource: the operator picks each resource's rows
out of the answer.  So the number of queries per evaluation does not grow with the number of
resources, and nothing a user controls (model names, resource names) is ever spliced into a query.
The exceptions: the namespace list of a namespaced install goes through ``escape_regex``, and a
resource's rate window is rebuilt from its parsed value (``promql_duration``).

Acceptance is rate(accepted) / rate(draft) from vLLM's counters (the V1 engine has no acceptance
gauge); pods of the V0 engine (vLLM before 0.10) export a gauge instead, which is preferred for
them because V0 added running totals to its counters, so their rate() means nothing.  Latency
comes from the per-request TPOT histogram (vLLM >= 0.11) and the e2e histogram, never
inter-token latency, which vLLM records once per engine step however many tokens a speculative
step emitted; pools without per-request TPOT are compared on e2e latency instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from specops.api.v1alpha1 import parse_duration

GROUP_LABELS = ("namespace", "specops_name", "specops_pool")
_BY = ", ".join(GROUP_LABELS)


class Signal(StrEnum):
    ACCEPTED = "accepted"
    DRAFTED = "drafted"
    DRAFTS = "drafts"
    ACCEPTED_PER_POSITION = "accepted_per_position"
    LEGACY_ACCEPTANCE = "legacy_acceptance"
    TPOT_P50 = "tpot_p50"
    TPOT_P99 = "tpot_p99"
    E2E_P50 = "e2e_p50"
    E2E_P99 = "e2e_p99"
    TTFT_P99 = "ttft_p99"
    REQUEST_RATE = "request_rate"
    RUNNING = "running"
    WAITING = "waiting"
    KV_USAGE = "kv_usage"
    REPLICAS = "replicas"


def escape_string(value: str) -> str:
    """A PromQL double-quoted string literal's content (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_RE2_META = re.compile(r"([.^$|?*+()\[\]{}\\])")


def escape_regex(value: str) -> str:
    """A literal for an RE2 regex inside a PromQL string: ``a.b`` matches only ``a.b``."""
    return escape_string(_RE2_META.sub(r"\\\1", value))


_UNITS = (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
_LONGEST_MS = 100 * 365 * 86_400_000  # Prometheus durations end near 292 years


def promql_duration(text: str) -> str:
    """A resource's duration as a PromQL range: '1.5m' -> '90s', '1h30m' -> '90m'.

    Prometheus takes neither fractions nor a zero range (either is a parse error of the whole
    query), so the value becomes whole milliseconds in the largest unit that divides them; what
    reaches a query is only ever digits and a unit.  Raises ValueError for anything else.
    """
    ms = round(parse_duration(text) * 1000)
    if not 1 <= ms <= _LONGEST_MS:
        raise ValueError(f"{text!r} is not a PromQL range: between 1ms and 100 years")
    unit, size = next((u, n) for u, n in _UNITS if ms % n == 0)
    return f"{ms // size}{unit}"


def selector(namespaces: tuple[str, ...] = ()) -> str:
    """Series of SpecOps-managed pods, optionally limited to some namespaces."""
    parts = ['specops_name!=""']
    if namespaces:
        alternatives = "|".join(escape_regex(ns) for ns in sorted(namespaces))
        parts.append(f'namespace=~"{alternatives}"')
    return "{" + ", ".join(parts) + "}"


def _rate(metric: str, window: str, sel: str, by: str = _BY) -> str:
    return f"sum by ({by}) (rate({metric}{sel}[{window}]))"


def _gauge(agg: str, metric: str, window: str, sel: str) -> str:
    # Averaged over the window, so one scrape's spike does not decide anything.
    return f"{agg} by ({_BY}) (avg_over_time({metric}{sel}[{window}]))"


def _quantile(q: float, metric: str, window: str, sel: str) -> str:
    return f"histogram_quantile({q}, sum by ({_BY}, le) (rate({metric}_bucket{sel}[{window}])))"


def build_queries(window: str, namespaces: tuple[str, ...] = ()) -> dict[Signal, str]:
    """Every signal's query for one rate window (a duration; ValueError if it is not one)."""
    window = promql_duration(window)
    sel = selector(namespaces)
    return {
        Signal.ACCEPTED: _rate("vllm:spec_decode_num_accepted_tokens_total", window, sel),
        Signal.DRAFTED: _rate("vllm:spec_decode_num_draft_tokens_total", window, sel),
        Signal.DRAFTS: _rate("vllm:spec_decode_num_drafts_total", window, sel),
        Signal.ACCEPTED_PER_POSITION: _rate(
            "vllm:spec_decode_num_accepted_tokens_per_pos_total", window, sel, by=f"{_BY}, position"
        ),
        Signal.LEGACY_ACCEPTANCE: _gauge("avg", "vllm:spec_decode_draft_acceptance_rate", window, sel),
        Signal.TPOT_P50: _quantile(0.5, "vllm:request_time_per_output_token_seconds", window, sel),
        Signal.TPOT_P99: _quantile(0.99, "vllm:request_time_per_output_token_seconds", window, sel),
        Signal.E2E_P50: _quantile(0.5, "vllm:e2e_request_latency_seconds", window, sel),
        Signal.E2E_P99: _quantile(0.99, "vllm:e2e_request_latency_seconds", window, sel),
        Signal.TTFT_P99: _quantile(0.99, "vllm:time_to_first_token_seconds", window, sel),
        Signal.REQUEST_RATE: _rate("vllm:request_success_total", window, sel),
        Signal.RUNNING: _gauge("sum", "vllm:num_requests_running", window, sel),
        Signal.WAITING: _gauge("sum", "vllm:num_requests_waiting", window, sel),
        # Named gpu_cache_usage_perc before vLLM 0.11 (both exist in 0.9.2-0.10.x).
        Signal.KV_USAGE: f"{_gauge('max', 'vllm:kv_cache_usage_perc', window, sel)} or "
        f"{_gauge('max', 'vllm:gpu_cache_usage_perc', window, sel)}",
        Signal.REPLICAS: f"count by ({_BY}) (vllm:num_requests_running{sel})",
    }


@dataclass(frozen=True, slots=True)
class Sample:
    """One row of a query answer: its group labels and value (NaN stays NaN)."""

    labels: dict[str, str]
    value: float


def parse_vector(result: object) -> list[Sample]:
    """An instant-vector answer (``data.result``) into samples; raises ValueError if malformed."""
    if not isinstance(result, list):
        raise ValueError(f"expected a vector, got {type(result).__name__}")
    out = []
    for row in result:
        if not isinstance(row, dict) or "metric" not in row or "value" not in row:
            raise ValueError(f"malformed sample {row!r}")
        labels = {str(k): str(v) for k, v in row["metric"].items()}
        out.append(Sample(labels=labels, value=float(row["value"][1])))
    return out

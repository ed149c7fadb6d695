"""The Prometheus series a given vLLM release exports, fed from ``perf.StepResult``s.

Names, labels and bucket boundaries were read off each release's ``v1/metrics/loggers.py``,
``v1/spec_decode/metrics.py`` and (V0) ``engine/metrics.py``; the tables below say from which
release each holds.  What the operator's queries must survive, reproduced here on purpose:

* V1 (default from 0.8.0; for speculation see ``args.uses_v0_engine``) labels every series with
  ``model_name`` and, from 0.8.3, ``engine``; its spec-decode counters exist only on speculative
  pods: accepted and draft tokens from 0.8.3, drafts and per-position from 0.8.5.  ``accepted``
  counts the accepted *prefix*, so accepted/draft is (E - 1) / k, not the per-position alpha.
* V0 labels with ``model_name`` only and exports the acceptance as a gauge (cumulative since start)
  plus counters that it increments by the *running totals* every 5 s (a V0 quirk kept here:
  ``rate()`` of them is not a rate of tokens, though the ratio of two is still the acceptance).
  Real V0 summed every accepted position, prefix or not, so its gauge read about the per-position
  alpha; the emulator counts the accepted prefix on V0 too, on purpose, so that the gauge the
  operator reads on V0 pods reports the same quantity as V1's counter ratio (the
  acceptance of docs/domain.md#acceptance, which its thresholds are defined on).
* Inter-token latency is observed once per engine step per request, whatever the step emitted,
  so a speculative pod's ITL is its step time.  It is ``vllm:time_per_output_token_seconds`` up to
  0.11.x (V1 hides it from 0.12.0) and ``vllm:inter_token_latency_seconds`` from 0.10.2;
  per-request TPOT (``vllm:request_time_per_output_token_seconds``) only exists from 0.11.0.
* KV cache usage is ``vllm:gpu_cache_usage_perc`` (V0, and V1 before 0.11.0) and
  ``vllm:kv_cache_usage_perc`` from 0.9.2; both are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from specops.vllm.dialect import Version, parse_version
from specops_testkit.emulator.perf import FinishReason, Request, StepResult

V = parse_version

# Bucket boundaries, as released.
TTFT_BUCKETS_SHORT = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
TTFT_BUCKETS = (*TTFT_BUCKETS_SHORT, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS_SHORT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
ITL_BUCKETS = (*ITL_BUCKETS_SHORT, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS_OLDEST = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
E2E_BUCKETS_SHORT = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
E2E_BUCKETS = (*E2E_BUCKETS_SHORT, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

LONG_BUCKETS_SINCE = V("0.8.4")
# 0.6.3 still had the oldest e2e buckets and 0.6.6 the short ones; 0.6.4/0.6.5 were not inspected.
E2E_SHORT_BUCKETS_SINCE = V("0.6.4")
V1_ENGINE_LABEL_SINCE = V("0.8.3")
V1_SPEC_COUNTERS_SINCE = V("0.8.3")
V1_SPEC_DRAFTS_SINCE = V("0.8.5")
ITL_NAME_SINCE = V("0.10.2")
V1_TPOT_NAME_HIDDEN_SINCE = V("0.12.0")
REQUEST_TPOT_SINCE = V("0.11.0")
KV_USAGE_NAME_SINCE = V("0.9.2")
V1_GPU_CACHE_NAME_HIDDEN_SINCE = V("0.11.0")
# V0's logger pushes the spec-decode gauges and counters every local logging interval.
V0_SPEC_LOG_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class MetricSet:
    """Which series a pod exports: a function of release, engine generation and speculation."""

    version: Version
    v0_engine: bool
    speculative: bool

    @property
    def labelnames(self) -> tuple[str, ...]:
        if self.v0_engine or self.version < V1_ENGINE_LABEL_SINCE:
            return ("model_name",)
        return ("model_name", "engine")

    @property
    def long_buckets(self) -> bool:
        return self.version >= LONG_BUCKETS_SINCE

    @property
    def e2e_buckets(self) -> tuple[float, ...]:
        if self.long_buckets:
            return E2E_BUCKETS
        return E2E_BUCKETS_SHORT if self.version >= E2E_SHORT_BUCKETS_SINCE else E2E_BUCKETS_OLDEST

    @property
    def itl_names(self) -> tuple[str, ...]:
        names = []
        if self.v0_engine or self.version < V1_TPOT_NAME_HIDDEN_SINCE:
            names.append("vllm:time_per_output_token_seconds")
        if self.version >= ITL_NAME_SINCE:
            names.append("vllm:inter_token_latency_seconds")
        return tuple(names)

    @property
    def request_tpot(self) -> bool:
        return not self.v0_engine and self.version >= REQUEST_TPOT_SINCE

    @property
    def kv_usage_names(self) -> tuple[str, ...]:
        names = []
        if self.v0_engine or self.version < V1_GPU_CACHE_NAME_HIDDEN_SINCE:
            names.append("vllm:gpu_cache_usage_perc")
        if not self.v0_engine and self.version >= KV_USAGE_NAME_SINCE:
            names.append("vllm:kv_cache_usage_perc")
        return tuple(names)

    @property
    def v1_spec_counters(self) -> bool:
        return self.speculative and not self.v0_engine and self.version >= V1_SPEC_COUNTERS_SINCE

    @property
    def v1_spec_drafts(self) -> bool:
        return self.v1_spec_counters and self.version >= V1_SPEC_DRAFTS_SINCE

    @property
    def v0_spec(self) -> bool:
        return self.speculative and self.v0_engine


class VLLMMetrics:
    """A per-process registry with the series ``MetricSet`` selects, updated step by step."""

    def __init__(self, metric_set: MetricSet, model_name: str, num_speculative_tokens: int = 0) -> None:
        self.set = metric_set
        self.registry = CollectorRegistry()
        names = list(metric_set.labelnames)
        self._values: tuple[str, ...] = (model_name,) if len(names) == 1 else (model_name, "0")
        self._k = num_speculative_tokens
        long = metric_set.long_buckets
        reg = self.registry

        def hist(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=reg)

        self.ttft = hist(
            "vllm:time_to_first_token_seconds",
            "Time to first token in seconds.",
            TTFT_BUCKETS if long else TTFT_BUCKETS_SHORT,
        )
        self.itl = [
            hist(
                n,
                "Time between a request's tokens, once per engine step.",
                ITL_BUCKETS if long else ITL_BUCKETS_SHORT,
            )
            for n in metric_set.itl_names
        ]
        self.request_tpot = (
            hist(
                "vllm:request_time_per_output_token_seconds",
                "Decode time per output token per request.",
                ITL_BUCKETS,
            )
            if metric_set.request_tpot
            else None
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency in seconds.",
            metric_set.e2e_buckets,
        )
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", names, registry=reg
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be scheduled.", names, registry=reg
        )
        self.kv_usage = [
            Gauge(n, "Fraction of KV cache blocks in use (0-1).", names, registry=reg)
            for n in metric_set.kv_usage_names
        ]
        self.success = Counter(
            "vllm:request_success", "Finished requests by reason.", [*names, "finished_reason"], registry=reg
        )
        if not metric_set.v0_engine:
            # V1 creates every series up front, so they read 0 before the first request.
            for metric in (self.ttft, *self.itl, self.e2e, self.running, self.waiting, *self.kv_usage):
                metric.labels(*self._values)
            if self.request_tpot is not None:
                self.request_tpot.labels(*self._values)
            for reason in FinishReason:
                self.success.labels(*self._values, reason.value)
        self._init_spec(names)

    def _init_spec(self, names: list[str]) -> None:
        reg = self.registry
        s = self.set
        self.drafts: Counter | None = None
        self.draft_tokens: Counter | None = None
        self.accepted: Counter | None = None
        self.per_pos: Counter | None = None
        self.v0_acceptance: Gauge | None = None
        self.v0_efficiency: Gauge | None = None
        self.v0_emitted: Counter | None = None
        # Cumulative spec-decode totals (V0 exports them on its own schedule).
        self._tot_drafts = self._tot_draft = self._tot_accepted = self._tot_emitted = 0
        self._v0_last_log: float | None = None
        if s.v1_spec_counters:
            self.draft_tokens = Counter(
                "vllm:spec_decode_num_draft_tokens", "Draft tokens proposed.", names, registry=reg
            )
            self.accepted = Counter(
                "vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted.", names, registry=reg
            )
            self.draft_tokens.labels(*self._values)
            self.accepted.labels(*self._values)
            if s.v1_spec_drafts:
                self.drafts = Counter("vllm:spec_decode_num_drafts", "Drafts proposed.", names, registry=reg)
                self.drafts.labels(*self._values)
                self.per_pos = Counter(
                    "vllm:spec_decode_num_accepted_tokens_per_pos",
                    "Accepted tokens per draft position.",
                    [*names, "position"],
                    registry=reg,
                )
                for pos in range(self._k):
                    self.per_pos.labels(*self._values, str(pos))
        elif s.v0_spec:
            self.v0_acceptance = Gauge(
                "vllm:spec_decode_draft_acceptance_rate",
                "Accepted / draft tokens since start.",
                names,
                registry=reg,
            )
            self.v0_efficiency = Gauge(
                "vllm:spec_decode_efficiency",
                "Emitted / most emittable tokens since start.",
                names,
                registry=reg,
            )
            self.accepted = Counter(
                "vllm:spec_decode_num_accepted_tokens",
                "Accepted tokens (V0: running totals).",
                names,
                registry=reg,
            )
            self.draft_tokens = Counter(
                "vllm:spec_decode_num_draft_tokens", "Draft tokens (V0: running totals).", names, registry=reg
            )
            self.v0_emitted = Counter(
                "vllm:spec_decode_num_emitted_tokens",
                "Emitted tokens (V0: running totals).",
                names,
                registry=reg,
            )

    # -- updates ------------------------------------------------------------------------------

    def set_queue(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running.labels(*self._values).set(running)
        self.waiting.labels(*self._values).set(waiting)
        for gauge in self.kv_usage:
            gauge.labels(*self._values).set(kv_usage)

    def observe_step(self, result: StepResult) -> None:
        """Record one engine step: token latencies, spec-decode counts, finished requests."""
        v = self._values
        for p in result.progress:
            r = p.request
            if p.first_token and r.ttft is not None:
                self.ttft.labels(*v).observe(r.ttft)
            elif p.since_last_token is not None:
                for h in self.itl:
                    h.labels(*v).observe(p.since_last_token)
            if p.drafted:
                self._count_draft(p.drafted, p.accepted, p.new_tokens)
        for r in result.finished:
            self._finish(r)
        self.set_queue(result.num_running, result.num_waiting, result.kv_usage)
        if self.set.v0_spec:
            self._v0_log(result.end)

    def observe_abort(self, request: Request) -> None:
        """V1 counts aborted requests as finished with reason "abort"; V0 does not count them."""
        if not self.set.v0_engine:
            self.success.labels(*self._values, FinishReason.ABORT.value).inc()

    def _count_draft(self, drafted: int, accepted: int, emitted: int) -> None:
        v = self._values
        self._tot_drafts += 1
        self._tot_draft += drafted
        self._tot_accepted += accepted
        self._tot_emitted += emitted
        if self.set.v0_spec:
            return
        if self.draft_tokens is not None and self.accepted is not None:
            self.draft_tokens.labels(*v).inc(drafted)
            self.accepted.labels(*v).inc(accepted)
        if self.drafts is not None and self.per_pos is not None:
            self.drafts.labels(*v).inc()
            for pos in range(min(accepted, self._k)):
                self.per_pos.labels(*v, str(pos)).inc()

    def _finish(self, r: Request) -> None:
        v = self._values
        if r.finish_reason is None or r.e2e is None:
            return
        self.success.labels(*v, r.finish_reason.value).inc()
        self.e2e.labels(*v).observe(r.e2e)
        if self.request_tpot is not None and r.tpot is not None:
            self.request_tpot.labels(*v).observe(r.tpot)

    def _v0_log(self, now: float) -> None:
        if self._v0_last_log is None:
            self._v0_last_log = now
            return
        if now - self._v0_last_log < V0_SPEC_LOG_INTERVAL_S or not self._tot_draft:
            return
        self._v0_last_log = now
        v = self._values
        assert self.v0_acceptance is not None
        assert self.v0_efficiency is not None
        assert self.accepted is not None
        assert self.draft_tokens is not None
        assert self.v0_emitted is not None
        self.v0_acceptance.labels(*v).set(self._tot_accepted / self._tot_draft)
        self.v0_efficiency.labels(*v).set(self._tot_emitted / (self._tot_drafts * (self._k + 1)))
        self.accepted.labels(*v).inc(self._tot_accepted)
        self.draft_tokens.labels(*v).inc(self._tot_draft)
        self.v0_emitted.labels(*v).inc(self._tot_emitted)

    def render(self) -> bytes:
        """The exposition text (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)

"""Open-loop workloads and a virtual-time driver for ``perf.Engine`` (pure: no clock, no sleeping).

A benchmark or a discrete-event simulator generates Poisson arrivals with ``poisson_requests`` and
runs them with ``run_virtual``, which jumps the clock from step to step (and over idle gaps) instead
of waiting: minutes of serving take a fraction of a second.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from specops_testkit.emulator.perf import Engine, PromptKind, Request, StepResult


@dataclass(frozen=True, slots=True)
class Workload:
    """A request mix: lognormal prompt and output lengths around their means, one temperature."""

    kind: PromptKind
    temperature: float
    prompt_mean: int
    output_mean: int
    # Spread of the lognormal lengths (sigma of log-length); 0 gives fixed lengths.
    sigma: float = 0.5
    max_len: int = 8192


# ShareGPT-like chat and CNN/DailyMail-like summarization, the two datasets of the vLLM team's
# speculative decoding measurements (docs/domain.md#measurements).  Outputs end at max_tokens (benchmarks
# send ignore_eos), so lengths are what the workload says.  Temperature 0: vLLM's serving benchmark
# sent greedy requests when those figures were measured.
CHAT = Workload(PromptKind.CHAT, temperature=0.0, prompt_mean=250, output_mean=250)
SUMMARIZATION = Workload(PromptKind.SUMMARIZATION, temperature=0.0, prompt_mean=800, output_mean=200)


def _lognormal_int(rng: random.Random, mean: int, sigma: float, cap: int) -> int:
    if sigma <= 0:
        return max(1, min(cap, mean))
    mu = math.log(mean) - sigma * sigma / 2  # so that the mean is ``mean``
    return max(1, min(cap, round(rng.lognormvariate(mu, sigma))))


def poisson_requests(rng: random.Random, qps: float, count: int, workload: Workload) -> list[Request]:
    """``count`` requests with exponential inter-arrival times at ``qps`` per second."""
    out: list[Request] = []
    t = 0.0
    for i in range(count):
        t += rng.expovariate(qps)
        prompt = _lognormal_int(rng, workload.prompt_mean, workload.sigma, workload.max_len // 2)
        output = _lognormal_int(rng, workload.output_mean, workload.sigma, workload.max_len - prompt)
        out.append(
            Request(
                request_id=f"req-{i}",
                prompt_tokens=prompt,
                max_tokens=output,
                temperature=workload.temperature,
                prompt_kind=workload.kind,
                arrival=t,
            )
        )
    return out


def run_virtual(
    engine: Engine,
    requests: Sequence[Request],
    rng: random.Random,
    on_step: Callable[[StepResult], None] | None = None,
) -> float:
    """Serve ``requests`` (sorted by arrival) to completion in virtual time; return the end time.

    ``on_step`` sees every step's result (queue lengths, acceptance verdicts) as it happens.
    """
    pending = sorted(requests, key=lambda r: r.arrival)
    now = 0.0
    i = 0
    while i < len(pending) or engine.has_work:
        while i < len(pending) and pending[i].arrival <= now:
            engine.add(pending[i])
            i += 1
        if not engine.has_work:
            now = pending[i].arrival
            continue
        result = engine.step(rng, now)
        if on_step is not None:
            on_step(result)
        now += result.duration
    return now


@dataclass(frozen=True, slots=True)
class Summary:
    """Per-request latency figures of one run, in seconds."""

    requests: int
    mean_tpot: float
    p50_tpot: float
    p99_tpot: float
    mean_ttft: float
    mean_e2e: float


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(requests: Sequence[Request], skip_first: float = 0.0, skip_last: float = 0.0) -> Summary:
    """Figures over finished requests in arrival order, without the first ``skip_first`` share
    (warm-up) and the last ``skip_last`` share (the queue draining after arrivals stop)."""
    done = sorted((r for r in requests if r.finished and r.tpot is not None), key=lambda r: r.arrival)
    done = done[int(len(done) * skip_first) : len(done) - int(len(done) * skip_last)]
    if not done:
        raise ValueError("no finished requests to summarize")
    tpots = [r.tpot for r in done if r.tpot is not None]
    return Summary(
        requests=len(done),
        mean_tpot=statistics.fmean(tpots),
        p50_tpot=quantile(tpots, 0.50),
        p99_tpot=quantile(tpots, 0.99),
        mean_ttft=statistics.fmean(r.ttft for r in done if r.ttft is not None),
        mean_e2e=statistics.fmean(r.e2e for r in done if r.e2e is not None),
    )

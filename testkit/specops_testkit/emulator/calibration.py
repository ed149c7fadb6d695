"""The published measurements the performance model is fitted to, as runnable virtual-time scenarios,
and the product's demo configuration under load.

docs/domain.md#measurements, rows 1-4 (vLLM team blog, Oct 2024): Llama-3-70B on 4 x H100, a draft model
(turboderp/Qwama-0.5B-Instruct) on ShareGPT and n-gram prompt lookup on CNN/DailyMail, each at
QPS 1 and at high QPS.  The blog gives the factors, not the settings; what it leaves open is fixed
here and listed in docs/emulator.md:

* vLLM 0.6.3 (the release of the blog's date): V0 engine, max_num_seqs 256;
* temperature 0 for both workloads: vLLM's serving benchmark sent ``"temperature": 0.0`` in every
  request then (``benchmarks/backend_request_func.py``);
* the draft runs with k=4 at tensor parallel size 1 (vLLM's nightly benchmark of this pair), n-gram
  with k=5 (the blog's example);
* the factor compared is mean per-request TPOT, baseline over speculative (what docs/domain.md#vllm-metrics
  says to compare pools on); "high QPS" is an offered load above both pools' capacity, measured
  once they run full (the first and last 30% of requests, filling and draining, are left out).

The demo section runs the product's demo pair (Llama-3.1-70B INT8 with a Llama-3.1-8B draft, k=5,
tensor parallel 2 on 80 GiB GPUs, vLLM 0.32.0) exactly as the emulator serves it: its engine comes
from the rendered container arguments through ``args.derive_config``.

``benchmarks/calibration.py`` prints both; unit tests check the directions on fewer requests.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from specops.api.catalog import GPUS, lookup_model
from specops.api.v1alpha1 import (
    BatchSizeTokens,
    DraftSpec,
    GPUResources,
    Method,
    Quantization,
    SpeculationSpec,
    SpeculativeInferenceSpec,
    TargetSpec,
    VLLMSpec,
)
from specops.render.manifests import Pool, vllm_args
from specops.vllm.dialect import parse_version
from specops_testkit.emulator.args import derive_config, parse_args
from specops_testkit.emulator.memory import MemoryInputs, ModelShape, Proposer, plan_memory, startup_failure
from specops_testkit.emulator.perf import (
    V0_CONSTANTS,
    V1_CONSTANTS,
    Engine,
    EngineConfig,
    ModelFigures,
    Pairing,
    PerfConstants,
    PromptKind,
    ProposerConfig,
    Request,
    StepResult,
    acceptance,
    accepted_prefix,
    per_position_alpha,
    sample_eos_after,
)
from specops_testkit.emulator.workload import (
    CHAT,
    SUMMARIZATION,
    Summary,
    Workload,
    poisson_requests,
    run_virtual,
    summarize,
)

TARGET = "meta-llama/Llama-3.1-70B-Instruct"
TENSOR_PARALLEL = 4
GPU = "H100-80GB"
VLLM_VERSION = "0.6.3"
MAX_MODEL_LEN = 8192
MAX_NUM_SEQS = 256
MAX_NUM_BATCHED_TOKENS = 8192
# Qwama-0.5B: Qwen2-0.5B weights with the Llama 3 vocabulary transplanted (not in the catalog).
DRAFT_SHAPE = ModelShape(parameters=500_000_000, layers=24, kv_heads=2, head_dim=64)
DRAFT_TENSOR_PARALLEL = 1
DRAFT_K = 4
NGRAM_K = 5
SATURATION_QPS = 40.0


@dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """One published measurement: a pool pair, a workload, a load and the factor observed."""

    name: str
    method: Method
    workload: Workload
    qps: float
    requests: int
    # Baseline TPOT over speculative TPOT: 1.5 is "1.5x faster", 1/1.4 is "1.4x slower".
    published: float
    skip: float = 0.0  # share of requests left out at each end (filling and draining)


POINTS: tuple[CalibrationPoint, ...] = (
    CalibrationPoint("draft model, ShareGPT, QPS 1", Method.DRAFT_MODEL, CHAT, 1.0, 300, 1.5),
    CalibrationPoint("n-gram, CNN/DailyMail, QPS 1", Method.NGRAM, SUMMARIZATION, 1.0, 300, 2.8),
    CalibrationPoint(
        "draft model, ShareGPT, high QPS", Method.DRAFT_MODEL, CHAT, SATURATION_QPS, 1500, 1 / 1.4, skip=0.3
    ),
    CalibrationPoint(
        "n-gram, CNN/DailyMail, high QPS",
        Method.NGRAM,
        SUMMARIZATION,
        SATURATION_QPS,
        1500,
        1 / 1.8,
        skip=0.3,
    ),
)


def engine_config(method: Method | None, constants: PerfConstants = V0_CONSTANTS) -> EngineConfig:
    """The blog's pool: speculative with ``method`` (draft model or n-gram), or plain for None.
    Memory is sized by the emulator's own model (``memory.plan_memory``), as a pod of it would be."""
    target_info = lookup_model(TARGET)
    assert target_info is not None
    draft = method is Method.DRAFT_MODEL
    target_shape = ModelShape.of(target_info)
    memory = plan_memory(
        MemoryInputs(
            gpu_memory_gib=GPUS[GPU].memory_gib,
            gpu_memory_utilization=0.9,
            tensor_parallel_size=TENSOR_PARALLEL,
            target=target_shape,
            bytes_per_parameter=2.0,
            kv_bytes_per_element=2.0,
            max_model_len=MAX_MODEL_LEN,
            max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
            proposer=Proposer(DRAFT_SHAPE, 2.0, DRAFT_TENSOR_PARALLEL) if draft else None,
        )
    )
    assert startup_failure(memory, v1=False) is None
    target = ModelFigures(
        target_info.parameters,
        target_info.parameters * 2.0,
        target_shape.kv_elements_per_token(1) * 2.0,
        TENSOR_PARALLEL,
    )
    proposer: ProposerConfig | None = None
    if draft:
        figures = ModelFigures(
            parameters=DRAFT_SHAPE.parameters,
            weight_bytes=DRAFT_SHAPE.parameters * 2.0,
            kv_bytes_per_token=DRAFT_SHAPE.kv_elements_per_token(1) * 2.0,
            tensor_parallel_size=DRAFT_TENSOR_PARALLEL,
        )
        # Same vocabulary, other family: Qwen weights imitating Llama.
        ratio = target_info.parameters / DRAFT_SHAPE.parameters
        pairing = Pairing(size_ratio=ratio, same_family=False, same_tokenizer=True)
        proposer = ProposerConfig(Method.DRAFT_MODEL, DRAFT_K, figures, pairing)
    elif method is Method.NGRAM:
        proposer = ProposerConfig(Method.NGRAM, NGRAM_K)
    return EngineConfig(
        target=target,
        proposer=proposer,
        kv_capacity_tokens=memory.kv_tokens,
        max_num_seqs=MAX_NUM_SEQS,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
        max_model_len=MAX_MODEL_LEN,
        constants=constants,
    )


@dataclass(frozen=True, slots=True)
class Measurement:
    point: CalibrationPoint
    baseline: Summary
    speculative: Summary

    @property
    def measured(self) -> float:
        """Baseline TPOT over speculative TPOT, comparable with ``point.published``."""
        return self.baseline.mean_tpot / self.speculative.mean_tpot

    @property
    def deviation(self) -> float:
        """Measured over published factor: 1.0 is a perfect fit."""
        return self.measured / self.point.published


def measure(
    point: CalibrationPoint,
    seed: int = 1,
    requests: int | None = None,
    constants: PerfConstants = V0_CONSTANTS,
) -> Measurement:
    """Run the point's workload through a plain and a speculative pool, same arrivals and seed."""
    count = requests or point.requests
    summaries = []
    for method in (None, point.method):
        reqs = poisson_requests(random.Random(seed + 100), point.qps, count, point.workload)
        run_virtual(Engine(engine_config(method, constants)), reqs, random.Random(seed))
        summaries.append(summarize(reqs, point.skip, point.skip))
    return Measurement(point, summaries[0], summaries[1])


def describe_factor(factor: float) -> str:
    """1.5 -> '1.50x faster', 0.714 -> '1.40x slower'."""
    return f"{factor:.2f}x faster" if factor >= 1 else f"{1 / factor:.2f}x slower"


# ------------------------------------------------------------------------------ the product's demo

DEMO_TARGET = "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"
DEMO_DRAFT = "meta-llama/Llama-3.1-8B-Instruct"
DEMO_VLLM_VERSION = "0.32.0"
DEMO_K = 5
DEMO_TENSOR_PARALLEL = 2
DEMO_GPU_MEMORY_GIB = 80.0
# The load generator's default prompt (256 words) as the emulator counts it (4 characters a token),
# and its default max_tokens; outputs end at the emulated end-of-sequence (chat: mean 250 tokens)
# or max_tokens, as they do without ignore_eos.
DEMO_PROMPT_TOKENS = 370
DEMO_MAX_TOKENS = 128
DEMO_TEMPERATURE = 0.2
# Per-replica request rates the demo figures are printed at.
DEMO_RATES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def demo_spec() -> SpeculativeInferenceSpec:
    """The demo's SpeculativeInference spec (what manifests/examples/llama70b-int8-h100.yaml says)."""
    return SpeculativeInferenceSpec(
        vllm=VLLMSpec(version=DEMO_VLLM_VERSION),
        target=TargetSpec(
            model=DEMO_TARGET,
            quantization=Quantization.INT8,
            tensor_parallel_size=DEMO_TENSOR_PARALLEL,
            max_model_len=MAX_MODEL_LEN,
        ),
        speculation=SpeculationSpec(
            method=Method.DRAFT_MODEL,
            num_speculative_tokens=DEMO_K,
            draft=DraftSpec(model=DEMO_DRAFT, tensor_parallel_size=DEMO_TENSOR_PARALLEL),
        ),
        resources=GPUResources(
            gpus_per_replica=DEMO_TENSOR_PARALLEL, gpu_type=GPU, gpu_memory_gib=DEMO_GPU_MEMORY_GIB
        ),
    )


def demo_engine_config(speculative: bool) -> EngineConfig:
    """A demo pod's engine, derived from its rendered container arguments as the emulator does."""
    spec = demo_spec()
    version = parse_version(spec.vllm.version)
    args = parse_args(vllm_args(spec, Pool.SPECULATIVE if speculative else Pool.BASELINE), version)
    config = derive_config(args, version, DEMO_GPU_MEMORY_GIB, spec.target.quantization.value)
    assert not config.v0_engine
    return config.engine


def demo_acceptance(temperature: float) -> tuple[float, float]:
    """The demo pair's acceptance on chat at ``temperature`` as the counters report it, and the
    per-position alpha (per-position counter 0 over drafts) that produces it at k=5."""
    config = demo_engine_config(speculative=True)
    proposer = config.proposer
    assert proposer is not None
    rate = acceptance(proposer.method, PromptKind.CHAT, temperature, proposer.pairing, config.constants)
    return rate, per_position_alpha(rate, proposer.num_speculative_tokens, config.constants)


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """One pod under one load: latencies, its queue and what its spec-decode counters read."""

    summary: Summary
    # Time-averaged vllm:num_requests_waiting while requests arrive (after the first quarter).
    mean_waiting: float
    # accepted / draft tokens over the run (the operator's acceptance); None on a baseline pod.
    acceptance: float | None


@dataclass(frozen=True, slots=True)
class DemoPoint:
    """A baseline and a speculative demo pod under the same Poisson arrivals."""

    rate: float  # requests per second per replica
    temperature: float
    baseline: PoolLoad
    speculative: PoolLoad

    @property
    def tpot_ratio(self) -> float:
        """Speculative over baseline mean TPOT: below 1 speculation wins."""
        return self.speculative.summary.mean_tpot / self.baseline.summary.mean_tpot


def demo_requests(rate: float, seconds: float, temperature: float, seed: int) -> list[Request]:
    """Poisson arrivals at ``rate`` for ``seconds``: the load generator's chat requests."""
    rng = random.Random(seed + 100)
    out: list[Request] = []
    t = rng.expovariate(rate)
    while t < seconds:
        out.append(
            Request(
                request_id=f"req-{len(out)}",
                prompt_tokens=DEMO_PROMPT_TOKENS,
                max_tokens=DEMO_MAX_TOKENS,
                temperature=temperature,
                prompt_kind=PromptKind.CHAT,
                arrival=t,
                eos_after=sample_eos_after(rng, PromptKind.CHAT),
            )
        )
        t += rng.expovariate(rate)
    return out


def _run_pool(config: EngineConfig, rate: float, temperature: float, seconds: float, seed: int) -> PoolLoad:
    requests = demo_requests(rate, seconds, temperature, seed)
    waited = observed = 0.0
    drafted = accepted = 0

    def on_step(result: StepResult) -> None:
        nonlocal waited, observed, drafted, accepted
        if seconds / 4 <= result.start <= seconds:
            waited += result.num_waiting * result.duration
            observed += result.duration
        for p in result.progress:
            drafted += p.drafted
            accepted += p.accepted

    run_virtual(Engine(config), requests, random.Random(seed), on_step)
    return PoolLoad(
        summary=summarize(requests, 0.25, 0.1),
        mean_waiting=waited / observed if observed else 0.0,
        acceptance=accepted / drafted if drafted else None,
    )


def demo_load(
    rate: float, temperature: float = DEMO_TEMPERATURE, seconds: float = 120.0, seed: int = 1
) -> DemoPoint:
    """Both demo pods at ``rate`` requests/s per replica (requests arriving over ``seconds``)."""
    return DemoPoint(
        rate=rate,
        temperature=temperature,
        baseline=_run_pool(demo_engine_config(speculative=False), rate, temperature, seconds, seed),
        speculative=_run_pool(demo_engine_config(speculative=True), rate, temperature, seconds, seed),
    )


@dataclass(frozen=True, slots=True)
class DemoThresholds:
    """Per-replica request rates where the demo's speculative pod turns (to ``resolution``).

    Speculation wins on mean TPOT up to ``spec_loses``; from ``spec_queues`` its pod is past its
    capacity (the queue grows) while the baseline pod, which has more KV cache and does less work
    per token, still keeps up until ``baseline_queues``.  Once both queue, each runs a full batch and
    the speculative pod's is the smaller one (the draft took KV cache), so from ``spec_wins_again``
    its TPOT is the better again: requests then lose their time waiting, not decoding.
    """

    spec_loses: float
    spec_queues: float
    spec_wins_again: float
    baseline_queues: float
    points: tuple[DemoPoint, ...]  # every rate run, sorted

    def point(self, rate: float) -> DemoPoint:
        return next(p for p in self.points if p.rate == rate)


def demo_thresholds(
    temperature: float = DEMO_TEMPERATURE,
    rates: tuple[float, ...] = DEMO_RATES,
    resolution: float = 0.5,
    seed: int = 1,
) -> DemoThresholds:
    """Run ``rates``, then bisect between them for the rates where speculation turns."""
    runs: dict[float, DemoPoint] = {}

    def at(rate: float) -> DemoPoint:
        if rate not in runs:
            runs[rate] = demo_load(rate, temperature, seed=seed)
        return runs[rate]

    def bisect(lo: float, hi: float, turned: Callable[[DemoPoint], bool]) -> float:
        """Lowest rate in (lo, hi] where ``turned`` holds, given it holds at hi and not at lo."""
        while hi - lo > resolution:
            mid = round((lo + hi) / 2 / resolution) * resolution
            if mid in (lo, hi):
                break
            lo, hi = (lo, mid) if turned(at(mid)) else (mid, hi)
        return hi

    def first(turned: Callable[[DemoPoint], bool], above: float = 0.0) -> float:
        """Lowest rate above ``above`` where ``turned`` holds (monotone from there on)."""
        grid = sorted(r for r in (*rates, above) if r >= above)
        hi = next((r for r in grid if r > above and turned(at(r))), None)
        if hi is None:
            return math.inf
        below = [r for r in grid if r < hi]
        return bisect(below[-1], hi, turned) if below and below[-1] > 0 else hi

    def queues(pod: Callable[[DemoPoint], PoolLoad]) -> Callable[[DemoPoint], bool]:
        return lambda p: pod(p).mean_waiting > 1.0

    for rate in rates:
        at(rate)
    spec_queues = first(queues(lambda p: p.speculative))
    spec_loses = math.inf
    if math.isfinite(spec_queues) and at(spec_queues).tpot_ratio >= 1.0:
        lo = max((r for r in rates if r < spec_queues), default=0.0)
        spec_loses = bisect(lo, spec_queues, lambda p: p.tpot_ratio >= 1.0) if lo else spec_queues
    wins_again = first(lambda p: p.tpot_ratio < 1.0, above=spec_queues) if spec_loses < math.inf else math.inf
    return DemoThresholds(
        spec_loses=spec_loses,
        spec_queues=spec_queues,
        spec_wins_again=wins_again,
        baseline_queues=first(queues(lambda p: p.baseline)),
        points=tuple(runs[r] for r in sorted(runs)),
    )


# ------------------------------------------------------------------------- leave-one-out fit

# The four V0 constants fitted to the four points, each with the figure it would have without
# the fit: the independent published figure where there is one, else an engineering prior (a
# wide one: ``sigma`` is its log-space width).  The prior is what keeps a fit on three points
# determined: four constants, three equations.


@dataclass(frozen=True, slots=True)
class FittedConstant:
    name: str
    prior: float
    sigma: float
    source: str

    def get(self, c: PerfConstants) -> float:
        if self.name == NGRAM_SUMMARY:
            return c.ngram_acceptance_for(PromptKind.SUMMARIZATION)
        value = getattr(c, self.name)
        assert isinstance(value, float)
        return value

    def set(self, c: PerfConstants, value: float) -> PerfConstants:
        if self.name == NGRAM_SUMMARY:
            table = tuple((k, value if k is PromptKind.SUMMARIZATION else v) for k, v in c.ngram_acceptance)
            return dataclasses.replace(c, ngram_acceptance=table)
        changes: dict[str, Any] = {self.name: value}
        return dataclasses.replace(c, **changes)


NGRAM_SUMMARY = "ngram_acceptance[summarization]"
FITTED: tuple[FittedConstant, ...] = (
    FittedConstant(
        "draft_pass_overhead_s", 5.0e-3, math.log(2), "vLLM issue #8370: ~5 ms per V0 proposal token"
    ),
    FittedConstant(NGRAM_SUMMARY, 0.45, math.log(2), "engineering prior (no published figure)"),
    FittedConstant("verify_position_overhead_s", 55e-6, math.log(2), "vLLM PR #5691: 40-70 us per position"),
    FittedConstant("lookup_s_per_seq", 0.2e-3, math.log(3), "engineering prior: a few device round trips"),
)
# Which constants a point's figure can depend on (the others do not enter its engines).
DEPENDS = {
    Method.DRAFT_MODEL: ("draft_pass_overhead_s", "verify_position_overhead_s"),
    Method.NGRAM: (NGRAM_SUMMARY, "verify_position_overhead_s", "lookup_s_per_seq"),
}


# How far one point's measured factor is trusted: the fit's spread over seeds (docs/emulator.md:
# seeds 1-4 within 3%).  Against the priors' widths (a factor 2 or 3) it makes the published
# points decide wherever they can.
POINT_SIGMA = 0.03


def _log_errors(c: PerfConstants, points: Sequence[CalibrationPoint], seed: int, share: float) -> list[float]:
    """Each point's log of measured over published factor, in units of ``POINT_SIGMA``."""
    return [
        math.log(measure(p, seed=seed, requests=max(50, int(p.requests * share)), constants=c).deviation)
        / POINT_SIGMA
        for p in points
    ]


@dataclass(frozen=True, slots=True)
class Fit:
    constants: PerfConstants
    points: tuple[CalibrationPoint, ...]  # fitted to
    iterations: int

    def value(self, name: str) -> float:
        return next(f for f in FITTED if f.name == name).get(self.constants)


def fit_constants(
    points: Sequence[CalibrationPoint],
    start: PerfConstants = V0_CONSTANTS,
    *,
    seed: int = 1,
    share: float = 0.5,
    iterations: int = 6,
) -> Fit:
    """Fit ``FITTED`` to ``points`` (Levenberg-Marquardt in log space on the log of measured over
    published factors, plus each constant's prior as one more residual), starting from ``start``.
    ``share`` of each point's requests are served per evaluation, the same seed every time."""
    params = [math.log(f.get(start)) for f in FITTED]

    def constants(x: Sequence[float]) -> PerfConstants:
        c = start
        for f, v in zip(FITTED, x, strict=True):
            c = f.set(c, math.exp(v))
        return c

    def residuals(x: Sequence[float]) -> list[float]:
        prior = [(v - math.log(f.prior)) / f.sigma for f, v in zip(FITTED, x, strict=True)]
        return _log_errors(constants(x), points, seed, share) + prior

    damping = 1e-2
    current = residuals(params)
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 (the count is reported)
        h = 0.1
        jac: list[list[float]] = []
        for i, f in enumerate(FITTED):
            moved = list(params)
            moved[i] += h
            # A point whose engines never read the constant does not move: skip its runs.
            reads = [f.name in DEPENDS.get(p.method, ()) for p in points]
            sub = [p for p, r in zip(points, reads, strict=True) if r]
            errors = iter(_log_errors(constants(moved), sub, seed, share))
            col = [(next(errors) - current[k]) / h if r else 0.0 for k, r in enumerate(reads)]
            col += [(1.0 / g.sigma if j == i else 0.0) for j, g in enumerate(FITTED)]
            jac.append(col)
        step = _lm_step(jac, current, damping)
        trial = [p + s for p, s in zip(params, step, strict=True)]
        trial_res = residuals(trial)
        if sum(r * r for r in trial_res) < sum(r * r for r in current):
            params, current, damping = trial, trial_res, damping / 3
        else:
            damping *= 4
        if max(abs(s) for s in step) < 0.01:
            break
    return Fit(constants(params), tuple(points), done)


def _lm_step(jac: list[list[float]], res: list[float], damping: float) -> list[float]:
    """Solve (J^T J + damping diag(J^T J)) step = -J^T r (``jac`` holds J's columns)."""
    n = len(jac)
    a = [[sum(x * y for x, y in zip(jac[i], jac[j], strict=True)) for j in range(n)] for i in range(n)]
    b = [-sum(x * r for x, r in zip(jac[i], res, strict=True)) for i in range(n)]
    for i in range(n):
        a[i][i] *= 1.0 + damping
    # Gaussian elimination with partial pivoting (four unknowns).
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for k in range(col, n):
                a[r][k] -= factor * a[col][k]
            b[r] -= factor * b[col]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (b[r] - sum(a[r][k] * x[k] for k in range(r + 1, n))) / a[r][r]
    return x


@dataclass(frozen=True, slots=True)
class HeldOut:
    """One point predicted by constants fitted to the other three."""

    point: CalibrationPoint
    fit: Fit
    predicted: float  # baseline over speculative TPOT, comparable with point.published

    @property
    def error(self) -> float:
        """Predicted over published factor, minus one."""
        return self.predicted / self.point.published - 1


def from_priors() -> PerfConstants:
    """The shipped V0 table with every fitted constant at its prior instead."""
    start = V0_CONSTANTS
    for f in FITTED:
        start = f.set(start, f.prior)
    return start


def leave_one_out(seed: int = 1, share: float = 0.5) -> list[HeldOut]:
    """For each published point: fit the constants to the other three (from the priors, so the
    held-out point's own fit does not leak in) and predict it with all its requests."""
    start = from_priors()
    out = []
    for held in POINTS:
        fit = fit_constants([p for p in POINTS if p is not held], start, seed=seed, share=share)
        out.append(HeldOut(held, fit, measure(held, seed=seed, constants=fit.constants).measured))
    return out


# ---------------------------------------------------------------- validation (not used in the fit)


def closed_loop_tpot(config: EngineConfig, concurrency: int, rounds: int = 4, seed: int = 1) -> float:
    """Mean TPOT of ``concurrency`` clients each sending the next request when the last finishes
    (the demo's chat requests at temperature 0; the first round left out)."""
    rng = random.Random(seed)
    engine = Engine(config)
    out: list[float] = []
    sent = 0

    def send(now: float) -> None:
        nonlocal sent
        engine.add(
            Request(
                request_id=f"c-{sent}",
                prompt_tokens=DEMO_PROMPT_TOKENS,
                max_tokens=DEMO_MAX_TOKENS,
                temperature=0.0,
                prompt_kind=PromptKind.CHAT,
                arrival=now,
            )
        )
        sent += 1

    for _ in range(concurrency):
        send(0.0)
    now = 0.0
    while engine.has_work:
        result = engine.step(rng, now)
        now = result.end
        for r in result.finished:
            if sent > concurrency and r.tpot is not None:
                out.append(r.tpot)
            if sent < concurrency * rounds:
                send(now)
    return sum(out) / len(out)


@dataclass(frozen=True, slots=True)
class TableOverhead:
    concurrency: int
    published: float  # TPOT with an all-zero k table over a plain engine's, minus one
    modelled: float


def k0_table_overhead() -> list[TableOverhead]:
    """vLLM issue 49548: a speculative engine whose k-by-batch-size table drafts nothing (k=0 at
    every batch size) against a plain engine, at concurrency 2 and 189: TPOT +6.6% and +21.6%.
    The demo pair stands in for the issue's model, which is not recorded here."""
    spec = demo_spec()
    table = [BatchSizeTokens(min_batch_size=1, max_batch_size=1 << 20, num_speculative_tokens=0)]
    zero = spec.model_copy(
        update={"speculation": spec.speculation.model_copy(update={"tokens_per_batch_size": table})}
    )
    version = parse_version(spec.vllm.version)

    def config(s: SpeculativeInferenceSpec, pool: Pool) -> EngineConfig:
        args = parse_args(vllm_args(s, pool), version)
        return derive_config(args, version, DEMO_GPU_MEMORY_GIB, s.target.quantization.value).engine

    plain, k0 = config(spec, Pool.BASELINE), config(zero, Pool.SPECULATIVE)
    return [
        TableOverhead(c, published, closed_loop_tpot(k0, c) / closed_loop_tpot(plain, c) - 1)
        for c, published in ((2, 0.066), (189, 0.216))
    ]


@dataclass(frozen=True, slots=True)
class AcceptanceLength:
    temperature: float
    published: float  # mean acceptance length: tokens per verification, the bonus token included
    modelled: float  # what the emulator's counters give: 1 + accepted / drafts


EAGLE3_K = 7
EAGLE3_PUBLISHED = ((0.0, 4.78), (1.0, 4.50))


def eagle3_acceptance_length(steps: int = 20_000, seed: int = 1) -> list[AcceptanceLength]:
    """The EAGLE-3 head for Llama-3.3-70B at k=7 (the published model card: mean acceptance length
    4.78 at temperature 0, 4.50 at 1) as the emulator samples it: per-position draws with the
    alpha its acceptance model gives a BF16 target and a same-family head."""
    rng = random.Random(seed)
    out = []
    for temperature, published in EAGLE3_PUBLISHED:
        rate = acceptance(Method.EAGLE3, PromptKind.CHAT, temperature, Pairing(), V1_CONSTANTS)
        alpha = per_position_alpha(rate, EAGLE3_K, V1_CONSTANTS)
        accepted = sum(accepted_prefix([rng.random() < alpha for _ in range(EAGLE3_K)]) for _ in range(steps))
        out.append(AcceptanceLength(temperature, published, 1.0 + accepted / steps))
    return out

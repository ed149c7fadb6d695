"""Performance model of one vLLM engine, with and without speculative decoding (pure, clock-free).

The emulator drives it in real time and a discrete-event simulator can drive it in virtual time, so
nothing here reads a clock, sleeps or does I/O: ``Engine.step(rng, now)`` says how long one engine
step takes and what it produced, and the caller decides what "now" is.

The model is docs/domain.md#load-regimes, with its constants in one table (``PerfConstants``):

* A target forward pass costs ``t_mem + n x t_tok``: ``t_mem`` streams the weights once (bytes per
  GPU / HBM bandwidth, plus a fixed launch/all-reduce cost and the KV cache the batch attends to),
  ``t_tok`` is the compute per token processed (2 x parameters / tensor parallel size / FLOP/s).
  ``n`` counts every token the step processes: prefill chunks, one token per plain decode, and
  ``1 + k`` per speculative verification.  At small batch ``t_mem`` dominates, so verifying ``k+1``
  positions costs about as much as generating one: speculation wins.  At large batch ``n x t_tok``
  dominates and every rejected position is wasted compute: speculation loses.
* The proposer adds its own cost: a draft model runs ``k`` sequential passes of the same form
  (scaled by its size), an EAGLE/MTP head ``k`` small passes, Medusa one, and n-gram prompt lookup
  scans each sequence's context on the CPU (near zero at batch 1, real money at batch 256).
* Acceptance is what vLLM's counters report, accepted / proposed draft tokens (docs/domain.md,
  sections 3, 4 and 7: the operator's thresholds apply to that ratio).  Each request gets a target ratio
  ``r`` that falls with temperature, with a draft too small (or too large) for its target, with a
  foreign family and with a quantized target; n-gram's depends on whether the output copies the
  prompt (summarization) or not (chat).  Steps are sampled per position: each of the ``k`` draft
  positions is accepted with probability ``alpha`` until the first rejection (rejection sampling
  keeps the longest accepted prefix), then one bonus token, ``E = (1 - a^(k+1)) / (1 - a)`` tokens
  per step (Leviathan et al. 2023).  ``alpha`` is the root of ``r = (E(alpha, k) - 1) / k`` for the
  pod's k, so the counters read ``r`` and the per-position counters read ``alpha``.
* Concurrency is capped by ``max_num_seqs`` and by the KV cache (in tokens); requests beyond wait,
  and a running request that cannot grow is preempted and recomputed later, as vLLM does.

The constants are fitted to the vLLM team's published figures (docs/domain.md#measurements); the fit is
checked by ``benchmarks/calibration.py`` and documented in ``docs/emulator.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from specops.api.v1alpha1 import Method

# Methods whose proposals come from looking up the context rather than a model.
LOOKUP_METHODS = frozenset({Method.NGRAM, Method.SUFFIX})
# Methods whose proposer is a head riding on the target's hidden states.
HEAD_METHODS = frozenset({Method.EAGLE, Method.EAGLE3, Method.MTP, Method.MEDUSA})


class PromptKind(StrEnum):
    """What the output has in common with the prompt; n-gram acceptance depends on it."""

    CHAT = "chat"  # open-ended answers: little to copy
    SUMMARIZATION = "summarization"  # copies spans of the input
    CODE = "code"  # edits and completions: copies identifiers and lines


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class PerfConstants:
    """Every tunable of the model, H100-class hardware, fitted to docs/domain.md#measurements.

    Times are seconds, rates per second, per GPU unless said otherwise.  See docs/emulator.md for
    the fit and the published figures it reproduces.
    """

    # --- hardware -------------------------------------------------------------------------------
    # Effective HBM bandwidth of one GPU during decode (H100 SXM peaks at 3.35 TB/s).
    hbm_bytes_per_s: float = 2.6e12
    # Effective dense BF16 throughput of one GPU in batched forward passes (peak 989 TFLOP/s).
    flops_per_s: float = 6.0e14
    # Fixed cost of one target forward pass: kernel launches, tensor-parallel all-reduces, the
    # scheduler and sampler.  With the weight streaming it makes Llama-3.1-70B on 4 GPUs ~17 ms.
    pass_overhead_s: float = 3.0e-3
    # CPU cost per running sequence per step (scheduling, sampling, detokenizing), every pool.
    seq_overhead_s: float = 2.0e-5

    # --- proposers ------------------------------------------------------------------------------
    # Fixed cost of one forward pass of a separate draft model, on top of streaming its weights.
    # V0 ran every draft step through its own model runner (input preparation, a sampler keeping
    # full-vocabulary probabilities, Python scheduling): vLLM issue #8370 logs 5 ms per proposal
    # token on V0 (a 4-bit 7B draft at TP 4).  Fitted: QPS 1, draft model (V1: see V1_CONSTANTS).
    draft_pass_overhead_s: float = 4.7e-3
    # Fixed cost of one pass of an EAGLE/EAGLE-3/MTP/Medusa head (one layer, shares the target's
    # graph and hidden states).
    head_pass_overhead_s: float = 0.5e-3
    # Prompt lookup (n-gram) runs per drafting sequence every step: a fixed cost (tensor set-up and
    # one device round trip per n-gram size tried, as V0's proposer did) plus a scan of the
    # sequence's context.  Negligible at batch 1 (4% of a 70B step), 0.2 s a step at batch 256:
    # the main reason n-gram under load is slower than a draft model.  Fitted: high QPS, n-gram.
    lookup_s_per_seq: float = 7.0e-4
    lookup_s_per_context_token: float = 2.0e-7
    # Suffix decoding keeps a suffix tree per request: constant cost per sequence per step.
    suffix_s_per_seq: float = 2.0e-5
    # Per drafting sequence per step: proposal bookkeeping, rejection sampling, multi-token output.
    spec_seq_overhead_s: float = 2.0e-5
    # Extra reads of a sequence's KV cache per draft position verified.  1.0 is the V0 engine's
    # batch-expansion scorer (each scored position attends its whole context on its own), which
    # the published figures were measured with; it is why long prompts (summarization) make
    # speculation under load worse.  0.0 would read the context once per step.
    verify_context_rereads: float = 1.0
    # Cost per draft position verified, per sequence per step: V0's batch-expansion scorer turns
    # every position into a sequence of its own (inputs, metadata, sampling).  vLLM PR #5691
    # measured it 40-70 us per position above the MQA scorer (Llama-7B, A100, k=5, batch 8-128).
    # Fitted: high QPS, draft model.
    verify_position_overhead_s: float = 6.5e-5

    # --- acceptance ---------------------------------------------------------------------------
    # "Acceptance" is what vLLM's counters report, accepted / proposed draft tokens (docs/domain.md,
    # section 7), the quantity docs/domain.md's figures describe and the operator's thresholds apply to.
    # A request's target is base(method) x temperature curve x pairing (for lookup methods: given a
    # match); steps are sampled with the per-position alpha that makes the counters read it at the
    # pod's k (``per_position_alpha``).
    # At temperature 0 for a well-matched proposer (draft 1:8-1:12 of its target, same family).
    acceptance_draft_model: float = 0.81
    acceptance_eagle: float = 0.84
    acceptance_eagle3: float = 0.87
    acceptance_mtp: float = 0.87
    acceptance_medusa: float = 0.70
    # Prompt lookup: per kind, the chance a step finds a match at all, and the acceptance of the
    # tokens proposed when it does.  Summarization fitted: QPS 1, n-gram; chat and code bracket it.
    ngram_match: tuple[tuple[PromptKind, float], ...] = (
        (PromptKind.CHAT, 0.35),
        (PromptKind.SUMMARIZATION, 0.92),
        (PromptKind.CODE, 0.65),
    )
    ngram_acceptance: tuple[tuple[PromptKind, float], ...] = (
        (PromptKind.CHAT, 0.16),
        (PromptKind.SUMMARIZATION, 0.54),
        (PromptKind.CODE, 0.33),
    )
    # Suffix decoding matches more often (it also indexes earlier outputs) at the same acceptance.
    suffix_match_bonus: float = 0.10
    # Acceptance against temperature for a good pair, (temperature, acceptance) points: docs/domain.md,
    # section 3's 0.81/0.71/0.52/0.38 at 0/0.4/0.8/1.0; beyond 1.0 it keeps falling to 2.0.
    # Every method is scaled by this curve divided by its value at 0.
    temperature_curve: tuple[tuple[float, float], ...] = (
        (0.0, 0.81),
        (0.4, 0.71),
        (0.8, 0.52),
        (1.0, 0.38),
        (2.0, 0.10),
    )
    # Draft/target size ratio (target params / draft params) where a draft model does best, and
    # how fast acceptance falls per natural-log unit away from it (1:70 loses ~11%, 1:140 ~15%).
    size_ratio_optimum: float = 10.0
    size_ratio_slope: float = 0.055
    # A draft from another family that shares the tokenizer (e.g. Qwama: Qwen weights, Llama 3
    # vocabulary) imitates less well; one with another tokenizer proposes garbage.
    foreign_family_factor: float = 0.90
    foreign_tokenizer_factor: float = 0.05
    # Quantizing the target shifts its distribution away from what the draft imitates.
    target_8bit_factor: float = 0.97
    target_4bit_factor: float = 0.91
    # Bounds of any request's acceptance, and of the per-position alpha derived from it (at large k
    # an acceptance near the ceiling would need alpha above 0.99: the counters then read less).
    acceptance_floor: float = 0.02
    acceptance_ceiling: float = 0.95
    alpha_floor: float = 0.02
    alpha_ceiling: float = 0.99

    # --- vLLM's k-by-batch-size table (num_speculative_tokens_per_batch_size) --------------------
    # A pod with the table pays this share of every step's time on top, by running sequences
    # (linear between the points, flat outside them): vLLM issue 49548 measured +6.6% TPOT at
    # concurrency 2 and +21.6% at 189 against a plain engine with a table that never drafted
    # (k = 0 throughout).  The table turns vLLM's CUDA graphs from full to piecewise (its start-up
    # warning says so), which is most of it.  Applied to drafting steps too, which lose the full
    # graphs as well.
    dynamic_table_overhead: tuple[tuple[float, float], ...] = ((2.0, 0.066), (189.0, 0.216))

    # --- outputs --------------------------------------------------------------------------------
    # Mean length the emulated model writes before its end-of-sequence token, per prompt kind
    # (geometric); requests with ignore_eos write max_tokens.
    natural_output_tokens: tuple[tuple[PromptKind, int], ...] = (
        (PromptKind.CHAT, 250),
        (PromptKind.SUMMARIZATION, 150),
        (PromptKind.CODE, 300),
    )

    def ngram_match_probability(self, kind: PromptKind) -> float:
        return dict(self.ngram_match)[kind]

    def ngram_acceptance_for(self, kind: PromptKind) -> float:
        return dict(self.ngram_acceptance)[kind]

    def natural_output_mean(self, kind: PromptKind) -> int:
        return dict(self.natural_output_tokens)[kind]


# The fitted table: the published figures were measured on vLLM's V0 engine (0.6.x, Oct 2024).
V0_CONSTANTS = PerfConstants()
# V1 changed three costs by design, not fitted (no published V1 figures): its n-gram proposer is a
# batched numba kernel (microseconds per sequence, not a device round trip per n-gram size);
# verification is one pass over the k+1 positions of each sequence (its KV cache read once, no
# expanded sequences); and the draft model runs inside the engine step with CUDA graphs, without
# a model runner and sampler of its own per pass (launch-bound: a 0.5B model's weights stream in
# 0.4 ms, its 24 layers of kernels take about as long again).
V1_CONSTANTS = dataclasses.replace(
    V0_CONSTANTS,
    lookup_s_per_seq=1.0e-5,
    lookup_s_per_context_token=2.0e-9,
    verify_context_rereads=0.0,
    verify_position_overhead_s=0.0,
    draft_pass_overhead_s=0.8e-3,
)
DEFAULT_CONSTANTS = V0_CONSTANTS


def constants_for(v0_engine: bool) -> PerfConstants:
    """The table for a pod served by vLLM's V0 engine or by V1."""
    return V0_CONSTANTS if v0_engine else V1_CONSTANTS


# ------------------------------------------------------------------------------------ formulas


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """Leviathan's E = (1 - a^(k+1)) / (1 - a): tokens one verification emits, bonus included."""
    if k <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def expected_acceptance_rate(alpha: float, k: int) -> float:
    """What vLLM's counters report, accepted / draft tokens = (E - 1) / k.

    vLLM (V1) counts the accepted *prefix*, so this is below the per-position ``alpha`` whenever
    k > 1: alpha 0.8 at k=5 reads as 0.54.  The first position's rate (per-position counter 0 over
    drafts) is alpha itself.  ``per_position_alpha`` is its inverse.
    """
    if k <= 0:
        return 0.0
    return (expected_tokens_per_step(alpha, k) - 1.0) / k


@functools.lru_cache(maxsize=4096)
def _invert_acceptance_rate(rate: float, k: int) -> float:
    """The alpha in [0, 1] with ``expected_acceptance_rate(alpha, k) == rate`` (bisection: the rate
    rises monotonically from 0 at alpha 0 to 1 at alpha 1)."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if expected_acceptance_rate(mid, k) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def per_position_alpha(rate: float, k: int, c: PerfConstants = DEFAULT_CONSTANTS) -> float:
    """Per-position alpha whose accepted prefix makes vLLM's counters read ``rate`` at ``k``.

    At k=1 it is ``rate`` itself; at k=5 a counter acceptance of 0.65 needs alpha 0.86.  Clamped to
    ``[alpha_floor, alpha_ceiling]`` (memoised: requests share a handful of rates).
    """
    alpha = rate if k <= 1 else _invert_acceptance_rate(min(1.0, max(0.0, rate)), k)
    return min(c.alpha_ceiling, max(c.alpha_floor, alpha))


def accepted_prefix(positions: Sequence[bool]) -> int:
    """Draft tokens rejection sampling keeps: those before the first rejected position."""
    for i, ok in enumerate(positions):
        if not ok:
            return i
    return len(positions)


def _interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def temperature_factor(temperature: float, c: PerfConstants = DEFAULT_CONSTANTS) -> float:
    """Acceptance at ``temperature`` relative to temperature 0 (1.0 at T=0, 0.47 at T=1)."""
    curve = c.temperature_curve
    return _interpolate(curve, max(0.0, temperature)) / curve[0][1]


@dataclass(frozen=True, slots=True)
class Pairing:
    """How well the proposer matches the target, for acceptance."""

    size_ratio: float | None = None  # target params / draft params; None without a draft model
    same_family: bool = True
    same_tokenizer: bool = True
    target_bytes_per_param: float = 2.0


def pairing_factor(pairing: Pairing, c: PerfConstants = DEFAULT_CONSTANTS) -> float:
    """Acceptance multiplier for the draft's size, family and the target's quantization."""
    factor = 1.0
    if pairing.size_ratio is not None and pairing.size_ratio > 0:
        distance = abs(math.log(pairing.size_ratio / c.size_ratio_optimum))
        if pairing.size_ratio < c.size_ratio_optimum:
            # A bigger draft imitates a little better; its cost is what hurts (see draft passes).
            factor *= 1.0 + 0.3 * c.size_ratio_slope * distance
        else:
            factor *= max(0.2, 1.0 - c.size_ratio_slope * distance)
    if not pairing.same_tokenizer:
        factor *= c.foreign_tokenizer_factor
    elif not pairing.same_family:
        factor *= c.foreign_family_factor
    # Midpoints between 0.5, 1 and 2 bytes: a checkpoint's bytes per parameter (read back from its
    # weight bytes) is never exactly 1.0.
    if pairing.target_bytes_per_param < 0.75:
        factor *= c.target_4bit_factor
    elif pairing.target_bytes_per_param < 1.5:
        factor *= c.target_8bit_factor
    return factor


def base_acceptance(method: Method, kind: PromptKind, c: PerfConstants = DEFAULT_CONSTANTS) -> float:
    """Counter acceptance at temperature 0 for a well-matched proposer of ``method`` (given a match,
    for lookup methods)."""
    if method in LOOKUP_METHODS:
        return c.ngram_acceptance_for(kind)
    return {
        Method.DRAFT_MODEL: c.acceptance_draft_model,
        Method.EAGLE: c.acceptance_eagle,
        Method.EAGLE3: c.acceptance_eagle3,
        Method.MTP: c.acceptance_mtp,
        Method.MEDUSA: c.acceptance_medusa,
    }[method]


def acceptance(
    method: Method,
    kind: PromptKind,
    temperature: float,
    pairing: Pairing = Pairing(),
    c: PerfConstants = DEFAULT_CONSTANTS,
) -> float:
    """The acceptance one request's draft tokens show in vLLM's counters, accepted / proposed.

    docs/domain.md's figures (0.81/0.71/0.52/0.38 at T 0/0.4/0.8/1.0 for a good pair) are this ratio; the
    per-position alpha that produces it at a pod's k is ``per_position_alpha``.
    """
    rate = base_acceptance(method, kind, c) * temperature_factor(temperature, c) * pairing_factor(pairing, c)
    return min(c.acceptance_ceiling, max(c.acceptance_floor, rate))


def match_probability(method: Method, kind: PromptKind, c: PerfConstants = DEFAULT_CONSTANTS) -> float:
    """Chance that a step has a proposal at all: 1 for models, the lookup hit rate for n-gram."""
    if method is Method.NGRAM:
        return c.ngram_match_probability(kind)
    if method is Method.SUFFIX:
        return min(1.0, c.ngram_match_probability(kind) + c.suffix_match_bonus)
    return 1.0


# ------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """What the cost model needs of one model: its size, weight bytes and KV cache per token."""

    parameters: int
    weight_bytes: float
    kv_bytes_per_token: float
    tensor_parallel_size: int = 1

    @property
    def bytes_per_param(self) -> float:
        return self.weight_bytes / self.parameters if self.parameters else 2.0


@dataclass(frozen=True, slots=True)
class ProposerConfig:
    """The speculative side of a pod: method, k and the draft (or head) it runs."""

    method: Method
    num_speculative_tokens: int
    draft: ModelFigures | None = None  # draft model or head; None for n-gram and suffix
    pairing: Pairing = Pairing()
    # vLLM's num_speculative_tokens_per_batch_size rows: (min batch, max batch, k).
    k_by_batch_size: tuple[tuple[int, int, int], ...] = ()
    # Legacy disable_by_batch_size: no drafting once this many sequences run.
    disable_by_batch_size: int | None = None

    def k_for_batch(self, batch: int) -> int:
        """The k drafted at ``batch`` running sequences.  With a table, as vLLM reads it: the row
        holding the batch; in a gap between rows, or past the last, the row before; never more
        than ``num_speculative_tokens``."""
        if self.disable_by_batch_size is not None and batch >= self.disable_by_batch_size:
            return 0
        if not self.k_by_batch_size:
            return self.num_speculative_tokens
        k = self.k_by_batch_size[0][2]
        for lo, _, row_k in sorted(self.k_by_batch_size):
            if lo > batch:
                break
            k = row_k
        return min(k, self.num_speculative_tokens)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """One vLLM engine: target, optional proposer and its scheduler limits."""

    target: ModelFigures
    proposer: ProposerConfig | None
    kv_capacity_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 8192
    constants: PerfConstants = DEFAULT_CONSTANTS

    @property
    def speculative(self) -> bool:
        return self.proposer is not None


# ------------------------------------------------------------------------------------ requests


@dataclass(slots=True, eq=False)
class Request:
    """One generation request and what happened to it (times are in the caller's clock)."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    temperature: float = 1.0
    prompt_kind: PromptKind = PromptKind.CHAT
    arrival: float = 0.0
    # Tokens the model writes before its end-of-sequence token; None writes max_tokens.
    eos_after: int | None = None
    # --- filled in by the engine ---
    # Acceptance its drafts show in the counters (accepted / proposed) at the pod's configured k,
    # and the per-position alpha that makes them read it; a table's smaller k keeps the alpha.
    acceptance: float = 0.0
    alpha: float = 0.0
    output_tokens: int = 0
    prefilled: int = 0  # tokens of prompt (+ output, after a preemption) already computed
    kv_tokens: int = 0  # KV cache slots held (the whole context is reserved on admission)
    scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_time: float | None = None
    finish_reason: FinishReason | None = None
    preemptions: int = 0

    @property
    def target_output(self) -> int:
        return self.max_tokens if self.eos_after is None else min(self.max_tokens, self.eos_after)

    @property
    def context_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def finished(self) -> bool:
        return self.finish_time is not None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival

    @property
    def e2e(self) -> float | None:
        return None if self.finish_time is None else self.finish_time - self.arrival

    @property
    def tpot(self) -> float | None:
        """Decode time per output token after the first, as vLLM's request TPOT histogram has it."""
        if self.first_token_time is None or self.last_token_time is None:
            return None
        if self.output_tokens <= 1:
            return 0.0
        return (self.last_token_time - self.first_token_time) / (self.output_tokens - 1)


@dataclass(frozen=True, slots=True)
class Progress:
    """What one request got from one step."""

    request: Request
    new_tokens: int
    first_token: bool
    # Verdict on every draft position, judged independently; the target keeps the prefix up to the
    # first rejection, and that prefix is what the acceptance counters count (see metrics.py).
    positions: tuple[bool, ...] = ()
    drafted: int = 0  # tokens proposed (k, or 0 when nothing was proposed)
    # Time since this request's previous token (vLLM's inter-token latency); None for the first.
    since_last_token: float | None = None

    @property
    def accepted(self) -> int:
        """Accepted prefix: draft tokens that made it into the output (what the counters count)."""
        return accepted_prefix(self.positions)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One engine step: how long it took and what each request got."""

    start: float
    duration: float
    progress: tuple[Progress, ...]
    finished: tuple[Request, ...]
    prefill_tokens: int
    decode_tokens: int
    num_running: int
    num_waiting: int
    kv_usage: float
    preempted: int = 0

    @property
    def end(self) -> float:
        return self.start + self.duration


# -------------------------------------------------------------------------------------- engine


@dataclass(slots=True)
class _Batch:
    decodes: list[tuple[Request, int]] = field(default_factory=list)  # (request, k verified)
    prefills: list[tuple[Request, int]] = field(default_factory=list)  # (request, chunk tokens)
    lookups: list[Request] = field(default_factory=list)  # sequences that ran a prompt lookup
    k: int = 0  # the pod's k at this step's batch size


class Engine:
    """Continuous batching over the cost model; deterministic for a given seeded ``random.Random``.

    ``add`` queues a request (its ``arrival`` must be set by the caller); ``step`` schedules like
    vLLM's V1 scheduler (running requests first, then waiting ones, within the token budget),
    prices the step and applies its outcome at ``now + duration``.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.kv_used = 0
        self.preemptions = 0

    # -- queue ------------------------------------------------------------------------------

    def add(self, request: Request) -> None:
        """Queue ``request``; raise ValueError for one vLLM would refuse (too long)."""
        cfg = self.config
        if request.prompt_tokens < 1:
            raise ValueError("the prompt must have at least one token")
        if request.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        total = request.prompt_tokens + request.max_tokens
        if total > cfg.max_model_len:
            raise ValueError(
                f"this model's maximum context length is {cfg.max_model_len} tokens; the request "
                f"asks for {total} ({request.prompt_tokens} in the prompt, {request.max_tokens} to "
                "generate)"
            )
        if request.prompt_tokens > cfg.kv_capacity_tokens:
            raise ValueError(f"the prompt does not fit the KV cache ({cfg.kv_capacity_tokens} tokens)")
        if cfg.proposer is not None:
            request.acceptance = acceptance(
                cfg.proposer.method,
                request.prompt_kind,
                request.temperature,
                cfg.proposer.pairing,
                cfg.constants,
            )
            request.alpha = per_position_alpha(
                request.acceptance, cfg.proposer.num_speculative_tokens, cfg.constants
            )
        self.waiting.append(request)

    def abort(self, request: Request, now: float) -> bool:
        """Drop a request (client went away); True if it was still queued or running."""
        if request in self.running:
            self.running.remove(request)
            self._release(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        else:
            return False
        request.finish_time = now
        request.finish_reason = FinishReason.ABORT
        return True

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def kv_usage(self) -> float:
        return self.kv_used / self.config.kv_capacity_tokens if self.config.kv_capacity_tokens else 0.0

    # -- scheduling -------------------------------------------------------------------------

    def _release(self, request: Request) -> None:
        self.kv_used -= request.kv_tokens
        request.kv_tokens = 0

    def _preempt_last(self) -> None:
        """Recompute preemption: the newest request gives its KV back and re-prefills later."""
        victim = self.running.pop()
        self._release(victim)
        victim.prefilled = 0
        victim.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(victim)

    def _schedule(self) -> tuple[_Batch, int]:
        cfg = self.config
        batch = _Batch()
        budget = cfg.max_num_batched_tokens
        preempted = 0
        decoding = [r for r in self.running if r.prefilled >= r.context_tokens and r.output_tokens > 0]
        k = cfg.proposer.k_for_batch(len(decoding)) if cfg.proposer is not None else 0
        batch.k = k
        # Room for this step's growth (1 + k slots per decode); preempt the newest until it fits.
        while self.running:
            growth = sum(1 + k for r in self.running if r.prefilled >= r.context_tokens)
            if self.kv_used + growth <= cfg.kv_capacity_tokens or len(self.running) == 1:
                break
            self._preempt_last()
            preempted += 1
        for r in self.running:
            if r.prefilled >= r.context_tokens:
                k_r = min(k, max(0, cfg.max_model_len - r.context_tokens - 1))
                if 1 + k_r > budget:
                    continue
                batch.decodes.append((r, k_r))
                budget -= 1 + k_r
            elif budget > 0:
                chunk = min(budget, r.context_tokens - r.prefilled)
                batch.prefills.append((r, chunk))
                budget -= chunk
        # Admit waiting requests while the batch, the KV cache and the token budget allow (not in a
        # step that had to preempt: the victim would come straight back and thrash).
        watermark = int(0.01 * cfg.kv_capacity_tokens)
        while self.waiting and not preempted and budget > 0 and len(self.running) < cfg.max_num_seqs:
            r = self.waiting[0]
            if self.kv_used + r.context_tokens + watermark > cfg.kv_capacity_tokens and self.running:
                break
            self.waiting.popleft()
            self.running.append(r)
            r.kv_tokens = r.context_tokens  # blocks for the whole prompt up front
            self.kv_used += r.kv_tokens
            chunk = min(budget, r.context_tokens)
            batch.prefills.append((r, chunk))
            budget -= chunk
        return batch, preempted

    # -- cost -------------------------------------------------------------------------------

    def _pass_time(self, m: ModelFigures, tokens: int, context_tokens: float, overhead: float) -> float:
        """One forward pass: fixed overhead + weights and attended KV streamed + compute per token."""
        c = self.config.constants
        tp = m.tensor_parallel_size
        streamed = (m.weight_bytes + context_tokens * m.kv_bytes_per_token) / tp
        return overhead + streamed / c.hbm_bytes_per_s + tokens * 2.0 * m.parameters / tp / c.flops_per_s

    def decode_step_time(self, batch_size: int, context_tokens: int, k: int | None = None) -> float:
        """Duration of a pure decode step: ``batch_size`` sequences of ``context_tokens`` each,
        every one drafting ``k`` tokens (default: the proposer's k at this batch size; 0 or no
        proposer: plain decode).

        The closed form a simulator or a capacity estimate needs without running requests.
        """
        p = self.config.proposer
        k = (p.k_for_batch(batch_size) if p is not None else 0) if k is None else k
        batch = _Batch()
        for i in range(batch_size):
            r = Request(f"probe-{i}", prompt_tokens=context_tokens, max_tokens=1)
            batch.decodes.append((r, k))
            if p is not None and p.method in LOOKUP_METHODS and k > 0:
                batch.lookups.append(r)  # and every lookup hits
        return self._price(batch)

    def _price(self, batch: _Batch) -> float:
        """Duration of one scheduled step: target pass, proposer cost and per-sequence overheads."""
        cfg = self.config
        c = cfg.constants
        prefill = sum(n for _, n in batch.prefills)
        decode = sum(1 + k for _, k in batch.decodes)
        context = sum(r.context_tokens * (1.0 + k * c.verify_context_rereads) for r, k in batch.decodes)
        context += sum(r.prefilled + n for r, n in batch.prefills)
        seqs = len(batch.decodes) + len(batch.prefills)
        t = self._pass_time(cfg.target, prefill + decode, context, c.pass_overhead_s)
        t += seqs * c.seq_overhead_s
        p = cfg.proposer
        drafting = [(r, k) for r, k in batch.decodes if k > 0]
        if p is None:
            return t
        k_max = max((k for _, k in drafting), default=0)
        b = len(drafting)
        if p.method is Method.NGRAM:
            t += len(batch.lookups) * c.lookup_s_per_seq
            t += sum(r.context_tokens for r in batch.lookups) * c.lookup_s_per_context_token
        elif p.method is Method.SUFFIX:
            t += len(batch.lookups) * c.suffix_s_per_seq
        elif p.draft is not None:
            draft_ctx = sum(r.context_tokens for r, _ in drafting)
            if p.method is Method.DRAFT_MODEL:
                overhead = c.draft_pass_overhead_s
                # The draft keeps its own KV cache and prefills every prompt too.
                if prefill:
                    t += self._pass_time(p.draft, prefill, 0, overhead)
            else:
                overhead = c.head_pass_overhead_s
                draft_ctx = 0 if p.method is Method.MEDUSA else draft_ctx
            passes = 1 if p.method is Method.MEDUSA else k_max
            if b:
                t += passes * self._pass_time(p.draft, b, draft_ctx, overhead)
        t += b * c.spec_seq_overhead_s + sum(k for _, k in drafting) * c.verify_position_overhead_s
        if p.k_by_batch_size:
            t *= 1.0 + _interpolate(c.dynamic_table_overhead, float(seqs))
        return t

    # -- step -------------------------------------------------------------------------------

    def step(self, rng: random.Random, now: float) -> StepResult:
        """Run one engine step starting at ``now``; outcomes are stamped at ``now + duration``."""
        cfg = self.config
        batch, preempted = self._schedule()
        p = cfg.proposer
        if p is not None and p.method in LOOKUP_METHODS:
            # A lookup that finds no match proposes nothing: the sequence verifies one token.
            decided = []
            for r, k in batch.decodes:
                if k > 0:
                    batch.lookups.append(r)
                    if rng.random() >= match_probability(p.method, r.prompt_kind, cfg.constants):
                        k = 0
                decided.append((r, k))
            batch.decodes = decided
        duration = self._price(batch)
        end = now + duration
        progress: list[Progress] = []
        finished: list[Request] = []
        for r, k in batch.decodes:
            positions: list[bool] = []
            drafted = 0
            if k > 0:
                # The per-position alpha is the pair's, whatever k the table picks: a shorter draft
                # is the longer one's first positions.
                drafted = k
                positions = [rng.random() < r.alpha for _ in range(k)]
            new = min(accepted_prefix(positions) + 1, r.target_output - r.output_tokens)
            r.output_tokens += new
            r.prefilled += new
            r.kv_tokens += new
            self.kv_used += new
            gap = None if r.last_token_time is None else end - r.last_token_time
            r.last_token_time = end
            progress.append(Progress(r, new, False, tuple(positions), drafted, gap))
        for r, chunk in batch.prefills:
            if r.scheduled_time is None:
                r.scheduled_time = now
            r.prefilled += chunk
            if r.prefilled < r.context_tokens:
                continue
            # Prefill done: it samples one token (the first, or the next after a preemption).
            first = r.output_tokens == 0
            r.output_tokens += 1
            r.prefilled += 1
            r.kv_tokens += 1
            self.kv_used += 1
            if first:
                r.first_token_time = end
            gap = None if r.last_token_time is None else end - r.last_token_time
            r.last_token_time = end
            progress.append(Progress(r, 1, first, since_last_token=gap))
        for r in list(self.running):
            if r.output_tokens >= r.target_output:
                r.finish_time = end
                r.finish_reason = (
                    FinishReason.STOP
                    if r.eos_after is not None and r.eos_after <= r.max_tokens
                    else FinishReason.LENGTH
                )
                self.running.remove(r)
                self._release(r)
                finished.append(r)
        return StepResult(
            start=now,
            duration=duration,
            progress=tuple(progress),
            finished=tuple(finished),
            prefill_tokens=sum(n for _, n in batch.prefills),
            decode_tokens=sum(1 + k for _, k in batch.decodes),
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            kv_usage=self.kv_usage,
            preempted=preempted,
        )


def sample_eos_after(rng: random.Random, kind: PromptKind, c: PerfConstants = DEFAULT_CONSTANTS) -> int:
    """A natural output length: geometric with the kind's mean (at least one token)."""
    mean = c.natural_output_mean(kind)
    p = 1.0 / mean
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))

"""Headroom (pure): the service's load and its trend, each pool's decode speed against its load,
and from them the load at which speculation stops paying and the load a replica can serve.

Why a line.  A decode step over ``b`` running sequences takes about ``T(b) = T0 + T1 x b`` (the
weights streamed once, then compute per sequence: the step model of docs/speculation-table.md).
A request of ``m`` output tokens stays ``W = m T(b) / E`` (``E`` tokens per step and sequence:
``1 + acceptance x k`` speculative, 1 plain), and Little's law ties the running sequences to the
requests per second per replica ``r``: ``b = r W``.  Solved for the step rate, it falls linearly
with the load::

    1 / (m T) = A - B x,   x = r / E,   A = 1 / (m T0),   B = T1 / T0

The left side is observed without any histogram: Little's law again, ``1 / (m T) = r / (E b)``
(vLLM's running-requests gauge and its completion rate over the same window), so vLLM's coarse
TPOT buckets blur nothing.  ``A`` and ``B`` belong to the engine and the workload, not to the
acceptance, so each pool's line is learned from its own windows.  From the two lines, at ``E``:

* a pool's capacity (where its latency grows without bound) is ``r = E A / B``;
* the crossover (equal TPOT) is ``r = (E A_s - A_0) / (B_s - B_0)``.

The two slopes are tied by the step-cost model's ratios (``vllm/step_cost.py``): ``B_s / B_0 =
rho1 / rho0``, with ``rho0`` the speculative step's time over a plain one at batch 1 and ``rho1`` the
same ratio for the time each extra running sequence adds at large batch.  So each pool's measured
slope also measures the other's, less precisely, and each pool's slope pools both by precision: a
pool that never served at loads far enough apart still gets a slope, a line fitted over a few
windows cannot outvote one fitted over many, and two good lines keep their own.  A pool never seen
takes ``A_0 = A_s rho0``.  The model's absolute times can be far off a given engine; its ratios
much less.

The lines describe mean latency; P99 crosses earlier (the requests in the tail accept fewer drafts,
and their TPOT grows with the batch first), so the crossover the rules use is
``CROSSOVER_P99_MARGIN`` of the mean one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from specops.api.v1alpha1 import PolicySpec, RolloutStrategy, SpeculativeInferenceSpec
from specops.policy.state import LoadTrend, PoolMetrics, ServiceFacts, StepLine, finite
from specops.vllm.step_cost import StepCostModel, step_cost_model

# The P99 crossover as a share of the mean one.  In the simulator's chat pair (docs/benchmarks.md)
# the P50 TPOT curves cross near 15 requests/s per replica and the P99 ones near 12.5.
CROSSOVER_P99_MARGIN = 0.8
# A line gives its own slope once it holds this many windows, spread over loads whose standard
# deviation is at least this share of their mean (the slope test below rejects the noise of a steady load),
# and the slope is this many standard errors from zero.
MIN_FIT_WINDOWS = 6.0
MIN_FIT_SPREAD = 0.1
MIN_SLOPE_T = 4.0
# How far the step-cost model's ratio of the two pools' slopes may be from a given engine's (in the
# emulator it is 19% off).
RATIO_UNCERTAINTY = 0.3
# A window's weight in the step lines decays with this time constant.  The lines describe the
# engine's step costs (which change only with the spec: a new spec drops them) and the workload's
# request length (which drifts slowly); a week keeps yesterday's ramp, so that today's is
# anticipated from its start (a 6-hour memory, the baseline reference's, would forget it).
LINE_MEMORY_SECONDS = 7 * 24 * 3600.0
# The speculative line starts afresh when the acceptance moves this far from the mean of its
# windows: in the emulator a step's time depends on the acceptance by about 10% at equal batch,
# which the hyperbola amplifies, and a window straddling the change mixes two regimes.
ACCEPTANCE_SHIFT = 0.1
# The trend's time constant, in rate windows: each new difference of consecutive windows' rates
# moves the slope by dt / this.  Short, because a windowed rate is already an average: with the
# default 5-minute window and 30-s interval, the noise of a steady load at 2 req/s per replica moves
# the slope by about 0.04 req/s per replica per minute, while a ramp worth acting on moves it by 1.
TREND_WINDOWS = 0.25
# A trend older than this many windows (no usable window since) starts afresh.
TREND_STALE_WINDOWS = 3.0


# ------------------------------------------------------------------------------- service facts


def step_ratios(model: StepCostModel, k: int) -> tuple[float, float]:
    """The step-cost model's ``rho0`` (a speculative step over a plain one at batch 1) and ``rho1``
    (the time one more running sequence adds, speculative over plain, at large batch)."""
    rho0 = model.step_seconds(1, k) / model.step_seconds(1, 0)
    lo, hi = 128, 256
    plain = model.step_seconds(hi, 0) - model.step_seconds(lo, 0)
    spec = model.step_seconds(hi, k) - model.step_seconds(lo, k)
    return rho0, spec / plain if plain > 0 else rho0


def service_facts(
    spec: SpeculativeInferenceSpec, switch_seconds_per_replica: float, measured: bool
) -> ServiceFacts:
    """The facts ``decide`` takes for ``spec``: replicas, whether a surge pod stands in for a moved
    replica, the switch cost (``status.switchCost.secondsPerReplica``), k and the model's ratios."""
    k = spec.speculation.num_speculative_tokens
    model = step_cost_model(spec)
    rho0, rho1 = step_ratios(model, k) if model is not None else (None, None)
    return ServiceFacts(
        replicas=spec.replicas,
        surge=spec.rollout.effective_strategy is RolloutStrategy.SURGE,
        switch_seconds_per_replica=switch_seconds_per_replica,
        switch_cost_measured=measured,
        num_speculative_tokens=k,
        zero_load_step_ratio=rho0,
        per_sequence_step_ratio=rho1,
    )


# ----------------------------------------------------------------------------------- the trend


def service_rate(
    spec: PoolMetrics | None, base: PoolMetrics | None, facts: ServiceFacts | None
) -> float | None:
    """Requests/s per replica over every serving pod (per replica of spec.replicas when known)."""
    pools = [p for p in (spec, base) if p is not None and p.replicas > 0 and finite(p.request_rate)]
    if not pools:
        return None
    total = sum(p.request_rate or 0.0 for p in pools)
    replicas = facts.replicas if facts is not None and facts.replicas > 0 else sum(p.replicas for p in pools)
    return total / replicas


def update_trend(trend: LoadTrend | None, rate: float, now: float, policy: PolicySpec) -> LoadTrend:
    """The trend after a window at ``rate``: consecutive windows' rates differ by the slope times the
    time between them (for a steady ramp, exactly), smoothed over ``TREND_WINDOWS`` windows."""
    window = policy.window_seconds
    if trend is None or now <= trend.at or now - trend.at > TREND_STALE_WINDOWS * window:
        return LoadTrend(rate, 0.0, now)
    dt = now - trend.at
    gain = min(1.0, dt / (TREND_WINDOWS * window))
    slope = trend.slope + gain * ((rate - trend.rate) / dt - trend.slope)
    return LoadTrend(rate, slope, now)


def current_load(trend: LoadTrend, policy: PolicySpec) -> float:
    """The load now: a rate over a window lags a trend by half the window."""
    return max(0.0, trend.rate + trend.slope * policy.window_seconds / 2)


# ------------------------------------------------------------------------------ the step lines


def add_to_line(
    line: StepLine | None, x: float, y: float, now: float, memory: float, acceptance: float | None = None
) -> StepLine:
    """The running fit with one more window; older windows weigh ``exp(-age / memory)``."""
    if line is None:
        return StepLine(1.0, x, y, 0.0, 0.0, now, acceptance, 0.0)
    kept = line.weight * math.exp(-max(0.0, now - line.at) / memory)
    weight = kept + 1.0
    dx = x - line.mean_x
    mean_x = line.mean_x + dx / weight
    mean_y = line.mean_y + (y - line.mean_y) / weight
    var_x = (line.var_x * kept + dx * (x - mean_x)) / weight
    var_y = (line.var_y * kept + (y - line.mean_y) * (y - mean_y)) / weight
    cov_xy = (line.cov_xy * kept + dx * (y - mean_y)) / weight
    mean_acc = line.mean_acceptance
    if acceptance is not None:
        mean_acc = acceptance if mean_acc is None else mean_acc + (acceptance - mean_acc) / weight
    return StepLine(weight, mean_x, mean_y, var_x, cov_xy, now, mean_acc, var_y)


@dataclass(frozen=True, slots=True)
class Slope:
    """A line's ``B`` and its standard error."""

    value: float
    error: float


def own_slope(line: StepLine | None, overlap: float = 1.0) -> Slope | None:
    """``B`` from the line's own windows, when they are enough, spread over loads far enough apart,
    and fall with the load by ``MIN_SLOPE_T`` standard errors or more (the noise of a steady load
    alone gives a slope, of either sign and no meaning).  ``overlap``: windows per evaluation
    interval; overlapping windows share their requests, so the error grows by its square root."""
    if line is None or line.weight < MIN_FIT_WINDOWS or line.mean_x <= 0:
        return None
    if line.var_x < (MIN_FIT_SPREAD * line.mean_x) ** 2:
        return None
    slope = -line.cov_xy / line.var_x
    residual = max(0.0, line.var_y - line.cov_xy**2 / line.var_x)
    error = math.sqrt(max(1.0, overlap) * residual / (line.var_x * max(1.0, line.weight - 2.0)))
    return Slope(slope, error) if slope > 0 and slope >= MIN_SLOPE_T * error else None


def _combined(
    spec: Slope | None, base: Slope | None, ratio: float | None
) -> tuple[float | None, float | None]:
    """Both pools' slopes.  With the model's ratio ``B_s / B_0``, each pool's own slope also
    measures the other's, less precisely (the ratio itself is off by up to ``RATIO_UNCERTAINTY``):
    each pool's slope is its own and the other's, converted, weighted by their precisions.  So a
    pool without its own slope borrows the other's, a line fitted over a few windows (a baseline
    just after a fallback) cannot outvote one fitted over many, and two good lines keep their own."""
    if ratio is None or ratio <= 0:
        return (spec.value if spec else None), (base.value if base else None)
    spec_from_base = _converted(base, ratio)
    base_from_spec = _converted(spec, 1.0 / ratio)
    return _pooled(spec, spec_from_base), _pooled(base, base_from_spec)


def _converted(slope: Slope | None, ratio: float) -> Slope | None:
    if slope is None:
        return None
    value = slope.value * ratio
    return Slope(value, math.hypot(slope.error * ratio, RATIO_UNCERTAINTY * value))


def _pooled(*slopes: Slope | None) -> float | None:
    known = [s for s in slopes if s is not None]
    if not known:
        return None
    weights = [1.0 / max(s.error, 1e-6 * s.value) ** 2 for s in known]
    return sum(w * s.value for w, s in zip(weights, known, strict=True)) / sum(weights)


def tokens_per_step(acceptance: float, k: int) -> float:
    """``E``: tokens a sequence gains per speculative step at counter acceptance ``acceptance``."""
    return 1.0 + max(0.0, min(1.0, acceptance)) * max(1, k)


def step_rate(pool: PoolMetrics, e: float) -> float | None:
    """``r / (E b)``: requests per second per replica over tokens per step times running sequences
    per replica (None: no running figure, or nothing running)."""
    rate = pool.rate_per_replica
    if not finite(pool.running) or pool.running is None or rate is None or pool.replicas <= 0:
        return None
    running = pool.running / pool.replicas
    return rate / (e * running) if running > 0 else None


def observe_pools(
    steps: tuple[StepLine | None, StepLine | None],
    spec: PoolMetrics | None,
    base: PoolMetrics | None,
    facts: ServiceFacts | None,
    now: float,
    policy: PolicySpec,
) -> tuple[StepLine | None, StepLine | None]:
    """Each serving pool's window added to its line (a settled window with traffic and a TPOT)."""
    spec_line, base_line = steps
    memory = max(LINE_MEMORY_SECONDS, policy.reference_max_age_seconds)
    k = facts.num_speculative_tokens if facts is not None else 1
    if _usable(spec, policy) and spec is not None and finite(spec.acceptance):
        assert spec.acceptance is not None and spec.rate_per_replica is not None
        usual = spec_line.mean_acceptance if spec_line is not None else None
        if usual is not None and abs(spec.acceptance - usual) > ACCEPTANCE_SHIFT:
            spec_line = None
        e = tokens_per_step(spec.acceptance, k)
        y = step_rate(spec, e)
        if y is not None:
            spec_line = add_to_line(spec_line, spec.rate_per_replica / e, y, now, memory, spec.acceptance)
    if _usable(base, policy) and base is not None:
        assert base.rate_per_replica is not None
        y = step_rate(base, 1.0)
        if y is not None:
            base_line = add_to_line(base_line, base.rate_per_replica, y, now, memory)
    return spec_line, base_line


def _usable(pool: PoolMetrics | None, policy: PolicySpec) -> bool:
    return (
        pool is not None
        and pool.replicas > 0
        and finite(pool.request_rate)
        and (pool.request_rate or 0.0) >= policy.min_request_rate
    )


# --------------------------------------------------------------------------- what they give


@dataclass(frozen=True, slots=True)
class Headroom:
    """Loads per replica (requests/s): where the baseline is expected to win on P99 TPOT
    (``crossover``; None: not known, or speculation wins at any load the lines reach), what one
    replica of each pool can serve, and where the figures come from (words)."""

    crossover: float | None = None
    speculative_capacity: float | None = None
    baseline_capacity: float | None = None
    source: str = "not known yet: no speculative pool's window with traffic"
    measured: bool = False


def estimate_headroom(
    spec_line: StepLine | None,
    base_line: StepLine | None,
    facts: ServiceFacts | None,
    acceptance: float | None,
    overlap: float = 1.0,
) -> Headroom:
    """The crossover and the capacities at ``acceptance`` (None: the speculative line's mean);
    ``overlap`` as for ``own_slope``."""
    if facts is None:
        return Headroom(source="not known: no facts about the service")
    rho0, rho1 = facts.zero_load_step_ratio, facts.per_sequence_step_ratio
    own_s, own_0 = own_slope(spec_line, overlap), own_slope(base_line, overlap)
    measured = own_s is not None and own_0 is not None
    b_s, b_0 = _combined(own_s, own_0, rho1 / rho0 if rho0 and rho1 else None)
    a_s = _intercept(spec_line, b_s)
    a_0 = _intercept(base_line, b_0)
    if a_0 is None and a_s is not None and rho0:
        a_0 = a_s * rho0
    if a_s is None and a_0 is not None and rho0:
        a_s = a_0 / rho0
    if acceptance is None and spec_line is not None:
        acceptance = spec_line.mean_acceptance
    if a_s is None or a_0 is None or b_s is None or b_0 is None or acceptance is None:
        missing = "a speculative window" if spec_line is None else "windows at loads far enough apart"
        return Headroom(source=f"not known yet: needs {missing} (or the model's shapes)")
    e = tokens_per_step(acceptance, facts.num_speculative_tokens)
    spec_cap, base_cap = e * a_s / b_s, a_0 / b_0
    source = (
        "Measured: both pools' step lines"
        if measured
        else "Estimated: one pool's step line and the step-cost model's ratios"
    )
    if b_s <= b_0:
        crossover = None if e * a_s > a_0 else 0.0
    else:
        crossover = max(0.0, CROSSOVER_P99_MARGIN * (e * a_s - a_0) / (b_s - b_0))
    return Headroom(crossover, spec_cap, base_cap, source, measured)


def _intercept(line: StepLine | None, slope: float | None) -> float | None:
    if line is None or slope is None:
        return None
    a = line.mean_y + slope * line.mean_x
    return a if a > 0 else None


def with_saturation(h: Headroom, saturation_rate: float | None) -> Headroom:
    """A speculative replica serves no more than the load at which it was seen to queue."""
    if saturation_rate is None or saturation_rate <= 0:
        return h
    cap = h.speculative_capacity
    return replace(h, speculative_capacity=saturation_rate if cap is None else min(cap, saturation_rate))

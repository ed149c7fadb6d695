"""The rules that judge one evaluation window (pure): each a small function, tried in order.

A rule reads a ``Window`` (the policy, the state, what Prometheus showed, the time) and returns an
``Assessment`` when it applies, else None.  Each mode has its own tuple of rules in ``RULES``; the
first that applies gives the window's verdict, and the last rule of every tuple always applies.
docs/operator.md ("The metrics policy") lists the same order in words.

Hold rules come first in every mode: ``MetricsUnavailable`` (Error), ``NoSeries``,
``WindowTooShortForScrapeInterval`` (rate() empty because the window holds fewer than four scrapes)
and ``InsufficientTraffic`` (NoData).  Then, per mode:

* Speculative: the breach rules ``AcceptanceBelowThreshold``, ``HeadroomClosing`` (the load heads
  for the crossover and the fallback must start now: ``policy/headroom.py``), ``LoadSaturation``,
  ``TailLatencyRegression``, ``TailGapWidening``, then, without a usable reference,
  ``AcceptanceSpread`` (a share of the requests below ``minAcceptanceRate``: ``policy/acceptance.py``)
  and ``PredictedSlowdown`` (the load past the crossover), else ``Healthy``;
* Baseline: ``BaselineServing`` (the baseline is judged by nothing; the decision starts probes);
* Probing: ``ProbeLost`` by queueing, ``ProbeLost`` below the break-even acceptance,
  ``BaselineQueueing`` (NoData: an overloaded baseline says nothing about speculation), no TPOT for
  one of the pools (NoData), fewer than ``probe.minRequests`` completed by a pool compared
  (``InsufficientSample``, NoData), then the A/B P99 comparison (``ProbeWon`` by at least
  ``probe.minWinMargin``, or P99s within it and the P50 lower by it, else ``ProbeLost``), else the
  single-replica trial against the recorded reference (the same test).

The latency rules need a reference.  A baseline pool serving the same window is a true A/B
comparison.  Otherwise the baseline recorded during the last Baseline period or probe counts, at
any acceptance, while it is fresh (younger than ``referenceMaxAge``) and was recorded at a similar
load per replica (within a factor ``REFERENCE_LOAD_TOLERANCE``): good acceptance does not make a
slow draft fast.  With no usable reference SpecOps keeps speculating: starting a comparison would
restart a pod, and the simulator shows that costs more than the regression it could find
(docs/benchmarks.md, mixed-temperature).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from specops.api.v1alpha1 import MIN_SCRAPES_PER_WINDOW, PolicySpec, ServingMode
from specops.policy.acceptance import acceptance_spread
from specops.policy.headroom import Headroom, current_load, estimate_headroom, with_saturation
from specops.policy.state import (
    Assessment,
    Observation,
    PolicyState,
    PoolMetrics,
    Reason,
    Reference,
    ServiceFacts,
    Verdict,
    finite,
)

# A recorded reference counts only at a load per replica within this factor of its own.
REFERENCE_LOAD_TOLERANCE = 1.5
# The tail rules need the window's P99 to rest on at least this many requests (500 in the window).
MIN_TAIL_REQUESTS = 5
# A moved replica's load is carried by the others: absorbable while they run at no more than this
# share of what they can serve (TPOT grows as 1 / (1 - share): at 0.8, five times the idle TPOT).
DIP_UTILISATION = 0.8
# HeadroomClosing projects a rise this many rate windows beyond the time the fallback takes and
# the breaches that decide it (further ahead, a trend is a guess).
LOOKAHEAD_WINDOWS = 2.0


@dataclass(frozen=True, slots=True)
class Window:
    """What every rule reads: the policy, the state before this window, what it showed, when."""

    policy: PolicySpec
    state: PolicyState
    obs: Observation
    now: float
    facts: ServiceFacts | None = None

    @property
    def headroom(self) -> Headroom:
        """The crossover and the capacities at this window's acceptance (policy/headroom.py)."""
        return window_headroom(self.policy, self.state, self.obs, self.facts, self.now)

    @property
    def spec(self) -> PoolMetrics | None:
        return self.obs.speculative

    @property
    def base(self) -> PoolMetrics | None:
        return self.obs.baseline

    @property
    def acceptance(self) -> float:
        """The speculative pool's acceptance (rules after the hold rules may rely on it)."""
        assert self.spec is not None and self.spec.acceptance is not None
        return self.spec.acceptance

    @property
    def ab(self) -> PoolMetrics | None:
        """The baseline pool when it serves this window beside the speculative one."""
        return self.base if has_traffic(self.base, self.policy) else None


Rule = Callable[[Window], Assessment | None]


@dataclass(frozen=True, slots=True)
class Comparison:
    """A baseline's latency to judge the speculative pool's against, and what it is in words."""

    tpot_p50: float | None
    tpot_p99: float | None
    where: str


# ------------------------------------------------------------------------------------- helpers


def has_traffic(pool: PoolMetrics | None, policy: PolicySpec) -> bool:
    """Live replicas (a rate() window outlives the pods of a pool scaled to zero) and enough traffic."""
    return (
        pool is not None
        and pool.replicas > 0
        and finite(pool.request_rate)
        and (pool.request_rate or 0.0) >= policy.min_request_rate
    )


def queued_per_replica(policy: PolicySpec, pool: PoolMetrics) -> float | None:
    """Mean queued requests per replica when at or over ``maxWaitingPerReplica``, else None."""
    if pool.replicas <= 0 or not finite(pool.waiting) or pool.waiting is None:
        return None
    per_replica = pool.waiting / pool.replicas
    return per_replica if per_replica >= policy.max_waiting_per_replica else None


def fmt(x: float | None, unit: str = "") -> str:
    return "n/a" if not finite(x) else f"{x:.3g}{unit}"


def fresh(recorded_at: float | None, policy: PolicySpec, now: float) -> bool:
    """Recorded evidence counts for ``referenceMaxAge``; older, what it measured may have changed.
    A time not known (a status from before it was kept) counts as fresh."""
    return recorded_at is None or now - recorded_at <= policy.reference_max_age_seconds


def usable_reference(
    ref: Reference | None, pool: PoolMetrics, policy: PolicySpec, now: float
) -> Reference | None:
    """A recorded reference counts only while fresh and at a comparable load per replica."""
    rate = pool.rate_per_replica
    if ref is None or not finite(rate) or rate is None or ref.rate_per_replica <= 0:
        return None
    if not fresh(ref.at, policy, now):
        return None
    ratio = rate / ref.rate_per_replica
    return ref if 1 / REFERENCE_LOAD_TOLERANCE <= ratio <= REFERENCE_LOAD_TOLERANCE else None


def latency_reference(w: Window) -> Comparison | None:
    """What the speculative pool's latency is judged against while speculating, if anything: the
    baseline pool in the same window, else the recorded baseline while fresh and comparable (at
    any acceptance: a draft can be slow despite good acceptance)."""
    if w.ab is not None:
        return Comparison(w.ab.tpot_p50, w.ab.tpot_p99, "the baseline pool")
    if w.spec is None:
        return None
    ref = usable_reference(w.state.reference, w.spec, w.policy, w.now)
    return Comparison(ref.tpot_p50, ref.tpot_p99, "the recorded baseline") if ref is not None else None


def window_headroom(
    policy: PolicySpec,
    state: PolicyState,
    obs: Observation,
    facts: ServiceFacts | None,
    now: float,
    acceptance: float | None = None,
) -> Headroom:
    """The headroom at ``acceptance``, else the speculative pool's in this window, else the one its
    step line was learned at; a fresh recorded saturation load caps the speculative replica's
    capacity."""
    spec = obs.speculative
    if acceptance is None and spec is not None and finite(spec.acceptance):
        acceptance = spec.acceptance
    overlap = policy.window_seconds / policy.interval_seconds
    h = estimate_headroom(state.speculative_steps, state.baseline_steps, facts, acceptance, overlap)
    if state.saturation_rate is not None and fresh(state.saturation_at, policy, now):
        h = with_saturation(h, state.saturation_rate)
    return h


# ---------------------------------------------------------------------------------- hold rules


def metrics_unavailable(w: Window) -> Assessment | None:
    if w.obs.error is None:
        return None
    return Assessment(Verdict.ERROR, Reason.METRICS_UNAVAILABLE, w.obs.error)


def _judged_pool(w: Window) -> tuple[PoolMetrics | None, str]:
    if w.state.mode == ServingMode.BASELINE:
        return w.base, "baseline"
    return w.spec, "speculative"


def no_series(w: Window) -> Assessment | None:
    pool, name = _judged_pool(w)
    if pool is not None:
        return None
    return Assessment(
        Verdict.NO_DATA,
        Reason.NO_SERIES,
        f"Prometheus answers, but with no usable series for the {name} pool (not scraped yet or "
        "not at all, or only NaN values)",
    )


def window_too_short(w: Window) -> Assessment | None:
    """The pool is scraped but rate() over the window is empty, and the window holds fewer than
    ``MIN_SCRAPES_PER_WINDOW`` scrapes: that, not the traffic, is why there is nothing to judge."""
    pool, name = _judged_pool(w)
    if pool is None or finite(pool.request_rate) or w.policy.scrapes_per_window >= MIN_SCRAPES_PER_WINDOW:
        return None
    return Assessment(
        Verdict.NO_DATA,
        Reason.WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL,
        f"rate() over the {w.policy.window} window is empty for the {name} pool: the window holds "
        f"{w.policy.scrapes_per_window:.3g} scrape(s) at {w.policy.scrape_interval_seconds:g} s; make it at "
        f"least {MIN_SCRAPES_PER_WINDOW} scrape intervals",
    )


def insufficient_traffic(w: Window) -> Assessment | None:
    if w.state.mode == ServingMode.BASELINE:
        if has_traffic(w.base, w.policy):
            return None
        return Assessment(
            Verdict.NO_DATA, Reason.INSUFFICIENT_TRAFFIC, "the baseline pool has too little traffic"
        )
    spec = w.spec
    if has_traffic(spec, w.policy) and spec is not None and finite(spec.acceptance):
        return None
    return Assessment(
        Verdict.NO_DATA,
        Reason.INSUFFICIENT_TRAFFIC,
        f"speculative pool: {fmt(spec.request_rate if spec else None, ' req/s')}, below the "
        f"{w.policy.min_request_rate:g} req/s floor or no acceptance data",
    )


HOLD_RULES: tuple[Rule, ...] = (metrics_unavailable, no_series, window_too_short, insufficient_traffic)


def settling(policy: PolicySpec, state: PolicyState, now: float) -> Assessment | None:
    """Right after a switch the rate window still holds the previous mode's samples (and the pools
    are still moving): nothing is judged until a whole window plus two evaluations has passed."""
    settle = policy.window_seconds + 2 * policy.interval_seconds
    if now - state.mode_since >= settle:
        return None
    return Assessment(Verdict.NO_DATA, Reason.SETTLING, f"the last switch was under {settle:g} s ago")


# ---------------------------------------------------------------------------- speculative rules


def acceptance_below_threshold(w: Window) -> Assessment | None:
    if w.acceptance >= w.policy.min_acceptance_rate:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.ACCEPTANCE_BELOW_THRESHOLD,
        f"acceptance {w.acceptance:.2f} below {w.policy.min_acceptance_rate:.2f}: drafting costs "
        "more than it saves",
    )


def headroom_closing(w: Window) -> Assessment | None:
    """The load rises towards the crossover (where the baseline is expected to win), and the
    fallback must start now to end before it gets there; with no surge pod, also while the other
    replicas can still carry a moved replica's load (later, the switch itself would overload)."""
    f, trend = w.facts, w.state.load
    if f is None or trend is None or trend.slope <= 0:
        return None
    h = w.headroom
    if h.crossover is None:
        return None
    load = current_load(trend, w.policy)
    if load >= h.crossover:
        return None  # past it: predicted_slowdown's case
    fallback = f.switch_seconds(f.replicas)
    notice = w.policy.consecutive_breaches * w.policy.interval_seconds
    to_cross = (h.crossover - load) / trend.slope
    if to_cross > fallback + notice + LOOKAHEAD_WINDOWS * w.policy.window_seconds:
        return None
    start_within = to_cross - fallback - notice
    why = f"end before it gets there ({fallback:.0f} s to move {f.replicas} replica(s))"
    room = dip_room(f, h)
    if room is not None:
        to_dip = (room - load) / trend.slope - f.switch_seconds_per_replica - notice
        if to_dip < start_within:
            start_within = to_dip
            why = (
                f"leave the other replicas able to carry a moved replica's load (up to {room:.3g} "
                f"req/s per replica, {DIP_UTILISATION:.0%} of what they serve)"
            )
    # Evaluations are an interval apart: the last one before the deadline is the one to act on.
    if start_within > w.policy.interval_seconds:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.HEADROOM_CLOSING,
        f"load {load:.3g} req/s per replica, rising {60 * trend.slope:.2g}/min: it reaches "
        f"{h.crossover:.3g}, where the baseline is expected to win, in about {to_cross:.0f} s; "
        f"the fallback must start now to {why}; crossover {h.source}",
    )


def dip_room(f: ServiceFacts, h: Headroom) -> float | None:
    """Load per replica of the whole service the others can carry while one replica is moved
    (None: no dip, or the capacities are not known)."""
    caps = [c for c in (h.speculative_capacity, h.baseline_capacity) if c is not None and c > 0]
    if not f.dip or not caps:
        return None
    return DIP_UTILISATION * (f.replicas - 1) / f.replicas * min(caps)


def load_saturation(w: Window) -> Assessment | None:
    queued = queued_per_replica(w.policy, w.spec) if w.spec is not None else None
    if queued is None:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.LOAD_SATURATION,
        f"{queued:.1f} requests waiting per speculative replica (limit "
        f"{w.policy.max_waiting_per_replica:g}): compute-bound, speculation is overhead",
    )


def tail_holds_enough(w: Window) -> bool:
    """A P99 rests on the slowest 1% of the window's requests: the tail rules judge it only when
    that is at least ``MIN_TAIL_REQUESTS`` requests.  With fewer, one slow request moves it into
    the next histogram bucket, and it stays there for a whole window: every evaluation until then
    sees it, so consecutive breaches would not even be independent."""
    return w.spec is not None and completed_in_window(w.spec, w.policy) * 0.01 >= MIN_TAIL_REQUESTS


def tail_latency_regression(w: Window) -> Assessment | None:
    ref, spec = latency_reference(w), w.spec
    if ref is None or spec is None or not (finite(ref.tpot_p99) and finite(spec.tpot_p99)):
        return None
    if not tail_holds_enough(w):
        return None
    assert ref.tpot_p99 is not None and spec.tpot_p99 is not None
    if not ref.tpot_p99:
        return None
    excess = spec.tpot_p99 / ref.tpot_p99 - 1
    if excess <= w.policy.max_p99_tpot_regression:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.TAIL_LATENCY_REGRESSION,
        f"P99 TPOT {fmt(spec.tpot_p99, ' s')} is {excess:.0%} above {ref.where} "
        f"({fmt(ref.tpot_p99, ' s')}); limit {w.policy.max_p99_tpot_regression:.0%}",
    )


def acceptance_spread_below_threshold(w: Window) -> Assessment | None:
    """No measured reference judges the latency, and the per-position counters show a real share of
    the requests accepting less than ``minAcceptanceRate``, however good the mean: those requests
    run slower than without speculation and set the P99 (the mixed-temperature workload;
    ``policy/acceptance.py``)."""
    spec = w.spec
    if spec is None or not spec.per_position or latency_reference(w) is not None:
        return None
    spread = acceptance_spread(spec.per_position)
    if spread is None or spread.acceptance >= w.policy.min_acceptance_rate:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.ACCEPTANCE_SPREAD,
        f"acceptance {w.acceptance:.2f} on average, but the per-position counters show about "
        f"{spread.share:.0%} of requests accepting {spread.acceptance:.2f} of drafts, below "
        f"{w.policy.min_acceptance_rate:.2f}: those run slower than without speculation and set the "
        "P99 (a mixed workload; probabilistic draft sampling, spec.speculation.draftSampling, may "
        "raise their acceptance)",
    )


def predicted_slowdown(w: Window) -> Assessment | None:
    """No baseline serves beside the speculative pool, none was recorded at a comparable load, and
    the load is past the crossover the pools' step lines give at this acceptance: by the lines, the
    baseline would serve this load with the lower TPOT (measured evidence, when there is some,
    judges instead: the rules before this one)."""
    trend = w.state.load
    if trend is None or latency_reference(w) is not None:
        return None
    h = w.headroom
    if h.crossover is None:
        return None
    load = current_load(trend, w.policy)
    if load < h.crossover:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.PREDICTED_SLOWDOWN,
        f"load {load:.3g} req/s per replica is past {h.crossover:.3g}, where the baseline is "
        f"expected to serve with the lower P99 TPOT at acceptance {w.acceptance:.2f} (crossover "
        f"{h.source})",
    )


def tail_gap_widening(w: Window) -> Assessment | None:
    """The tell-tale of a mixed workload is P50 improving while P99 regresses.  A wider gap with a
    P99 no worse than the reference is a pure win; vLLM's coarse TPOT buckets (10 ms, 25 ms,
    50 ms, ...) also widen histogram_quantile's ratio whenever P50 drops into a lower bucket."""
    ref, spec = latency_reference(w), w.spec
    if ref is None or spec is None or spec.tail_ratio is None or not tail_holds_enough(w):
        return None
    if not (finite(ref.tpot_p50) and finite(ref.tpot_p99) and ref.tpot_p50):
        return None
    assert ref.tpot_p50 is not None and ref.tpot_p99 is not None
    if (spec.tpot_p99 or 0.0) <= ref.tpot_p99:
        return None
    ref_gap = ref.tpot_p99 / ref.tpot_p50
    widening = spec.tail_ratio / ref_gap - 1
    if widening <= w.policy.max_tail_gap_widening:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.TAIL_GAP_WIDENING,
        f"P99/P50 TPOT {spec.tail_ratio:.2f} vs {ref_gap:.2f} for {ref.where}: {widening:.0%} wider; "
        f"limit {w.policy.max_tail_gap_widening:.0%}",
    )


def healthy(w: Window) -> Assessment:
    spec = w.spec
    assert spec is not None
    return Assessment(
        Verdict.HEALTHY,
        Reason.HEALTHY,
        f"acceptance {w.acceptance:.2f}, P99 TPOT {fmt(spec.tpot_p99, ' s')}, P99/P50 {fmt(spec.tail_ratio)}",
    )


# ------------------------------------------------------------------------------- baseline rules


def baseline_serving(w: Window) -> Assessment:
    base = w.base
    assert base is not None
    return Assessment(
        Verdict.HEALTHY, Reason.BASELINE_SERVING, f"baseline P99 TPOT {fmt(base.tpot_p99, ' s')}"
    )


# -------------------------------------------------------------------------------- probing rules


def probe_lost_by_queueing(w: Window) -> Assessment | None:
    queued = queued_per_replica(w.policy, w.spec) if w.spec is not None else None
    if queued is None:
        return None
    return Assessment(
        Verdict.BREACH, Reason.PROBE_LOST, f"{queued:.1f} requests waiting per speculative replica"
    )


def probe_lost_below_break_even(w: Window) -> Assessment | None:
    """Re-enabling needs the break-even acceptance (falling back needs less than the minimum): the
    band between the two is the hysteresis that keeps a workload hovering around the threshold from
    flapping (tests/reliability/test_noise.py)."""
    if w.acceptance >= w.policy.break_even_acceptance_rate:
        return None
    return Assessment(
        Verdict.BREACH,
        Reason.PROBE_LOST,
        f"acceptance {w.acceptance:.2f} below break-even {w.policy.break_even_acceptance_rate:.2f}",
    )


def baseline_queueing(w: Window) -> Assessment | None:
    queued = queued_per_replica(w.policy, w.ab) if w.ab is not None else None
    if queued is None:
        return None
    return Assessment(
        Verdict.NO_DATA,
        Reason.BASELINE_QUEUEING,
        f"{queued:.1f} requests waiting per baseline replica: an overloaded service says nothing "
        "about speculation",
    )


def probe_tpot_missing(w: Window) -> Assessment | None:
    if w.ab is None or w.spec is None or (finite(w.spec.tpot_p99) and finite(w.ab.tpot_p99)):
        return None
    return Assessment(Verdict.NO_DATA, Reason.INSUFFICIENT_TRAFFIC, "no TPOT data for one of the pools")


def completed_in_window(pool: PoolMetrics, policy: PolicySpec) -> float:
    """Requests the pool completed over the window (its completion rate times the window)."""
    return (pool.request_rate or 0.0) * policy.window_seconds


def insufficient_sample(w: Window) -> Assessment | None:
    """A P99 over a handful of requests is noise: each pool compared needs ``probe.minRequests``
    completed in the window before the comparison counts."""
    pools = [("speculative", w.spec), ("baseline", w.ab)]
    short = [(name, completed_in_window(p, w.policy)) for name, p in pools if p is not None]
    short = [(name, n) for name, n in short if n < w.policy.probe.min_requests]
    if not short:
        return None
    name, n = short[0]
    return Assessment(
        Verdict.NO_DATA,
        Reason.INSUFFICIENT_SAMPLE,
        f"the {name} pool completed about {n:.0f} requests in the window; a probe verdict needs "
        f"{w.policy.probe.min_requests} (probe.minRequests)",
    )


def wins_by_margin(p99: float, reference_p99: float, policy: PolicySpec) -> bool:
    """At least ``probe.minWinMargin`` faster: a tie or a hair's breadth is no win."""
    return p99 <= reference_p99 * (1 - policy.probe.min_win_margin)


def probe_win(spec: PoolMetrics, p50: float | None, p99: float, policy: PolicySpec) -> str | None:
    """How the probe's pool beats a baseline's (P50 ``p50``, P99 ``p99``), in words, or None.

    By P99, with the margin.  Or, when the P99s are no further apart than the margin (vLLM's TPOT
    histogram buckets are 10, 25, 50 ms wide, so ``histogram_quantile`` puts two different tails in
    the same place), by a P99 no higher and a P50 lower by the margin: the histogram cannot tell
    the tails apart, the middles it can.  A tail that is worse by any amount never wins."""
    s99 = spec.tpot_p99
    assert s99 is not None
    if wins_by_margin(s99, p99, policy):
        return f"P99 TPOT {fmt(s99, ' s')} vs {fmt(p99, ' s')}"
    s50 = spec.tpot_p50
    if s50 is None or p50 is None or not (finite(s50) and finite(p50)):
        return None
    if s99 <= p99 and wins_by_margin(s50, p50, policy):
        return (
            f"P99 TPOT {fmt(s99, ' s')} vs {fmt(p99, ' s')} (within the histogram's resolution) "
            f"and P50 {fmt(s50, ' s')} vs {fmt(p50, ' s')}"
        )
    return None


def probe_ab_p99(w: Window) -> Assessment | None:
    """A/B: the probe wins a window when its P99 TPOT beats the baseline pool's by the margin (or
    ties it within the histogram's resolution with a P50 lower by the margin: ``probe_win``)."""
    if w.ab is None or w.spec is None:
        return None
    spec_p99, base_p99 = w.spec.tpot_p99, w.ab.tpot_p99
    assert spec_p99 is not None and base_p99 is not None  # probe_tpot_missing came first
    won = probe_win(w.spec, w.ab.tpot_p50, base_p99, w.policy)
    if won is not None:
        return Assessment(
            Verdict.HEALTHY,
            Reason.PROBE_WON,
            f"acceptance {w.acceptance:.2f}; {won}, speculative vs baseline",
        )
    versus = f"P99 TPOT {fmt(spec_p99, ' s')} speculative vs {fmt(base_p99, ' s')} baseline"
    return Assessment(
        Verdict.BREACH, Reason.PROBE_LOST, f"{versus}: not {w.policy.probe.min_win_margin:.0%} faster"
    )


def probe_trial(w: Window) -> Assessment:
    """A timed trial of a single replica (no baseline pool beside it): judged on acceptance (a rule
    before this one) and the recorded reference's latency at a comparable load (``probe_win``)."""
    spec = w.spec
    assert spec is not None
    ref = usable_reference(w.state.reference, spec, w.policy, w.now)
    p99 = spec.tpot_p99
    if (
        ref is not None
        and finite(p99)
        and p99 is not None
        and probe_win(spec, ref.tpot_p50, ref.tpot_p99, w.policy) is None
    ):
        return Assessment(
            Verdict.BREACH,
            Reason.PROBE_LOST,
            f"P99 TPOT {fmt(p99, ' s')} vs recorded baseline {fmt(ref.tpot_p99, ' s')}: not "
            f"{w.policy.probe.min_win_margin:.0%} faster",
        )
    return Assessment(Verdict.HEALTHY, Reason.PROBE_WON, f"acceptance {w.acceptance:.2f}")


# ---------------------------------------------------------------------------------- the order

RULES: Mapping[ServingMode, tuple[Rule, ...]] = {
    ServingMode.SPECULATIVE: (
        *HOLD_RULES,
        acceptance_below_threshold,
        headroom_closing,
        load_saturation,
        tail_latency_regression,
        tail_gap_widening,
        acceptance_spread_below_threshold,
        predicted_slowdown,
        healthy,
    ),
    ServingMode.BASELINE: (*HOLD_RULES, baseline_serving),
    ServingMode.PROBING: (
        *HOLD_RULES,
        probe_lost_by_queueing,
        probe_lost_below_break_even,
        baseline_queueing,
        probe_tpot_missing,
        insufficient_sample,
        probe_ab_p99,
        probe_trial,
    ),
}


def assess(
    policy: PolicySpec, state: PolicyState, obs: Observation, now: float, facts: ServiceFacts | None = None
) -> Assessment:
    """This window's verdict for the current mode: the first rule of the mode's tuple that applies."""
    window = Window(policy, state, obs, now, facts)
    for rule in RULES[state.mode]:
        found = rule(window)
        if found is not None:
            return found
    raise AssertionError(f"the last rule for {state.mode} always applies")  # pragma: no cover

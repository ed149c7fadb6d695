"""The fallback policy (pure): assess one evaluation, then decide the next mode.

Modes: Speculative (all replicas speculate), Baseline (none do) and Probing (some replicas
speculate beside baseline ones, serving the same traffic, to see whether speculation wins again;
with one replica the probe is a timed trial of the whole service).

An evaluation's verdict is one of four, kept distinct all the way to the status:

* ``Healthy``  -- speculation is not hurting (or, while probing, it won this window);
* ``Breach``   -- it hurts (or, while probing, it lost this window);
* ``NoData``   -- too little traffic in the window to judge (``InsufficientTraffic``), or no
  series at all for the pool judged (``NoSeries``: not scraped yet or not at all, or only NaN /
  infinite values, which count as no value): holds, counts nothing;
* ``Error``    -- Prometheus unreachable or answered badly: holds, counts errors, and only falls
  back when ``onMetricsUnavailable: Baseline`` and errors repeat.

Breach rules while speculative, first match wins:

1. ``AcceptanceBelowThreshold``: acceptance < minAcceptanceRate (speculation is net negative).
2. ``LoadSaturation``: requests are queueing on the speculative pool (mean waiting requests per
   replica >= maxWaitingPerReplica): the GPUs are compute-bound, where drafting and verification are
   pure overhead and the draft's KV cache costs concurrency.
3. ``TailLatencyRegression``: P99 TPOT worse than the reference by more than maxP99TpotRegression.
4. ``TailGapWidening``: the P99/P50 TPOT ratio grew past the reference's by maxTailGapWidening.

Rules 3 and 4 need a reference.  A baseline pool serving the same window is a true A/B comparison
and applies at any acceptance; the baseline recorded during the last Baseline period (at a similar
per-replica load, within a factor ``REFERENCE_LOAD_TOLERANCE``) is weaker evidence and applies only
in the break-even band (minAcceptanceRate <= acceptance < breakEvenAcceptanceRate), as docs/domain.md,
section 4 prescribes.  In that band with no usable reference SpecOps keeps speculating: starting a
comparison would restart a pod, and the simulator shows that costs more than the regression it
could find (docs/benchmarks.md, mixed-temperature).

Probes (Probing with a baseline pool serving): a window is lost below the break-even acceptance or
when the speculative pool queues, won when its P99 TPOT beats the baseline pool's; a window in
which the baseline pool itself queues judges overload, not speculation, and counts as NoData
(``BaselineQueueing``).  No probe starts while the baseline pool queues, nor while the load per
replica is at or above ``PROBE_LOAD_MARGIN`` of the load at which the speculative pool last
saturated (recorded in status): moving a replica restarts a pod and costs capacity exactly when
there is none to spare, and a probe at that load would only saturate again.  Each probe lost in a
row doubles the next cooldown (up to x8), so a workload that stays unfit for speculation is not
probed every few minutes.  A single-replica trial (no baseline pool) needs the break-even
acceptance and the recorded reference's P99.

Hysteresis: a transition needs ``consecutiveBreaches`` breaches (or probe losses) or
``consecutiveRecoveries`` probe wins in a row; the opposite verdict resets the count; no decision
is ever taken on one sample.  All state lives in the resource's status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

from specops.api.v1alpha1 import Mode, OnMetricsUnavailable, PolicySpec, parse_duration

SPECULATIVE, BASELINE, PROBING = "Speculative", "Baseline", "Probing"
REFERENCE_LOAD_TOLERANCE = 1.5
# After speculation saturated at some load per replica, probes wait until the load is below this
# share of it: a probe at that load would saturate its replica again and cost a pod restart twice.
PROBE_LOAD_MARGIN = 0.8
# Each probe lost in a row doubles the next cooldown, up to this many times (x8).
PROBE_BACKOFF_DOUBLINGS = 3
# The saturation load is recorded only from a window with at least this many completed requests
# per replica: with fewer (a window short against the requests' latency), the completion rate lags
# far behind the load that saturated the pool and would keep probes off for good.
MIN_SATURATION_COMPLETIONS = 20
HISTORY_LIMIT = 20


class Verdict(StrEnum):
    HEALTHY = "Healthy"
    BREACH = "Breach"
    NO_DATA = "NoData"
    ERROR = "Error"


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    """One pool's figures over the evaluation window (None: no such series)."""

    replicas: int = 0
    request_rate: float | None = None
    acceptance: float | None = None
    mean_acceptance_length: float | None = None
    per_position: tuple[float, ...] = ()
    tpot_p50: float | None = None
    tpot_p99: float | None = None
    e2e_p50: float | None = None
    e2e_p99: float | None = None
    ttft_p99: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None

    @property
    def rate_per_replica(self) -> float | None:
        if self.request_rate is None or self.replicas <= 0:
            return None
        return self.request_rate / self.replicas

    @property
    def tail_ratio(self) -> float | None:
        if not _num(self.tpot_p50) or not _num(self.tpot_p99) or not self.tpot_p50:
            return None
        assert self.tpot_p99 is not None
        return self.tpot_p99 / self.tpot_p50


@dataclass(frozen=True, slots=True)
class Observation:
    speculative: PoolMetrics | None = None
    baseline: PoolMetrics | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Reference:
    """The baseline's latency at some load, recorded while the baseline pool served traffic."""

    tpot_p50: float
    tpot_p99: float
    rate_per_replica: float
    at: float


@dataclass(frozen=True, slots=True)
class Assessment:
    verdict: Verdict
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    from_mode: str
    to_mode: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PolicyState:
    mode: str = SPECULATIVE
    mode_since: float = 0.0
    breaches: int = 0
    recoveries: int = 0
    errors: int = 0
    reference: Reference | None = None
    # Requests/s per replica at which the speculative pool last saturated (None: never seen).
    saturation_rate: float | None = None
    lost_probes: int = 0  # probes lost in a row since the last fallback
    history: tuple[Transition, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Decision:
    state: PolicyState
    assessment: Assessment
    transition: Transition | None
    metrics_available: tuple[str, str, str]  # condition status, reason, message


def _num(x: float | None) -> bool:
    return x is not None and not math.isnan(x) and not math.isinf(x)


def _has_traffic(pool: PoolMetrics | None, policy: PolicySpec) -> bool:
    """Live replicas (a rate() window outlives the pods of a pool scaled to zero) and enough traffic."""
    return (
        pool is not None
        and pool.replicas > 0
        and _num(pool.request_rate)
        and (pool.request_rate or 0.0) >= policy.min_request_rate
    )


def _saturated(policy: PolicySpec, pool: PoolMetrics) -> float | None:
    """Mean queued requests per replica when at or over the limit, else None."""
    if pool.replicas <= 0 or not _num(pool.waiting) or pool.waiting is None:
        return None
    per_replica = pool.waiting / pool.replicas
    return per_replica if per_replica >= policy.max_waiting_per_replica else None


def _fmt(x: float | None, unit: str = "") -> str:
    return "n/a" if not _num(x) else f"{x:.3g}{unit}"


def usable_reference(ref: Reference | None, pool: PoolMetrics) -> Reference | None:
    """A recorded reference counts only at a comparable load per replica."""
    rate = pool.rate_per_replica
    if ref is None or not _num(rate) or rate is None or ref.rate_per_replica <= 0:
        return None
    ratio = rate / ref.rate_per_replica
    return ref if 1 / REFERENCE_LOAD_TOLERANCE <= ratio <= REFERENCE_LOAD_TOLERANCE else None


def _latency_rules(
    policy: PolicySpec, spec: PoolMetrics, ref_p50: float | None, ref_p99: float | None, where: str
) -> Assessment | None:
    if _num(ref_p99) and _num(spec.tpot_p99) and ref_p99:
        assert spec.tpot_p99 is not None
        excess = spec.tpot_p99 / ref_p99 - 1
        if excess > policy.max_p99_tpot_regression:
            return Assessment(
                Verdict.BREACH,
                "TailLatencyRegression",
                f"P99 TPOT {_fmt(spec.tpot_p99, ' s')} is {excess:.0%} above {where} "
                f"({_fmt(ref_p99, ' s')}); limit {policy.max_p99_tpot_regression:.0%}",
            )
    gap = spec.tail_ratio
    # The tell-tale of a mixed workload is P50 improving while P99 regresses. A wider gap with a
    # P99 no worse than the reference is a pure win; vLLM's coarse TPOT buckets (10 ms, 25 ms,
    # 50 ms, ...) also widen histogram_quantile's ratio whenever P50 drops into a lower bucket.
    if (
        _num(ref_p50)
        and _num(ref_p99)
        and ref_p50
        and gap is not None
        and (spec.tpot_p99 or 0) > (ref_p99 or 0)
    ):
        assert ref_p99 is not None and ref_p50 is not None
        ref_gap = ref_p99 / ref_p50
        widening = gap / ref_gap - 1
        if widening > policy.max_tail_gap_widening:
            return Assessment(
                Verdict.BREACH,
                "TailGapWidening",
                f"P99/P50 TPOT {gap:.2f} vs {ref_gap:.2f} for {where}: {widening:.0%} wider; "
                f"limit {policy.max_tail_gap_widening:.0%}",
            )
    return None


def assess(policy: PolicySpec, state: PolicyState, obs: Observation) -> Assessment:
    """This window's verdict for the current mode, with its evidence in words."""
    if obs.error is not None:
        return Assessment(Verdict.ERROR, "MetricsUnavailable", obs.error)
    spec, base = obs.speculative, obs.baseline
    judged = base if state.mode == BASELINE else spec
    if judged is None:
        pool = "baseline" if state.mode == BASELINE else "speculative"
        return Assessment(
            Verdict.NO_DATA,
            "NoSeries",
            f"Prometheus answers, but with no usable series for the {pool} pool (not scraped yet or "
            "not at all, or only NaN values)",
        )
    if state.mode == BASELINE:
        if not _has_traffic(base, policy):
            return Assessment(
                Verdict.NO_DATA, "InsufficientTraffic", "the baseline pool has too little traffic"
            )
        assert base is not None
        return Assessment(
            Verdict.HEALTHY, "BaselineServing", f"baseline P99 TPOT {_fmt(base.tpot_p99, ' s')}"
        )
    if not _has_traffic(spec, policy) or spec is None or not _num(spec.acceptance):
        rate = _fmt(spec.request_rate if spec else None, " req/s")
        return Assessment(
            Verdict.NO_DATA,
            "InsufficientTraffic",
            f"speculative pool: {rate}, below the {policy.min_request_rate:g} req/s floor "
            "or no acceptance data",
        )
    acc = spec.acceptance
    assert acc is not None
    ab = _has_traffic(base, policy)

    if state.mode == PROBING:
        queued = _saturated(policy, spec)
        if queued is not None:
            return Assessment(
                Verdict.BREACH, "ProbeLost", f"{queued:.1f} requests waiting per speculative replica"
            )
        if base is not None and ab:
            # Re-enabling needs the break-even acceptance (falling back needs less than the
            # minimum): the band between the two is the hysteresis that keeps a workload hovering
            # around the threshold from flapping (tests/reliability/test_noise.py).
            if acc < policy.break_even_acceptance_rate:
                return Assessment(
                    Verdict.BREACH,
                    "ProbeLost",
                    f"acceptance {acc:.2f} below break-even {policy.break_even_acceptance_rate:.2f}",
                )
            base_queued = _saturated(policy, base)
            if base_queued is not None:
                return Assessment(
                    Verdict.NO_DATA,
                    "BaselineQueueing",
                    f"{base_queued:.1f} requests waiting per baseline replica: an overloaded service "
                    "says nothing about speculation",
                )
            if not (_num(spec.tpot_p99) and _num(base.tpot_p99)):
                return Assessment(Verdict.NO_DATA, "InsufficientTraffic", "no TPOT data for one of the pools")
            assert spec.tpot_p99 is not None and base.tpot_p99 is not None
            if spec.tpot_p99 < base.tpot_p99:
                return Assessment(
                    Verdict.HEALTHY,
                    "ProbeWon",
                    f"acceptance {acc:.2f}; P99 TPOT {_fmt(spec.tpot_p99, ' s')} speculative vs "
                    f"{_fmt(base.tpot_p99, ' s')} baseline",
                )
            return Assessment(
                Verdict.BREACH,
                "ProbeLost",
                f"P99 TPOT {_fmt(spec.tpot_p99, ' s')} speculative vs {_fmt(base.tpot_p99, ' s')} baseline",
            )
        # A timed trial of a single replica: judged on acceptance and the recorded reference.
        ref = usable_reference(state.reference, spec)
        if acc < policy.break_even_acceptance_rate:
            return Assessment(Verdict.BREACH, "ProbeLost", f"acceptance {acc:.2f} below break-even")
        if (
            ref is not None
            and _num(spec.tpot_p99)
            and spec.tpot_p99 is not None
            and spec.tpot_p99 >= ref.tpot_p99
        ):
            return Assessment(
                Verdict.BREACH,
                "ProbeLost",
                f"P99 TPOT {_fmt(spec.tpot_p99, ' s')} vs recorded baseline {_fmt(ref.tpot_p99, ' s')}",
            )
        return Assessment(Verdict.HEALTHY, "ProbeWon", f"acceptance {acc:.2f}")

    # Speculative.
    if acc < policy.min_acceptance_rate:
        return Assessment(
            Verdict.BREACH,
            "AcceptanceBelowThreshold",
            f"acceptance {acc:.2f} below {policy.min_acceptance_rate:.2f}: drafting costs more than it saves",
        )
    queued = _saturated(policy, spec)
    if queued is not None:
        return Assessment(
            Verdict.BREACH,
            "LoadSaturation",
            f"{queued:.1f} requests waiting per speculative replica (limit "
            f"{policy.max_waiting_per_replica:g}): compute-bound, speculation is overhead",
        )
    if base is not None and ab:
        found = _latency_rules(policy, spec, base.tpot_p50, base.tpot_p99, "the baseline pool")
        if found:
            return found
    elif acc < policy.break_even_acceptance_rate:
        ref = usable_reference(state.reference, spec)
        if ref is not None:
            found = _latency_rules(policy, spec, ref.tpot_p50, ref.tpot_p99, "the recorded baseline")
            if found:
                return found
    return Assessment(
        Verdict.HEALTHY,
        "Healthy",
        f"acceptance {acc:.2f}, P99 TPOT {_fmt(spec.tpot_p99, ' s')}, P99/P50 {_fmt(spec.tail_ratio)}",
    )


def _transition(
    state: PolicyState, to: str, reason: str, message: str, now: float
) -> tuple[PolicyState, Transition]:
    t = Transition(now, state.mode, to, reason, message)
    history = (*state.history, t)[-HISTORY_LIMIT:]
    # Lost probes in a row since the last fallback: each doubles the next cooldown.  A switch into
    # or out of Speculative (a fallback, a won probe, a pin) starts the count afresh.
    lost = state.lost_probes
    if reason == "ProbeLost":
        lost += 1
    elif SPECULATIVE in (to, state.mode):
        lost = 0
    new = replace(state, mode=to, mode_since=now, breaches=0, recoveries=0, lost_probes=lost, history=history)
    return new, t


def probe_cooldown(policy: PolicySpec, state: PolicyState) -> float:
    """Seconds in Baseline before the next probe: ``cooldown``, doubled for each probe lost in a
    row since the last fallback (at most ``PROBE_BACKOFF_DOUBLINGS`` times)."""
    return parse_duration(policy.cooldown) * float(2 ** min(state.lost_probes, PROBE_BACKOFF_DOUBLINGS))


def _record_reference(
    state: PolicyState, base: PoolMetrics | None, policy: PolicySpec, now: float
) -> PolicyState:
    if base is None or not _has_traffic(base, policy):
        return state
    rate = base.rate_per_replica
    if not (_num(base.tpot_p50) and _num(base.tpot_p99) and _num(rate)):
        return state
    assert base.tpot_p50 is not None and base.tpot_p99 is not None and rate is not None
    return replace(state, reference=Reference(base.tpot_p50, base.tpot_p99, rate, now))


def _cooldown_words(policy: PolicySpec, state: PolicyState) -> str:
    if not state.lost_probes:
        return policy.cooldown
    factor = 2 ** min(state.lost_probes, PROBE_BACKOFF_DOUBLINGS)
    return f"{policy.cooldown} x{factor} ({state.lost_probes} probe(s) lost in a row)"


def _record_saturation(state: PolicyState, spec: PoolMetrics | None, policy: PolicySpec) -> PolicyState:
    """Remember the load per replica at which the speculative pool queued (when it did)."""
    if spec is None or _saturated(policy, spec) is None:
        return state
    rate = spec.rate_per_replica
    if not _num(rate) or rate is None or rate <= 0:
        return state
    if rate * parse_duration(policy.window) < MIN_SATURATION_COMPLETIONS:
        return state
    return replace(state, saturation_rate=rate)


def decide(policy: PolicySpec, state: PolicyState, obs: Observation, now: float) -> Decision:
    """The next policy state.  Pure: the same inputs give the same decision, before or after a
    restart of the operator."""
    assessment = assess(policy, state, obs)
    transition: Transition | None = None
    if assessment.verdict is Verdict.ERROR:
        metrics = ("False", "PrometheusError", assessment.message)
    elif assessment.reason == "NoSeries":
        metrics = ("True", "NoSeries", "Prometheus answers, but with no usable series for this resource")
    elif assessment.verdict is Verdict.NO_DATA:
        # Stable words (the figures are in status.observed), so a steady state writes nothing.
        metrics = ("True", "InsufficientTraffic", "Prometheus answers; too little traffic to judge")
    else:
        metrics = ("True", "Evaluated", "Prometheus answers; see status.observed and status.verdict")

    # Manual pins win and say so.
    pin = {Mode.SPECULATIVE: SPECULATIVE, Mode.BASELINE: BASELINE}.get(policy.mode)
    if pin is not None:
        if state.mode != pin:
            state, transition = _transition(state, pin, "ManualOverride", f"spec.policy.mode is {pin}", now)
        state = replace(state, breaches=0, recoveries=0, errors=0)
        return Decision(state, assessment, transition, metrics)

    if assessment.verdict is Verdict.ERROR:
        state = replace(state, errors=state.errors + 1)
        if (
            policy.on_metrics_unavailable is OnMetricsUnavailable.BASELINE
            and state.errors >= policy.consecutive_errors
            and state.mode != BASELINE
        ):
            state, transition = _transition(
                state,
                BASELINE,
                "MetricsUnavailable",
                f"{state.errors} evaluations in a row without metrics ({assessment.message}); "
                "onMetricsUnavailable is Baseline",
                now,
            )
        return Decision(state, assessment, transition, metrics)
    state = replace(state, errors=0)

    # Right after a switch the rate window still holds the previous mode's samples (and the pools
    # are still moving): judge nothing until a whole window plus two evaluations has passed.
    settle = parse_duration(policy.window) + 2 * parse_duration(policy.interval)
    if now - state.mode_since < settle:
        settling = Assessment(Verdict.NO_DATA, "Settling", f"the last switch was under {settle:g} s ago")
        return Decision(state, settling, None, metrics)

    if state.mode in (BASELINE, PROBING):
        state = _record_reference(state, obs.baseline, policy, now)

    if state.mode == BASELINE:
        cooldown = probe_cooldown(policy, state)
        cooled = now - state.mode_since >= cooldown
        # No probe while the baseline itself queues: moving a replica costs capacity (a pod
        # restart) exactly when there is none to spare, and the comparison would judge overload.
        queueing = obs.baseline is not None and _saturated(policy, obs.baseline) is not None
        rate = obs.baseline.rate_per_replica if obs.baseline is not None else None
        busy = (
            state.saturation_rate is not None
            and _num(rate)
            and (rate or 0.0) >= PROBE_LOAD_MARGIN * state.saturation_rate
        )
        if cooled and assessment.verdict is Verdict.HEALTHY and not queueing and not busy:
            state, transition = _transition(
                state,
                PROBING,
                "ProbeStarted",
                f"cooldown {_cooldown_words(policy, state)} over with traffic: {policy.probe.replicas} "
                "replica(s) speculate beside the baseline",
                now,
            )
        return Decision(state, assessment, transition, metrics)

    if assessment.verdict is Verdict.NO_DATA:
        return Decision(state, assessment, transition, metrics)

    if state.mode == PROBING:
        if assessment.verdict is Verdict.HEALTHY:
            state = replace(state, recoveries=state.recoveries + 1, breaches=0)
            if state.recoveries >= policy.consecutive_recoveries:
                state, transition = _transition(
                    state,
                    SPECULATIVE,
                    "ProbeWon",
                    f"{state.recoveries} winning evaluations in a row: {assessment.message}",
                    now,
                )
        else:
            state = replace(state, breaches=state.breaches + 1, recoveries=0)
            if state.breaches >= policy.consecutive_breaches:
                state, transition = _transition(
                    state,
                    BASELINE,
                    "ProbeLost",
                    f"{state.breaches} losing evaluations: {assessment.message}",
                    now,
                )
                state = _record_saturation(state, obs.speculative, policy)
        if transition is None and now - state.mode_since >= parse_duration(policy.probe.duration):
            state, transition = _transition(
                state,
                BASELINE,
                "ProbeLost",
                f"probe ran {policy.probe.duration} without {policy.consecutive_recoveries} wins in a row",
                now,
            )
        return Decision(state, assessment, transition, metrics)

    # Speculative.
    if assessment.verdict is Verdict.BREACH:
        state = replace(state, breaches=state.breaches + 1, recoveries=0)
        if state.breaches >= policy.consecutive_breaches:
            state, transition = _transition(
                state,
                BASELINE,
                assessment.reason,
                f"{state.breaches} breaches in a row: {assessment.message}",
                now,
            )
            state = _record_saturation(state, obs.speculative, policy)
    else:
        state = replace(state, breaches=0)
    return Decision(state, assessment, transition, metrics)

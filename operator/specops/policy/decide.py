"""The fallback policy (pure): judge one evaluation, then decide the next mode.

Modes: Speculative (all replicas speculate), Baseline (none do) and Probing (some replicas
speculate beside baseline ones, serving the same traffic, to see whether speculation wins again;
with one replica the probe is a timed trial of the whole service).

An evaluation's verdict is one of four, kept distinct all the way to the status:

* ``Healthy``  -- speculation is not hurting (or, while probing, it won this window);
* ``Breach``   -- it hurts (or, while probing, it lost this window);
* ``NoData``   -- too little traffic in the window to judge (``InsufficientTraffic``), no series
  at all for the pool judged (``NoSeries``), or a window that cannot judge speculation
  (``BaselineQueueing``, ``Settling``): holds, counts nothing;
* ``Error``    -- Prometheus unreachable or answered badly: holds, counts errors, and only falls
  back when ``onMetricsUnavailable: Baseline`` and errors repeat.

``rules.py`` gives the verdict (one small function per rule, in a declared order per mode); this
module turns it into a decision, in this order: a manual pin wins; an Error counts; right after a
switch nothing is judged (``Settling``); then the current mode's step:

* Baseline: record the baseline's latency as the reference, and start a probe once the cooldown
  is over, with traffic, while the baseline pool does not queue and the load per replica is under
  ``PROBE_LOAD_MARGIN`` of the load at which speculation last saturated (moving a replica restarts
  a pod and costs capacity exactly when there is none to spare; a probe at that load would only
  saturate again).  Each probe lost in a row doubles the next cooldown (up to x8), so a workload
  that stays unfit for speculation is not probed every few minutes.
* Probing: count wins and losses; ``consecutiveRecoveries`` wins re-enable speculation,
  ``consecutiveBreaches`` losses (or ``probe.duration`` without enough wins) end the probe.
* Speculative: count breaches; ``consecutiveBreaches`` in a row fall back to Baseline.

A switch that would overload the service (with no surge pod, the replicas left could not carry a
moved one's load) or would not pay (a load falling back under the line before the fallback ends,
bursts shorter than a switch, a probe near the crossover) is held back: the verdict's message says
why, and the first window of such an episode returns a ``Deferral`` for one ``SwitchDeferred``
Event.  The facts it needs (replicas, rollout, switch cost, k) come from ``plan_evaluation``.

Hysteresis: the opposite verdict resets a count; no decision is ever taken on one sample.  All
state lives in the resource's status, so the same inputs give the same decision before or after a
restart of the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from specops.api.v1alpha1 import (
    MIN_SCRAPES_PER_WINDOW,
    ConditionStatus,
    OnMetricsUnavailable,
    PolicySpec,
    ServingMode,
    pinned_mode,
)
from specops.policy.headroom import (
    Headroom,
    current_load,
    observe_pools,
    service_rate,
    update_trend,
    with_saturation,
)
from specops.policy.rules import (
    DIP_UTILISATION,
    REFERENCE_LOAD_TOLERANCE,
    assess,
    dip_room,
    fresh,
    has_traffic,
    queued_per_replica,
    settling,
    usable_reference,
    window_headroom,
)
from specops.policy.state import (
    HISTORY_LIMIT,
    Assessment,
    Deferral,
    MetricsCondition,
    Observation,
    Overloads,
    PolicyDecision,
    PolicyState,
    PoolMetrics,
    Reason,
    Reference,
    ServiceFacts,
    Transition,
    Verdict,
    finite,
    policy_fingerprint,
    reset_for_new_spec,
)

# After speculation saturated at some load per replica, probes wait until the load is below this
# share of it: a probe at that load would saturate its replica again and cost a pod restart twice.
PROBE_LOAD_MARGIN = 0.8
# The reasons that say the load, not the workload, makes speculation lose: their episodes are timed
# (``Overloads``), and a fallback for them waits for the load's trend to say it pays.
LOAD_REASONS = frozenset({Reason.HEADROOM_CLOSING, Reason.LOAD_SATURATION, Reason.PREDICTED_SLOWDOWN})
# Weight of the newest overload episode in the running mean of their durations.
OVERLOAD_SMOOTHING = 0.5
# Each probe lost in a row doubles the next cooldown, up to this many times (x8).
PROBE_BACKOFF_DOUBLINGS = 3
# The saturation load is recorded only from a window with at least this many completed requests
# per replica: with fewer (a window short against the requests' latency), the completion rate lags
# far behind the load that saturated the pool and would keep probes off for good.
MIN_SATURATION_COMPLETIONS = 20

__all__ = [
    "MIN_SATURATION_COMPLETIONS",
    "PROBE_BACKOFF_DOUBLINGS",
    "PROBE_LOAD_MARGIN",
    "REFERENCE_LOAD_TOLERANCE",
    "Assessment",
    "MetricsCondition",
    "Observation",
    "PolicyDecision",
    "PolicyState",
    "PoolMetrics",
    "Reason",
    "Reference",
    "Transition",
    "Verdict",
    "assess",
    "decide",
    "metrics_condition",
    "policy_fingerprint",
    "probe_cooldown",
    "reset_for_new_spec",
    "usable_reference",
]


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a mode's step reads: the policy, the window, when, and the service's facts."""

    policy: PolicySpec
    obs: Observation
    now: float
    facts: ServiceFacts | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A mode's step: the next state, the switch (if any), and a switch held back (if any)."""

    state: PolicyState
    transition: Transition | None = None
    held: Deferral | None = None


Step = Callable[[Ctx, PolicyState, Assessment], Outcome]


def decide(
    policy: PolicySpec,
    state: PolicyState,
    obs: Observation,
    now: float,
    fingerprint: str | None = None,
    facts: ServiceFacts | None = None,
) -> PolicyDecision:
    """The next policy state.  Pure: the same inputs give the same decision, before or after a
    restart of the operator.  ``fingerprint`` is ``policy_fingerprint(spec)`` of the spec now: when
    it differs from the one the state was recorded under, the recorded evidence is dropped first.
    ``facts`` (``headroom.service_facts``): the replicas, the rollout and the switch cost; without
    them the leading-indicator rules and the switch gate are off."""
    state = _under_spec(state, fingerprint)
    hold = settling(policy, state, now)
    state = _observe(policy, state, obs, now, facts, settled=_pools_settled(policy, state, now, facts))
    assessment = assess(policy, state, obs, now, facts)
    metrics = metrics_condition(assessment)
    pin = pinned_mode(policy.mode)
    if pin is not None:
        return _pinned(pin, replace(state, deferred_since=None), assessment, metrics, now)
    if assessment.verdict is Verdict.ERROR:
        return _on_error(policy, state, assessment, metrics, now)
    state = replace(state, errors=0)
    if hold is not None:
        return PolicyDecision(state, hold, None, metrics)
    if state.mode in (ServingMode.BASELINE, ServingMode.PROBING):
        state = _record_reference(state, obs.baseline, policy, now)
    state = _time_overloads(state, assessment, now)
    out = STEPS[state.mode](Ctx(policy, obs, now, facts), state, assessment)
    if out.transition is not None and out.state.overloads.since is not None:
        # The episode ends with the switch, not by itself: it says nothing of how long they last.
        out = replace(out, state=replace(out.state, overloads=replace(out.state.overloads, since=None)))
    return _held_back(out, assessment, metrics, now)


def _time_overloads(state: PolicyState, assessment: Assessment, now: float) -> PolicyState:
    """Start timing an episode of load-driven breaches, or record one that ended by itself."""
    o = state.overloads
    if state.mode != ServingMode.SPECULATIVE or assessment.verdict is Verdict.NO_DATA:
        return state
    if assessment.reason in LOAD_REASONS:
        return state if o.since is not None else replace(state, overloads=replace(o, since=now))
    if o.since is None:
        return state
    lasted = now - o.since
    typical = (
        lasted
        if o.typical_seconds is None
        else o.typical_seconds + OVERLOAD_SMOOTHING * (lasted - o.typical_seconds)
    )
    return replace(state, overloads=Overloads(None, typical, o.seen + 1))


def _observe(
    policy: PolicySpec,
    state: PolicyState,
    obs: Observation,
    now: float,
    facts: ServiceFacts | None,
    settled: bool,
) -> PolicyState:
    """The window's load into the trend, and (once a switch has settled) each serving pool's
    figures into its step line."""
    if obs.error is not None:
        return state
    rate = service_rate(obs.speculative, obs.baseline, facts)
    if rate is not None:
        state = replace(state, load=update_trend(state.load, rate, now, policy))
    if settled:
        spec_line, base_line = observe_pools(
            (state.speculative_steps, state.baseline_steps), obs.speculative, obs.baseline, facts, now, policy
        )
        state = replace(state, speculative_steps=spec_line, baseline_steps=base_line)
    return state


def _pools_settled(policy: PolicySpec, state: PolicyState, now: float, facts: ServiceFacts | None) -> bool:
    """Whether the last switch's rollout has ended and a whole window has passed since: only such
    windows go into the step lines (a pool whose pods come and go within the window shows a rate and
    a running count that do not belong together)."""
    rollout = facts.switch_seconds(facts.replicas) if facts is not None else 0.0
    return now - state.mode_since >= policy.window_seconds + rollout + policy.interval_seconds


def _held_back(out: Outcome, assessment: Assessment, metrics: MetricsCondition, now: float) -> PolicyDecision:
    """A switch held back is said in the verdict's message every window, and as a Deferral on the
    first window of the episode (one Event); a window that holds nothing back ends the episode."""
    state = out.state
    if out.held is None:
        return PolicyDecision(replace(state, deferred_since=None), assessment, out.transition, metrics)
    first = state.deferred_since is None
    state = replace(state, deferred_since=now if first else state.deferred_since)
    told = replace(assessment, message=f"{assessment.message}; {out.held.message}")
    return PolicyDecision(state, told, None, metrics, out.held if first else None)


def _under_spec(state: PolicyState, fingerprint: str | None) -> PolicyState:
    """Reset the evidence of another spec; a state from before fingerprints were kept adopts it."""
    if fingerprint is None or state.spec_fingerprint == fingerprint:
        return state
    if state.spec_fingerprint is None:
        return replace(state, spec_fingerprint=fingerprint)
    return reset_for_new_spec(state, fingerprint)


def metrics_condition(assessment: Assessment) -> MetricsCondition:
    """MetricsAvailable after this window.  Stable words (the figures are in status.observed), so a
    steady state writes nothing."""
    if assessment.verdict is Verdict.ERROR:
        return MetricsCondition(ConditionStatus.FALSE, Reason.PROMETHEUS_ERROR, assessment.message)
    if assessment.reason is Reason.NO_SERIES:
        return MetricsCondition(
            ConditionStatus.TRUE,
            Reason.NO_SERIES,
            "Prometheus answers, but with no usable series for this resource",
        )
    if assessment.reason is Reason.WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL:
        # Prometheus answers, but the policy is off until the window is fixed: not "True".
        return MetricsCondition(
            ConditionStatus.FALSE,
            Reason.WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL,
            "rate() over spec.policy.window is empty: the window holds fewer than "
            f"{MIN_SCRAPES_PER_WINDOW} scrape intervals",
        )
    if assessment.verdict is Verdict.NO_DATA:
        return MetricsCondition(
            ConditionStatus.TRUE,
            Reason.INSUFFICIENT_TRAFFIC,
            "Prometheus answers; too little traffic to judge",
        )
    return MetricsCondition(
        ConditionStatus.TRUE, Reason.EVALUATED, "Prometheus answers; see status.observed and status.verdict"
    )


def probe_cooldown(policy: PolicySpec, state: PolicyState) -> float:
    """Seconds in Baseline before the next probe: ``cooldown``, doubled for each probe lost in a
    row since the last fallback (at most ``PROBE_BACKOFF_DOUBLINGS`` times)."""
    return policy.cooldown_seconds * float(_backoff_factor(state))


# ------------------------------------------------------------------------ before the mode's step


def _pinned(
    pin: ServingMode, state: PolicyState, assessment: Assessment, metrics: MetricsCondition, now: float
) -> PolicyDecision:
    """A manual pin wins and says so."""
    transition = None
    if state.mode != pin:
        state, transition = _switch(
            state,
            pin,
            Reason.MANUAL_OVERRIDE,
            f"spec.policy.mode is {pin}",
            now,
            lost_probes=_lost_probes_kept(state, pin),
        )
    state = replace(state, breaches=0, recoveries=0, errors=0)
    return PolicyDecision(state, assessment, transition, metrics)


def _on_error(
    policy: PolicySpec, state: PolicyState, assessment: Assessment, metrics: MetricsCondition, now: float
) -> PolicyDecision:
    """Count the error; fall back only with ``onMetricsUnavailable: Baseline`` after enough."""
    state = replace(state, errors=state.errors + 1)
    transition = None
    if (
        policy.on_metrics_unavailable is OnMetricsUnavailable.BASELINE
        and state.errors >= policy.consecutive_errors
        and state.mode != ServingMode.BASELINE
    ):
        state, transition = _switch(
            state,
            ServingMode.BASELINE,
            Reason.METRICS_UNAVAILABLE,
            f"{state.errors} evaluations in a row without metrics ({assessment.message}); "
            "onMetricsUnavailable is Baseline",
            now,
            lost_probes=_lost_probes_kept(state, ServingMode.BASELINE),
        )
    elif state.mode == ServingMode.PROBING:
        state, transition = _probe_deadline(policy, state, now)
    return PolicyDecision(state, assessment, transition, metrics)


# ------------------------------------------------------------------------------ the mode's step


def _in_baseline(c: Ctx, state: PolicyState, assessment: Assessment) -> Outcome:
    """Start a probe when the cooldown is over and the baseline has room for one."""
    policy, now = c.policy, c.now
    if assessment.verdict is not Verdict.HEALTHY or not _may_probe(policy, state, c.obs.baseline, now):
        # A probe held back stays held (one Event) until it starts or the mode changes.
        return Outcome(state, held=_still_held(state, assessment, now))
    held = _probe_held(c, state)
    if held is not None:
        return Outcome(state, held=held)
    return Outcome(
        *_switch(
            state,
            ServingMode.PROBING,
            Reason.PROBE_STARTED,
            f"cooldown {_cooldown_words(policy, state)} over with traffic: {policy.probe.replicas} "
            "replica(s) speculate beside the baseline",
            now,
            lost_probes=state.lost_probes,
        )
    )


def _probe_held(c: Ctx, state: PolicyState) -> Deferral | None:
    """Why a probe that may start by the rules above should not start yet, by the headroom: the
    load is, or is heading within the probe's duration, past ``PROBE_LOAD_MARGIN`` of the crossover
    (the probe would lose and cost two switches); or, with no surge pod, the other baseline
    replicas could not carry the moved replica's load meanwhile."""
    trend, f = state.load, c.facts
    if trend is None or f is None:
        return None
    # While no replica speculates the acceptance is not observed; a probe wins only at the
    # break-even acceptance or better, so the load is judged at that (or the usual, if higher).
    usual = state.speculative_steps.mean_acceptance if state.speculative_steps is not None else None
    acceptance = max(c.policy.break_even_acceptance_rate, usual or 0.0)
    h = window_headroom(c.policy, state, c.obs, f, c.now, acceptance)
    load = current_load(trend, c.policy)
    ahead = load + max(0.0, trend.slope) * (c.policy.probe.duration_seconds + f.switch_seconds_per_replica)
    why = None
    if h.crossover is not None and ahead >= PROBE_LOAD_MARGIN * h.crossover:
        why = (
            f"the load ({load:.3g} req/s per replica, {ahead:.3g} within the probe) is near or past "
            f"{h.crossover:.3g}, where the baseline is expected to win ({h.source})"
        )
    elif (room := _carry_room(f, h, base_only=True)) is not None and not dip_absorbed(
        c.policy, f, _dip_load(c, state, f), room
    ):
        why = _dip_words(f, _dip_load(c, state, f), room)
    if why is None:
        return None
    return Deferral(
        c.now, ServingMode.BASELINE, ServingMode.PROBING, Reason.PROBE_STARTED, f"probe held back: {why}"
    )


def _may_probe(policy: PolicySpec, state: PolicyState, base: PoolMetrics | None, now: float) -> bool:
    """Cooled down, and the baseline neither queues, nor serves near the saturation load, nor so
    little that a probe window could not hold ``probe.minRequests``."""
    if now - state.mode_since < probe_cooldown(policy, state):
        return False
    # No probe while the baseline itself queues: moving a replica costs capacity (a pod restart)
    # exactly when there is none to spare, and the comparison would judge overload.
    if base is not None and queued_per_replica(policy, base) is not None:
        return False
    rate = base.rate_per_replica if base is not None else None
    if not finite(rate) or rate is None:
        return False
    busy = (
        state.saturation_rate is not None
        and fresh(state.saturation_at, policy, now)
        and rate >= PROBE_LOAD_MARGIN * state.saturation_rate
    )
    # A probe replica that cannot complete probe.minRequests in a window would only end
    # inconclusive, after a pod restart each way.
    thin = rate * policy.window_seconds < policy.probe.min_requests
    return not busy and not thin


def _in_probing(c: Ctx, state: PolicyState, assessment: Assessment) -> Outcome:
    """Count wins and losses; enough of either ends the probe, and so does its deadline."""
    state, transition = _count_probe_window(c.policy, state, assessment, c.obs, c.now)
    if transition is None:
        return Outcome(*_probe_deadline(c.policy, state, c.now))
    return Outcome(state, transition)


def _count_probe_window(
    policy: PolicySpec, state: PolicyState, assessment: Assessment, obs: Observation, now: float
) -> tuple[PolicyState, Transition | None]:
    if assessment.verdict is Verdict.NO_DATA:
        return state, None
    if assessment.verdict is Verdict.HEALTHY:
        state = replace(state, recoveries=state.recoveries + 1, breaches=0)
        if state.recoveries < policy.consecutive_recoveries:
            return state, None
        # Speculation serves this load again: the saturation load recorded before is superseded
        # (the next saturation records its own).
        state = replace(state, saturation_rate=None, saturation_at=None)
        return _switch(
            state,
            ServingMode.SPECULATIVE,
            Reason.PROBE_WON,
            f"{state.recoveries} winning evaluations in a row: {assessment.message}",
            now,
            lost_probes=0,
        )
    state = replace(state, breaches=state.breaches + 1, recoveries=0)
    if state.breaches < policy.consecutive_breaches:
        return state, None
    state, transition = _switch(
        state,
        ServingMode.BASELINE,
        Reason.PROBE_LOST,
        f"{state.breaches} losing evaluations: {assessment.message}",
        now,
        lost_probes=state.lost_probes + 1,
    )
    return _record_saturation(state, obs.speculative, policy, now), transition


def _probe_deadline(
    policy: PolicySpec, state: PolicyState, now: float
) -> tuple[PolicyState, Transition | None]:
    """A probe past ``probe.duration`` ends, whatever its windows showed (an idle night or a
    Prometheus outage must not leave the probe split in place): lost when its latest conclusive
    windows lost, else inconclusive (they won, short of the streak, or nothing was judged), which
    neither counts as a lost probe nor doubles the cooldown."""
    if now - state.mode_since < policy.probe.duration_seconds:
        return state, None
    if state.breaches > 0:
        return _switch(
            state,
            ServingMode.BASELINE,
            Reason.PROBE_LOST,
            f"probe ran {policy.probe.duration} without {policy.consecutive_recoveries} wins in a row; "
            f"its latest {state.breaches} window(s) lost",
            now,
            lost_probes=state.lost_probes + 1,
        )
    return _switch(
        state,
        ServingMode.BASELINE,
        Reason.PROBE_INCONCLUSIVE,
        f"probe ran {policy.probe.duration} without {policy.consecutive_recoveries} wins or "
        f"{policy.consecutive_breaches} losses in a row (too little traffic, no metrics, or mixed "
        "results); not counted as lost",
        now,
        lost_probes=state.lost_probes,
    )


def _in_speculative(c: Ctx, state: PolicyState, assessment: Assessment) -> Outcome:
    """Count breaches in a row; enough fall back to Baseline, unless the switch would overload the
    service (then it is held back, the count kept, until the load lets it through)."""
    policy, obs, now = c.policy, c.obs, c.now
    if assessment.verdict is Verdict.NO_DATA:
        return Outcome(state, held=_still_held(state, assessment, now))
    if assessment.verdict is not Verdict.BREACH:
        return Outcome(replace(state, breaches=0))
    state = replace(state, breaches=state.breaches + 1, recoveries=0)
    if state.breaches < policy.consecutive_breaches:
        return Outcome(state)
    held = _not_paying(c, state, assessment) or _fallback_held(c, state, assessment)
    if held is not None:
        return Outcome(state, held=held)
    state, transition = _switch(
        state,
        ServingMode.BASELINE,
        assessment.reason,
        f"{state.breaches} breaches in a row: {assessment.message}",
        now,
        lost_probes=0,
    )
    return Outcome(_record_saturation(state, obs.speculative, policy, now), transition)


def _still_held(state: PolicyState, assessment: Assessment, now: float) -> Deferral | None:
    """A window without data neither ends a deferral nor starts one."""
    if state.deferred_since is None:
        return None
    return Deferral(now, state.mode, state.mode, Reason.SWITCH_DEFERRED, "a switch is still held back")


def _not_paying(c: Ctx, state: PolicyState, assessment: Assessment) -> Deferral | None:
    """A load-driven fallback that would not pay: the load is past the crossover but falling, and
    will be back under it before the fallback has even ended; or load-driven breaches here have so
    far lasted less than a fallback takes (bursts) and this one has not outlasted them.  (A queueing
    pool's completion rate is no measure of a falling load: it falls as the queue grows.)"""
    f, trend = c.facts, state.load
    if f is None or trend is None or assessment.reason not in LOAD_REASONS:
        return None
    fallback = f.switch_seconds(f.replicas)
    load = current_load(trend, c.policy)
    why = None
    if trend.slope < 0 and assessment.reason is not Reason.LOAD_SATURATION:
        crossover = window_headroom(c.policy, state, c.obs, c.facts, c.now).crossover
        end = load + trend.slope * fallback
        if crossover is not None and load >= crossover > end:
            why = (
                f"the load is falling ({60 * trend.slope:.2g} req/s per replica per minute) and will be "
                f"under the crossover, {crossover:.3g}, in about {(load - crossover) / -trend.slope:.0f} s, "
                f"before a fallback ({fallback:.0f} s) would have ended"
            )
    o = state.overloads
    if why is None and o.typical_seconds is not None and o.typical_seconds < fallback:
        lasted = c.now - o.since if o.since is not None else 0.0
        if lasted < 2 * o.typical_seconds:
            why = (
                f"load-driven breaches here have lasted about {o.typical_seconds:.0f} s ({o.seen} "
                f"seen), less than a fallback takes ({fallback:.0f} s), and this one has lasted "
                f"{lasted:.0f} s"
            )
    if why is None:
        return None
    return Deferral(
        c.now, ServingMode.SPECULATIVE, ServingMode.BASELINE, assessment.reason, f"riding it out: {why}"
    )


def _fallback_held(c: Ctx, state: PolicyState, assessment: Assessment) -> Deferral | None:
    """With no surge pod, a fallback moves the replicas one at a time, each out of service while it
    drains and starts: held back while the others could not carry its load (as the window's pools
    show: a speculative pool that queues serves no more than it does now)."""
    f = c.facts
    if f is None or not f.dip or state.load is None:
        return None
    h = window_headroom(c.policy, state, c.obs, f, c.now)
    spec = c.obs.speculative
    if spec is not None and queued_per_replica(c.policy, spec) is not None and finite(spec.rate_per_replica):
        h = with_saturation(h, spec.rate_per_replica)
    room = _carry_room(f, h, base_only=False)
    load = _dip_load(c, state, f)
    if room is None or dip_absorbed(c.policy, f, load, room):
        return None
    return Deferral(
        c.now,
        ServingMode.SPECULATIVE,
        ServingMode.BASELINE,
        assessment.reason,
        f"fallback held back: {_dip_words(f, load, room)}",
    )


def _carry_room(f: ServiceFacts, h: Headroom, base_only: bool) -> float | None:
    """Load per replica of the service the replicas left can carry while one is moved."""
    if base_only:
        cap = h.baseline_capacity
        return None if not f.dip or cap is None else DIP_UTILISATION * (f.replicas - 1) / f.replicas * cap
    return dip_room(f, h)


def _dip_load(c: Ctx, state: PolicyState, f: ServiceFacts) -> float:
    """The load per replica at the end of one moved replica's absence, on the current trend."""
    assert state.load is not None
    rise = max(0.0, state.load.slope) * f.switch_seconds_per_replica
    return current_load(state.load, c.policy) + rise


def dip_absorbed(policy: PolicySpec, f: ServiceFacts, load: float, room: float) -> bool:
    """Whether the replicas left carry a moved replica's absence: the load fits their room, or the
    work in excess over the whole absence would queue no more than ``maxWaitingPerReplica`` on each
    of them (a short dip, a hot swap's seconds, costs a few queued requests, not an overload)."""
    excess = max(0.0, load - room) * f.replicas * f.switch_seconds_per_replica
    return excess <= policy.max_waiting_per_replica * (f.replicas - 1)


def _dip_words(f: ServiceFacts, load: float, room: float) -> str:
    kind = "measured" if f.switch_cost_measured else "estimated"
    return (
        f"with no surge pod, a moved replica is out of service for about "
        f"{f.switch_seconds_per_replica:.0f} s ({kind}), and the other {f.replicas - 1} would carry "
        f"{load * f.replicas:.3g} req/s, more than {room * f.replicas:.3g} ({DIP_UTILISATION:.0%} of "
        "what they can serve): the switch would overload the service; riding it out"
    )


STEPS: dict[ServingMode, Step] = {
    ServingMode.BASELINE: _in_baseline,
    ServingMode.PROBING: _in_probing,
    ServingMode.SPECULATIVE: _in_speculative,
}


# ------------------------------------------------------------------------------------- helpers


def _switch(
    state: PolicyState, to: ServingMode, reason: Reason, message: str, now: float, lost_probes: int
) -> tuple[PolicyState, Transition]:
    """The state after a switch: counts start afresh, the history keeps the newest decisions.
    ``lost_probes`` is the count of probes lost in a row after it (each doubles the cooldown)."""
    t = Transition(now, state.mode, to, reason, message)
    history = (*state.history, t)[-HISTORY_LIMIT:]
    new = replace(
        state, mode=to, mode_since=now, breaches=0, recoveries=0, lost_probes=lost_probes, history=history
    )
    return new, t


def _lost_probes_kept(state: PolicyState, to: ServingMode) -> int:
    """A switch into or out of Speculative starts the count of lost probes afresh; others keep it."""
    return 0 if ServingMode.SPECULATIVE in (state.mode, to) else state.lost_probes


def _backoff_factor(state: PolicyState) -> int:
    return int(2 ** min(state.lost_probes, PROBE_BACKOFF_DOUBLINGS))


def _cooldown_words(policy: PolicySpec, state: PolicyState) -> str:
    if not state.lost_probes:
        return policy.cooldown
    return f"{policy.cooldown} x{_backoff_factor(state)} ({state.lost_probes} probe(s) lost in a row)"


def _record_reference(
    state: PolicyState, base: PoolMetrics | None, policy: PolicySpec, now: float
) -> PolicyState:
    """The baseline pool's latency at its load, while it serves (in Baseline and while probing)."""
    if base is None or not has_traffic(base, policy):
        return state
    rate = base.rate_per_replica
    if not (finite(base.tpot_p50) and finite(base.tpot_p99) and finite(rate)):
        return state
    assert base.tpot_p50 is not None and base.tpot_p99 is not None and rate is not None
    return replace(state, reference=Reference(base.tpot_p50, base.tpot_p99, rate, now))


def _record_saturation(
    state: PolicyState, spec: PoolMetrics | None, policy: PolicySpec, now: float
) -> PolicyState:
    """Remember the load per replica at which the speculative pool queued (when it did)."""
    if spec is None or queued_per_replica(policy, spec) is None:
        return state
    rate = spec.rate_per_replica
    if not finite(rate) or rate is None or rate <= 0:
        return state
    if rate * policy.window_seconds < MIN_SATURATION_COMPLETIONS:
        return state
    return replace(state, saturation_rate=rate, saturation_at=now)

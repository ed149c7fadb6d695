"""The status the operator wants (pure), produced by the status models and nothing else.

Status is read with ``SpeculativeInferenceStatus.model_validate`` and written as
``model_dump(by_alias=True)``; the write is a JSON merge patch of what differs (``merge_patch``),
so an unchanged status costs no request.  The policy's state (mode, counters, reference,
decisions) lives in status, which is how a restarted operator carries on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from specops.api.v1alpha1 import (
    BaselineReference,
    BudgetStatus,
    Condition,
    ConditionStatus,
    Counters,
    DecisionRecord,
    HeadroomStatus,
    LoadTrendStatus,
    Mode,
    ObservedMetrics,
    PoolsStatus,
    PoolStatus,
    RolloutStrategy,
    ServingMode,
    SpeculativeInference,
    SpeculativeInferenceStatus,
    StepLineStatus,
    SwitchCostSource,
    SwitchCostStatus,
)
from specops.checks.validation import CheckReport
from specops.plan.rollout import PoolState, split_for_mode
from specops.policy.decide import Observation, PolicyState, Reference, Transition
from specops.policy.headroom import Headroom
from specops.policy.state import LoadTrend, Overloads, Reason, StepLine
from specops.render.manifests import Pool, PoolSplit, selector_string


class ConditionType(StrEnum):
    READY = "Ready"
    BUDGET_FITS = "BudgetFits"
    SPECULATION_ACTIVE = "SpeculationActive"
    METRICS_AVAILABLE = "MetricsAvailable"
    HOT_SWAP_READY = "HotSwapReady"  # spec.rollout.strategy HotSwap only


@dataclass(frozen=True, slots=True)
class ConditionValue:
    """A condition's status, reason and message, before its times are filled in."""

    status: ConditionStatus
    reason: str
    message: str


def rfc3339(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


# ----------------------------------------------------------------------------- reading, writing


def read_status(raw: Mapping[str, Any] | None) -> SpeculativeInferenceStatus | None:
    """Status as the models see it; None when absent or mangled beyond the schema (rebuilt then)."""
    if not raw:
        return SpeculativeInferenceStatus()
    try:
        return SpeculativeInferenceStatus.model_validate(dict(raw))
    except ValidationError:
        return None


def dump_status(status: SpeculativeInferenceStatus) -> dict[str, Any]:
    """The JSON the API server stores for ``status``."""
    return prune_empty(status.model_dump(by_alias=True, exclude_none=True, mode="json"))


def prune_empty(value: dict[str, Any]) -> dict[str, Any]:
    """Drop None and "" values: in a merge patch a null deletes the key (and kube-apiserver 1.20
    stores an empty string as null), so either would differ from the stored status forever."""
    out: dict[str, Any] = _prune(value)
    return out


def _prune(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _prune(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new`` (empty: nothing to write).

    Keys ``new`` dropped are sent as null, so a figure that went away is deleted, not kept stale
    (which would differ from what the operator wants forever and write at every reconcile).
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


# ----------------------------------------------------------------------------------- conditions


def with_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    value: ConditionValue,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when the status changes."""
    old = next((c for c in conditions if c.type == type_), None)
    changed = old is None or old.status != value.status
    new = Condition(
        type=type_,
        status=value.status,
        reason=value.reason,
        message=value.message,
        last_transition_time=now if changed or old is None else (old.last_transition_time or now),
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def condition(status: SpeculativeInferenceStatus | None, type_: ConditionType) -> Condition | None:
    if status is None:
        return None
    return next((c for c in status.conditions if c.type == type_), None)


TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def budget_status(report: CheckReport) -> BudgetStatus:
    b = report.budget
    return BudgetStatus(
        vram_gib=b.vram_gib,
        target_weights_gib=b.target_weights_gib,
        draft_weights_gib=b.draft_weights_gib,
        kv_cache_gib=b.kv_cache_gib,
        kv_cache_gib_without_draft=b.kv_cache_gib_without_draft,
        max_concurrent_sequences=b.max_concurrent_sequences,
        max_concurrent_sequences_without_draft=b.max_concurrent_sequences_without_draft,
    )


def budget_condition(report: CheckReport) -> ConditionValue:
    if not report.ok:
        return ConditionValue(FALSE, report.errors[0].code, "; ".join(str(e) for e in report.errors))
    if report.warnings:
        return ConditionValue(TRUE, "FitsWithWarnings", "; ".join(str(w) for w in report.warnings))
    return ConditionValue(TRUE, "Fits", "weights and KV cache fit the GPU memory budget")


def desired_status(
    si: SpeculativeInference,
    report: CheckReport,
    mode: ServingMode,
    split: PoolSplit | None,
    pools: Mapping[Pool, PoolState],
    now: str,
    metrics_condition: ConditionValue | None = None,
) -> SpeculativeInferenceStatus:
    """The whole status the operator wants (``split`` None: nothing deployed, checks failed)."""
    old = si.status or SpeculativeInferenceStatus()
    generation = si.metadata.generation
    conditions = with_condition(
        old.conditions, ConditionType.BUDGET_FITS, budget_condition(report), generation, now
    )
    spec_state = pools.get(Pool.SPECULATIVE, PoolState(False))
    base_state = pools.get(Pool.BASELINE, PoolState(False))
    if split is None:
        ready = ConditionValue(
            FALSE, "Refused", "the resource fails its checks; nothing is deployed or changed"
        )
    else:
        want = split.total
        have = min(spec_state.ready, split.speculative) + min(base_state.ready, split.baseline)
        if want == 0:
            ready = ConditionValue(TRUE, "ScaledToZero", "spec.replicas is 0")
        elif have >= want:
            ready = ConditionValue(TRUE, "AllReplicasReady", f"{have}/{want} replicas ready")
        else:
            ready = ConditionValue(FALSE, "ReplicasNotReady", f"{have}/{want} replicas ready")
    conditions = with_condition(conditions, ConditionType.READY, ready, generation, now)

    if split is not None and split.speculative > 0 and spec_state.ready > 0:
        active = ConditionValue(
            TRUE, "SpeculativePoolServing", f"{spec_state.ready} speculative replica(s) ready"
        )
    elif mode == ServingMode.BASELINE and si.spec.policy.mode is Mode.BASELINE:
        active = ConditionValue(FALSE, "PinnedBaseline", "spec.policy.mode is Baseline")
    elif mode == ServingMode.BASELINE:
        active = ConditionValue(FALSE, "FellBack", "speculation is off")
    else:
        active = ConditionValue(FALSE, "SpeculativePoolNotReady", "no speculative replica is ready")
    conditions = with_condition(conditions, ConditionType.SPECULATION_ACTIVE, active, generation, now)

    if metrics_condition is not None:
        conditions = with_condition(
            conditions, ConditionType.METRICS_AVAILABLE, metrics_condition, generation, now
        )
    elif condition(old, ConditionType.METRICS_AVAILABLE) is None:
        # Kept as the last evaluation left it; Unknown until the first one.
        not_yet = ConditionValue(UNKNOWN, "NotEvaluated", "no metrics evaluation has run yet")
        conditions = with_condition(conditions, ConditionType.METRICS_AVAILABLE, not_yet, generation, now)

    update: dict[str, Any] = {
        "observed_generation": generation,
        "mode": mode,
        "mode_since": old.mode_since if old.mode == mode else now,
        # What the HPA reads through the scale subresource: serving replicas, never the extra pod
        # of a surge step (it would read as a scale-up the HPA did not ask for).
        "replicas": min(spec_state.replicas + base_state.replicas, si.spec.replicas),
        "selector": selector_string(si.metadata.name),
        "conditions": conditions,
        "budget": budget_status(report),
    }
    if split is not None:
        update["pools"] = PoolsStatus(
            speculative=PoolStatus(replicas=split.speculative, ready_replicas=spec_state.ready),
            baseline=PoolStatus(replicas=split.baseline, ready_replicas=base_state.ready),
        )
    return old.model_copy(update=update)


# --------------------------------------------------------------------------------- policy state


def policy_state_from_status(status: SpeculativeInferenceStatus | Mapping[str, Any] | None) -> PolicyState:
    """The policy's state as stored in status (a new resource starts Speculative, counters at 0)."""
    if status is None or isinstance(status, Mapping):
        status = read_status(status) or SpeculativeInferenceStatus()
    counters = status.counters or Counters()
    ref = status.baseline_reference
    reference = (
        Reference(
            tpot_p50=ref.p50_tpot_seconds,
            tpot_p99=ref.p99_tpot_seconds,
            rate_per_replica=ref.requests_per_replica,
            at=epoch(ref.recorded_at),
        )
        if ref is not None
        else None
    )
    # A decision whose reason this version does not know (written by another version) is history
    # only; the policy never reads it back.
    known = {r.value for r in Reason}
    history = tuple(
        Transition(epoch(d.time), d.from_mode, d.to_mode, Reason(d.reason), d.message)
        for d in status.decisions
        if d.reason in known
    )
    return PolicyState(
        mode=status.mode or ServingMode.SPECULATIVE,
        mode_since=epoch(status.mode_since),
        breaches=counters.breaches,
        recoveries=counters.recoveries,
        lost_probes=counters.lost_probes,
        errors=counters.errors,
        reference=reference,
        saturation_rate=status.saturation_requests_per_replica,
        saturation_at=epoch(status.saturation_recorded_at) if status.saturation_recorded_at else None,
        spec_fingerprint=status.spec_fingerprint,
        history=history,
        **_headroom_state(status.headroom),
        deferred_since=epoch(status.switch_deferred_since) if status.switch_deferred_since else None,
    )


def _headroom_state(h: HeadroomStatus | None) -> dict[str, Any]:
    if h is None:
        return {}
    load = (
        LoadTrend(h.load.requests_per_replica, h.load.slope_per_minute / 60.0, epoch(h.load.recorded_at))
        if h.load is not None
        else None
    )
    overloads = Overloads(
        epoch(h.overload_since) if h.overload_since else None, h.typical_overload_seconds, h.overloads_seen
    )
    return {
        "load": load,
        "speculative_steps": _line(h.speculative_steps),
        "baseline_steps": _line(h.baseline_steps),
        "overloads": overloads,
    }


def _line(s: StepLineStatus | None) -> StepLine | None:
    if s is None:
        return None
    return StepLine(
        s.weight,
        s.mean_load,
        s.mean_step_rate,
        s.load_variance,
        s.covariance,
        epoch(s.updated_at),
        s.mean_acceptance,
        s.step_rate_variance,
    )


def _line_status(line: StepLine | None) -> StepLineStatus | None:
    if line is None:
        return None
    return StepLineStatus(
        weight=round(line.weight, 3),
        mean_load=round(line.mean_x, 5),
        mean_step_rate=round(line.mean_y, 4),
        load_variance=round(line.var_x, 7),
        step_rate_variance=round(line.var_y, 5),
        covariance=round(line.cov_xy, 6),
        mean_acceptance=_r(line.mean_acceptance),
        updated_at=rfc3339(line.at),
    )


def headroom_status(state: PolicyState, headroom: Headroom | None = None) -> HeadroomStatus | None:
    """``status.headroom``: the load trend and the step lines the policy reads back, and the
    crossover and capacities derived from them (``headroom``: for people, never read back)."""
    o = state.overloads
    if (
        state.load is None
        and state.speculative_steps is None
        and state.baseline_steps is None
        and o == Overloads()
    ):
        return None
    load = None
    if state.load is not None:
        load = LoadTrendStatus(
            requests_per_replica=round(state.load.rate, 4),
            slope_per_minute=round(60.0 * state.load.slope, 4),
            recorded_at=rfc3339(state.load.at),
        )
    h = headroom or Headroom()
    return HeadroomStatus(
        load=load,
        speculative_steps=_line_status(state.speculative_steps),
        baseline_steps=_line_status(state.baseline_steps),
        crossover_requests_per_replica=_r(h.crossover, 3),
        speculative_capacity_requests_per_replica=_r(h.speculative_capacity, 3),
        baseline_capacity_requests_per_replica=_r(h.baseline_capacity, 3),
        source=h.source if headroom is not None else None,
        overload_since=rfc3339(o.since) if o.since is not None else None,
        typical_overload_seconds=None if o.typical_seconds is None else round(o.typical_seconds, 1),
        overloads_seen=o.seen,
    )


def policy_status_update(state: PolicyState, headroom: Headroom | None = None) -> dict[str, Any]:
    """The status fields (model field names, typed values) that hold the policy's state
    (``headroom``: the figures derived from it, shown in ``status.headroom``)."""
    reference = None
    if state.reference is not None:
        r = state.reference
        reference = BaselineReference(
            p50_tpot_seconds=round(r.tpot_p50, 6),
            p99_tpot_seconds=round(r.tpot_p99, 6),
            requests_per_replica=round(r.rate_per_replica, 4),
            recorded_at=rfc3339(r.at),
        )
    return {
        "mode": ServingMode(state.mode),
        "mode_since": rfc3339(state.mode_since) if state.mode_since else None,
        "counters": Counters(
            breaches=state.breaches,
            recoveries=state.recoveries,
            errors=state.errors,
            lost_probes=state.lost_probes,
        ),
        "decisions": [
            DecisionRecord(
                time=rfc3339(t.at),
                from_mode=ServingMode(t.from_mode),
                to_mode=ServingMode(t.to_mode),
                reason=t.reason,
                message=t.message,
            )
            for t in state.history
        ],
        "baseline_reference": reference,
        "saturation_requests_per_replica": (
            round(state.saturation_rate, 4) if state.saturation_rate is not None else None
        ),
        "saturation_recorded_at": rfc3339(state.saturation_at) if state.saturation_at else None,
        "spec_fingerprint": state.spec_fingerprint,
        "headroom": headroom_status(state, headroom),
        "switch_deferred_since": rfc3339(state.deferred_since) if state.deferred_since else None,
    }


def policy_status_fields(state: PolicyState) -> dict[str, Any]:
    """The policy's state as the status JSON holds it (camelCase keys)."""
    return dump_status(SpeculativeInferenceStatus().model_copy(update=policy_status_update(state)))


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def observed_metrics(obs: Observation, window_end: str) -> ObservedMetrics:
    """status.observed for an evaluation."""
    spec, base = obs.speculative, obs.baseline
    rate = sum(p.request_rate or 0.0 for p in (spec, base) if p is not None)
    fields: dict[str, Any] = {"window_end": window_end, "request_rate": round(rate, 4)}
    if spec is not None:
        waiting = spec.waiting / spec.replicas if spec.waiting is not None and spec.replicas else None
        fields.update(
            acceptance_rate=_r(spec.acceptance),
            mean_acceptance_length=_r(spec.mean_acceptance_length),
            acceptance_per_position=list(spec.per_position),
            p50_tpot_seconds=_r(spec.tpot_p50, 6),
            p99_tpot_seconds=_r(spec.tpot_p99, 6),
            tail_ratio=_r(spec.tail_ratio, 3),
            p99_ttft_seconds=_r(spec.ttft_p99, 6),
            p99_e2e_seconds=_r(spec.e2e_p99, 6),
            waiting_per_replica=_r(waiting, 3),
            kv_cache_usage=_r(spec.kv_usage, 4),
        )
    if base is not None:
        fields.update(
            baseline_p50_tpot_seconds=_r(base.tpot_p50, 6), baseline_p99_tpot_seconds=_r(base.tpot_p99, 6)
        )
    return ObservedMetrics(**fields)


def observed_fields(obs: Observation, window_end: str) -> dict[str, Any]:
    """status.observed as JSON."""
    return prune_empty(
        observed_metrics(obs, window_end).model_dump(by_alias=True, exclude_none=True, mode="json")
    )


# Status fields that carry the policy's state: any change is written at once.
STATE_FIELDS = (
    "mode", "mode_since", "counters", "decisions", "verdict", "verdict_reason", "switch_deferred_since",
)  # fmt: skip
# Figures that move with every scrape: written when one moved meaningfully or they aged, and then
# only when the operator's figure-write budget allows (``may_write``).
# ``headroom`` is read back by the policy: a deferred write only makes its next trend difference
# span a longer time, and its step lines miss a window.
FIGURE_FIELDS = ("observed", "verdict_message", "baseline_reference", "headroom", "derived_speculation_table")
# A figure moved meaningfully when it changed by more than this fraction of its old value...
FIGURE_RELATIVE_CHANGE = 0.10
# ... and by more than its floor (smaller moves are scrape noise, whatever their relative size:
# 0.02 -> 0.03 requests per second is +50%).  Figures not listed (window_end, recorded_at) are
# times, which move at every evaluation.
FIGURE_FLOORS: Mapping[str, float] = {
    "acceptance_rate": 0.02,
    "mean_acceptance_length": 0.1,
    "acceptance_per_position": 0.02,
    "p50_tpot_seconds": 0.002,
    "p99_tpot_seconds": 0.002,
    "baseline_p50_tpot_seconds": 0.002,
    "baseline_p99_tpot_seconds": 0.002,
    "tail_ratio": 0.05,
    "p99_ttft_seconds": 0.05,
    "p99_e2e_seconds": 0.1,
    "request_rate": 0.1,
    "waiting_per_replica": 0.5,
    "kv_cache_usage": 0.05,
    "requests_per_replica": 0.1,
}


def _moved(name: str, old: Any, new: Any) -> bool:
    if name not in FIGURE_FLOORS:
        return False
    if isinstance(old, list) or isinstance(new, list):
        old_list, new_list = list(old or []), list(new or [])
        return len(old_list) != len(new_list) or any(
            _moved(name, a, b) for a, b in zip(old_list, new_list, strict=True)
        )
    if old is None or new is None:
        return old is not new  # a figure appeared or went away
    change = abs(float(new) - float(old))
    return change > FIGURE_FLOORS[name] and change > FIGURE_RELATIVE_CHANGE * abs(float(old))


def figures_moved(old: SpeculativeInferenceStatus, new: SpeculativeInferenceStatus) -> bool:
    """Did a figure of ``observed`` or ``baselineReference`` change meaningfully (by more than 10%
    of its old value and more than its floor), appear, or go away?"""
    for section in ("observed", "baseline_reference"):
        before, after = getattr(old, section), getattr(new, section)
        if (before is None) != (after is None):
            return True
        if before is None or after is None:
            continue
        a, b = before.model_dump(), after.model_dump()
        if any(_moved(name, a.get(name), b.get(name)) for name in a.keys() | b.keys()):
            return True
    return False


def _always() -> bool:
    return True


def keep_figures_fresh_enough(
    old: SpeculativeInferenceStatus,
    new: SpeculativeInferenceStatus,
    now: float,
    refresh: float,
    may_write: Callable[[], bool] = _always,
) -> SpeculativeInferenceStatus:
    """The status to write after an evaluation, with the old figures kept when fresh ones are not
    worth a write.

    - The policy's state changed (mode, counters, decisions, verdict): everything is written.
    - Otherwise the figures are written when one moved meaningfully (``figures_moved``) or the
      stored ones are ``refresh`` seconds old, and then only if ``may_write()`` (the operator's
      global budget of figure-only writes, so their rate stays flat however many resources there
      are; asked only when a write is due).  Else the old figures stay and, nothing else having
      changed, the evaluation makes no write at all.
    """
    if any(getattr(old, f) != getattr(new, f) for f in STATE_FIELDS):
        return new
    written_at = epoch(old.observed.window_end if old.observed else None)
    due = now - written_at >= refresh or figures_moved(old, new)
    if due and may_write():
        return new
    return new.model_copy(update={f: getattr(old, f) for f in FIGURE_FIELDS if getattr(old, f) is not None})


# ---------------------------------------------------------------------------------- switch cost

# Start to Ready of a vLLM pod, before any switch was measured: a fixed part (container start,
# Python and torch imports, engine set-up), the weights read per GPU, and per further GPU of
# tensor parallelism (NCCL set-up, one compile per rank).  Fitted to vLLM's published cold starts
# (docs/domain.md, "switching": 47 s for a 30B model on one GPU, 97-98 s for a 235B FP8 model on
# four); within about 20% of both, and replaced by measurements after the first switch.
START_FIXED_SECONDS = 15.0
START_SECONDS_PER_GIB_PER_GPU = 0.6
START_SECONDS_PER_EXTRA_GPU = 10.0
# Draining: in-flight requests finish (a chat request's tail), bounded by the grace period.
DRAIN_ESTIMATE_SECONDS = 20.0
# Weight of the newest measurement in the running mean.
SWITCH_COST_SMOOTHING = 0.5


# A hot swap instead: the awake engine sleeps (level 1: its weights to host RAM) and the other
# wakes, each a fixed part plus a time per GiB of weights moved, on a line through vLLM's published
# level-1 wakes (docs/domain.md, "switching": about 2.9 s for 57 GiB, 5.5 s for 219 GiB).
SLEEP_WAKE_FIXED_SECONDS = 2.0
SLEEP_WAKE_SECONDS_PER_GIB = 0.016


def estimated_switch_seconds(si: SpeculativeInference, report: CheckReport) -> float:
    """Drain + start to Ready of one replica (or, with the hot swap, drain + sleep + wake), from
    the model's size (documented defaults)."""
    gpus = max(1, si.spec.resources.gpus_per_replica)
    weights = (report.budget.target_weights_gib or 0.0) + (report.budget.draft_weights_gib or 0.0)
    if si.spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP:
        swap = 2 * (SLEEP_WAKE_FIXED_SECONDS + SLEEP_WAKE_SECONDS_PER_GIB * weights)
        return round(DRAIN_ESTIMATE_SECONDS + swap, 1)
    start = START_FIXED_SECONDS + START_SECONDS_PER_GIB_PER_GPU * weights / gpus
    start += START_SECONDS_PER_EXTRA_GPU * (gpus - 1)
    return round(DRAIN_ESTIMATE_SECONDS + start, 1)


def replicas_moved(from_mode: ServingMode, to_mode: ServingMode, replicas: int, probe: int) -> int:
    """How many replicas a switch between two modes moves between the pools (``probe``: the
    speculative replicas of a probe)."""
    if ServingMode.PROBING not in (from_mode, to_mode):
        return replicas
    other = to_mode if from_mode == ServingMode.PROBING else from_mode
    return probe if other == ServingMode.BASELINE else max(1, replicas - probe)


def switch_cost(si: SpeculativeInference, report: CheckReport, settled: bool, now: str) -> SwitchCostStatus:
    """The switch cost to store: the estimate, and the last switch measured once it settled
    (``settled``: the pools are at the target split with every replica ready)."""
    old = si.status.switch_cost if si.status is not None else None
    estimate = estimated_switch_seconds(si, report)
    cost = (
        old.model_copy(update={"estimated_seconds_per_replica": estimate})
        if old is not None
        else SwitchCostStatus(
            source=SwitchCostSource.ESTIMATE,
            seconds_per_replica=estimate,
            estimated_seconds_per_replica=estimate,
        )
    )
    decisions = si.status.decisions if si.status is not None else []
    last = decisions[-1] if decisions else None
    if last is not None and settled and cost.measured_for != last.time and last.from_mode != last.to_mode:
        seconds = max(0.0, epoch(now) - epoch(last.time))
        probe = split_for_mode(ServingMode.PROBING, si.spec.replicas, si.spec.policy.probe.replicas)
        moved = replicas_moved(last.from_mode, last.to_mode, si.spec.replicas, probe.speculative)
        per_replica = seconds / moved
        mean = cost.measured_seconds_per_replica
        mean = per_replica if mean is None else mean + SWITCH_COST_SMOOTHING * (per_replica - mean)
        surge = si.spec.rollout.max_surge > 0
        cost = cost.model_copy(
            update={
                "measured_seconds_per_replica": round(mean, 1),
                "samples": cost.samples + 1,
                "last_switch_seconds": round(seconds, 1),
                "last_replicas_moved": moved,
                "last_unavailable_replica_seconds": 0.0 if surge else round(seconds, 1),
                "measured_for": last.time,
            }
        )
    if cost.measured_seconds_per_replica is not None:
        return cost.model_copy(
            update={
                "source": SwitchCostSource.MEASURED,
                "seconds_per_replica": cost.measured_seconds_per_replica,
            }
        )
    return cost.model_copy(update={"source": SwitchCostSource.ESTIMATE, "seconds_per_replica": estimate})

"""The reconcile plan (pure): what to apply, in which order, what status to write, which events.

``plan_reconcile`` takes a resource as read from the API server and the live objects it owns, and
returns a ``Plan``; ``plan_evaluation`` does the same for one policy evaluation.  The operator's
controller (``specops.controller.reconciler``) reads the world, calls these and executes the plan;
the simulator (``specops_testkit.sim``) executes the very same plans against its simulated pools,
status round trip included.  Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from specops.api.v1alpha1 import (
    SpeculativeInference,
    SpeculativeInferenceSpec,
    SpeculativeInferenceStatus,
    SwitchCostSource,
    TokensPerBatchSizeMode,
    pinned_mode,
)
from specops.checks.validation import CheckReport, ResourceError, check_resource, load_resource
from specops.plan.drift import needs_apply
from specops.plan.rollout import (
    PoolState,
    applied_split,
    current_mode,
    growing_pool,
    pool_state,
    rollout_step,
    split_for_mode,
)
from specops.plan.status import (
    FALSE,
    ConditionType,
    ConditionValue,
    condition,
    desired_status,
    dump_status,
    estimated_switch_seconds,
    keep_figures_fresh_enough,
    merge_patch,
    observed_metrics,
    policy_state_from_status,
    policy_status_update,
    read_status,
    rfc3339,
    switch_cost,
    with_condition,
)
from specops.policy.decide import Observation, PolicyDecision, decide
from specops.policy.headroom import service_facts
from specops.policy.rules import window_headroom
from specops.policy.state import ServiceFacts, policy_fingerprint
from specops.render.manifests import (
    OwnerRef,
    Pool,
    PoolSplit,
    pool_name,
    render_all,
    render_pod_monitor,
    speculation_rows_in,
)
from specops.vllm.speculation_table import derive_for_resource, status_table, table_to_render

FIELD_MANAGER = "specops"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    DEPLOYED = "Deployed"
    SPEC_APPLIED = "SpecApplied"
    POOLS_RESIZED = "PoolsResized"
    DRIFT_CORRECTED = "DriftCorrected"
    SPEC_REJECTED = "SpecRejected"
    BUDGET_WARNING = "BudgetWarning"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    SWITCH_HELD = "SwitchHeld"
    SWITCH_DEFERRED = "SwitchDeferred"


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    type: EventType
    reason: str  # an EventReason, or the policy's transition reason
    message: str


@dataclass(frozen=True, slots=True)
class Apply:
    """One server-side apply, and the event to post once it succeeded."""

    manifest: dict[str, Any]
    event: PlannedEvent | None = None

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class Observed:
    """The live objects a resource owns, as read from the API server (None: missing)."""

    deployments: Mapping[Pool, dict[str, Any] | None]
    service: dict[str, Any] | None = None
    pod_monitor: dict[str, Any] | None = None
    pod_monitor_served: bool = False

    @property
    def pools(self) -> dict[Pool, PoolState]:
        return {pool: pool_state(self.deployments.get(pool)) for pool in Pool}


@dataclass(frozen=True, slots=True)
class Plan:
    """What one reconcile does, in order: the applies (each with its event), the events, then the
    status patch (a JSON merge patch; empty: no write)."""

    applies: tuple[Apply, ...] = ()
    events: tuple[PlannedEvent, ...] = ()
    status: dict[str, Any] = field(default_factory=dict)
    status_patch: dict[str, Any] = field(default_factory=dict)
    split: PoolSplit | None = None
    refused: bool = False


def _strip_status(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "status"}


def _status_plan(stored: Mapping[str, Any] | None, want: SpeculativeInferenceStatus, **kwargs: Any) -> Plan:
    status = dump_status(want)
    return Plan(status=status, status_patch=merge_patch(stored, status), **kwargs)


def _changed_reason(cond: ConditionType, stored: SpeculativeInferenceStatus | None) -> str | None:
    c = condition(stored, cond)
    return c.reason if c is not None else None


def plan_reconcile(
    body: Mapping[str, Any],
    observed: Observed,
    now: str,
    *,
    status: SpeculativeInferenceStatus | None = None,
    metrics_condition: ConditionValue | None = None,
) -> Plan:
    """Bring one resource's objects and status in line.

    ``body`` is the resource as stored (its status included); ``status`` overrides that status as
    the base of the new one (an evaluation's policy fields).  A resource that fails its checks
    gets nothing created or changed (what runs stays); its status and one event say why.
    """
    stored = body.get("status") or {}
    stored_model = read_status(stored)
    meta = body["metadata"]
    generation = meta.get("generation")
    try:
        si = load_resource(_strip_status(body))
    except ResourceError as exc:
        return _plan_unreadable(stored, stored_model, exc, generation, now)
    base = status if status is not None else stored_model
    si = si.model_copy(update={"status": base})
    report = check_resource(si)
    mode = current_mode(si)
    pools = observed.pools
    if not report.ok:
        want = desired_status(si, report, mode, None, pools, now, metrics_condition)
        rejected: tuple[PlannedEvent, ...] = ()
        if _changed_reason(ConditionType.BUDGET_FITS, stored_model) != report.errors[0].code:
            message = "; ".join(str(e) for e in report.errors)
            rejected = (PlannedEvent(EventType.WARNING, EventReason.SPEC_REJECTED, message),)
        return _status_plan(stored, want, events=rejected, refused=True)

    split, growing = _next_split(si, observed, stored_model)
    owner = OwnerRef(name=meta["name"], uid=meta["uid"])
    # The Deployments first (they share one pod template: a rejected one creates nothing), the
    # shrinking pool's before the growing one's: stopped in between, the pools still fit
    # spec.replicas.  Then the Service, then the PodMonitor.
    order = {"Deployment": 0, "Service": 1}
    growing_name = pool_name(meta["name"], growing)
    manifests = sorted(
        render_all(si, split, owner, derived=_rows_to_render(si, observed)),
        key=lambda m: (order.get(m["kind"], 2), m["metadata"]["name"] == growing_name),
    )
    if observed.pod_monitor_served:
        manifests.append(render_pod_monitor(si, owner))

    first_deployment = not stored.get("observedGeneration")
    generation_changed = stored.get("observedGeneration") != generation
    recorded = stored_model.pools if stored_model is not None else None
    split_changed = recorded is not None and (
        recorded.speculative.replicas != split.speculative or recorded.baseline.replicas != split.baseline
    )
    applies = []
    for manifest in manifests:
        live = _live(observed, meta["name"], manifest)
        if not needs_apply(manifest, live, FIELD_MANAGER):
            continue
        kind, obj = manifest["kind"], manifest["metadata"]["name"]
        event: PlannedEvent | None
        if live is None and first_deployment:
            event = None  # first deployment: one Deployed event below
        elif live is None:
            event = PlannedEvent(
                EventType.WARNING,
                EventReason.DRIFT_CORRECTED,
                f"recreated {kind} {obj}, deleted outside SpecOps",
            )
        elif generation_changed:
            event = PlannedEvent(
                EventType.NORMAL,
                EventReason.SPEC_APPLIED,
                f"updated {kind} {obj} for generation {generation}",
            )
        elif split_changed:
            event = PlannedEvent(
                EventType.NORMAL, EventReason.POOLS_RESIZED, f"{kind} {obj} resized for mode {mode}"
            )
        else:
            event = PlannedEvent(
                EventType.WARNING,
                EventReason.DRIFT_CORRECTED,
                f"restored {kind} {obj}, changed outside SpecOps",
            )
        applies.append(Apply(manifest, event))
    events: list[PlannedEvent] = []
    if applies and first_deployment:
        created = ", ".join(f"{a.kind}/{a.name}" for a in applies)
        what = f"created {created} (speculative={split.speculative}, baseline={split.baseline})"
        events.append(PlannedEvent(EventType.NORMAL, EventReason.DEPLOYED, what))
    if report.warnings and (generation_changed or not stored):
        message = "; ".join(str(w) for w in report.warnings)
        events.append(PlannedEvent(EventType.WARNING, EventReason.BUDGET_WARNING, message))
    # Readiness read before the applies is as fresh as after them (an apply changes no pod).
    want = desired_status(si, report, mode, split, pools, now, metrics_condition)
    settled = split == applied_split(pools) and all(
        pools[p].ready >= n
        for p, n in ((Pool.SPECULATIVE, split.speculative), (Pool.BASELINE, split.baseline))
    )
    want = want.model_copy(update={"switch_cost": switch_cost(si, report, settled, now)})
    return _status_plan(stored, want, applies=tuple(applies), events=tuple(events), split=split)


def plan_manifest_rejected(
    body: Mapping[str, Any],
    observed: Observed,
    now: str,
    rejected: Apply,
    message: str,
    *,
    status: SpeculativeInferenceStatus | None = None,
    metrics_condition: ConditionValue | None = None,
) -> Plan:
    """The API server refused an apply (400/422: a value the checks cannot judge, or a cluster's
    admission policy).  Status and one event say so, instead of an error at every resync; the
    Deployments go first and share one pod template, so nothing has been created."""
    stored = body.get("status") or {}
    stored_model = read_status(stored)
    si = load_resource(_strip_status(body))
    si = si.model_copy(update={"status": status if status is not None else stored_model})
    report = check_resource(si)
    ready = ConditionValue(FALSE, "ManifestRejected", f"{rejected.kind} {rejected.name}: {message}")
    want = desired_status(si, report, current_mode(si), None, observed.pools, now, metrics_condition)
    want = want.model_copy(
        update={
            "conditions": with_condition(
                want.conditions, ConditionType.READY, ready, body["metadata"].get("generation"), now
            )
        }
    )
    old_ready = condition(stored_model, ConditionType.READY)
    events: tuple[PlannedEvent, ...] = ()
    if old_ready is None or old_ready.message != ready.message:
        events = (PlannedEvent(EventType.WARNING, EventReason.SPEC_REJECTED, ready.message),)
    return _status_plan(stored, want, events=events, refused=True)


def _plan_unreadable(
    stored: Mapping[str, Any],
    stored_model: SpeculativeInferenceStatus | None,
    exc: ResourceError,
    generation: int | None,
    now: str,
) -> Plan:
    """The admission webhook normally stops these; without it the status still says why."""
    message = "; ".join(str(f) for f in exc.findings)
    old = stored_model or SpeculativeInferenceStatus()
    value = ConditionValue(FALSE, "InvalidSpec", message)
    want = old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": with_condition(old.conditions, ConditionType.BUDGET_FITS, value, generation, now),
        }
    )
    events: tuple[PlannedEvent, ...] = ()
    if _changed_reason(ConditionType.BUDGET_FITS, stored_model) != "InvalidSpec":
        events = (PlannedEvent(EventType.WARNING, EventReason.SPEC_REJECTED, message),)
    return _status_plan(stored, want, events=events, refused=True)


def _next_split(
    si: SpeculativeInference, observed: Observed, stored: SpeculativeInferenceStatus | None
) -> tuple[PoolSplit, Pool]:
    """The split to apply now, and the pool a switch grows."""
    target = split_for_mode(current_mode(si), si.spec.replicas, si.spec.policy.probe.replicas)
    pools = observed.pools
    applied = applied_split(pools)
    growing = growing_pool(target, applied)
    recorded = stored.pools if stored is not None else None
    recorded_total = (
        recorded.speculative.replicas + recorded.baseline.replicas if recorded is not None else None
    )
    split = rollout_step(target, applied, pools[growing].ready, recorded_total, si.spec.rollout.max_surge)
    return split, growing


def _live(observed: Observed, name: str, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    kind, obj = manifest["kind"], manifest["metadata"]["name"]
    if kind == "Deployment":
        return next((d for pool, d in observed.deployments.items() if pool_name(name, pool) == obj), None)
    if kind == "Service":
        return observed.service
    if kind == "PodMonitor":
        return observed.pod_monitor
    raise ValueError(f"unexpected kind {kind}")


# ----------------------------------------------------------------------------------- evaluation


def switch_takes_service_down(spec: SpeculativeInferenceSpec) -> bool:
    """A mode switch of a single replica without a surge pod stops the only serving pod for as
    long as a model load takes: the policy advises, but does not switch on its own."""
    return spec.replicas == 1 and spec.rollout.max_surge == 0


def _service_facts(si: SpeculativeInference, status: SpeculativeInferenceStatus) -> ServiceFacts:
    """What the policy needs of the service: replicas, rollout, k, and the switch cost as status
    holds it (measured once a switch settled, else estimated from the model's size)."""
    cost = status.switch_cost
    if cost is not None:
        seconds, measured = cost.seconds_per_replica, cost.source is SwitchCostSource.MEASURED
    else:
        seconds, measured = estimated_switch_seconds(si, check_resource(si)), False
    return service_facts(si.spec, seconds, measured)


@dataclass(frozen=True, slots=True)
class EvaluationPlan:
    """One policy evaluation: the decision, the switch to store before any pool moves (a status
    patch and its event), then the status every reconcile of this evaluation starts from."""

    decision: PolicyDecision
    switch_patch: dict[str, Any]
    switch_events: tuple[PlannedEvent, ...]
    status: SpeculativeInferenceStatus
    metrics_condition: ConditionValue
    events: tuple[PlannedEvent, ...]


def plan_evaluation(
    body: Mapping[str, Any],
    obs: Observation,
    now: float,
    refresh_seconds: float,
    may_write_figures: Callable[[], bool] | None = None,
) -> EvaluationPlan | None:
    """Decide with the policy, and say what to store.  None: nothing to evaluate (a resource that
    cannot be read or fails its checks; its reconcile reports why).  ``may_write_figures``: asked
    when only fresh figures would be written (the operator's rate limit; None: always)."""
    try:
        si = load_resource(_strip_status(body))
    except ResourceError:
        return None
    if not check_resource(si).ok:
        return None
    stored = body.get("status") or {}
    old = read_status(stored) or SpeculativeInferenceStatus()
    state = policy_state_from_status(old)
    facts = _service_facts(si, old)
    decision = decide(si.spec.policy, state, obs, now, fingerprint=policy_fingerprint(si.spec), facts=facts)
    events: list[PlannedEvent] = []
    if decision.deferred is not None:
        d = decision.deferred
        events.append(
            PlannedEvent(
                EventType.WARNING,
                EventReason.SWITCH_DEFERRED,
                f"would switch {d.from_mode} -> {d.to_mode} ({d.reason}); {d.message}",
            )
        )
    if (
        decision.transition is not None
        and pinned_mode(si.spec.policy.mode) is None
        and switch_takes_service_down(si.spec)
    ):
        t = decision.transition
        message = (
            f"would switch {t.from_mode} -> {t.to_mode} ({t.reason}: {t.message}), but spec.replicas is 1 "
            "and spec.rollout.maxSurge is 0: the switch would stop the only serving pod. Set "
            "spec.rollout.maxSurge: 1 to let SpecOps switch, or pin spec.policy.mode"
        )
        decision = replace(
            decision,
            transition=None,
            state=replace(state, breaches=0, recoveries=0, errors=decision.state.errors),
        )
        events.append(PlannedEvent(EventType.WARNING, EventReason.SWITCH_HELD, message))
    a = decision.assessment
    headroom = window_headroom(si.spec.policy, decision.state, obs, facts, now)
    new = old.model_copy(
        update={
            **policy_status_update(decision.state, headroom),
            "observed": observed_metrics(obs, rfc3339(now)),
            "verdict": a.verdict.value,
            "verdict_reason": a.reason,
            "verdict_message": a.message,
            "derived_speculation_table": _derived_table_status(si, obs, now),
        }
    )
    new = keep_figures_fresh_enough(old, new, now, refresh_seconds, may_write_figures or (lambda: True))
    mc = decision.metrics_available
    metrics_condition = ConditionValue(mc.status, mc.reason, mc.message)
    switch_patch: dict[str, Any] = {}
    switch_events: tuple[PlannedEvent, ...] = ()
    if decision.transition is not None:
        switch_patch = merge_patch(stored, {**stored, **_policy_keys(new)})
        t = decision.transition
        kind = EventType.WARNING if t.is_fallback else EventType.NORMAL
        switch_events = (PlannedEvent(kind, t.reason, f"{t.from_mode} -> {t.to_mode}: {t.message}"),)
    old_metrics = condition(old, ConditionType.METRICS_AVAILABLE)
    if metrics_condition.status == FALSE and (old_metrics is None or old_metrics.status != FALSE):
        events.append(
            PlannedEvent(EventType.WARNING, EventReason.METRICS_UNAVAILABLE, metrics_condition.message)
        )
    return EvaluationPlan(decision, switch_patch, switch_events, new, metrics_condition, tuple(events))


_POLICY_KEYS = (
    "mode", "modeSince", "counters", "decisions", "baselineReference", "saturationRequestsPerReplica",
    "saturationRecordedAt", "specFingerprint", "headroom", "switchDeferredSince",
    "observed", "verdict", "verdictReason", "verdictMessage", "derivedSpeculationTable",
)  # fmt: skip


def _derived_table_status(si: SpeculativeInference, obs: Observation, now: float) -> Any:
    """status.derivedSpeculationTable with ``tokensPerBatchSizeMode: Auto``: the table the live
    pool's per-position acceptance gives (the catalog's prior until it has one)."""
    if si.spec.speculation.tokens_per_batch_size_mode is not TokensPerBatchSizeMode.AUTO:
        return None
    per_position = obs.speculative.per_position if obs.speculative is not None else ()
    return status_table(si.spec, per_position, rfc3339(now))


def _rows_to_render(si: SpeculativeInference, observed: Observed) -> list[list[int]] | None:
    """With ``tokensPerBatchSizeMode: Auto``, the table the speculative pool runs: the rows the
    live Deployment carries while any speculative pod runs (a new table changes the pod template,
    a restart of its own), the table derived from the latest acceptance when the pool starts from
    zero anyway (a fallback's end, a probe, a re-enable) and it changed materially."""
    if si.spec.speculation.tokens_per_batch_size_mode is not TokensPerBatchSizeMode.AUTO:
        return None
    derived = derive_for_resource(si)
    if derived is None:
        return None
    live = observed.deployments.get(Pool.SPECULATIVE)
    containers = ((live or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or []
    args = next((c.get("args") or [] for c in containers if isinstance(c, dict)), [])
    running = speculation_rows_in([str(a) for a in args]) if live is not None else None
    pods = observed.pools[Pool.SPECULATIVE].desired or 0
    return table_to_render(running, derived[0], pods)


def _policy_keys(status: SpeculativeInferenceStatus) -> dict[str, Any]:
    """The evaluation's own status keys (what a switch stores before any pool moves)."""
    dumped = dump_status(status)
    return {k: dumped[k] for k in _POLICY_KEYS if k in dumped}


def plan_status_after_switch(
    body: Mapping[str, Any], plan: EvaluationPlan, resource_version: str | None
) -> dict[str, Any]:
    """The resource as stored after the switch patch (what the reconcile that follows reads)."""
    meta = {**body["metadata"], "resourceVersion": resource_version}
    stored = body.get("status") or {}
    return {**body, "metadata": meta, "status": {**stored, **_policy_keys(plan.status)}}


__all__ = [
    "FIELD_MANAGER",
    "Apply",
    "CheckReport",
    "EvaluationPlan",
    "EventReason",
    "EventType",
    "Observed",
    "Plan",
    "PlannedEvent",
    "plan_evaluation",
    "plan_manifest_rejected",
    "plan_reconcile",
    "plan_status_after_switch",
    "switch_takes_service_down",
]

"""The reconcile plan of the HotSwap rollout strategy (pure).

With ``spec.rollout.strategy: HotSwap`` the operator runs no pools: it applies the hot-swap objects
(``specops.render.hotswap``), keeps the Service's EndpointSlices on the awake engines, and moves
replicas between the modes one swap at a time.  ``plan_hot_swap_reconcile`` says what to do; the
controller (``specops.controller.hotswap``) executes it: it creates the admin Secret when missing,
asks the pods' admin ports, and runs the swap.

Which engine of a pod is awake is read from the pod's ``specops.dev/awake-engine`` annotation, which
the operator writes after each confirmed swap.  A pod without it (new, or ``swapping``: an operator
stopped mid-swap) is probed through ``GET /is_sleeping`` on both engines before planning
(``needs_probe``); a pod with both engines asleep is woken on the engine the target needs, one with
both awake has the other put to sleep (``Repair``).  A pod whose swap failed carries
``specops.dev/hot-swap-fallback``: it keeps serving on the engine that works and is restarted (the
Restart strategy for that replica: the Deployment starts a new pod, whose launcher brings both
engines up afresh).  docs/operator.md, "Hot swap".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from specops.api.v1alpha1 import SpeculativeInference, SpeculativeInferenceStatus
from specops.checks.validation import ResourceError, check_resource, load_resource
from specops.plan.drift import needs_apply
from specops.plan.hotswap import ReplicaEngine, Swap, awake_split, plan_swap
from specops.plan.reconcile import (
    FIELD_MANAGER,
    Apply,
    EventReason,
    EventType,
    Observed,
    Plan,
    PlannedEvent,
    plan_reconcile,
)
from specops.plan.rollout import PoolState, current_mode, split_for_mode
from specops.plan.status import (
    FALSE,
    TRUE,
    ConditionType,
    ConditionValue,
    desired_status,
    dump_status,
    merge_patch,
    read_status,
    switch_cost,
    with_condition,
)
from specops.render.hotswap import (
    ENDPOINT_SLICE_V1,
    SwapPod,
    admin_secret_name,
    render_hot_swap_all,
    swap_labels,
)
from specops.render.manifests import OwnerRef, Pool, PoolSplit

AWAKE_ANNOTATION = "specops.dev/awake-engine"
SWAPPING = "swapping"  # written before an engine is put to sleep: unknown until probed
FALLBACK_ANNOTATION = "specops.dev/hot-swap-fallback"
HOT_SWAP_CONDITION = ConditionType.HOT_SWAP_READY
HOT_SWAP_FAILED = "HotSwapFailed"


@dataclass(frozen=True, slots=True)
class SwapPodView:
    """One pod of ``<name>-swap`` as read from the API server, and probed when needed.

    ``annotated``: the awake-engine annotation as written (None: none); ``asleep``: per engine,
    GET /is_sleeping's answer (None: not probed, or the probe failed); ``fallback``: why its
    last swap failed (the pod is to be restarted)."""

    name: str
    ip: str | None
    ready: bool
    node_name: str | None = None
    annotated: str | None = None
    asleep: Mapping[Pool, bool] | None = None
    fallback: str | None = None

    @property
    def awake(self) -> Pool | None:
        """The engine that serves: the annotation's, else the probe's (exactly one awake)."""
        if self.annotated in (Pool.SPECULATIVE.value, Pool.BASELINE.value):
            return Pool(self.annotated)
        if self.asleep is not None and len(self.asleep) == len(Pool):
            awake = [p for p in Pool if not self.asleep[p]]
            if len(awake) == 1:
                return awake[0]
        return None


def pod_view(pod: Mapping[str, Any]) -> SwapPodView:
    """A pod as the plan sees it (its IP, readiness, node and SpecOps' annotations)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return SwapPodView(
        name=str(meta["name"]),
        ip=status.get("podIP"),
        ready=ready,
        node_name=(pod.get("spec") or {}).get("nodeName"),
        annotated=annotations.get(AWAKE_ANNOTATION),
        fallback=annotations.get(FALLBACK_ANNOTATION),
    )


def needs_probe(view: SwapPodView) -> bool:
    """Ask the pod's engines whether they sleep: its annotation does not say which one is awake
    (a new pod, or an operator stopped mid-swap).  A pod without an address cannot be asked."""
    return view.ip is not None and view.annotated not in (Pool.SPECULATIVE.value, Pool.BASELINE.value)


@dataclass(frozen=True, slots=True)
class Repair:
    """A pod whose engines are in no servable state: ``sleep`` (if any) goes to sleep first, then
    ``wake`` is woken (both asleep: an operator or a swap stopped between the two)."""

    pod: str
    wake: Pool
    sleep: Pool | None = None


@dataclass(frozen=True, slots=True)
class HotSwapObserved:
    """What the hot-swap objects look like now: the live objects by (kind, name), whether the admin
    Secret exists, and the pods of ``<name>-swap`` (probed where ``needs_probe``)."""

    live: Mapping[tuple[str, str], dict[str, Any] | None]
    secret_exists: bool
    pods: Sequence[SwapPodView] = ()
    endpoint_slice_api_version: str = ENDPOINT_SLICE_V1  # the one the cluster serves


@dataclass(frozen=True, slots=True)
class HotSwapPlan:
    """One hot-swap reconcile, executed in this order: create the admin Secret if ``secret`` names
    one; ``plan.applies``; ``annotate`` (pods whose probe told which engine is awake); at most
    one of ``restart`` (delete a fallback pod), ``repair`` or ``swap``; ``plan``'s events and
    status.  ``si``/``owner``: what the executor renders EndpointSlices with mid-swap (None: the
    resource was refused)."""

    plan: Plan
    si: SpeculativeInference | None = None
    owner: OwnerRef | None = None
    target: PoolSplit | None = None
    secret: str | None = None
    pods: tuple[SwapPodView, ...] = ()
    annotate: tuple[tuple[str, Pool], ...] = ()
    restart: str | None = None
    repair: Repair | None = None
    swap: Swap | None = None
    notes: tuple[str, ...] = field(default=())
    endpoint_slice_api_version: str = ENDPOINT_SLICE_V1


def is_hot_swap(body: Mapping[str, Any]) -> bool:
    """Does the resource, as stored, ask for the HotSwap strategy?  (A resource that cannot be read
    is not: the Restart/Surge path reports why.)"""
    rollout = (body.get("spec") or {}).get("rollout") or {}
    return isinstance(rollout, Mapping) and rollout.get("strategy") == "HotSwap"


def swap_pod_labels(name: str) -> dict[str, str]:
    return swap_labels(name)


def _changed(manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Apply when missing or drifted: metadata/spec as ``needs_apply`` judges them, and the
    top-level fields of kinds without a spec (a ConfigMap's data, an EndpointSlice's endpoints)."""
    if needs_apply(dict(manifest), dict(live) if live is not None else None, FIELD_MANAGER):
        return True
    assert live is not None
    skip = ("apiVersion", "kind", "metadata", "spec", "status")
    return any(_or_none(live.get(k)) != _or_none(v) for k, v in manifest.items() if k not in skip)


def _or_none(value: Any) -> Any:
    """An empty list or map as absent: the API server sends an EndpointSlice applied with
    ``"endpoints": []`` back with ``"endpoints": null``."""
    return None if value == [] or value == {} else value


def _repair(view: SwapPodView, target: PoolSplit, now_split: PoolSplit) -> Repair | None:
    if view.asleep is None or len(view.asleep) != len(Pool) or view.awake is not None:
        return None
    # The engine the target needs more of: speculative while it is short of its target.
    wanted = Pool.SPECULATIVE if now_split.speculative < target.speculative else Pool.BASELINE
    other = Pool.BASELINE if wanted is Pool.SPECULATIVE else Pool.SPECULATIVE
    both_awake = not any(view.asleep.values())
    return Repair(view.name, wake=wanted, sleep=other if both_awake else None)


def plan_hot_swap_reconcile(
    body: Mapping[str, Any],
    observed: HotSwapObserved,
    now: str,
    *,
    status: SpeculativeInferenceStatus | None = None,
    metrics_condition: ConditionValue | None = None,
) -> HotSwapPlan:
    """Bring a HotSwap resource's objects, routing and status in line, and pick the next step.

    A resource that cannot be read or fails its checks is reported as ``plan_reconcile`` reports
    it (nothing created or changed)."""
    stored = body.get("status") or {}
    stored_model = read_status(stored)
    meta = body["metadata"]
    try:
        si = load_resource({k: v for k, v in body.items() if k != "status"})
    except ResourceError:
        si = None
    report = check_resource(si) if si is not None else None
    if si is None or report is None or not report.ok:
        refused = plan_reconcile(
            body, Observed(deployments={}), now, status=status, metrics_condition=metrics_condition
        )
        return HotSwapPlan(plan=refused)
    base = status if status is not None else stored_model
    si = si.model_copy(update={"status": base})
    mode = current_mode(si)
    target = split_for_mode(mode, si.spec.replicas, si.spec.policy.probe.replicas)
    owner = OwnerRef(name=meta["name"], uid=meta["uid"])
    pods = tuple(sorted(observed.pods, key=lambda p: p.name))

    routed = [SwapPod(p.name, p.ip, p.awake, p.ready, p.node_name) for p in pods]
    slices_version = observed.endpoint_slice_api_version
    manifests = render_hot_swap_all(si, owner, routed, endpoint_slice_api_version=slices_version)
    order = {"ConfigMap": 0, "NetworkPolicy": 1, "Deployment": 2, "Service": 3, "EndpointSlice": 4}
    manifests.sort(key=lambda m: order.get(m["kind"], 5))
    first = not stored.get("observedGeneration")
    generation = meta.get("generation")
    generation_changed = stored.get("observedGeneration") != generation
    applies: list[Apply] = []
    for manifest in manifests:
        key = (manifest["kind"], manifest["metadata"]["name"])
        live = observed.live.get(key)
        if not _changed(manifest, live):
            continue
        event: PlannedEvent | None = None
        if live is None and not first:
            event = PlannedEvent(EventType.WARNING, EventReason.DRIFT_CORRECTED,
                                 f"recreated {key[0]} {key[1]}, deleted outside SpecOps")  # fmt: skip
        elif live is not None and generation_changed and manifest["kind"] != "EndpointSlice":
            event = PlannedEvent(EventType.NORMAL, EventReason.SPEC_APPLIED,
                                 f"updated {key[0]} {key[1]} for generation {generation}")  # fmt: skip
        applies.append(Apply(manifest, event))
    events: list[PlannedEvent] = []
    if first and applies:
        created = ", ".join(f"{a.kind}/{a.name}" for a in applies if a.kind != "EndpointSlice")
        events.append(PlannedEvent(EventType.NORMAL, EventReason.DEPLOYED, f"created {created} (hot swap)"))

    annotate = tuple(
        (p.name, awake) for p in pods if (awake := p.awake) is not None and p.annotated != awake.value
    )
    now_split = awake_split([ReplicaEngine(p.name, p.awake, p.ready) for p in pods])
    restart = next((p.name for p in pods if p.fallback is not None), None)
    repair = None if restart else next((r for p in pods if (r := _repair(p, target, now_split))), None)
    swap = None
    if restart is None and repair is None:
        # A pod still starting (not ready, engines not answering) holds no swap of the others; one
        # the operator left mid-swap (``swapping``) does, until probed.
        counted = [p for p in pods if p.awake is not None or p.ready or p.annotated == SWAPPING]
        swap = plan_swap(target, [ReplicaEngine(p.name, p.awake, p.ready) for p in counted])

    ready = {pool: sum(p.awake is pool and p.ready for p in pods) for pool in Pool}
    pool_states = {
        pool: PoolState(exists=True, replicas=n, ready=ready[pool], updated=n, desired=n)
        for pool, n in ((Pool.SPECULATIVE, now_split.speculative), (Pool.BASELINE, now_split.baseline))
    }
    want = desired_status(si, report, mode, now_split, pool_states, now, metrics_condition)
    # The switch cost, measured as with the other strategies: from the decision until every replica
    # serves from the engine the mode asks for.
    settled = now_split == target and sum(p.ready and p.awake is not None for p in pods) >= si.spec.replicas
    want = want.model_copy(update={"switch_cost": switch_cost(si, report, settled, now)})
    have, total = sum(ready.values()), si.spec.replicas
    if total == 0:
        ready_value = ConditionValue(TRUE, "ScaledToZero", "spec.replicas is 0")
    elif have >= total:
        ready_value = ConditionValue(TRUE, "AllReplicasReady", f"{have}/{total} replicas serving")
    else:
        ready_value = ConditionValue(FALSE, "ReplicasNotReady", f"{have}/{total} replicas serving")
    conditions = with_condition(want.conditions, ConditionType.READY, ready_value, generation, now)
    failed = next((p for p in pods if p.fallback is not None), None)
    if failed is not None:
        swap_value = ConditionValue(FALSE, HOT_SWAP_FAILED, f"pod {failed.name}: {failed.fallback}; "
                                    "it is restarted (Restart strategy for that replica)")  # fmt: skip
    elif now_split == target:
        swap_value = ConditionValue(
            TRUE, "AtTarget", f"speculative={target.speculative}, baseline={target.baseline} awake"
        )
    else:
        swap_value = ConditionValue(
            TRUE,
            "Swapping",
            f"awake speculative={now_split.speculative}, baseline={now_split.baseline}; target "
            f"speculative={target.speculative}, baseline={target.baseline}",
        )
    conditions = with_condition(conditions, ConditionType.HOT_SWAP_READY, swap_value, generation, now)
    want = want.model_copy(update={"conditions": conditions})
    dumped = dump_status(want)
    plan = Plan(
        applies=tuple(applies),
        events=tuple(events),
        status=dumped,
        status_patch=merge_patch(stored, dumped),
        split=now_split,
    )
    return HotSwapPlan(
        plan=plan,
        si=si,
        owner=owner,
        target=target,
        secret=None if observed.secret_exists else admin_secret_name(meta["name"]),
        pods=pods,
        annotate=annotate,
        restart=restart,
        repair=repair,
        swap=swap,
        endpoint_slice_api_version=slices_version,
    )


__all__ = [
    "AWAKE_ANNOTATION",
    "FALLBACK_ANNOTATION",
    "HOT_SWAP_CONDITION",
    "HOT_SWAP_FAILED",
    "SWAPPING",
    "HotSwapObserved",
    "HotSwapPlan",
    "Repair",
    "SwapPodView",
    "is_hot_swap",
    "needs_probe",
    "plan_hot_swap_reconcile",
    "pod_view",
    "swap_pod_labels",
]

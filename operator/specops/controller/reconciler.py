"""One reconcile of one resource: read the world, ask the pure plan, execute it.

Every trigger (create, update, resume, the periodic timer, an event on an owned Deployment) ends
here, so the outcome never depends on which handler ran.  Everything is read through ``KubeApi``
(in the operator, ``controller.cache.CachedKube``: from watches, never older than the operator's own
last write, the triggering event or a 409's retry) and the mode lives in status, so a restarted
operator carries on where it stopped.  What to do is decided by ``specops.plan.reconcile`` (pure);
this module only reads and writes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import SpeculativeInferenceStatus
from specops.controller import metrics
from specops.controller.hotswap import HotSwapExecutor
from specops.controller.kube import KubeApi, now_rfc3339
from specops.plan.hotswap_reconcile import is_hot_swap
from specops.plan.reconcile import (
    EventType,
    Observed,
    Plan,
    PlannedEvent,
    plan_evaluation,
    plan_manifest_rejected,
    plan_reconcile,
    plan_status_after_switch,
)
from specops.plan.status import ConditionValue
from specops.policy.decide import Observation, PolicyDecision
from specops.render.manifests import Pool, pool_name

log = logging.getLogger("specops.reconciler")
T = TypeVar("T")
# Fresh reads after a 409 before a reconcile gives up (the next trigger or resync tries again).
CONFLICT_ATTEMPTS = 5


@dataclass
class Outcome:
    """What a reconcile did (for logs, metrics and tests)."""

    applied: list[str] = field(default_factory=list)
    status_patched: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    refused: bool = False


class Reconciler:
    def __init__(
        self,
        kube: KubeApi,
        clock: Callable[[], str] = now_rfc3339,
        status_refresh_seconds: float = 60.0,
        figure_writes: Callable[[], bool] | None = None,
        hot_swap: HotSwapExecutor | None = None,
    ) -> None:
        """``figure_writes``: the budget of figure-only status writes (asked only when one is due;
        None: unlimited).  ``hot_swap``: executes the HotSwap strategy's plans (default: over HTTP
        to the pods' admin ports)."""
        self.kube = kube
        self.hot_swap = hot_swap or HotSwapExecutor(kube)
        self.clock = clock
        self.status_refresh_seconds = status_refresh_seconds
        self.figure_writes = figure_writes
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._attempts = threading.local()  # events posted by earlier attempts of this reconcile

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def _on_fresh_read(self, namespace: str, name: str, step: Callable[[dict[str, Any]], T]) -> T | None:
        """``step`` on the resource as read now; None when it no longer exists.

        Status is patched only onto the version it was computed from, so a concurrent writer's
        update (another operator instance, a person, the scale subresource) is never overwritten:
        the patch fails with 409 and ``step`` runs again on a fresh read.
        """
        self._attempts.posted = set()
        try:
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                body = self.kube.get_resource(namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return None
                try:
                    return step(body)
                except ApiException as exc:
                    if exc.status != 409 or attempt == CONFLICT_ATTEMPTS:
                        raise
                    log.info("%s/%s changed while being reconciled (%s); again on a fresh read",
                             namespace, name, exc.reason)  # fmt: skip
            return None  # not reached
        finally:
            self._attempts.posted = None

    def reconcile(self, namespace: str, name: str) -> Outcome | None:
        """Bring one resource's objects and status in line; None when it no longer exists."""
        with self._lock(namespace, name):
            return self._on_fresh_read(namespace, name, lambda body: self._reconcile(body))

    def evaluate(self, namespace: str, name: str, obs: Observation, now: float) -> PolicyDecision | None:
        """One policy evaluation: decide, then reconcile with the decision.

        A mode switch is stored (status, then its Event) before any pool moves: an operator killed
        in between resumes the switch on restart instead of undoing a step no status records.
        """

        def step(body: dict[str, Any]) -> PolicyDecision | None:
            ev = plan_evaluation(body, obs, now, self.status_refresh_seconds, self.figure_writes)
            if ev is None:
                return None  # reconcile reports why; nothing to evaluate
            out = Outcome()
            if ev.switch_patch:
                meta = body["metadata"]
                rv = self.kube.patch_status(
                    meta["namespace"], meta["name"], ev.switch_patch, meta.get("resourceVersion")
                )
                metrics.WRITES.labels("status").inc()
                for event in ev.switch_events:
                    self._event(body, event, out)
                t = ev.decision.transition
                if t is not None:
                    metrics.DECISIONS.labels(t.reason, t.from_mode, t.to_mode).inc()
                body = plan_status_after_switch(body, ev, rv)
            self._reconcile(body, ev.status, ev.metrics_condition)
            for event in ev.events:
                self._event(body, event, out)
            return ev.decision

        with self._lock(namespace, name):
            decision = self._on_fresh_read(namespace, name, step)
            if decision is None:
                return None
            metrics.EVALUATIONS.labels(decision.assessment.verdict.value).inc()
            metrics.set_mode(namespace, name, decision.state.mode)
            return decision

    def _reconcile(
        self,
        body: dict[str, Any],
        status: SpeculativeInferenceStatus | None = None,
        metrics_condition: ConditionValue | None = None,
    ) -> Outcome:
        if is_hot_swap(body):
            return self._reconcile_hot_swap(body, status, metrics_condition)
        out = Outcome()
        observed = self._observe(body)
        plan = plan_reconcile(
            body, observed, self.clock(), status=status, metrics_condition=metrics_condition
        )
        plan = self._apply_all(body, plan, observed, status, metrics_condition, out)
        for event in plan.events:
            self._event(body, event, out)
        self._patch(body, plan, out)
        out.refused = plan.refused
        return out

    def _apply_all(
        self,
        body: dict[str, Any],
        plan: Plan,
        observed: Observed,
        status: SpeculativeInferenceStatus | None,
        metrics_condition: ConditionValue | None,
        out: Outcome,
    ) -> Plan:
        """The plan's applies in order, each followed by its event; an apply the API server refuses
        (400/422) ends them, and the plan that says so replaces ``plan``."""
        for apply in plan.applies:
            try:
                self.kube.apply(apply.manifest)
            except ApiException as exc:
                if exc.status not in (400, 422):
                    raise
                return plan_manifest_rejected(
                    body, observed, self.clock(), apply, _api_message(exc),
                    status=status, metrics_condition=metrics_condition,
                )  # fmt: skip
            metrics.WRITES.labels(apply.kind).inc()
            out.applied.append(f"{apply.kind}/{apply.name}")
            if apply.event is not None:
                self._event(body, apply.event, out)
        return plan

    def _reconcile_hot_swap(
        self,
        body: dict[str, Any],
        status: SpeculativeInferenceStatus | None,
        metrics_condition: ConditionValue | None,
    ) -> Outcome:
        """The HotSwap strategy (``specops.controller.hotswap``): the admin Secret if missing, the
        applies, then at most one restart, repair or swap, then events and status."""
        out = Outcome()
        hs, client = self.hot_swap.plan(body, self.clock(), status, metrics_condition)
        if self.hot_swap.ensure_secret(hs):
            metrics.WRITES.labels("Secret").inc()
            out.applied.append(f"Secret/{hs.secret}")
        plan = hs.plan
        plan = self._apply_all(body, plan, Observed(deployments={}), status, metrics_condition, out)
        if not plan.refused:

            def post(type_: str, reason: str, message: str) -> None:
                self._event(body, PlannedEvent(EventType(type_), reason, message), out)

            self.hot_swap.act(body, hs, client, post)
        for event in plan.events:
            self._event(body, event, out)
        self._patch(body, plan, out)
        out.refused = plan.refused
        return out

    def _observe(self, body: dict[str, Any]) -> Observed:
        """The live objects the resource owns (each pool's Deployment read once per reconcile)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        deployments = {pool: self.kube.get_deployment(ns, pool_name(name, pool)) for pool in Pool}
        served = self.kube.pod_monitor_served()
        return Observed(
            deployments=deployments,
            service=self.kube.get_service(ns, name),
            pod_monitor=self.kube.get_pod_monitor(ns, name) if served else None,
            pod_monitor_served=served,
        )

    def _patch(self, body: dict[str, Any], plan: Plan, out: Outcome) -> None:
        if plan.status_patch:
            meta = body["metadata"]
            self.kube.patch_status(
                meta["namespace"], meta["name"], plan.status_patch, meta.get("resourceVersion")
            )
            metrics.WRITES.labels("status").inc()
            out.status_patched = sorted(plan.status_patch)

    def _event(self, body: dict[str, Any], event: PlannedEvent, out: Outcome) -> None:
        posted: set[tuple[str, str]] | None = getattr(self._attempts, "posted", None)
        if posted is not None:
            if (event.reason, event.message) in posted:
                return  # an earlier attempt, undone by a conflict, posted it already
            posted.add((event.reason, event.message))
        self.kube.post_event(body, str(event.type), str(event.reason), event.message)
        out.events.append(str(event.reason))
        meta = body["metadata"]
        log.info("%s/%s %s: %s", meta["namespace"], meta["name"], event.reason, event.message)


def _api_message(exc: ApiException) -> str:
    """The apiserver's reason for refusing a write (its Status message), shortened."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        message = str(exc.reason)
    return message if len(message) <= 900 else message[:897] + "..."

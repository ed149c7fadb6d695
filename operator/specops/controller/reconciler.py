"""One reconcile of one resource: read, decide with the pure core, write only what changed.

Every trigger (create, update, resume, the periodic timer, an event on an owned Deployment) ends
here, so the outcome never depends on which handler ran.  Everything read comes fresh from the API
server and the mode lives in status, so a restarted operator carries on where it stopped.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from specops.api.v1alpha1 import SpeculativeInferenceStatus
from specops.checks.validation import ResourceError, check_resource, load_resource
from specops.controller import metrics
from specops.controller.kube import FIELD_MANAGER, KubeApi, now_rfc3339
from specops.plan.reconcile import (
    applied_split,
    current_mode,
    desired_status,
    growing_pool,
    keep_figures_fresh_enough,
    needs_apply,
    observed_fields,
    policy_state_from_status,
    policy_status_fields,
    pool_state,
    prune_empty,
    rfc3339,
    rollout_step,
    set_condition,
    split_for_mode,
    status_changes,
)
from specops.policy.decide import BASELINE, Decision, Observation, decide
from specops.render.manifests import OwnerRef, Pool, pool_name, render_all, render_pod_monitor

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


def _strip_status(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "status"}


class Reconciler:
    def __init__(
        self, kube: KubeApi, clock: Callable[[], str] = now_rfc3339, status_refresh_seconds: float = 60.0
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.status_refresh_seconds = status_refresh_seconds
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
            return self._on_fresh_read(namespace, name, self._reconcile)

    def evaluate(self, namespace: str, name: str, obs: Observation, now: float) -> Decision | None:
        """One policy evaluation: decide, then reconcile with the decision.

        A mode switch is stored (status, then its Event) before any pool moves: an operator killed
        in between resumes the switch on restart instead of undoing a step no status records.
        """

        def step(body: dict[str, Any]) -> tuple[dict[str, Any], Decision] | None:
            try:
                si = load_resource(_strip_status(body))
            except ResourceError:
                return None  # reconcile reports it; nothing to evaluate
            if not check_resource(si).ok:
                return None
            old_status = body.get("status") or {}
            decision = decide(si.spec.policy, policy_state_from_status(old_status), obs, now)
            a = decision.assessment
            fields = {
                **policy_status_fields(decision.state),
                "observed": observed_fields(obs, rfc3339(now)),
                "verdict": a.verdict.value,
                "verdictReason": a.reason,
                "verdictMessage": a.message,
            }
            fields = prune_empty(
                keep_figures_fresh_enough(old_status, fields, now, self.status_refresh_seconds)
            )
            out = Outcome()
            if decision.transition is not None:
                meta = body["metadata"]
                rv = self.kube.patch_status(
                    namespace, name, status_changes(old_status, fields), meta.get("resourceVersion")
                )
                metrics.WRITES.labels("status").inc()
                t = decision.transition
                kind = "Warning" if t.to_mode == BASELINE and t.reason != "ManualOverride" else "Normal"
                self._event(body, kind, t.reason, f"{t.from_mode} -> {t.to_mode}: {t.message}", out)
                metrics.DECISIONS.labels(t.reason, t.from_mode, t.to_mode).inc()
                body = {
                    **body,
                    "metadata": {**meta, "resourceVersion": rv},
                    "status": {**old_status, **fields},
                }
            self._reconcile(body, policy_fields=fields, metrics_condition=decision.metrics_available)
            if (
                decision.metrics_available[0] == "False"
                and _condition(old_status, "MetricsAvailable").get("status") != "False"
            ):
                self._event(body, "Warning", "MetricsUnavailable", decision.metrics_available[2], out)
            return body, decision

        with self._lock(namespace, name):
            done = self._on_fresh_read(namespace, name, step)
            if done is None:
                return None
            decision = done[1]
            metrics.EVALUATIONS.labels(decision.assessment.verdict.value).inc()
            metrics.set_mode(namespace, name, decision.state.mode)
            return decision

    def _reconcile(
        self,
        body: dict[str, Any],
        policy_fields: dict[str, Any] | None = None,
        metrics_condition: tuple[str, str, str] | None = None,
    ) -> Outcome:
        out = Outcome()
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        old_status = body.get("status") or {}
        try:
            si = load_resource(_strip_status(body))
        except ResourceError as exc:
            self._refuse_unreadable(body, exc, out)
            return out
        si = si.model_copy(update={"status": _lenient_status({**old_status, **(policy_fields or {})})})
        report = check_resource(si)
        now = self.clock()
        mode = current_mode(si)
        if not report.ok:
            # Nothing is created or changed for a resource that cannot work; what runs stays.
            new = desired_status(si, report, mode, None, self._pools(ns, name), now, metrics_condition)
            self._patch(body, new, out)
            if _condition(old_status, "BudgetFits").get("reason") != report.errors[0].code:
                self._event(body, "Warning", "SpecRejected", "; ".join(str(e) for e in report.errors), out)
            out.refused = True
            return out

        target = split_for_mode(mode, si.spec.replicas, si.spec.policy.probe.replicas)
        deployments = self._deployments(ns, name)
        before = {pool: pool_state(d) for pool, d in deployments.items()}
        applied = applied_split(before)
        growing = growing_pool(target, applied)
        old_pools = old_status.get("pools") or {}
        recorded = [(old_pools.get(p) or {}).get("replicas") for p in ("speculative", "baseline")]
        recorded_total = sum(recorded) if all(isinstance(r, int) for r in recorded) else None
        split = rollout_step(
            target, applied, before[growing].ready, recorded_total, si.spec.rollout.max_surge
        )
        owner = OwnerRef(name=name, uid=meta["uid"])
        manifests = render_all(si, split, owner)
        if growing is Pool.SPECULATIVE:
            # The shrinking pool first: stopped in between, the pools still fit spec.replicas.
            manifests[0], manifests[1] = manifests[1], manifests[0]
        if self.kube.pod_monitor_served():
            manifests.append(render_pod_monitor(si, owner))
        generation_changed = old_status.get("observedGeneration") != meta.get("generation")
        split_changed = bool(old_pools) and (
            (old_pools.get("speculative") or {}).get("replicas") != split.speculative
            or (old_pools.get("baseline") or {}).get("replicas") != split.baseline
        )
        # The pools' Deployments were read above (no apply in between changes the other one):
        # reading them again would cost two more requests per reconcile and per evaluation.
        read = {pool_name(name, pool): d for pool, d in deployments.items()}
        for manifest in manifests:
            kind, obj_name = manifest["kind"], manifest["metadata"]["name"]
            live = (
                read[obj_name]
                if kind == "Deployment" and obj_name in read
                else self._live(kind, ns, obj_name)
            )
            if not needs_apply(manifest, live, FIELD_MANAGER):
                continue
            try:
                self.kube.apply(manifest)
            except ApiException as exc:
                if exc.status not in (400, 422):
                    raise
                # A value the checks cannot judge (deep in an affinity, or a cluster's admission
                # policy): status and one event say so, instead of an error at every resync. The
                # Deployments go first and share one pod template: nothing has been created.
                ready = ("False", "ManifestRejected", f"{kind} {obj_name}: {_api_message(exc)}")
                new = desired_status(si, report, mode, None, before, now, metrics_condition)
                new["conditions"] = set_condition(
                    new["conditions"], "Ready", *ready, meta.get("generation"), now
                )
                if _condition(old_status, "Ready").get("message") != ready[2]:
                    self._event(body, "Warning", "SpecRejected", ready[2], out)
                self._patch(body, new, out)
                out.refused = True
                return out
            metrics.WRITES.labels(kind).inc()
            out.applied.append(f"{kind}/{obj_name}")
            if live is None and not old_status.get("observedGeneration"):
                continue  # first deployment: one Deployed event below
            if live is None:
                reason, what = "DriftCorrected", f"recreated {kind} {obj_name}, deleted outside SpecOps"
            elif generation_changed:
                reason, what = (
                    "SpecApplied",
                    f"updated {kind} {obj_name} for generation {meta.get('generation')}",
                )
            elif split_changed:
                reason, what = "PoolsResized", f"{kind} {obj_name} resized for mode {mode}"
            else:
                reason, what = "DriftCorrected", f"restored {kind} {obj_name}, changed outside SpecOps"
            self._event(body, "Normal" if reason != "DriftCorrected" else "Warning", reason, what, out)
        if out.applied and not old_status.get("observedGeneration"):
            pools = f"speculative={split.speculative}, baseline={split.baseline}"
            self._event(body, "Normal", "Deployed", f"created {', '.join(out.applied)} ({pools})", out)
        if report.warnings and (generation_changed or not old_status):
            self._event(body, "Warning", "BudgetWarning", "; ".join(str(w) for w in report.warnings), out)

        # Readiness read before the applies is as fresh as after them (an apply changes no pod).
        new = desired_status(si, report, mode, split, before, now, metrics_condition)
        self._patch(body, new, out)
        return out

    def _deployments(self, ns: str, name: str) -> dict[Pool, dict[str, Any] | None]:
        return {pool: self.kube.get_deployment(ns, pool_name(name, pool)) for pool in Pool}

    def _pools(self, ns: str, name: str) -> dict[Pool, Any]:
        return {pool: pool_state(d) for pool, d in self._deployments(ns, name).items()}

    def _live(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        if kind == "Deployment":
            return self.kube.get_deployment(ns, name)
        if kind == "Service":
            return self.kube.get_service(ns, name)
        if kind == "PodMonitor":
            return self.kube.get_pod_monitor(ns, name)
        raise ValueError(f"unexpected kind {kind}")

    def _patch(self, body: dict[str, Any], new: dict[str, Any], out: Outcome) -> None:
        patch = status_changes(body.get("status"), new)
        if patch:
            meta = body["metadata"]
            self.kube.patch_status(meta["namespace"], meta["name"], patch, meta.get("resourceVersion"))
            metrics.WRITES.labels("status").inc()
            out.status_patched = sorted(patch)

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str, out: Outcome) -> None:
        posted: set[tuple[str, str]] | None = getattr(self._attempts, "posted", None)
        if posted is not None:
            if (reason, message) in posted:
                return  # an earlier attempt, undone by a conflict, posted it already
            posted.add((reason, message))
        self.kube.post_event(body, type_, reason, message)
        out.events.append(reason)
        log.info("%s/%s %s: %s", body["metadata"]["namespace"], body["metadata"]["name"], reason, message)

    def _refuse_unreadable(self, body: dict[str, Any], exc: ResourceError, out: Outcome) -> None:
        """The admission webhook normally stops these; without it the status still says why."""
        old = body.get("status") or {}
        message = "; ".join(str(f) for f in exc.findings)
        generation = body["metadata"].get("generation")
        conditions = set_condition(
            old.get("conditions", []), "BudgetFits", "False", "InvalidSpec", message, generation, self.clock()
        )
        new = prune_empty({**old, "observedGeneration": generation, "conditions": conditions})
        if _condition(old, "BudgetFits").get("reason") != "InvalidSpec":
            self._event(body, "Warning", "SpecRejected", message, out)
        self._patch(body, new, out)
        out.refused = True


def _api_message(exc: ApiException) -> str:
    """The apiserver's reason for refusing a write (its Status message), shortened."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        message = str(exc.reason)
    return message if len(message) <= 900 else message[:897] + "..."


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == type_), {})


def _lenient_status(raw: dict[str, Any]) -> SpeculativeInferenceStatus | None:
    """Status as the models see it; a status someone mangled by hand is rebuilt, not fatal."""
    try:
        return SpeculativeInferenceStatus.model_validate(raw)
    except ValidationError:
        log.warning("ignoring a status that does not match the schema: %s", raw)
        return None

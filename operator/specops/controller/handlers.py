"""Kopf handlers: each translates kwargs into a call of the core, nothing more.

Registered into a registry given by the caller (a fresh one per test).  The resource is handled
with ``on.event`` plus background loops rather than ``on.create``/``on.update`` or Kopf timers:
those keep progress in annotations, or a finalizer, on the user's object, and SpecOps writes
nothing to a user's spec or metadata, so a GitOps tool never sees drift on the resource it owns.
Reconciling is idempotent and cheap when nothing changed, so running it on every event is safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from specops.checks.admission import review, review_scale
from specops.controller import metrics
from specops.controller.cache import DEPLOYMENT, ReadCache
from specops.controller.evaluator import Evaluator
from specops.controller.kube import NotLeaderError
from specops.controller.leader import LeaderElector
from specops.controller.reconciler import Reconciler
from specops.render.manifests import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("specops.handlers")
RESOURCE = (GROUP, VERSION, PLURAL)


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("kind") == "SpeculativeInference" and ref.get("apiVersion", "").startswith(GROUP):
            return str(ref.get("name"))
    return None


def _always() -> bool:
    return True


class Coalescer:
    """At most one reconcile per resource running, and at most one more owed behind it.

    Every reconcile reads the world afresh, so events that arrive while one runs (a burst of
    Deployment status updates, the operator's own writes coming back) are all served by a single
    further run after it, and their handlers return at once instead of each waiting its turn in the
    thread pool with the event's body: in a creation burst of thousands of resources those waiting
    handlers held most of the operator's memory.  Used from the event loop's thread only.
    """

    def __init__(self, run: Callable[[str, str], Awaitable[None]]) -> None:
        self._run = run
        self._running: set[tuple[str, str]] = set()
        self._owed: set[tuple[str, str]] = set()

    async def request(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key in self._running:
            self._owed.add(key)  # the running one may have read before this event: once more
            return
        self._running.add(key)
        try:
            while True:
                self._owed.discard(key)
                await self._run(namespace, name)
                if key not in self._owed:
                    return
        finally:
            self._running.discard(key)
            self._owed.discard(key)


async def evaluation_loop(
    evaluator: Evaluator, tick: float = 1.0, acting: Callable[[], bool] = _always
) -> None:
    """Evaluate due resources forever (while ``acting``: the leader); each keeps its interval."""
    while True:
        if not acting():
            await asyncio.sleep(tick)
            continue
        try:
            report = await asyncio.to_thread(evaluator.run_cycle)
            if report.resources:
                log.debug("evaluated %d resources with %d queries in %.2f s", report.resources,
                          report.queries, report.seconds)  # fmt: skip
        except Exception:
            log.exception("evaluation cycle failed")
        await asyncio.sleep(tick)


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    evaluator: Evaluator | None = None,
    resync_seconds: float = 30.0,
    webhooks: bool = True,
    allowed_prometheus_urls: Collection[str] | None = None,
    leadership: LeaderElector | None = None,
    cache: ReadCache | None = None,
) -> None:
    """``allowed_prometheus_urls``: what spec.policy.prometheusUrl may name (None: anything).

    ``cache``: the reconciler's read cache, started and stopped with the operator; each event
    handled here tells it the version it saw, so the reconcile it triggers reads at least that.

    ``leadership``: with leader election, every replica watches and tracks resources and serves
    the webhook, but only the Lease's holder reconciles and evaluates; the webhooks are persistent
    (a replica that stops leaves them registered for the others).  Without: this replica acts."""
    acting = leadership.is_leader if leadership is not None else _always
    if leadership is None:
        metrics.LEADER.set(1.0)  # the only replica
    # Set when this replica becomes the leader: resync everything now, not at the next period
    # (a switch the previous leader left half done goes on at once).
    took_over = threading.Event()
    if leadership is not None:
        leadership.on_started_leading = took_over.set

    async def reconcile(namespace: str | None, name: str) -> None:
        if namespace is None or not acting():  # kopf types allow None for cluster objects
            return
        await coalescer.request(namespace, name)

    async def reconcile_now(namespace: str, name: str) -> None:
        try:
            outcome = await asyncio.to_thread(reconciler.reconcile, namespace, name)
        except NotLeaderError as exc:
            log.info("reconcile of %s/%s stopped: %s", namespace, name, exc)
            return
        except ApiException as exc:
            if exc.status not in (403, 404, 409):
                raise
            # Gone, or its namespace is terminating (writes are refused there): nothing to do.
            log.info("reconcile of %s/%s skipped: %s %s", namespace, name, exc.status, exc.reason)
            return
        if outcome is not None and (outcome.applied or outcome.events):
            log.info(
                "reconciled %s/%s: applied=%s events=%s", namespace, name, outcome.applied, outcome.events
            )

    coalescer = Coalescer(reconcile_now)

    @kopf.on.event(*RESOURCE, registry=registry)
    async def resource_event(
        type: str, namespace: str | None, name: str, spec: kopf.Spec, body: kopf.Body, **_: Any
    ) -> None:
        # type None is the initial listing at start-up: that is the "resume" of a restarted operator.
        if namespace is None:
            return
        if cache is not None and type != "DELETED":
            cache.expect(KIND, namespace, name, body.get("metadata", {}).get("resourceVersion"))
        if type == "DELETED":
            known.discard((namespace, name))
            if evaluator is not None:
                evaluator.untrack(namespace, name)
            return
        known.add((namespace, name))
        if evaluator is not None:
            evaluator.track(namespace, name, dict(spec))
        await reconcile(namespace, name)

    # Known resources, for the periodic resync. Not a Kopf timer: Kopf guards timers with a
    # finalizer on the object, and SpecOps writes nothing to a user's metadata.
    known: set[tuple[str, str]] = set()

    async def resync_loop(tick: float = 0.25) -> None:
        waited = 0.0
        while True:
            await asyncio.sleep(tick)
            waited += tick
            if waited < resync_seconds and not took_over.is_set():
                continue
            waited = 0.0
            took_over.clear()
            for namespace, name in sorted(known):
                try:
                    await reconcile(namespace, name)
                except Exception:
                    log.exception("resync of %s/%s failed", namespace, name)

    @kopf.on.startup(registry=registry)
    async def start_loops(memo: kopf.Memo, **_: Any) -> None:
        if cache is not None:
            await asyncio.to_thread(cache.start)
        memo["tasks"] = [asyncio.create_task(resync_loop())]
        if evaluator is not None:
            memo["tasks"].append(asyncio.create_task(evaluation_loop(evaluator, acting=acting)))
        if leadership is not None:
            memo["leader_stop"] = threading.Event()
            memo["leader_thread"] = leadership.start(memo["leader_stop"])

    @kopf.on.cleanup(registry=registry)
    async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
        for task in memo.get("tasks", []):
            task.cancel()
        if "leader_stop" in memo:  # give the Lease up, so the next replica starts at once
            memo["leader_stop"].set()
            await asyncio.to_thread(memo["leader_thread"].join, 10)
        if cache is not None:
            await asyncio.to_thread(cache.stop)

    owned = {LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.event("apps", "v1", "deployments", labels=owned, registry=registry)
    async def owned_deployment_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        # Deleted or edited pools are restored, and readiness reaches status, without waiting.
        owner = _owner_name(body)
        if owner is not None and namespace is not None:
            if cache is not None:
                meta = body.get("metadata", {})
                cache.expect(DEPLOYMENT, namespace, meta.get("name", ""), meta.get("resourceVersion"))
            await reconcile(namespace, owner)

    if not webhooks:
        return

    # Several replicas serve the webhook: one that stops must leave it registered for the others.
    persistent = True if leadership is not None else None

    @kopf.on.validate(
        *RESOURCE,
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
        persistent=persistent,
        registry=registry,
    )
    def validate_resource(
        body: kopf.Body, warnings: list[str], operation: str | None = None, old: Any = None, **_: Any
    ) -> None:
        verdict = review(operation or "", dict(body), dict(old) if old else None, allowed_prometheus_urls)
        warnings.extend(verdict.warnings)
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=422)

    @kopf.on.validate(
        *RESOURCE,
        subresource="scale",
        operations=["UPDATE"],
        ignore_failures=True,
        persistent=persistent,
        registry=registry,
    )
    def validate_scale(body: kopf.Body, **_: Any) -> None:
        verdict = review_scale(dict(body))
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=422)

"""Kopf handlers: each translates kwargs into a call of the core, nothing more.

Registered into a registry given by the caller (a fresh one per test).  The resource is handled
with ``on.event`` plus a timer rather than ``on.create``/``on.update``: those keep progress in
annotations on the user's object, and SpecOps writes nothing to a user's spec or metadata, so a
GitOps tool never sees drift on the resource it owns.  Reconciling is idempotent and cheap when
nothing changed, so running it on every event is safe.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from specops.admission import review, review_scale
from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.controller.reconciler import Reconciler
from specops.render import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("specops.handlers")
RESOURCE = (GROUP, VERSION, PLURAL)


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("kind") == "SpeculativeInference" and ref.get("apiVersion", "").startswith(GROUP):
            return str(ref.get("name"))
    return None


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    resync_seconds: float = 30.0,
    webhooks: bool = True,
) -> None:
    async def reconcile(namespace: str | None, name: str) -> None:
        if namespace is None:  # the resource is namespaced; kopf types allow None for others
            return
        outcome = await asyncio.to_thread(reconciler.reconcile, namespace, name)
        if outcome is not None and (outcome.applied or outcome.events):
            log.info(
                "reconciled %s/%s: applied=%s events=%s", namespace, name, outcome.applied, outcome.events
            )

    @kopf.on.event(*RESOURCE, registry=registry)
    async def resource_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
        # type None is the initial listing at start-up: that is the "resume" of a restarted operator.
        if type != "DELETED":
            await reconcile(namespace, name)

    @kopf.timer(*RESOURCE, interval=resync_seconds, registry=registry)
    async def resync(namespace: str | None, name: str, **_: Any) -> None:
        await reconcile(namespace, name)

    owned = {LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.event("apps", "v1", "deployments", labels=owned, registry=registry)
    async def owned_deployment_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        # Deleted or edited pools are restored, and readiness reaches status, without waiting.
        owner = _owner_name(body)
        if owner is not None:
            await reconcile(namespace, owner)

    if not webhooks:
        return

    @kopf.on.validate(*RESOURCE, operations=["CREATE", "UPDATE"], ignore_failures=True, registry=registry)
    def validate_resource(
        body: kopf.Body, warnings: list[str], operation: str | None = None, old: Any = None, **_: Any
    ) -> None:
        verdict = review(operation or "", dict(body), dict(old) if old else None)
        warnings.extend(verdict.warnings)
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=422)

    @kopf.on.validate(
        *RESOURCE, subresource="scale", operations=["UPDATE"], ignore_failures=True, registry=registry
    )
    def validate_scale(body: kopf.Body, **_: Any) -> None:
        verdict = review_scale(dict(body))
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=422)

"""The rollout rule (pure): which mode runs, the pool sizes for it, and the step to take now.

GPUs are scarce, so a mode switch moves one replica at a time between the pools; docs/operator.md
("Rollout") says what that means when ``spec.replicas`` changes mid-switch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from specops.api.v1alpha1 import ServingMode, SpeculativeInference, pinned_mode
from specops.render.manifests import Pool, PoolSplit


def current_mode(si: SpeculativeInference) -> ServingMode:
    """The mode to run in now: a manual pin wins; else the mode kept in status; else Speculative."""
    pinned = pinned_mode(si.spec.policy.mode)
    if pinned is not None:
        return pinned
    status_mode = si.status.mode if si.status is not None else None
    return status_mode or ServingMode.SPECULATIVE


def split_for_mode(mode: ServingMode, replicas: int, probe_replicas: int) -> PoolSplit:
    """Pool sizes for a mode.  A probe turns ``probe_replicas`` speculative and keeps at least one
    baseline replica beside them; with a single replica the probe is a timed trial of the whole
    service."""
    if mode == ServingMode.BASELINE:
        return PoolSplit(speculative=0, baseline=replicas)
    if mode == ServingMode.PROBING:
        if replicas <= 1:
            return PoolSplit(speculative=replicas, baseline=0)
        probe = max(1, min(probe_replicas, replicas - 1))
        return PoolSplit(speculative=probe, baseline=replicas - probe)
    return PoolSplit(speculative=replicas, baseline=0)


def growing_pool(target: PoolSplit, applied: PoolSplit | None) -> Pool:
    """The pool a switch towards ``target`` grows (whose readiness gates the next step)."""
    if applied is not None and (
        target.speculative > applied.speculative or applied.baseline > target.baseline
    ):
        return Pool.SPECULATIVE
    return Pool.BASELINE


def rollout_step(
    target: PoolSplit,
    applied: PoolSplit | None,
    growing_ready: int,
    recorded_total: int | None = None,
    surge: int = 0,
) -> PoolSplit:
    """The split to apply now on the way to ``target`` (the GPU-aware rollout rule).

    GPUs are scarce: the pools together never ask for more pods than ``spec.replicas``, and a mode
    switch moves one replica at a time from the shrinking pool to the growing one, the next only
    once the growing pool is fully ready.  The shrinking pool keeps serving meanwhile, so with two
    or more replicas a switch never leaves the service without a ready pod (with one replica a gap
    is unavoidable within the budget, which is why the policy does not switch a single replica
    without surge: see ``plan.reconcile.switch_takes_service_down``).  A first deployment goes
    straight to the target; a change of ``spec.replicas`` (an autoscaler) resizes the pools
    without moving a replica between them (``_resize``), and the switch goes on from there.
    Pools whose total is off although the split last recorded in status (``recorded_total``) had
    the target's total were cut short between the two Deployments of one step (the operator was
    stopped there): that step is finished first.

    With ``surge`` (``spec.rollout.maxSurge: 1``) each step is two: the growing pool gets one pod
    more (the pools ask for one pod over ``spec.replicas``), and once it is ready the shrinking
    pool gives one up, so a switch never costs serving capacity.  Each step writes one Deployment.
    """
    if applied is None or applied == target:
        return target
    if surge and applied.total == target.total + 1:
        # Mid-step: the extra pod was asked for; the shrinking pool gives one up once it serves.
        to_baseline = applied.speculative > target.speculative
        if growing_ready < (applied.baseline if to_baseline else applied.speculative):
            return applied
        if to_baseline:
            return PoolSplit(applied.speculative - 1, applied.baseline)
        return PoolSplit(applied.speculative, applied.baseline - 1)
    if applied.total != target.total:
        if applied.total == 0 or target.total == 0:
            return target  # nothing serves yet, or nothing is to serve
        if recorded_total == target.total:
            return _finish_step(applied, target)
        return _resize(applied, target, growing_pool(target, applied), growing_ready)
    growing = applied.speculative if target.speculative > applied.speculative else applied.baseline
    if growing_ready < growing:
        return applied  # the previous step is still starting
    if target.speculative > applied.speculative:
        return PoolSplit(applied.speculative + 1, applied.baseline - (0 if surge else 1))
    return PoolSplit(applied.speculative - (0 if surge else 1), applied.baseline + 1)


def _resize(applied: PoolSplit, target: PoolSplit, growing: Pool, growing_ready: int) -> PoolSplit:
    """``spec.replicas`` changed (mid-switch or not): resize without breaking the one-at-a-time rule.

    New replicas go to the pool on its way up (a new pod takes nothing down).  Fewer replicas come
    first from the pool on its way out, but never its last ready pod while the growing pool has
    none ready, then from the growing pool's pods that are not ready yet; what cannot go yet goes
    at a later reconcile, once the growing pool serves (the pools may hold more pods than
    ``spec.replicas`` meanwhile, but never ask for a new one).
    """
    spec, base = applied.speculative, applied.baseline
    delta = target.total - applied.total
    if delta > 0:
        add_spec = min(delta, max(0, target.speculative - spec))
        return PoolSplit(spec + add_spec, base + delta - add_spec)
    to_spec = growing is Pool.SPECULATIVE
    grow, shrink = (spec, base) if to_spec else (base, spec)
    shrink_target = target.baseline if to_spec else target.speculative
    remove = -delta
    keep = 1 if growing_ready == 0 else 0
    from_shrink = min(remove, max(0, shrink - shrink_target), max(0, shrink - keep))
    shrink -= from_shrink
    remove -= from_shrink
    from_grow = min(remove, max(0, grow - growing_ready))
    grow -= from_grow
    return PoolSplit(grow, shrink) if to_spec else PoolSplit(shrink, grow)


def _finish_step(applied: PoolSplit, target: PoolSplit) -> PoolSplit:
    """The pools back at the target's total, moving only a pool that is on its way to its target."""
    spec, base = applied.speculative, applied.baseline
    missing = target.total - applied.total
    if missing > 0:  # the shrinking pool was resized, the growing one not yet
        to_base = min(missing, max(0, target.baseline - base))
        return PoolSplit(spec + missing - to_base, base + to_base)
    extra = -missing  # the growing pool was resized, the shrinking one not yet
    from_spec = min(extra, max(0, spec - target.speculative))
    return PoolSplit(spec - from_spec, base - (extra - from_spec))


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the live Deployment of a pool reports."""

    exists: bool
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    desired: int | None = None  # spec.replicas of the live Deployment


def pool_state(live: Mapping[str, Any] | None) -> PoolState:
    if live is None:
        return PoolState(exists=False)
    st = live.get("status") or {}
    desired = (live.get("spec") or {}).get("replicas")
    return PoolState(
        exists=True,
        replicas=int(st.get("replicas") or 0),
        ready=int(st.get("readyReplicas") or 0),
        updated=int(st.get("updatedReplicas") or 0),
        desired=int(desired) if desired is not None else None,
    )


def applied_split(pools: Mapping[Pool, PoolState]) -> PoolSplit | None:
    """The split the live Deployments ask for; None unless both exist."""
    spec, base = pools.get(Pool.SPECULATIVE), pools.get(Pool.BASELINE)
    if spec is None or base is None or spec.desired is None or base.desired is None:
        return None
    return PoolSplit(spec.desired, base.desired)

"""Pure reconcile decisions: which objects to (re)apply, and what the status should say.

The controller reads the resource and its Deployments, calls these functions, and writes only what
they say changed: a reconcile that finds everything in place makes no write request at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from specops.api.v1alpha1 import Mode, SpeculativeInference
from specops.checks.validation import CheckReport
from specops.policy.decide import (
    BASELINE,
    PROBING,
    SPECULATIVE,
    Observation,
    PolicyState,
    Reference,
    Transition,
)
from specops.render.manifests import Pool, PoolSplit, selector_string

_QUANTITY_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def _quantity(value: str) -> Decimal | None:
    for suffix in sorted(_QUANTITY_SUFFIX, key=len, reverse=True):
        if suffix and value.endswith(suffix):
            number, scale = value[: -len(suffix)], _QUANTITY_SUFFIX[suffix]
            break
    else:
        number, scale = value, 1
    try:
        return Decimal(number) * Decimal(scale)
    except InvalidOperation:
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # The apiserver canonicalises quantities ("0.5" CPU is stored as "500m").
    if isinstance(want, str) and isinstance(have, str):
        a, b = _quantity(want), _quantity(have)
        return a is not None and a == b
    if isinstance(want, int | str) and isinstance(have, int | str):
        return str(want) == str(have)
    return False


def contains(want: Any, have: Any, owned: Mapping[str, Any] | None = None) -> bool:
    """Does the live object ``have`` hold every field of ``want`` with the same value?

    Fields the server adds (defaults, status, other managers' fields) are ignored; lists must match
    element by element, since SpecOps owns whole lists (args, env, volumes).  Except keyed lists
    (containers, env, volumes, ports) when ``owned``, SpecOps's own managed fields (``fieldsV1``),
    names their elements: an element another field manager added is that manager's, server-side
    apply keeps it, and it is not drift (else every reconcile would re-apply, forever).  An element
    SpecOps set once and no longer wants is.
    """
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            contains(v, have[k], _sub(owned, f"f:{k}")) if k in have else _is_zero(v) for k, v in want.items()
        )
    if isinstance(want, list):
        if not isinstance(have, list):
            return False
        keyed = _owned_elements(owned)
        if keyed:
            return _contains_keyed(want, have, keyed)
        return len(want) == len(have) and all(contains(w, h) for w, h in zip(want, have, strict=True))
    return _same_scalar(want, have)


def _sub(owned: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    sub = owned.get(key) if owned else None
    return sub if isinstance(sub, Mapping) else None


def _owned_elements(owned: Mapping[str, Any] | None) -> list[tuple[dict[str, Any], Mapping[str, Any]]]:
    """Keyed elements of a list in a fieldsV1 tree: ``k:{"name":"HF_HOME"}`` -> ({"name": ...}, subtree)."""
    out = []
    for key, sub in (owned or {}).items():
        if key.startswith("k:"):
            try:
                element_key = json.loads(key[2:])
            except ValueError:
                return []
            if not isinstance(element_key, dict) or not element_key:
                return []
            out.append((element_key, sub if isinstance(sub, Mapping) else {}))
    return out


def _contains_keyed(
    want: list[Any], have: list[Any], keyed: list[tuple[dict[str, Any], Mapping[str, Any]]]
) -> bool:
    fields = {f for element_key, _ in keyed for f in element_key}

    def key_of(item: Any) -> dict[str, Any]:
        return {f: item[f] for f in fields if f in item} if isinstance(item, Mapping) else {}

    matched: set[int] = set()
    for w in want:
        wk = key_of(w)
        index = next(
            (i for i, h in enumerate(have)
             if wk and all(f in key_of(h) and _same_scalar(v, key_of(h)[f]) for f, v in wk.items())),
            None,
        )  # fmt: skip
        if index is None:
            return False
        matched.add(index)
        sub = next((s for k, s in keyed if k == key_of(have[index])), None)
        if not contains(w, have[index], sub):
            return False
    # Unmatched live elements are fine when another manager owns them, drift when SpecOps does.
    return all(i in matched or key_of(h) not in [k for k, _ in keyed] for i, h in enumerate(have))


def _is_zero(value: Any) -> bool:
    """Kubernetes omits zero values (false, 0, "", empty lists and maps) when it stores an object."""
    return value is False or value == 0 or value in ("", [], {})


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None, manager: str = "specops") -> bool:
    """Apply when the object is missing or anything SpecOps (field manager ``manager``) sets has
    drifted; what other field managers added beside it is theirs."""
    if live is None:
        return True
    fields = {k: v for k, v in desired.items() if k in ("metadata", "spec")}
    meta = dict(fields.get("metadata", {}))
    meta.pop("namespace", None)
    fields["metadata"] = meta
    live_meta = live.get("metadata", {})
    owned = next(
        (m.get("fieldsV1") for m in live_meta.get("managedFields") or []
         if m.get("manager") == manager and m.get("operation") == "Apply" and not m.get("subresource")),
        None,
    )  # fmt: skip
    return not contains(fields, {"metadata": live_meta, "spec": live.get("spec", {})}, owned)


def current_mode(si: SpeculativeInference) -> str:
    """The mode to run in now: a manual pin wins; else the mode kept in status; else Speculative."""
    pin = si.spec.policy.mode
    if pin is Mode.BASELINE:
        return BASELINE
    if pin is Mode.SPECULATIVE:
        return SPECULATIVE
    status_mode = si.status.mode if si.status is not None else None
    return status_mode if status_mode in (SPECULATIVE, BASELINE, PROBING) else SPECULATIVE


def split_for_mode(mode: str, replicas: int, probe_replicas: int) -> PoolSplit:
    """Pool sizes for a mode.  A probe turns ``probe_replicas`` speculative and keeps at least one
    baseline replica beside them; with a single replica the probe is a timed trial of the whole
    service."""
    if mode == BASELINE:
        return PoolSplit(speculative=0, baseline=replicas)
    if mode == PROBING:
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
    is unavoidable within the budget).  A first deployment or a change of ``spec.replicas`` goes
    straight to the target.  Pools whose total is off although the split last recorded in status
    (``recorded_total``) had the target's total were cut short between the two Deployments of one
    step (the operator was stopped there): that step is finished first.

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
        return target if recorded_total != target.total else _finish_step(applied, target)
    growing = applied.speculative if target.speculative > applied.speculative else applied.baseline
    if growing_ready < growing:
        return applied  # the previous step is still starting
    if target.speculative > applied.speculative:
        return PoolSplit(applied.speculative + 1, applied.baseline - (0 if surge else 1))
    return PoolSplit(applied.speculative - (0 if surge else 1), applied.baseline + 1)


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


# ------------------------------------------------------------------------------------- status


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when the status changes."""
    out = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != status
        out.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now if changed else cond.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    if not found:
        out.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": generation,
            }
        )
    return out


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


def _budget_status(report: CheckReport) -> dict[str, Any]:
    b = report.budget
    return {
        "vramGiB": b.vram_gib,
        "targetWeightsGiB": b.target_weights_gib,
        "draftWeightsGiB": b.draft_weights_gib,
        "kvCacheGiB": b.kv_cache_gib,
        "kvCacheGiBWithoutDraft": b.kv_cache_gib_without_draft,
        "maxConcurrentSequences": b.max_concurrent_sequences,
        "maxConcurrentSequencesWithoutDraft": b.max_concurrent_sequences_without_draft,
    }


def desired_status(
    si: SpeculativeInference,
    report: CheckReport,
    mode: str,
    split: PoolSplit | None,
    pools: Mapping[Pool, PoolState],
    now: str,
    metrics_condition: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """The whole status the operator wants (``split`` None: nothing deployed, checks failed)."""
    old = si.status.model_dump(by_alias=True, exclude_unset=True, exclude_none=True) if si.status else {}
    generation = si.metadata.generation
    conditions: list[dict[str, Any]] = list(old.get("conditions", []))

    if report.ok:
        fits = ("True", "Fits", "weights and KV cache fit the GPU memory budget")
        if report.warnings:
            fits = ("True", "FitsWithWarnings", "; ".join(str(w) for w in report.warnings))
    else:
        fits = ("False", report.errors[0].code, "; ".join(str(e) for e in report.errors))
    conditions = set_condition(conditions, "BudgetFits", *fits, generation, now)

    spec_state, base_state = (
        pools.get(Pool.SPECULATIVE, PoolState(False)),
        pools.get(Pool.BASELINE, PoolState(False)),
    )
    if split is None:
        ready = ("False", "Refused", "the resource fails its checks; nothing is deployed or changed")
    else:
        want = split.total
        have = min(spec_state.ready, split.speculative) + min(base_state.ready, split.baseline)
        if want == 0:
            ready = ("True", "ScaledToZero", "spec.replicas is 0")
        elif have >= want:
            ready = ("True", "AllReplicasReady", f"{have}/{want} replicas ready")
        else:
            ready = ("False", "ReplicasNotReady", f"{have}/{want} replicas ready")
    conditions = set_condition(conditions, "Ready", *ready, generation, now)

    if split is not None and split.speculative > 0 and spec_state.ready > 0:
        active = ("True", "SpeculativePoolServing", f"{spec_state.ready} speculative replica(s) ready")
    elif mode == BASELINE and si.spec.policy.mode is Mode.BASELINE:
        active = ("False", "PinnedBaseline", "spec.policy.mode is Baseline")
    elif mode == BASELINE:
        active = ("False", "FellBack", "speculation is off")
    else:
        active = ("False", "SpeculativePoolNotReady", "no speculative replica is ready")
    conditions = set_condition(conditions, "SpeculationActive", *active, generation, now)

    if metrics_condition is not None:
        conditions = set_condition(conditions, "MetricsAvailable", *metrics_condition, generation, now)
    elif not any(c.get("type") == "MetricsAvailable" for c in conditions):
        # Kept as the last evaluation left it; Unknown until the first one.
        not_yet = ("Unknown", "NotEvaluated", "no metrics evaluation has run yet")
        conditions = set_condition(conditions, "MetricsAvailable", *not_yet, generation, now)

    status: dict[str, Any] = {
        **old,
        "observedGeneration": generation,
        "mode": mode,
        "modeSince": old.get("modeSince") if old.get("mode") == mode else now,
        "replicas": spec_state.replicas + base_state.replicas,
        "selector": selector_string(si.metadata.name),
        "conditions": conditions,
        "budget": _budget_status(report),
    }
    if split is not None:
        status["pools"] = {
            "speculative": {"replicas": split.speculative, "readyReplicas": spec_state.ready},
            "baseline": {"replicas": split.baseline, "readyReplicas": base_state.ready},
        }
    return prune_empty(status)


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


def status_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level status keys whose value differs (a merge patch; empty when nothing changed)."""
    old = old or {}
    return {k: v for k, v in new.items() if old.get(k) != v}


# ------------------------------------------------------------------------------ policy state


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def policy_state_from_status(status: Mapping[str, Any] | None) -> PolicyState:
    """The policy's state as stored in status (a new resource starts Speculative, counters at 0)."""
    status = status or {}
    counters = status.get("counters") or {}
    ref = status.get("baselineReference")
    reference = None
    if ref:
        reference = Reference(
            tpot_p50=float(ref["p50TpotSeconds"]),
            tpot_p99=float(ref["p99TpotSeconds"]),
            rate_per_replica=float(ref["requestsPerReplica"]),
            at=epoch(ref.get("recordedAt")),
        )
    history = tuple(
        Transition(
            epoch(d.get("time")),
            d.get("from", ""),
            d.get("to", ""),
            d.get("reason", ""),
            d.get("message", ""),
        )
        for d in status.get("decisions") or []
    )
    mode = status.get("mode")
    return PolicyState(
        mode=mode if mode in (SPECULATIVE, BASELINE, PROBING) else SPECULATIVE,
        mode_since=epoch(status.get("modeSince")),
        breaches=int(counters.get("breaches", 0)),
        recoveries=int(counters.get("recoveries", 0)),
        lost_probes=int(counters.get("lostProbes", 0)),
        errors=int(counters.get("errors", 0)),
        reference=reference,
        saturation_rate=_float_or_none(status.get("saturationRequestsPerReplica")),
        history=history,
    )


def _float_or_none(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def policy_status_fields(state: PolicyState) -> dict[str, Any]:
    """The status keys that hold the policy's state."""
    out: dict[str, Any] = {
        "mode": state.mode,
        "modeSince": rfc3339(state.mode_since) if state.mode_since else None,
        "counters": {
            "breaches": state.breaches,
            "recoveries": state.recoveries,
            "errors": state.errors,
            "lostProbes": state.lost_probes,
        },
        "decisions": [
            {
                "time": rfc3339(t.at),
                "from": t.from_mode,
                "to": t.to_mode,
                "reason": t.reason,
                "message": t.message,
            }
            for t in state.history
        ],
    }
    if state.reference is not None:
        r = state.reference
        out["baselineReference"] = {
            "p50TpotSeconds": round(r.tpot_p50, 6),
            "p99TpotSeconds": round(r.tpot_p99, 6),
            "requestsPerReplica": round(r.rate_per_replica, 4),
            "recordedAt": rfc3339(r.at),
        }
    if state.saturation_rate is not None:
        out["saturationRequestsPerReplica"] = round(state.saturation_rate, 4)
    return out


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def observed_fields(obs: Observation, window_end: str) -> dict[str, Any]:
    """status.observed for an evaluation."""
    spec, base = obs.speculative, obs.baseline
    rate = sum(p.request_rate or 0.0 for p in (spec, base) if p is not None)
    out: dict[str, Any] = {"windowEnd": window_end, "requestRate": round(rate, 4)}
    if spec is not None:
        waiting = spec.waiting / spec.replicas if spec.waiting is not None and spec.replicas else None
        out.update(
            acceptanceRate=_r(spec.acceptance),
            meanAcceptanceLength=_r(spec.mean_acceptance_length),
            acceptancePerPosition=list(spec.per_position),
            p50TpotSeconds=_r(spec.tpot_p50, 6),
            p99TpotSeconds=_r(spec.tpot_p99, 6),
            tailRatio=_r(spec.tail_ratio, 3),
            p99TtftSeconds=_r(spec.ttft_p99, 6),
            p99E2eSeconds=_r(spec.e2e_p99, 6),
            waitingPerReplica=_r(waiting, 3),
            kvCacheUsage=_r(spec.kv_usage, 4),
        )
    if base is not None:
        out.update(baselineP50TpotSeconds=_r(base.tpot_p50, 6), baselineP99TpotSeconds=_r(base.tpot_p99, 6))
    return prune_empty(out)


# Status keys that carry the policy's state: any change is written at once.
STATE_KEYS = ("mode", "modeSince", "counters", "decisions", "verdict", "verdictReason")
# Figures that move with every scrape: refreshed at most every ``refresh`` seconds otherwise.
FIGURE_KEYS = ("observed", "verdictMessage", "baselineReference")


def keep_figures_fresh_enough(
    old: Mapping[str, Any], new: dict[str, Any], now: float, refresh: float
) -> dict[str, Any]:
    """Keep the old figures while the policy's state is unchanged and they are younger than
    ``refresh``: an evaluation that changes nothing makes no write (at 1,000 resources a write per
    evaluation would be dozens of writes a second for no decision)."""
    state_changed = any(old.get(k) != new.get(k) for k in STATE_KEYS)
    written_at = epoch((old.get("observed") or {}).get("windowEnd"))
    if state_changed or now - written_at >= refresh:
        return new
    return {**new, **{k: old[k] for k in FIGURE_KEYS if k in old}}

"""The HotSwap strategy's reconcile plan (pure): the hot-swap objects instead of the pools, routing
to awake engines only, the one step to take (annotate, restart, repair, swap), and status."""

from __future__ import annotations

import copy
from typing import Any

from specops.plan.hotswap import Swap
from specops.plan.hotswap_reconcile import (
    HOT_SWAP_CONDITION,
    HotSwapObserved,
    Repair,
    SwapPodView,
    is_hot_swap,
    needs_probe,
    plan_hot_swap_reconcile,
    pod_view,
)
from specops.render.manifests import Pool
from tests.support.hotswap import swap_pod
from tests.support.resources import as_stored, make_doc

NOW = "2026-01-01T00:00:00Z"
SPEC, BASE = Pool.SPECULATIVE, Pool.BASELINE


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return as_stored(make_doc(rollout={"strategy": "HotSwap"}, **spec), status=status)


def observed(*pods: SwapPodView, secret: bool = True) -> HotSwapObserved:
    return HotSwapObserved(live={}, secret_exists=secret, pods=pods)


def view(name: str, awake: Pool | None, ready: bool = True, **kw: Any) -> SwapPodView:
    return SwapPodView(name, f"10.0.0.{name[-1]}", ready, annotated=awake.value if awake else None, **kw)


def test_hot_swap_applies_its_objects_not_the_pools_and_asks_for_the_secret() -> None:
    plan = plan_hot_swap_reconcile(body(), observed(secret=False), NOW)
    kinds = [(a.kind, a.name) for a in plan.plan.applies]
    assert kinds[:4] == [("ConfigMap", "demo-hotswap"), ("NetworkPolicy", "demo-hotswap"),
                         ("Deployment", "demo-swap"), ("Service", "demo")]  # fmt: skip
    assert sum(k == "EndpointSlice" for k, _ in kinds) == 4
    assert not {"demo-spec", "demo-base"} & {n for _, n in kinds}
    assert all(k != "Secret" for k, _ in kinds), "the token is the executor's: never in a plan"
    assert plan.secret == "demo-hotswap-admin"
    assert [e.reason for e in plan.plan.events] == ["Deployed"]
    assert plan.swap is None and plan.repair is None and plan.restart is None


def test_is_hot_swap_reads_the_stored_strategy() -> None:
    assert is_hot_swap(body())
    assert not is_hot_swap(as_stored(make_doc()))
    assert not is_hot_swap({"spec": {"rollout": "HotSwap"}})


def test_a_swap_towards_the_target_and_slices_of_awake_engines_only() -> None:
    # Speculative mode (the default) wants both replicas speculative; both run baseline.
    plan = plan_hot_swap_reconcile(body(), observed(view("pod-2", BASE), view("pod-1", BASE)), NOW)
    assert plan.swap == Swap("pod-1", BASE, SPEC)
    slices = {a.name: a.manifest for a in plan.plan.applies if a.kind == "EndpointSlice"}
    assert [e["targetRef"]["name"] for e in slices["demo-base-ipv4"]["endpoints"]] == ["pod-1", "pod-2"]
    assert slices["demo-spec-ipv4"]["endpoints"] == []
    pools = plan.plan.status["pools"]
    assert (pools["speculative"]["replicas"], pools["baseline"]["replicas"]) == (0, 2)
    cond = next(c for c in plan.plan.status["conditions"] if c["type"] == HOT_SWAP_CONDITION)
    assert (cond["status"], cond["reason"]) == ("True", "Swapping")


def test_at_target_nothing_to_swap() -> None:
    plan = plan_hot_swap_reconcile(body(), observed(view("pod-1", SPEC), view("pod-2", SPEC)), NOW)
    assert plan.swap is None
    cond = next(c for c in plan.plan.status["conditions"] if c["type"] == HOT_SWAP_CONDITION)
    assert cond["reason"] == "AtTarget"
    ready = next(c for c in plan.plan.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_a_probed_pod_is_annotated_and_an_unknown_one_holds_the_swaps() -> None:
    probed = SwapPodView("pod-1", "10.0.0.1", True, asleep={SPEC: True, BASE: False})
    unknown = SwapPodView("pod-2", "10.0.0.2", True, annotated="swapping")
    assert needs_probe(probed) and needs_probe(unknown)
    assert not needs_probe(view("pod-3", SPEC))
    plan = plan_hot_swap_reconcile(body(), observed(probed, unknown), NOW)
    assert plan.annotate == (("pod-1", BASE),)
    assert plan.swap is None, "one swap at a time: a replica in an unknown state holds the others"
    slices = {a.name: a.manifest for a in plan.plan.applies if a.kind == "EndpointSlice"}
    assert [e["targetRef"]["name"] for e in slices["demo-base-ipv4"]["endpoints"]] == ["pod-1"]


def test_a_starting_pod_holds_no_swap_but_one_left_mid_swap_does() -> None:
    starting = SwapPodView("pod-2", "10.0.0.2", False)  # engines not up yet: the probe got nothing
    plan = plan_hot_swap_reconcile(body(), observed(view("pod-1", BASE), starting), NOW)
    assert plan.swap == Swap("pod-1", BASE, SPEC)
    left = SwapPodView("pod-2", "10.0.0.2", False, annotated="swapping")
    assert plan_hot_swap_reconcile(body(), observed(view("pod-1", BASE), left), NOW).swap is None


def test_both_asleep_wakes_the_engine_the_target_needs() -> None:
    asleep = SwapPodView("pod-1", "10.0.0.1", True, annotated="swapping", asleep={SPEC: True, BASE: True})
    plan = plan_hot_swap_reconcile(body(), observed(asleep, view("pod-2", SPEC)), NOW)
    assert plan.repair == Repair("pod-1", wake=SPEC)
    baseline = plan_hot_swap_reconcile(body(policy={"mode": "Baseline"}), observed(asleep), NOW)
    assert baseline.repair == Repair("pod-1", wake=BASE)
    both = SwapPodView("pod-1", "10.0.0.1", True, asleep={SPEC: False, BASE: False})
    assert plan_hot_swap_reconcile(body(), observed(both), NOW).repair == Repair("pod-1", SPEC, BASE)


def test_a_failed_pod_is_restarted_and_status_says_why() -> None:
    failed = view("pod-1", BASE, fallback="wake of the speculative engine failed: HTTP 500")
    plan = plan_hot_swap_reconcile(body(), observed(failed, view("pod-2", BASE)), NOW)
    assert plan.restart == "pod-1"
    assert plan.swap is None
    cond = next(c for c in plan.plan.status["conditions"] if c["type"] == HOT_SWAP_CONDITION)
    assert (cond["status"], cond["reason"]) == ("False", "HotSwapFailed")
    assert "HTTP 500" in cond["message"]


def test_a_refused_resource_is_reported_as_the_restart_path_reports_it() -> None:
    bad = body(replicas=2)
    bad["spec"]["resources"]["gpuMemoryUtilization"] = 0.2
    plan = plan_hot_swap_reconcile(bad, observed(view("pod-1", BASE)), NOW)
    assert plan.plan.refused and not plan.plan.applies
    assert plan.swap is None and plan.si is None


def test_pod_view_reads_ip_readiness_and_annotations() -> None:
    v = pod_view(swap_pod("pod-1", "10.0.0.1", "baseline", ready=False, fallback="x"))
    assert (v.ip, v.ready, v.awake, v.fallback, v.node_name) == ("10.0.0.1", False, BASE, "x", "node-1")
    assert not needs_probe(pod_view(swap_pod("pod-2", None)))  # no address yet: cannot be asked


def test_the_switch_cost_is_measured_when_every_replica_serves_the_new_mode() -> None:
    decided = {"time": "2026-01-01T00:00:00Z", "from": "Speculative", "to": "Baseline",
               "reason": "AcceptanceBelowThreshold", "message": "m"}  # fmt: skip
    status = {"mode": "Baseline", "decisions": [decided], "observedGeneration": 1}
    later = "2026-01-01T00:00:20Z"
    halfway = plan_hot_swap_reconcile(body(status), observed(view("pod-1", BASE), view("pod-2", SPEC)), later)
    cost = halfway.plan.status["switchCost"]
    assert cost["source"] == "Estimate" and "lastSwitchSeconds" not in cost
    done = plan_hot_swap_reconcile(body(status), observed(view("pod-1", BASE), view("pod-2", BASE)), later)
    cost = done.plan.status["switchCost"]
    assert cost["source"] == "Measured"
    assert (cost["lastSwitchSeconds"], cost["lastReplicasMoved"], cost["secondsPerReplica"]) == (
        20.0,
        2,
        10.0,
    )
    assert cost["estimatedSecondsPerReplica"] < 40, "a hot swap is estimated as drain + sleep + wake"


def test_an_empty_endpoint_slice_read_back_as_null_is_not_drift() -> None:
    """The API server sends an EndpointSlice with no endpoints back with ``"endpoints": null``:
    that is the ``[]`` SpecOps applied, not drift (it was re-applied by every reconcile)."""
    pods = (view("pod-1", SPEC), view("pod-2", SPEC))
    first = plan_hot_swap_reconcile(body(), observed(*pods), NOW)
    live: dict[tuple[str, str], dict[str, Any] | None] = {}
    for a in first.plan.applies:
        stored = copy.deepcopy(a.manifest)
        if stored.get("endpoints") == []:
            stored["endpoints"] = None
        live[(a.kind, a.name)] = stored
    assert (
        sum(k == "EndpointSlice" and o is not None and o["endpoints"] is None for (k, _), o in live.items())
        == 3
    )
    again = plan_hot_swap_reconcile(body(), HotSwapObserved(live=live, secret_exists=True, pods=pods), NOW)
    assert [a.name for a in again.plan.applies] == []
    # A slice that lost an endpoint it should have is still drift.
    live[("EndpointSlice", "demo-spec-ipv4")] = {
        **live[("EndpointSlice", "demo-spec-ipv4")],
        "endpoints": None,
    }  # type: ignore[dict-item]
    drifted = plan_hot_swap_reconcile(body(), HotSwapObserved(live=live, secret_exists=True, pods=pods), NOW)
    assert [a.name for a in drifted.plan.applies] == ["demo-spec-ipv4"]

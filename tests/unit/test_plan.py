"""The reconcile plan: what the operator and the simulator both execute.

States are the ones the operator produces: a resource deployed by ``plan_reconcile``, a mode stored
by ``plan_evaluation`` (or written as its switch patch would write it).
"""

from __future__ import annotations

from typing import Any

import pytest

from specops.api.v1alpha1 import ServingMode, SpeculativeInference
from specops.checks.validation import check_resource
from specops.controller.reconciler import Reconciler
from specops.plan.reconcile import EventReason, Observed, plan_evaluation, plan_reconcile
from specops.plan.rollout import PoolState
from specops.plan.status import desired_status
from specops.policy.decide import Observation, PoolMetrics
from specops.render.manifests import Pool, PoolSplit, pool_name
from specops_testkit.sim.fleet import Fleet, SimController, engine_config
from tests.support.fake_kube import FakeKube
from tests.support.resources import make_doc

NOW = 1_800_000_000.0  # far past any mode_since a test stores


def _deployed(**spec: Any) -> FakeKube:
    """A resource as the operator leaves it after its first reconcile."""
    doc = make_doc(**spec)
    doc["metadata"]["uid"] = "uid-0"
    kube = FakeKube(doc, pod_monitors=False)
    Reconciler(kube).reconcile("serving", "demo")
    return kube


def _split(kube: FakeKube) -> PoolSplit:
    sizes = [kube.live("Deployment", "serving", pool_name("demo", p)) for p in Pool]
    return PoolSplit(*(int(d["spec"]["replicas"]) if d else 0 for d in sizes))


def _breach(replicas: int) -> Observation:
    """A window in which acceptance is far below the default minimum (0.5)."""
    spec = PoolMetrics(replicas=replicas, request_rate=4.0, acceptance=0.1, tpot_p50=0.03, tpot_p99=0.05,
                       waiting=0.0)  # fmt: skip
    return Observation(speculative=spec)


def _evaluate_until_switch(body: dict[str, Any], replicas: int) -> Any:
    """Breach after breach, as the evaluator would, until the policy switches (or holds)."""
    kube = FakeKube(body, pod_monitors=False)
    reconciler = Reconciler(kube)
    for i in range(6):
        reconciler.evaluate("serving", "demo", _breach(replicas), NOW + 60 * i)
    return kube


def test_first_plan_deploys_both_pools_then_a_second_plan_changes_nothing() -> None:
    kube = _deployed()
    assert [a["kind"] for a in kube.applied] == ["Deployment", "Deployment", "Service"]
    assert kube.reasons[0] == "Deployed"
    Reconciler(kube).reconcile("serving", "demo")  # the pods turned ready: status says so
    again = plan_reconcile(
        kube.body,
        Observed({p: kube.live("Deployment", "serving", pool_name("demo", p)) for p in Pool},
                 service=kube.live("Service", "serving", "demo")),
        "2026-01-01T00:00:00Z",
    )  # fmt: skip
    assert again.applies == ()
    assert again.status_patch == {}  # nothing to write: the status as stored is the status wanted


def test_a_fallback_applies_the_shrinking_pool_first() -> None:
    kube = _deployed(replicas=3)
    kube.write_status({"mode": "Baseline"})  # stored by the evaluation that decided the fallback
    kube.applied.clear()
    Reconciler(kube).reconcile("serving", "demo")
    names = [a["metadata"]["name"] for a in kube.applied if a["kind"] == "Deployment"]
    assert names == [pool_name("demo", Pool.SPECULATIVE), pool_name("demo", Pool.BASELINE)]
    assert _split(kube) == PoolSplit(2, 1)


def test_a_single_replica_without_surge_is_never_switched_automatically() -> None:
    kube = _evaluate_until_switch(_deployed(replicas=1).body, replicas=1)
    assert kube.body["status"]["mode"] == "Speculative"
    assert _split(kube) == PoolSplit(1, 0)
    assert EventReason.SWITCH_HELD in kube.reasons
    held = next(e for e in kube.events if e.reason == EventReason.SWITCH_HELD)
    assert "spec.rollout.maxSurge: 1" in held.message


@pytest.mark.parametrize(("replicas", "surge"), [(2, 0), (1, 1)])
def test_the_same_breaches_switch_when_a_pod_can_stay_up(replicas: int, surge: int) -> None:
    kube = _evaluate_until_switch(_deployed(replicas=replicas, rollout={"maxSurge": surge}).body, replicas)
    assert kube.body["status"]["mode"] == "Baseline"
    assert EventReason.SWITCH_HELD not in kube.reasons
    assert "AcceptanceBelowThreshold" in kube.reasons


def test_a_pinned_single_replica_still_follows_the_pin() -> None:
    body = _deployed(replicas=1).body
    body["spec"]["policy"] = {"mode": "Baseline"}
    ev = plan_evaluation(body, _breach(1), NOW, 60)
    assert ev is not None and ev.decision.transition is not None
    assert ev.decision.transition.to_mode == ServingMode.BASELINE


def test_status_replicas_never_counts_the_surge_pod() -> None:
    si = SpeculativeInference.model_validate(make_doc(replicas=2, rollout={"maxSurge": 1}))
    pools = {Pool.SPECULATIVE: PoolState(True, 2, 2, 2, 2), Pool.BASELINE: PoolState(True, 1, 0, 1, 1)}
    status = desired_status(si, check_resource(si), ServingMode.BASELINE, PoolSplit(2, 1), pools, "t")
    assert status.replicas == 2  # what the HPA asked for, not the extra pod of the surge step


def test_a_resize_mid_switch_moves_no_replica_and_keeps_one_serving() -> None:
    """The HPA raises spec.replicas from 2 to 3 in the middle of a fallback: a pod is added to the
    growing pool, the speculative pod keeps serving, and the switch goes on one step at a time."""
    kube = _deployed(replicas=2)
    kube.write_status({"mode": "Baseline"})
    # The first step of the fallback, the baseline pod not ready yet.
    Reconciler(kube).reconcile("serving", "demo")
    assert _split(kube) == PoolSplit(1, 1)
    base = kube.live("Deployment", "serving", pool_name("demo", Pool.BASELINE))
    base["status"]["readyReplicas"] = 0
    kube.live("SpeculativeInference", "serving", "demo")["spec"]["replicas"] = 3
    Reconciler(kube).reconcile("serving", "demo")
    assert _split(kube) == PoolSplit(1, 2)  # not (0, 3): nothing ready would serve


def _operator_splits(resize_after: int) -> list[PoolSplit]:
    """The splits the operator applies through a fallback of 3 replicas, spec.replicas going to 4
    after ``resize_after`` steps (pods turn ready at once in the fake)."""
    kube = _deployed(replicas=3)
    kube.write_status({"mode": "Baseline"})
    splits = [_split(kube)]
    for _ in range(12):
        Reconciler(kube).reconcile("serving", "demo")
        if _split(kube) != splits[-1]:
            splits.append(_split(kube))
        if len(splits) == resize_after + 1:
            kube.live("SpeculativeInference", "serving", "demo")["spec"]["replicas"] = 4
    return splits


def _simulator_splits(resize_after: int) -> list[PoolSplit]:
    """The same switch in the simulator: its controller executes the plans against simulated pods
    that take 5 s to load."""
    si = SpeculativeInference.model_validate(make_doc(replicas=3))
    configs = {pool: engine_config(si.spec, pool) for pool in Pool}
    fleet = Fleet(configs, PoolSplit(3, 0), startup_seconds=5.0, seed=1)
    controller = SimController(si.spec, fleet)
    controller.reconcile(0.0)
    controller.body["status"]["mode"] = "Baseline"
    splits = [fleet.applied]
    for t in range(1, 120):
        fleet.retire(float(t))
        controller.reconcile(float(t))
        if fleet.applied != splits[-1]:
            splits.append(fleet.applied)
        if len(splits) == resize_after + 1:
            controller.body["spec"]["replicas"] = 4
    return splits


@pytest.mark.parametrize("resize_after", [1, 2])
def test_the_simulator_and_the_operator_execute_the_same_plan(resize_after: int) -> None:
    operator = _operator_splits(resize_after)
    assert operator[-1] == PoolSplit(0, 4)
    assert _simulator_splits(resize_after) == operator


def test_switch_cost_is_estimated_until_a_switch_is_measured() -> None:
    kube = _deployed(replicas=2)
    cost = kube.body["status"]["switchCost"]
    # 70B INT8 + 8B BF16 on 2 GPUs: 20 s drain + 15 s + 0.6 s/GiB x ~42 GiB per GPU + 10 s.
    assert cost["source"] == "Estimate"
    assert 60 < cost["secondsPerReplica"] < 90
    assert cost["secondsPerReplica"] == cost["estimatedSecondsPerReplica"]
    decided = "2026-01-01T00:00:00Z"
    kube.write_status({"mode": "Baseline", "decisions": [
        {"time": decided, "from": "Speculative", "to": "Baseline", "reason": "LoadSaturation", "message": "m"}]})  # fmt: skip
    clock = iter(
        ["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "2026-01-01T00:02:30Z", "2026-01-01T00:03:00Z"]
    )
    reconciler = Reconciler(kube, clock=lambda: next(clock))
    reconciler.reconcile("serving", "demo")  # (1, 1): not settled, nothing measured
    assert kube.body["status"]["switchCost"]["samples"] == 0
    reconciler.reconcile("serving", "demo")  # (0, 2): applied; its pods not read ready yet
    reconciler.reconcile("serving", "demo")  # settled: two replicas moved in 150 s
    cost = kube.body["status"]["switchCost"]
    assert cost["source"] == "Measured" and cost["samples"] == 1
    assert cost["lastSwitchSeconds"] == 150.0 and cost["lastReplicasMoved"] == 2
    assert cost["secondsPerReplica"] == cost["measuredSecondsPerReplica"] == 75.0
    reconciler.reconcile("serving", "demo")  # the same decision is measured once
    assert kube.body["status"]["switchCost"]["samples"] == 1


def test_evidence_of_another_spec_is_reset_and_the_fingerprint_kept_in_status() -> None:
    """Two breaches counted under k=5; the user changes k: the third breach starts a new count."""
    kube = FakeKube(_deployed(replicas=2).body, pod_monitors=False)
    reconciler = Reconciler(kube)
    reconciler.evaluate("serving", "demo", _breach(2), NOW)
    reconciler.evaluate("serving", "demo", _breach(2), NOW + 60)
    status = kube.body["status"]
    assert status["counters"]["breaches"] == 2 and status["specFingerprint"]
    first = status["specFingerprint"]
    kube.live("SpeculativeInference", "serving", "demo")["spec"]["speculation"]["numSpeculativeTokens"] = 3
    reconciler.evaluate("serving", "demo", _breach(2), NOW + 120)
    status = kube.body["status"]
    assert status["mode"] == "Speculative"  # not a third breach in a row: the evidence was of k=5
    assert status["counters"]["breaches"] == 1
    assert status["specFingerprint"] != first


def _rows(kube: FakeKube) -> Any:
    from specops.render.manifests import speculation_rows_in

    live = kube.live("Deployment", "serving", pool_name("demo", Pool.SPECULATIVE))
    return speculation_rows_in(live["spec"]["template"]["spec"]["containers"][0]["args"])


def test_auto_table_is_shown_in_status_and_rendered_only_when_the_pool_starts_from_zero() -> None:
    kube = _deployed(replicas=2, speculation={"tokensPerBatchSizeMode": "Auto"})
    prior = _rows(kube)
    assert prior  # the catalog's prior table, rendered at creation
    reconciler = Reconciler(kube)
    live = PoolMetrics(replicas=2, request_rate=4.0, acceptance=0.3, tpot_p50=0.02, tpot_p99=0.03,
                       waiting=0.0, per_position=(0.35, 0.3, 0.25, 0.2, 0.15))  # fmt: skip
    reconciler.evaluate("serving", "demo", Observation(speculative=live), NOW)
    table = kube.body["status"]["derivedSpeculationTable"]
    assert table["rows"] and table["acceptanceSource"] == "Live"
    assert _rows(kube) == prior  # speculative pods run: a new table would restart them all
    kube.write_status({"mode": "Baseline"})
    for _ in range(3):
        reconciler.reconcile("serving", "demo")
    assert _split(kube) == PoolSplit(0, 2)
    kube.write_status({"mode": "Speculative"})
    reconciler.reconcile("serving", "demo")  # the pool starts from zero: the live table goes in
    assert _split(kube) == PoolSplit(1, 1)
    assert _rows(kube) != prior
    in_status = [[r["minBatchSize"], r["maxBatchSize"], r["numSpeculativeTokens"]] for r in table["rows"]]
    assert _rows(kube) == in_status  # what the pool runs is what status shows

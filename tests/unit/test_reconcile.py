from __future__ import annotations

import itertools
from typing import Any

import pytest

from specops.api.v1alpha1 import ConditionStatus, ServingMode, SpeculativeInferenceStatus
from specops.checks.admission import review, review_scale
from specops.checks.validation import check_resource
from specops.plan.drift import contains, needs_apply
from specops.plan.rollout import PoolState, current_mode, growing_pool, rollout_step, split_for_mode
from specops.plan.status import (
    ConditionType,
    ConditionValue,
    desired_status,
    dump_status,
    keep_figures_fresh_enough,
    merge_patch,
    prune_empty,
    with_condition,
)
from specops.render.manifests import Pool, PoolSplit, render_all
from tests.support.resources import make_doc, make_si

SPECULATIVE, BASELINE, PROBING = ServingMode.SPECULATIVE, ServingMode.BASELINE, ServingMode.PROBING


@pytest.mark.parametrize(
    ("want", "have", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # server-added fields are ignored
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 0}}, True),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, False),  # SpecOps owns whole lists
        ({"a": [{"x": 1}]}, {"a": [{"x": 1, "defaulted": True}]}, True),
        ({"cpu": "0.5"}, {"cpu": "500m"}, True),  # canonicalised quantities
        ({"memory": "1Gi"}, {"memory": "1073741824"}, True),
        ({"memory": "1Gi"}, {"memory": "1G"}, False),
        ({"port": 8000}, {"port": "8000"}, True),
        ({"a": 1}, None, False),
        ({"args": ["--x", "1"]}, {"args": ["--x", "2"]}, False),
        # The API server omits zero values when it stores an object.
        ({"readOnly": False, "items": [], "x": 0}, {}, True),
        ({"readOnly": True}, {}, False),
    ],
)
def test_contains(want: Any, have: Any, expected: bool) -> None:
    assert contains(want, have) is expected


def test_needs_apply_on_missing_changed_and_identical() -> None:
    desired = render_all(make_si())[0]
    assert needs_apply(desired, None)
    live = {
        "metadata": {**desired["metadata"], "uid": "u", "resourceVersion": "7"},
        "spec": {**desired["spec"], "progressDeadlineSeconds": desired["spec"]["progressDeadlineSeconds"]},
        "status": {"replicas": 2},
    }
    assert not needs_apply(desired, live)
    edited = {**live, "spec": {**live["spec"], "replicas": 5}}
    assert needs_apply(desired, edited)


@pytest.mark.parametrize(
    ("mode", "replicas", "probe", "expected"),
    [
        (SPECULATIVE, 3, 1, PoolSplit(3, 0)),
        (BASELINE, 3, 1, PoolSplit(0, 3)),
        (PROBING, 3, 1, PoolSplit(1, 2)),
        (PROBING, 3, 5, PoolSplit(2, 1)),  # a probe always leaves one baseline replica
        (PROBING, 1, 1, PoolSplit(1, 0)),  # single replica: a timed trial of the whole service
        (PROBING, 0, 1, PoolSplit(0, 0)),
        (BASELINE, 0, 1, PoolSplit(0, 0)),
    ],
)
def test_split_for_mode(mode: str, replicas: int, probe: int, expected: PoolSplit) -> None:
    split = split_for_mode(mode, replicas, probe)
    assert split == expected
    assert split.total == replicas


def test_current_mode_pins_and_status() -> None:
    assert current_mode(make_si()) == SPECULATIVE
    assert current_mode(make_si(policy={"mode": "Baseline"})) == BASELINE
    doc = make_doc()
    doc["status"] = {"mode": "Baseline"}
    from specops.api.v1alpha1 import SpeculativeInference

    si = SpeculativeInference.model_validate(doc)
    assert current_mode(si) == BASELINE
    pinned = si.model_copy(update={"spec": si.spec.model_copy(update={"policy": make_si(
        policy={"mode": "Speculative"}).spec.policy})})  # fmt: skip
    assert current_mode(pinned) == SPECULATIVE


def test_with_condition_moves_transition_time_only_on_change() -> None:
    false, true = ConditionStatus.FALSE, ConditionStatus.TRUE
    ready = ConditionType.READY
    conds = with_condition([], ready, ConditionValue(false, "ReplicasNotReady", "0/1"), 1, "t1")
    conds = with_condition(conds, ready, ConditionValue(false, "ReplicasNotReady", "0/1 still"), 2, "t2")
    assert conds[0].last_transition_time == "t1"
    assert conds[0].observed_generation == 2
    conds = with_condition(conds, ready, ConditionValue(true, "AllReplicasReady", "1/1"), 2, "t3")
    assert conds[0].last_transition_time == "t3"
    assert len(conds) == 1


def test_desired_status_is_stable_when_nothing_changes() -> None:
    si = make_si()
    report = check_resource(si)
    pools = {Pool.SPECULATIVE: PoolState(True, 2, 2, 2), Pool.BASELINE: PoolState(True, 0, 0, 0)}
    first = dump_status(desired_status(si, report, SPECULATIVE, PoolSplit(2, 0), pools, "t1"))
    assert {c["type"]: c["status"] for c in first["conditions"]} == {
        "BudgetFits": "True", "Ready": "True", "SpeculationActive": "True", "MetricsAvailable": "Unknown",
    }  # fmt: skip
    # Feed the status back in, a later clock: nothing to patch.
    again_si = si.model_copy(update={"status": SpeculativeInferenceStatus.model_validate(first)})
    second = dump_status(desired_status(again_si, report, SPECULATIVE, PoolSplit(2, 0), pools, "t2"))
    assert merge_patch(first, second) == {}
    # A pod going unready changes exactly the conditions and pools.
    pools[Pool.SPECULATIVE] = PoolState(True, 2, 1, 2)
    third = dump_status(desired_status(again_si, report, SPECULATIVE, PoolSplit(2, 0), pools, "t3"))
    assert set(merge_patch(first, third)) == {"conditions", "pools"}


def test_merge_patch_deletes_what_went_away() -> None:
    old = {"observed": {"acceptanceRate": 0.7, "p99TpotSeconds": 0.03}, "mode": "Speculative", "x": 1}
    new = {"observed": {"acceptanceRate": 0.7}, "mode": "Baseline"}
    assert merge_patch(old, new) == {"observed": {"p99TpotSeconds": None}, "mode": "Baseline", "x": None}
    assert merge_patch(new, new) == {}


def test_refused_status_and_no_empty_values() -> None:
    si = make_si(target={"quantization": "none"})
    report = check_resource(si)
    status = dump_status(desired_status(si, report, SPECULATIVE, None, {}, "t"))
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["BudgetFits"]["status"] == "False"
    assert cond["BudgetFits"]["reason"] == "DoesNotFit"
    assert cond["Ready"]["reason"] == "Refused"
    assert "pools" not in status
    assert prune_empty({"a": None, "b": "", "c": [{"d": None, "e": 1}]}) == {"c": [{"e": 1}]}


def test_admission_review() -> None:
    good, bad = make_doc(), make_doc(target={"quantization": "none"})
    verdict = review("CREATE", good, None)
    assert verdict.allowed and any("QuantizedTarget" in w for w in verdict.warnings)
    verdict = review("CREATE", bad, None)
    assert not verdict.allowed and "DoesNotFit" in verdict.message
    # An update that leaves the spec alone is allowed even for an object invalid under today's rules.
    bad_labelled = {**bad, "metadata": {**bad["metadata"], "labels": {"x": "y"}}}
    assert review("UPDATE", bad_labelled, bad).allowed
    unreadable = make_doc(target={"tensorParallelSize": "two"})
    verdict = review("CREATE", unreadable, None)
    assert not verdict.allowed and "spec.target.tensorParallelSize" in verdict.message
    assert review("DELETE", None, good).allowed
    assert review_scale({"spec": {"replicas": 3}}).allowed
    assert not review_scale({"spec": {"replicas": -1}}).allowed


def _status(doc: dict[str, Any]) -> SpeculativeInferenceStatus:
    return SpeculativeInferenceStatus.model_validate(doc)


_OLD_DOC = {"mode": "Speculative", "verdict": "Healthy", "verdictReason": "Healthy", "counters": {"breaches": 0},
            "observed": {"windowEnd": "2026-01-01T00:00:00Z", "acceptanceRate": 0.7, "p99TpotSeconds": 0.040,
                         "requestRate": 0.05, "acceptancePerPosition": [0.8, 0.6]},
            "verdictMessage": "old"}  # fmt: skip
_T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def _with(**observed: Any) -> SpeculativeInferenceStatus:
    fresh = {**_OLD_DOC["observed"], "windowEnd": "2026-01-01T00:00:10Z", **observed}  # type: ignore[dict-item]
    return _status({**_OLD_DOC, "observed": fresh, "verdictMessage": "new"})


@pytest.mark.parametrize(
    ("observed", "written"),
    [
        ({"acceptanceRate": 0.71}, False),  # +1.4%: noise
        ({"acceptanceRate": 0.76}, False),  # +8.6%: under 10%
        ({"acceptanceRate": 0.78}, True),  # +11%
        ({"acceptanceRate": 0.62}, True),  # -11%
        ({"p99TpotSeconds": 0.043}, False),  # +7.5%
        ({"p99TpotSeconds": 0.045}, True),  # +12.5% and 5 ms
        ({"requestRate": 0.09}, False),  # +80%, but 0.04 req/s is under the 0.1 floor
        ({"requestRate": 0.5}, True),
        ({"acceptancePerPosition": [0.8, 0.5]}, True),  # one position moved
        ({"acceptancePerPosition": [0.8, 0.6, 0.4]}, True),  # a position appeared
        ({"acceptancePerPosition": [0.81, 0.6]}, False),
        ({"kvCacheUsage": 0.3}, True),  # a figure appeared
        ({"requestRate": None}, True),  # a figure went away
    ],
)
def test_figures_are_written_when_one_moved_meaningfully(observed: dict[str, Any], written: bool) -> None:
    old, new = _status(_OLD_DOC), _with(**observed)
    assert keep_figures_fresh_enough(old, new, _T0 + 10, refresh=60) == (new if written else old)


def test_figures_refresh_when_state_changes_or_they_age_within_the_budget() -> None:
    old, new = _status(_OLD_DOC), _with(acceptanceRate=0.71)
    asked: list[bool] = []

    def budget(answer: bool) -> Any:
        def may_write() -> bool:
            asked.append(answer)
            return answer

        return may_write

    kept = keep_figures_fresh_enough(old, new, _T0 + 10, 60, budget(True))
    assert kept == old and asked == []  # nothing due: the budget is not even asked
    assert keep_figures_fresh_enough(old, new, _T0 + 61, 60, budget(True)) == new  # figures aged
    assert keep_figures_fresh_enough(old, new, _T0 + 61, 60, budget(False)) == old  # ... but no budget left
    moved = _with(acceptanceRate=0.5)
    assert keep_figures_fresh_enough(old, moved, _T0 + 10, 60, budget(False)) == old
    assert asked == [True, False, False]
    # The policy's state changed: written at once, whatever the budget, which is not asked.
    breach = new.model_copy(update={"counters": _status({"counters": {"breaches": 1}}).counters})
    assert keep_figures_fresh_enough(old, breach, _T0 + 10, 60, budget(False)) == breach
    verdict = new.model_copy(update={"verdict": "NoData"})
    assert keep_figures_fresh_enough(old, verdict, _T0 + 10, 60, budget(False)) == verdict
    assert len(asked) == 3


@pytest.mark.parametrize(
    ("target", "applied", "growing_ready", "expected"),
    [
        (PoolSplit(0, 3), None, 0, PoolSplit(0, 3)),  # first deployment: straight to the target
        (PoolSplit(0, 4), PoolSplit(3, 0), 0, PoolSplit(3, 1)),  # replicas changed: a new pod, nothing stops
        (PoolSplit(0, 3), PoolSplit(3, 0), 0, PoolSplit(2, 1)),  # fall back: one replica moves
        (PoolSplit(0, 3), PoolSplit(2, 1), 0, PoolSplit(2, 1)),  # the new baseline pod is not ready yet
        (PoolSplit(0, 3), PoolSplit(2, 1), 1, PoolSplit(1, 2)),
        (PoolSplit(0, 3), PoolSplit(1, 2), 2, PoolSplit(0, 3)),
        (PoolSplit(1, 2), PoolSplit(0, 3), 3, PoolSplit(1, 2)),  # probe: one step
        (PoolSplit(3, 0), PoolSplit(1, 2), 1, PoolSplit(2, 1)),  # re-enable, growing = speculative
        (PoolSplit(3, 0), PoolSplit(1, 2), 0, PoolSplit(1, 2)),
        (PoolSplit(0, 1), PoolSplit(1, 0), 0, PoolSplit(0, 1)),  # one replica: a gap is unavoidable
    ],
)
def test_rollout_step_moves_one_replica_at_a_time(
    target: PoolSplit, applied: PoolSplit | None, growing_ready: int, expected: PoolSplit
) -> None:
    step = rollout_step(target, applied, growing_ready)
    assert step == expected
    assert step.total == target.total or (applied is not None and applied.total != target.total)


def _walk(target: PoolSplit, start: PoolSplit, surge: int) -> list[PoolSplit]:
    """Every split a switch applies, each step's growing pool becoming ready before the next."""
    steps = [start]
    while steps[-1] != target and len(steps) < 50:
        applied = steps[-1]
        grown = applied.speculative if growing_pool(target, applied) is Pool.SPECULATIVE else applied.baseline
        # Not ready yet: nothing moves.
        assert rollout_step(target, applied, grown - 1, surge=surge) in (applied, target)
        steps.append(rollout_step(target, applied, grown, surge=surge))
    return steps


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
@pytest.mark.parametrize("to_baseline", [True, False])
def test_rollout_with_surge_never_loses_a_replica(replicas: int, to_baseline: bool) -> None:
    start, target = PoolSplit(replicas, 0), PoolSplit(0, replicas)
    if not to_baseline:
        start, target = target, start
    plain = _walk(target, start, surge=0)
    surged = _walk(target, start, surge=1)
    assert plain[-1] == surged[-1] == target
    assert all(s.total == replicas for s in plain)  # no surge: the GPU budget, a replica moving
    # Surge: at most one pod over the budget, and never fewer than the budget asked for.
    assert all(replicas <= s.total <= replicas + 1 for s in surged)
    assert len(surged) == 2 * replicas + 1 and len(plain) == replicas + 1
    # Each surge step changes exactly one pool by one pod: one Deployment write.
    for a, b in itertools.pairwise(surged):
        assert abs(a.speculative - b.speculative) + abs(a.baseline - b.baseline) == 1

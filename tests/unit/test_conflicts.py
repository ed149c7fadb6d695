"""Concurrent writers: status patches carry the resourceVersion they were computed from (a 409 means
a fresh read and a new decision, never a lost update), and what another field manager adds to a
pool Deployment is not drift."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specops.controller.reconciler import CONFLICT_ATTEMPTS, Reconciler
from specops.plan.drift import contains, needs_apply
from specops.plan.rollout import rollout_step
from specops.policy.decide import Observation, PoolMetrics
from specops.render.manifests import PoolSplit, render_all
from tests.support.fake_kube import FakeKube, Write
from tests.support.resources import as_stored, make_doc, make_si

# ------------------------------------------------------------- keyed lists and managed fields

ENV_OWNED = {"f:env": {".": {}, 'k:{"name":"HF_HOME"}': {".": {}, "f:name": {}, "f:value": {}}}}
MINE = {"name": "HF_HOME", "value": "/data"}
THEIRS = {"name": "INJECTED", "value": "1"}


@pytest.mark.parametrize(
    ("want", "have", "owned", "expected"),
    [
        ({"env": [MINE]}, {"env": [MINE, THEIRS]}, ENV_OWNED, True),  # another manager's element
        ({"env": [MINE]}, {"env": [THEIRS, MINE]}, ENV_OWNED, True),
        ({"env": [MINE]}, {"env": [MINE, THEIRS]}, None, False),  # ownership unknown: whole lists
        ({"env": [MINE]}, {"env": [{**MINE, "value": "/x"}, THEIRS]}, ENV_OWNED, False),  # ours edited
        ({"env": [MINE]}, {"env": [THEIRS]}, ENV_OWNED, False),  # ours removed
        ({"env": []}, {"env": [MINE]}, ENV_OWNED, False),  # ours, no longer wanted: apply removes it
        ({"env": [MINE, THEIRS]}, {"env": [MINE]}, ENV_OWNED, False),
        # Keys made of several fields, one of them defaulted by the server (ports).
        (
            {"ports": [{"name": "http", "containerPort": 8000}]},
            {
                "ports": [
                    {"name": "http", "containerPort": 8000, "protocol": "TCP"},
                    {"name": "sidecar", "containerPort": 15090, "protocol": "TCP"},
                ]
            },
            {"f:ports": {'k:{"containerPort":8000,"protocol":"TCP"}': {"f:name": {}}}},
            True,
        ),
        # Atomic lists (args) stay whole, whoever wrote them.
        ({"args": ["--a"]}, {"args": ["--a", "--b"]}, {"f:args": {}}, False),
    ],
)
def test_contains_with_managed_fields(
    want: dict[str, Any], have: dict[str, Any], owned: dict[str, Any] | None, expected: bool
) -> None:
    assert contains(want, have, owned) is expected


def _live_with_foreign_env(desired: dict[str, Any], specops_owns_foreign: bool) -> dict[str, Any]:
    live = copy.deepcopy(desired)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["env"].append(THEIRS)
    names = [e["name"] for e in container["env"] if specops_owns_foreign or e is not THEIRS]
    env_fields = {f'k:{{"name":"{n}"}}': {".": {}, "f:name": {}, "f:value": {}} for n in names}
    container_fields = {"f:env": env_fields, "f:args": {}, "f:name": {}}
    owned = {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"vllm"}': container_fields}}}}}
    live["metadata"]["managedFields"] = [
        {"manager": "specops", "operation": "Apply", "fieldsV1": owned},
        {"manager": "injector", "operation": "Apply", "fieldsV1": {}},
    ]
    return live


def test_needs_apply_leaves_other_managers_elements_alone() -> None:
    desired = render_all(make_si())[0]
    assert not needs_apply(desired, _live_with_foreign_env(desired, specops_owns_foreign=False))
    # The same element in SpecOps's own managed fields is one it no longer wants: apply.
    assert needs_apply(desired, _live_with_foreign_env(desired, specops_owns_foreign=True))
    # Another manager's Apply entry is not SpecOps's.
    assert needs_apply(desired, _live_with_foreign_env(desired, False), manager="someone-else")


# ------------------------------------------------------------------ status patches that race


def fake_kube(status: dict[str, Any] | None = None, replicas: int = 2) -> FakeKube:
    """The demo resource as stored (with the status an operator wrote earlier); no PodMonitor kind."""
    return FakeKube(as_stored(make_doc(replicas=replicas), status=status), pod_monitors=False)


FOREIGN = {"type": "ExternalCheck", "status": "True", "reason": "Checked", "message": "by another writer",
           "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def test_a_status_write_between_read_and_patch_is_kept() -> None:
    kube = fake_kube()
    rec = Reconciler(kube, clock=lambda: "2026-01-01T00:00:00Z")
    # Someone adds a condition after the reconciler has read the resource.
    kube.interleave("patch_status", lambda: kube.write_status({"conditions": [FOREIGN]}))
    out = rec.reconcile("serving", "demo")
    assert out is not None and out.status_patched
    assert kube.conflicts == 1
    types = [c["type"] for c in kube.body["status"]["conditions"]]
    assert "ExternalCheck" in types and "Ready" in types and "BudgetFits" in types, types
    assert kube.body["status"]["mode"] == "Speculative"
    # The retry applied nothing twice and posted no event twice.
    assert kube.reasons == ["Deployed", "BudgetWarning"], kube.reasons


LOW_ACCEPTANCE = Observation(
    speculative=PoolMetrics(
        replicas=2, request_rate=2.0, acceptance=0.3, tpot_p50=0.02, tpot_p99=0.03, waiting=0.0
    )
)


def settled_speculative(breaches: int) -> dict[str, Any]:
    return {"mode": "Speculative", "modeSince": "2026-01-01T00:00:00Z",
            "counters": {"breaches": breaches, "recoveries": 0, "errors": 0}}  # fmt: skip


def test_a_transition_recorded_concurrently_is_not_recorded_twice() -> None:
    """Two evaluations (two operator instances) decide the same fall-back at once: one stores it."""
    kube = fake_kube(settled_speculative(breaches=2))
    rec = Reconciler(kube, clock=lambda: "2026-01-01T01:00:00Z")
    rec.reconcile("serving", "demo")
    now = 1767229200.0  # 2026-01-01T01:00:00Z
    other = {"time": "2026-01-01T01:00:00Z", "from": "Speculative", "to": "Baseline",
             "reason": "AcceptanceBelowThreshold", "message": "by the other instance"}  # fmt: skip
    kube.interleave("patch_status", lambda: kube.write_status(
        {"mode": "Baseline", "modeSince": "2026-01-01T01:00:00Z", "decisions": [other],
         "counters": {"breaches": 0, "recoveries": 0, "errors": 0}}
    ))  # fmt: skip
    decision = rec.evaluate("serving", "demo", LOW_ACCEPTANCE, now)
    assert kube.conflicts == 1
    assert decision is not None and decision.transition is None  # decided again: settling
    assert kube.body["status"]["decisions"] == [other]
    assert kube.body["status"]["mode"] == "Baseline"
    assert "AcceptanceBelowThreshold" not in kube.reasons


def test_without_a_concurrent_writer_the_transition_is_stored_once() -> None:
    kube = fake_kube(settled_speculative(breaches=2))
    rec = Reconciler(kube, clock=lambda: "2026-01-01T01:00:00Z")
    decision = rec.evaluate("serving", "demo", LOW_ACCEPTANCE, 1767229200.0)
    assert decision is not None and decision.transition is not None
    assert kube.conflicts == 0
    assert [d["reason"] for d in kube.body["status"]["decisions"]] == ["AcceptanceBelowThreshold"]
    assert kube.reasons.count("AcceptanceBelowThreshold") == 1


def test_endless_conflicts_give_up_and_raise() -> None:
    kube = fake_kube()
    rec = Reconciler(kube)
    calls = 0

    def always_conflict(write: Write) -> None:
        nonlocal calls
        if write.verb == "patch_status":
            calls += 1
            raise ApiException(status=409, reason="Conflict")

    kube.before_write = always_conflict
    with pytest.raises(ApiException):
        rec.reconcile("serving", "demo")
    assert calls == CONFLICT_ATTEMPTS


# ------------------------------------------------------------- killed at any write of a switch


class Killed(Exception):  # noqa: N818
    """The operator process dies here (SIGKILL): the write is never made."""


class Mortal:
    """A ``FakeKube.before_write`` hook: the operator dies once, before its ``kill_at``-th write."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.writes = 0

    def __call__(self, write: Write) -> None:
        if self.kill_at is not None and self.writes == self.kill_at:
            self.kill_at = None
            raise Killed
        self.writes += 1


def pool_history(kube: FakeKube) -> list[tuple[int, int]]:
    """The (speculative, baseline) replicas after every Deployment write."""
    replicas: dict[str, int] = {}
    history = []
    for manifest in kube.applied:
        if manifest["kind"] == "Deployment":
            replicas[manifest["metadata"]["name"]] = manifest["spec"]["replicas"]
            history.append((replicas.get("demo-spec", 0), replicas.get("demo-base", 0)))
    return history


def switch(rec: Reconciler, now: float) -> None:
    rec.evaluate("serving", "demo", LOW_ACCEPTANCE, now)
    for _ in range(5):  # each reconcile moves one replica (the fake's pods are ready at once)
        rec.reconcile("serving", "demo")


def killed_during_a_switch(kill_at: int | None) -> tuple[FakeKube, int]:
    """Three speculative replicas fall back; the operator dies before its ``kill_at``-th write of
    the switch and a new one (fresh reconciler, evaluations going on) carries on."""
    kube = fake_kube(settled_speculative(breaches=2), replicas=3)
    Reconciler(kube).reconcile("serving", "demo")
    assert pool_history(kube)[-1] == (3, 0)
    mortal = Mortal(kill_at)
    kube.before_write = mortal
    now = 1767229200.0
    try:
        switch(Reconciler(kube), now)
    except Killed:
        assert mortal.writes == kill_at
    first_run_writes = mortal.writes
    switch(Reconciler(kube), now + 2)
    assert mortal.kill_at is None  # it did die
    return kube, first_run_writes


def test_killed_at_any_write_of_a_switch_resumes_it() -> None:
    clean, writes = killed_during_a_switch(None)
    shrinking_pool_first = [(2, 0), (2, 1), (1, 1), (1, 2), (0, 2), (0, 3)]
    assert pool_history(clean)[-6:] == shrinking_pool_first
    assert writes >= 10  # status and event, then per step: two Deployments, an event, status
    for kill_at in range(writes):
        kube, _ = killed_during_a_switch(kill_at)
        history = pool_history(kube)
        assert history[-1] == (0, 3), (kill_at, history)
        assert kube.body["status"]["mode"] == "Baseline"
        decisions = [d["reason"] for d in kube.body["status"]["decisions"]]
        assert decisions == ["AcceptanceBelowThreshold"], (kill_at, decisions)
        assert kube.reasons.count("AcceptanceBelowThreshold") <= 1, (kill_at, kube.reasons)
        steps = list(itertools.pairwise(history))
        # Never more pods than spec.replicas, one replica at a time, and never back.
        assert all(s + b <= 3 for s, b in history), (kill_at, history)
        assert all(abs(s2 - s1) <= 1 and abs(b2 - b1) <= 1 for (s1, b1), (s2, b2) in steps), (
            kill_at,
            history,
        )
        assert all(s2 <= s1 and b2 >= b1 for (s1, b1), (s2, b2) in steps), (kill_at, history)


@pytest.mark.parametrize(
    ("target", "applied", "recorded_total", "expected"),
    [
        (PoolSplit(0, 3), PoolSplit(2, 0), 3, PoolSplit(2, 1)),  # stopped after the shrinking pool
        (PoolSplit(3, 0), PoolSplit(1, 1), 3, PoolSplit(2, 1)),
        (PoolSplit(3, 0), PoolSplit(2, 2), 3, PoolSplit(2, 1)),  # after the growing pool
        (PoolSplit(0, 3), PoolSplit(2, 2), 3, PoolSplit(1, 2)),
        (PoolSplit(0, 4), PoolSplit(3, 0), 3, PoolSplit(3, 1)),  # spec.replicas changed: a pod more
        (PoolSplit(0, 3), PoolSplit(2, 0), None, PoolSplit(2, 1)),  # nothing recorded: a resize
    ],
)
def test_a_step_cut_short_is_finished_first(
    target: PoolSplit, applied: PoolSplit, recorded_total: int | None, expected: PoolSplit
) -> None:
    step = rollout_step(target, applied, growing_ready=0, recorded_total=recorded_total)
    assert step == expected
    assert step.total == target.total

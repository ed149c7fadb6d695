"""Kubernetes-side faults in the closed loop, on the real control plane, each with its outcome.

A switch here is a real fall-back: three speculative replicas serve traffic at temperature 1.0,
acceptance drops under 0.5, the policy falls back to Baseline, and the switch moves one replica
at a time.  Each fault strikes between two steps of it (one replica moved, not all):

- the operator, a separate ``specops run`` process, is SIGKILLed, then started again;
- kube-apiserver is killed and started again (same port, certificates and etcd).

Either way the switch must finish in one consistent state: every replica in the baseline pool
with the baseline's args, status saying so, a single transition in the decision history (the one
recorded before the fault), and the pools never asking for more than spec.replicas, never moving
back.  Deleted or edited pools (drift) are covered by test_operator.py::test_drift_is_restored.

Concurrent writers: another field manager fighting over the pool Deployments, and a status write
landing between the operator's read and its status patch (409, then a fresh read).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.controller.kube import Kube
from specops_testkit.testbed.stack import Testbed
from tests.support.closed_loop import NAME
from tests.support.live_cluster import (
    condition,
    create_si,
    deployment,
    event_reasons,
    get_si,
    local_only,
    operator_writes,
    wait_for,
)
from tests.support.resources import example_doc
from tests.support.switching import (
    REPLICAS,
    OperatorProcess,
    assert_one_way_within_budget,
    assert_switched_once,
    hot_switch,
    pools,
)

pytestmark = [pytest.mark.integration, local_only]


# ------------------------------------------------------------------------------------ helpers


# ------------------------------------------------------------------------------------- faults


def test_operator_killed_mid_switch_finishes_it_once(
    api: client.ApiClient, testbed: Testbed, namespace: str, operator_processes: list[OperatorProcess],
    tmp_path: Path,
) -> None:  # fmt: skip
    ns = namespace
    first = OperatorProcess(testbed, ns, tmp_path / "operator-1.log")
    operator_processes.append(first)
    load, watcher = hot_switch(api, ns)
    first.kill()
    at_kill = pools(api, ns)
    assert at_kill is not None and sum(at_kill) == REPLICAS and 0 < at_kill[1] < REPLICAS, (
        f"not killed mid-switch: {at_kill}\n{first.tail()}"
    )
    si = get_si(api, ns, NAME)
    assert si["status"]["mode"] == "Baseline"  # the decision is stored before any pool moves
    recorded = si["status"]["decisions"]
    assert [d["reason"] for d in recorded] == ["AcceptanceBelowThreshold"], recorded
    assert [(d["from"], d["to"]) for d in recorded] == [("Speculative", "Baseline")]
    # Nobody moves the pools while no operator runs.
    time.sleep(3)
    assert pools(api, ns) == at_kill

    second = OperatorProcess(testbed, ns, tmp_path / "operator-2.log")
    operator_processes.append(second)
    try:
        assert_switched_once(api, ns, recorded)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- restarted operator:\n{second.tail()}") from None
    assert second.alive(), second.tail()
    samples = watcher.stop()
    print(f"\nkilled at pools {at_kill}; pools seen: {samples}")
    assert_one_way_within_budget(samples)
    load.join()


def test_apiserver_restarted_mid_switch_finishes_it_once(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    ns = namespace
    op = start_operator(webhooks=False, resync_seconds=5.0)
    load, watcher = hot_switch(api, ns)
    before = get_si(api, ns, NAME)
    assert before["status"]["mode"] == "Baseline"
    recorded = before["status"]["decisions"]
    assert [d["reason"] for d in recorded] == ["AcceptanceBelowThreshold"], recorded
    at_restart = pools(api, ns)
    assert at_restart is not None and 0 < at_restart[1] < REPLICAS, at_restart
    # SIGKILL: open watches and in-flight requests are cut, nothing is flushed.
    t0 = time.monotonic()
    testbed.control_plane.restart_apiserver(hard=True, down_seconds=3)
    print(f"\nkube-apiserver down at pools {at_restart}, back after {time.monotonic() - t0:.1f} s")
    assert_switched_once(api, ns, recorded)
    assert op.error is None and op._thread.is_alive()
    samples = watcher.stop()
    print(f"pools seen: {samples}")
    assert_one_way_within_budget(samples)
    load.join()


def test_other_field_manager_on_the_pools(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    """Another manager server-side-applies (forcing) and another client updates (read, modify,
    replace) the pool Deployments while the operator reconciles them: the operator's fields end as
    it wants them, the others' own fields stay, and once the others stop the operator goes quiet
    (nothing it sets is still drifting: no write loop)."""
    ns = namespace
    op = start_operator(webhooks=False, resync_seconds=1.0, evaluate=False)
    doc = example_doc()
    doc["spec"]["replicas"] = 1
    create_si(api, ns, doc)
    name = doc["metadata"]["name"]
    spec_name = f"{name}-spec"
    wait_for(lambda: deployment(api, ns, spec_name) and deployment(api, ns, f"{name}-base"), 30, "the pools")
    apps = client.AppsV1Api(api)
    deployments = dynamic.DynamicClient(api).resources.get(api_version="apps/v1", kind="Deployment")
    stop = threading.Event()
    counts = {"applies": 0, "updates": 0, "conflicts": 0}

    def other_apply(i: int) -> None:
        # Fights the operator over replicas and args; adds a label and an env var of its own.
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": spec_name, "namespace": ns, "labels": {"team": "platform"}},
            "spec": {"replicas": 4, "template": {"spec": {"containers": [
                {"name": "vllm", "args": ["--model", f"other-{i}"], "env": [{"name": "INJECTED", "value": "1"}]},
            ]}}},
        }  # fmt: skip
        deployments.server_side_apply(
            body=body, name=spec_name, namespace=ns, field_manager="platform-team", force_conflicts=True
        )
        counts["applies"] += 1

    def other_update(i: int) -> None:
        # Read, modify, replace: loses to a concurrent write with a 409 and reads again.
        for _ in range(5):
            dep = apps.read_namespaced_deployment(spec_name, ns)
            dep.metadata.annotations = {**(dep.metadata.annotations or {}), "example.com/edited": str(i)}
            dep.spec.replicas = 3
            try:
                apps.replace_namespaced_deployment(spec_name, ns, dep)
                counts["updates"] += 1
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
                counts["conflicts"] += 1

    def writer() -> None:
        i = 0
        while not stop.wait(0.15):
            i += 1
            (other_apply if i % 2 else other_update)(i)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(12)
    stop.set()
    thread.join(10)
    assert counts["applies"] > 10 and counts["updates"] > 10, counts
    print(f"\nother writer: {counts}")

    def settled() -> Any:
        dep = deployment(api, ns, spec_name)
        args = dep.spec.template.spec.containers[0].args
        return dep if dep.spec.replicas == 1 and "--speculative-config" in args else None

    dep = wait_for(settled, 30, "the operator's replicas and args back")

    def rolled_out() -> bool:
        d = deployment(api, ns, spec_name)
        st = d.status
        return bool(
            st.observed_generation == d.metadata.generation
            and (st.replicas, st.updated_replicas, st.ready_replicas) == (1, 1, 1)
            and condition(get_si(api, ns, name), "Ready").get("status") == "True"
        )

    wait_for(rolled_out, 90, "the last template rolled out and ready")
    container = dep.spec.template.spec.containers[0]
    assert not any(a.startswith("other-") for a in container.args)
    # What the other writers added beside the operator's fields stays.
    assert dep.metadata.labels["team"] == "platform"
    assert "example.com/edited" in (dep.metadata.annotations or {})
    assert {"INJECTED", "HF_HOME"} <= {e.name for e in container.env}
    assert "DriftCorrected" in event_reasons(api, ns, name)
    # Quiet afterwards: no write at all over several resyncs, and the operator still runs.
    time.sleep(3)
    t0 = time.time() + 1
    time.sleep(7)
    writes = operator_writes(testbed, t0, ns)
    assert writes == [], json.dumps(writes[:4], indent=1)
    assert op.error is None and op._thread.is_alive()


def test_status_written_between_read_and_patch_is_not_lost(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any, monkeypatch: Any
) -> None:
    """Another writer updates the resource's status (a condition of its own) after the operator
    read the resource and before its status patch lands.  The patch carries the resourceVersion it
    was computed from: the API server answers 409, the operator reads again and writes, and both
    updates survive."""
    ns = namespace
    custom = client.CustomObjectsApi(api)
    injected: list[str] = []
    real_patch = Kube.patch_status

    def foreign_write() -> None:
        si = get_si(api, ns, "llama70b-chat")
        conditions = [c for c in si.get("status", {}).get("conditions", []) if c["type"] != "ExternalCheck"]
        message = f"check {len(injected) + 1}"
        mine = {"type": "ExternalCheck", "status": "True", "reason": "Checked", "message": message,
                "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
        body = {"metadata": {"resourceVersion": si["metadata"]["resourceVersion"]},
                "status": {"conditions": [*conditions, mine]}}  # fmt: skip
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "llama70b-chat", body)
        injected.append(message)

    def racing_patch(self: Kube, namespace: str, name: str, patch: dict[str, Any], *args: Any) -> Any:
        if namespace == ns and "conditions" in patch and len(injected) < 3:
            foreign_write()  # lands between the operator's read and this patch
        return real_patch(self, namespace, name, patch, *args)

    monkeypatch.setattr(Kube, "patch_status", racing_patch)
    t0 = time.time() - 1
    op = start_operator(webhooks=False, resync_seconds=1.0, evaluate=False)
    doc = example_doc()
    doc["spec"]["replicas"] = 1
    create_si(api, ns, doc)
    wait_for(
        lambda: condition(get_si(api, ns, "llama70b-chat"), "Ready").get("status") == "True", 90, "Ready"
    )
    time.sleep(3)  # resyncs go on
    si = get_si(api, ns, "llama70b-chat")
    types = [c["type"] for c in si["status"]["conditions"]]
    assert injected, "no status patch raced"
    assert condition(si, "ExternalCheck").get("message") == injected[-1], types  # the other update kept
    assert len(injected) == 3  # each conflict meant a fresh read and another try in the same reconcile
    assert {"BudgetFits", "Ready", "SpeculationActive", "MetricsAvailable"} <= set(
        types
    )  # and the operator's
    assert si["status"]["pools"]["speculative"] == {"replicas": 1, "readyReplicas": 1}
    # The API server refused the stale patches (409), the operator read again and its writes landed.
    status_patches = [
        w for w in operator_writes(testbed, t0, ns)
        if w["objectRef"].get("subresource") == "status"
    ]  # fmt: skip
    codes = [w.get("responseStatus", {}).get("code") for w in status_patches]
    assert codes.count(409) == len(injected) and codes[-1] == 200, codes
    assert op.error is None and op._thread.is_alive()

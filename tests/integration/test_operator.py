"""The operator on a real kube-apiserver + controller-manager: reconcile, drift, scale, admission,
status, events, zero no-op writes, restart."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.controller import metrics
from specops_testkit.testbed.stack import Testbed
from tests.support.live_cluster import (
    POD_MONITOR_CRD,
    condition,
    create_settled_example,
    create_si,
    deployment,
    event_reasons,
    get_si,
    kubectl,
    local_only,
    operator_writes,
    patch_si,
    wait_for,
)
from tests.support.resources import example_doc

pytestmark = pytest.mark.integration


# The no-op write test's policy interval and watch: the watch spans at least two evaluations.
EVALUATION_SECONDS = 3.0
WATCH_SECONDS = 8.0
assert WATCH_SECONDS >= 2 * EVALUATION_SECONDS


def _evaluations() -> float:
    """Policy evaluations this process's operators have run (every verdict)."""
    return sum(s.value for m in metrics.EVALUATIONS.collect() for s in m.samples if s.name.endswith("_total"))


def spec_args(api: client.ApiClient, ns: str, name: str) -> list[str]:
    dep = deployment(api, ns, name)
    return list(dep.spec.template.spec.containers[0].args) if dep else []


def write_doc(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "si.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_lifecycle_create_update_delete(api: client.ApiClient, namespace: str, start_operator: Any) -> None:
    start_operator()
    create_si(api, namespace, example_doc())
    name = "llama70b-chat"
    spec_dep = wait_for(lambda: deployment(api, namespace, f"{name}-spec"), 20, "the speculative Deployment")
    base_dep = wait_for(lambda: deployment(api, namespace, f"{name}-base"), 20, "the baseline Deployment")
    assert spec_dep.spec.replicas == 2
    assert base_dep.spec.replicas == 0
    assert spec_dep.metadata.owner_references[0].kind == "SpeculativeInference"
    core = client.CoreV1Api(api)

    def service() -> Any:
        # Applied right after the Deployments, in the same reconcile: a moment later.
        try:
            return core.read_namespaced_service(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    svc = wait_for(service, 20, "the Service")
    assert svc.spec.selector["app.kubernetes.io/instance"] == name

    def observed() -> dict[str, Any] | None:
        si = get_si(api, namespace, name)
        return si if si.get("status", {}).get("observedGeneration") else None

    si = wait_for(observed, 20, "status.observedGeneration")
    assert si["status"]["mode"] == "Speculative"
    assert si["status"]["selector"].startswith("app.kubernetes.io/name=vllm")
    assert condition(si, "BudgetFits")["status"] == "True"
    assert condition(si, "MetricsAvailable")["status"] == "Unknown"
    assert si["status"]["budget"]["maxConcurrentSequences"] == 18
    # Pods run on the emulator: the pool becomes ready and status says so.
    si = wait_for(lambda: condition(s := get_si(api, namespace, name), "Ready").get("status") == "True" and s,
                  90, "Ready=True")  # fmt: skip
    assert si["status"]["pools"]["speculative"] == {"replicas": 2, "readyReplicas": 2}
    assert condition(si, "SpeculationActive")["status"] == "True"
    assert "Deployed" in event_reasons(api, namespace, name)

    # Update k: the speculative pool's args change, the baseline's do not.
    base_args = spec_args(api, namespace, f"{name}-base")
    patch_si(api, namespace, name, {"spec": {"speculation": {"numSpeculativeTokens": 3}}})
    wait_for(lambda: '"num_speculative_tokens":3' in " ".join(spec_args(api, namespace, f"{name}-spec")),
             20, "k=3 in the speculative args")  # fmt: skip
    assert spec_args(api, namespace, f"{name}-base") == base_args
    # Update the model: both pools change.
    patch_si(api, namespace, name, {"spec": {"target": {"model": "meta-llama/Llama-3.3-70B-Instruct"}}})
    wait_for(lambda: "meta-llama/Llama-3.3-70B-Instruct" in spec_args(api, namespace, f"{name}-base"),
             20, "new model in the baseline args")  # fmt: skip
    si = wait_for(lambda: (s := get_si(api, namespace, name))["status"]["observedGeneration"] == 3 and s,
                  20, "observedGeneration 3")  # fmt: skip
    assert "SpecApplied" in event_reasons(api, namespace, name)

    # Delete: owner references hand everything to the garbage collector; no finalizer is involved.
    assert not si["metadata"].get("finalizers")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_for(lambda: deployment(api, namespace, f"{name}-spec") is None
             and deployment(api, namespace, f"{name}-base") is None, 60, "garbage collection")  # fmt: skip


def test_drift_is_restored(api: client.ApiClient, namespace: str, start_operator: Any) -> None:
    start_operator()
    doc = example_doc()
    doc["spec"]["replicas"] = 1
    create_si(api, namespace, doc)
    name = "llama70b-chat"
    wait_for(lambda: deployment(api, namespace, f"{name}-spec"), 20, "the speculative Deployment")
    apps = client.AppsV1Api(api)
    # Someone edits the managed args (a conflicting manager), then someone deletes a pool.
    apps.patch_namespaced_deployment(
        f"{name}-spec", namespace, {"spec": {"replicas": 5, "template": {"spec": {"containers": [
            {"name": "vllm", "args": ["--model", "something-else"]}]}}}},
    )  # fmt: skip

    def restored() -> bool:
        dep = deployment(api, namespace, f"{name}-spec")
        return "--speculative-config" in dep.spec.template.spec.containers[0].args and dep.spec.replicas == 1

    wait_for(restored, 20, "args and replicas restored")
    apps.delete_namespaced_deployment(f"{name}-base", namespace)
    wait_for(lambda: deployment(api, namespace, f"{name}-base") is not None, 20, "baseline recreated")
    reasons = event_reasons(api, namespace, name)
    assert reasons.count("DriftCorrected") >= 2, reasons


def pool_sizes(api: client.ApiClient, namespace: str, name: str) -> tuple[int, int, int, int]:
    """Speculative and baseline replicas asked for, then ready (zeros until both Deployments exist)."""
    s, b = deployment(api, namespace, f"{name}-spec"), deployment(api, namespace, f"{name}-base")
    if s is None or b is None:
        return (0, 0, 0, 0)
    return (s.spec.replicas, b.spec.replicas, s.status.ready_replicas or 0, b.status.ready_replicas or 0)


def test_switch_with_max_surge_never_loses_a_ready_replica(
    api: client.ApiClient, namespace: str, start_operator: Any
) -> None:
    """spec.rollout.maxSurge: 1 on the real API server: pinned to Baseline, the pools go from 2/0 to
    0/2 through 2/1, 1/1, 1/2, 0/2; at most 3 pods asked for, never fewer than 2 ready once up."""
    start_operator(resync_seconds=1.0)
    doc = example_doc()
    doc["spec"]["replicas"] = 2
    doc["spec"]["rollout"] = {"maxSurge": 1}
    create_si(api, namespace, doc)
    name = "llama70b-chat"

    def pools() -> tuple[int, int, int, int]:
        return pool_sizes(api, namespace, name)

    wait_for(lambda: pools()[2] == 2, 120, "two ready speculative replicas")
    patch_si(api, namespace, name, {"spec": {"policy": {"mode": "Baseline"}}})
    seen = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        p = pools()
        seen.append(p)
        if p == (0, 2, 0, 2):
            break
        time.sleep(0.2)
    splits = [(p[0], p[1]) for p in seen]
    assert splits[-1] == (0, 2), seen[-5:]
    assert max(s + b for s, b in splits) == 3  # one pod over the budget, never more
    assert min(p[2] + p[3] for p in seen) >= 2, [p for p in seen if p[2] + p[3] < 2][:5]
    ordered = [s for i, s in enumerate(splits) if i == 0 or s != splits[i - 1]]
    path = [(2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]
    # In this order and nothing else.  (1, 1) waits for no pod (the baseline replica its next step
    # needs is ready already), so it lasts one reconcile and a poll may miss it; the others wait.
    assert ordered == [s for s in path if s in ordered], ordered
    assert {(2, 1), (1, 2)} <= set(ordered), ordered


def test_scale_subresource_mid_switch_keeps_one_replica_at_a_time(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    """What an HPA writes (spec.replicas through /scale) in the middle of a switch: the pools
    resize without moving a replica between them, a ready pod serves throughout, and the switch goes
    on one replica at a time to the new size (it used to jump straight to the target split)."""
    start_operator(resync_seconds=1.0)
    doc = example_doc()
    doc["spec"]["replicas"] = 2
    create_si(api, namespace, doc)
    name = "llama70b-chat"

    def pools() -> tuple[int, int, int, int]:
        return pool_sizes(api, namespace, name)

    wait_for(lambda: pools()[2] == 2, 120, "two ready speculative replicas")
    patch_si(api, namespace, name, {"spec": {"policy": {"mode": "Baseline"}}})
    wait_for(lambda: pools()[:2] == (1, 1), 60, "the first step of the switch")
    # Through the API, as an HPA writes it, at once: the step that waits for a pod lasts a few
    # seconds, and a kubectl process on a loaded machine has taken longer than that to start.
    client.CustomObjectsApi(api).patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": 3}}
    )
    seen = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        p = pools()
        seen.append(p)
        if p == (0, 3, 0, 3):
            break
        time.sleep(0.2)
    splits = [(p[0], p[1]) for p in seen]
    assert splits[-1] == (0, 3), seen[-5:]
    assert min(p[2] + p[3] for p in seen) >= 1, [p for p in seen if p[2] + p[3] < 1][:5]
    ordered = [s for i, s in enumerate(splits) if i == 0 or s != splits[i - 1]]
    for (s0, b0), (s1, b1) in itertools.pairwise(ordered):
        # Each step moves one replica (or adds the HPA's one): never two at once, never a jump.
        assert abs(s1 - s0) <= 1 and abs(b1 - b0) <= 1, ordered
    assert ordered[0] != (0, 3) and (1, 2) in ordered, ordered


def test_scale_subresource_and_hpa(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    start_operator()
    doc = example_doc("ngram-summarization.yaml")
    create_si(api, namespace, doc)
    name = "summarizer"
    wait_for(lambda: deployment(api, namespace, f"{name}-spec"), 20, "the speculative Deployment")
    out = kubectl(testbed, "-n", namespace, "scale", "specinf", name, "--replicas=4")
    assert "scaled" in out.stdout
    wait_for(lambda: deployment(api, namespace, f"{name}-spec").spec.replicas == 4, 20, "4 replicas")
    wait_for(lambda: get_si(api, namespace, name).get("status", {}).get("replicas") == 4, 60,
             "status.replicas 4 (scale subresource)")  # fmt: skip
    # A negative count is refused by the /scale validator.
    refused = kubectl(testbed, "-n", namespace, "scale", "si", name, "--replicas=-1", check=False)
    assert refused.returncode != 0
    # An HPA (autoscaling/v2beta2 on this 1.20 server) can target the resource through /scale.
    target = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SpeculativeInference", "name": name}
    cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    hpa = {
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": target,
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [{"type": "Resource", "resource": cpu}],
        },
    }
    # The client library no longer ships autoscaling/v2beta2 classes; the dynamic client serves it.
    hpas = dynamic.DynamicClient(api).resources.get(
        api_version="autoscaling/v2beta2", kind="HorizontalPodAutoscaler"
    )
    hpas.create(body=hpa, namespace=namespace)

    def able_to_scale() -> bool:
        got = hpas.get(name=name, namespace=namespace).to_dict()
        conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
        return conds.get("AbleToScale") == "True"

    wait_for(able_to_scale, 60, "HPA AbleToScale (it read the resource's /scale)")


def test_webhook_rejects_invalid_and_warns(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator()
    bad = example_doc("invalid-bf16-on-h100.yaml")
    bad["metadata"]["namespace"] = namespace
    out = kubectl(testbed, "apply", "-f", write_doc(tmp_path, bad), check=False)
    assert out.returncode != 0
    assert "TokenizerMismatch" in out.stderr and "DoesNotFit" in out.stderr, out.stderr
    assert "spec.speculation.draft.model" in out.stderr
    assert "quantize the target" in out.stderr
    with pytest.raises(ApiException):
        get_si(api, namespace, "llama70b-bf16")  # nothing was stored

    good = example_doc()
    good["metadata"]["namespace"] = namespace
    out = kubectl(testbed, "apply", "-f", write_doc(tmp_path, good))
    assert "Warning:" in out.stderr and "QuantizedTarget" in out.stderr, out.stderr
    # Version checks run in the webhook too: vLLM 0.11 cannot run a draft model.
    old = copy.deepcopy(good)
    old["metadata"]["name"] = "old-vllm"
    old["spec"]["vllm"] = {"version": "0.11.0", "image": "vllm/vllm-openai:v0.11.0"}
    out = kubectl(testbed, "apply", "-f", write_doc(tmp_path, old), check=False)
    assert out.returncode != 0 and "MethodUnsupportedByVersion" in out.stderr, out.stderr
    # Schema-level checks stay in the CRD.
    schema_bad = copy.deepcopy(good)
    schema_bad["metadata"]["name"] = "schema-bad"
    schema_bad["spec"]["speculation"]["numSpeculativeTokens"] = 99
    out = kubectl(testbed, "apply", "-f", write_doc(tmp_path, schema_bad), check=False)
    assert out.returncode != 0 and "numSpeculativeTokens" in out.stderr, out.stderr


def test_refused_without_webhook_changes_nothing(
    api: client.ApiClient, namespace: str, start_operator: Any
) -> None:
    """With the webhook down (failurePolicy Ignore), the reconciler still refuses and says why."""
    start_operator(webhooks=False)
    bad = example_doc("invalid-bf16-on-h100.yaml")
    create_si(api, namespace, bad)
    si = wait_for(lambda: condition(s := get_si(api, namespace, "llama70b-bf16"), "BudgetFits") and s,
                  20, "BudgetFits condition")  # fmt: skip
    assert condition(si, "BudgetFits")["status"] == "False"
    assert condition(si, "Ready")["reason"] == "Refused"
    assert "DoesNotFit" in condition(si, "BudgetFits")["message"]
    assert deployment(api, namespace, "llama70b-bf16-spec") is None
    assert "SpecRejected" in event_reasons(api, namespace, "llama70b-bf16")


@local_only
def test_no_op_reconcile_writes_nothing_and_restart_resumes(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    # Evaluations run too (no traffic: NoData each time), every few seconds, so that the watch below
    # covers several of them and several resyncs; figures would refresh after an hour.
    op = start_operator(resync_seconds=1.0, status_refresh_seconds=3600.0)
    created = create_settled_example(api, namespace, f"{EVALUATION_SECONDS:g}s")
    name = "llama70b-chat"
    time.sleep(3)  # let the last status and event writes land
    before = {d: deployment(api, namespace, f"{name}-{d}").metadata for d in ("spec", "base")}
    si_before = get_si(api, namespace, name)
    t0 = time.time() + 1
    evaluations = _evaluations()
    time.sleep(WATCH_SECONDS)  # about eight periodic reconciles and several evaluations
    assert _evaluations() - evaluations >= 2, "fewer than two evaluations ran during the watch"
    writes = operator_writes(testbed, t0, namespace)
    assert writes == [], json.dumps(writes[:3], indent=1)

    # GitOps: the operator wrote nothing to the spec or metadata of the user's object.
    assert si_before["spec"] == get_si(api, namespace, name)["spec"]
    assert si_before["metadata"].get("annotations", {}) == created["metadata"].get("annotations", {})
    assert not si_before["metadata"].get("finalizers")
    for entry in si_before["metadata"]["managedFields"]:
        if entry["manager"] == "specops":
            assert set(entry["fieldsV1"]) == {"f:status"}, entry

    # Restart: a new operator (new Kopf registry) resumes without re-creating or rewriting.
    op.stop()
    t1 = time.time() + 1
    start_operator(resync_seconds=1.0, status_refresh_seconds=3600.0)
    time.sleep(6)
    for d in ("spec", "base"):
        meta = deployment(api, namespace, f"{name}-{d}").metadata
        assert (meta.uid, meta.resource_version) == (before[d].uid, before[d].resource_version)
    writes = operator_writes(testbed, t1, namespace)
    assert writes == [], json.dumps(writes[:3], indent=1)


def test_printer_columns(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    start_operator()
    create_si(api, namespace, example_doc("ngram-summarization.yaml"))
    wait_for(
        lambda: condition(get_si(api, namespace, "summarizer"), "Ready").get("status") == "True", 90, "Ready"
    )
    out = kubectl(testbed, "-n", namespace, "get", "specinf")
    header, row = out.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "MODE", "SPEC", "BASE", "ACCEPTANCE", "P99/P50", "READY", "AGE"]
    assert row.split()[:4] == ["summarizer", "Speculative", "3", "0"]


def test_pod_monitor_when_its_kind_is_served(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    """A stand-in for the Prometheus Operator's CRD (only its kind matters to SpecOps)."""
    from specops_testkit.testbed.controlplane import install_crds

    install_crds(testbed.kubeconfig, [POD_MONITOR_CRD])
    start_operator()
    create_si(api, namespace, example_doc("ngram-summarization.yaml"))
    custom = client.CustomObjectsApi(api)
    pm = wait_for(lambda: custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "podmonitors", "summarizer"),
                  20, "the PodMonitor")  # fmt: skip
    assert pm["metadata"]["ownerReferences"][0]["kind"] == "SpeculativeInference"
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "http"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"specops_pool", "specops_name"}

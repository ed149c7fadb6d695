"""Regression tests for what the fuzzing found: inputs that crashed the checks, resources that
were accepted but rendered objects the apiserver refuses, and a refused apply that raised at every
resync.  Each bad value is refused naming its field; its good neighbour still passes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import parse_duration
from specops.checks.admission import review
from specops.checks.validation import load_resource
from specops.controller.evaluator import Evaluator
from specops.controller.reconciler import Reconciler
from specops.render.manifests import render_all
from tests.support.fake_kube import FakeKube, Write
from tests.support.k8s import manifest_problems
from tests.support.resources import as_stored, make_doc


def verdict(**patch: Any) -> tuple[bool, str]:
    v = review("CREATE", make_doc(**patch), None)
    return v.allowed, v.message


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        # Numbers whose arithmetic overflowed (OverflowError out of the webhook and the reconciler).
        ({"resources": {"gpuType": None, "gpuMemoryGiB": 1e308}}, "spec.resources.gpuMemoryGiB"),
        ({"target": {"parameters": "1" + "0" * 400 + "B"}}, "spec.target.parameters"),
        ({"target": {"parameters": 10**400}}, "spec.target.parameters"),
        ({"target": {"parameters": 0}}, "spec.target.parameters"),
        ({"target": {"parameters": -5}}, "spec.target.parameters"),
        ({"target": {"maxModelLen": 10**400}}, "spec.target.maxModelLen"),
        ({"target": {"architecture": {"layers": 10**400, "kvHeads": 8, "headDim": 128}}}, "spec.target.architecture.layers"),
        ({"speculation": {"draft": {"architecture": {"layers": 32, "kvHeads": 8, "headDim": 10**9}}}}, "spec.speculation.draft.architecture.headDim"),
        # int32 fields of the Deployment.
        ({"replicas": 2**31}, "spec.replicas"),
        ({"vllm": {"startupTimeout": "10000000h"}}, "spec.vllm.startupTimeout"),
        # A window Prometheus cannot take.
        ({"policy": {"window": "0s"}}, "spec.policy.window"),
        ({"policy": {"window": "500ms"}}, "spec.policy.window"),
        # Strings and maps the apiserver checks on the pods.
        ({"podLabels": {"a b": "c"}}, "spec.podLabels.a b"),
        ({"podLabels": {"team": "x" * 64}}, "spec.podLabels.team"),
        ({"podLabels": {"team": "-x"}}, "spec.podLabels.team"),
        ({"podAnnotations": {"bad key/x/y": "v"}}, "spec.podAnnotations.bad key/x/y"),
        ({"podAnnotations": {"big": "x" * 300_000}}, "spec.podAnnotations"),
        ({"resources": {"nodeSelector": {"k": "v v"}}}, "spec.resources.nodeSelector.k"),
        ({"resources": {"cpu": "lots"}}, "spec.resources.cpu"),
        ({"resources": {"memory": "1 Gi"}}, "spec.resources.memory"),
        ({"resources": {"memory": "-1Gi"}}, "spec.resources.memory"),
        ({"resources": {"shmSize": "big"}}, "spec.resources.shmSize"),
        ({"resources": {"gpuResourceName": "gpu"}}, "spec.resources.gpuResourceName"),
        ({"resources": {"gpuResourceName": "my gpu/x"}}, "spec.resources.gpuResourceName"),
        ({"resources": {"gpuResourceName": "kubernetes.io/gpu"}}, "spec.resources.gpuResourceName"),
        ({"resources": {"tolerations": [{"operator": "Sometimes"}]}}, "spec.resources.tolerations[0].operator"),
        ({"resources": {"tolerations": [{"key": "a", "value": "v v"}]}}, "spec.resources.tolerations[0].value"),
        ({"resources": {"tolerations": [{"value": "x"}]}}, "spec.resources.tolerations[0].operator"),
        ({"resources": {"tolerations": [{"operator": "Exists", "tolerationSeconds": 5}]}}, "spec.resources.tolerations[0].effect"),
        ({"resources": {"tolerations": [{"operator": "Exists", "tolerationSeconds": "5"}]}}, "spec.resources.tolerations[0].tolerationSeconds"),
        ({"resources": {"tolerations": [{"operator": "Exists", "effect": "Never"}]}}, "spec.resources.tolerations[0].effect"),
        ({"resources": {"tolerations": [{"operator": "Exists", "bogus": 1}]}}, "spec.resources.tolerations[0].bogus"),
        ({"resources": {"affinity": {"nodeAffinity": 3}}}, "spec.resources.affinity.nodeAffinity"),
        ({"resources": {"affinity": {"gpuAffinity": {}}}}, "spec.resources.affinity.gpuAffinity"),
        ({"vllm": {"image": "vllm/vllm-openai:v0.32.0 "}}, "spec.vllm.image"),
        ({"vllm": {"env": [{"name": "1 A=B", "value": "x"}]}}, "spec.vllm.env[0].name"),
        ({"vllm": {"env": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}}, "spec.vllm.env[0].valueFrom"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {"bogus": {}}}]}}, "spec.vllm.env[0].valueFrom.bogus"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {}}]}}, "spec.vllm.env[0].valueFrom"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad Name", "key": "k"}}}]}}, "spec.vllm.env[0].valueFrom.secretKeyRef.name"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a b"}}}]}}, "spec.vllm.env[0].valueFrom.secretKeyRef.key"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]}}, "spec.vllm.env[0].valueFrom.fieldRef.fieldPath"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]}}, "spec.vllm.env[0].valueFrom.resourceFieldRef.resource"),
        ({"vllm": {"env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}}}]}}, "spec.vllm.env[0].valueFrom.resourceFieldRef.divisor"),
        ({"vllm": {"extraArgs": ["--x=a\x00b"]}}, "spec.vllm.extraArgs[0]"),
        ({"target": {"revision": "main\x00"}}, "spec.target.revision"),
        ({"serviceAccountName": "Bad_SA"}, "spec.serviceAccountName"),
        ({"priorityClassName": "high priority"}, "spec.priorityClassName"),
        ({"imagePullSecrets": ["ok", "Not OK"]}, "spec.imagePullSecrets[1]"),
        ({"modelCache": {"persistentVolumeClaim": "Models!"}}, "spec.modelCache.persistentVolumeClaim"),
        ({"modelCache": {"hostPath": "../etc"}}, "spec.modelCache.hostPath"),
        ({"modelCache": {"hostPath": "/mnt/../etc"}}, "spec.modelCache.hostPath"),
        ({"hfTokenSecret": {"name": "HF Token"}}, "spec.hfTokenSecret.name"),
        ({"hfTokenSecret": {"name": "hf", "key": "a b"}}, "spec.hfTokenSecret.key"),
    ],
)  # fmt: skip
def test_refused_naming_the_field(patch: dict[str, Any], field: str) -> None:
    allowed, message = verdict(**patch)
    assert not allowed
    assert f"{field}:" in message, message


@pytest.mark.parametrize(
    "patch",
    [
        {"resources": {"gpuType": None, "gpuMemoryGiB": 96}},
        {"target": {"maxModelLen": 4096}},
        {"replicas": 2**31 - 1},
        {"vllm": {"startupTimeout": "2h"}},
        {"policy": {"window": "1.5m"}},
        {"podLabels": {"example.com/team": "ml-infra", "tier": ""}},
        {"podAnnotations": {"Example.com/Owner": "anything at all: ü 🙂", "note": "x" * 10_000}},
        {"resources": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}},
        {"resources": {"cpu": "500m", "memory": "64Gi", "shmSize": "1e9"}},
        {"resources": {"gpuResourceName": "amd.com/gpu"}},
        {"resources": {"tolerations": [{"operator": "Exists"}, {"key": "a", "operator": "Equal", "value": "b", "effect": "NoExecute", "tolerationSeconds": 60}]}},
        {"resources": {"affinity": {"nodeAffinity": {}, "podAntiAffinity": None}}},
        {"vllm": {"env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                          {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
                          {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                          {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k.v", "optional": True}}},
                          {"name": "my.var-1", "value": ""}]}},
        {"serviceAccountName": "vllm", "priorityClassName": "gpu-high", "imagePullSecrets": ["registry.creds"]},
        {"modelCache": {"hostPath": "/mnt/models/..cache"}},
        {"hfTokenSecret": {"name": "hf-token", "key": "HF_TOKEN"}},
    ],
)  # fmt: skip
def test_good_neighbours_pass_and_render_what_kubernetes_accepts(patch: dict[str, Any]) -> None:
    allowed, message = verdict(**patch)
    assert allowed, message
    si = load_resource(make_doc(**patch))
    for manifest in render_all(si):
        assert not manifest_problems(manifest, None), manifest_problems(manifest, None)


def test_parse_duration_refuses_a_trailing_newline() -> None:
    """Python's ``$`` matches before a final newline; the CRD's RE2 pattern does not."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5m\n")
    assert parse_duration("1h30m") == 5400


def _body(**patch: Any) -> dict[str, Any]:
    return as_stored(make_doc(**patch), namespace="ns")


def refuse_deployments(write: Write) -> None:
    """The apiserver refuses the Deployment (say, a nodeSelectorTerm without terms)."""
    if write.verb == "apply" and write.kind == "Deployment":
        body = json.dumps(
            {"kind": "Status", "reason": "Invalid", "message": 'Deployment.apps "demo-spec" is invalid: '
             "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
             ".nodeSelectorTerms: Required value: must have at least one node selector term"}
        )  # fmt: skip
        exc = ApiException(status=422, reason="Unprocessable Entity")
        exc.body = body
        raise exc


def test_a_refused_apply_is_reported_once_not_raised_at_every_resync() -> None:
    kube = FakeKube(
        _body(
            resources={"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}
        )
    )
    kube.before_write = refuse_deployments
    reconciler = Reconciler(kube, clock=lambda: "2025-01-01T00:00:00Z")
    out = reconciler.reconcile("ns", "demo")
    assert out is not None and out.refused and not out.applied
    ready = next(c for c in kube.body["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ManifestRejected")
    assert "Deployment demo-spec" in ready["message"] and "nodeSelectorTerms" in ready["message"]
    assert kube.reasons == ["SpecRejected"]
    patches = len(kube.status_patches)
    for _ in range(3):  # the periodic resync: no exception, no new event, no new status write
        assert reconciler.reconcile("ns", "demo") is not None
    assert kube.reasons == ["SpecRejected"]
    assert len(kube.status_patches) == patches


def test_other_api_errors_still_raise() -> None:
    def down(write: Write) -> None:
        if write.verb == "apply":
            raise ApiException(status=500, reason="Internal Server Error")

    kube = FakeKube(_body())
    kube.before_write = down
    reconciler = Reconciler(kube, clock=lambda: "2025-01-01T00:00:00Z")
    with pytest.raises(ApiException):
        reconciler.reconcile("ns", "demo")


@pytest.mark.parametrize(
    ("spec", "window"),
    [
        ({"policy": {"window": "1.5m"}}, "90s"),
        ({"policy": {"window": "5m]) or vector(1) #"}}, "5m"),
        ({"policy": {"window": "0s", "interval": 5}}, "5m"),
        ({"policy": {"window": 300}}, "5m"),
        ({"policy": "fast"}, "5m"),
        ({"policy": {"prometheusUrl": ["x"]}}, "5m"),
        (None, "5m"),
    ],
)
def test_evaluator_puts_only_a_rebuilt_duration_into_queries(spec: Any, window: str) -> None:
    evaluator = Evaluator(Reconciler(FakeKube(_body())), "http://p", query=lambda url, q: [])
    evaluator.track("ns", "demo", copy.deepcopy(spec))
    tracked = evaluator.tracked[("ns", "demo")]
    assert tracked.window == window
    assert tracked.url == "http://p"

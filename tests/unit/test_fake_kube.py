"""The shared FakeKube (tests/support/fake_kube.py) keeps what the reconciler relies on of the API
server: tests that run the reconciler on it are only as good as these."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specops.controller.kube import FIELD_MANAGER
from specops.controller.reconciler import Reconciler
from specops.plan.drift import needs_apply
from specops.render.manifests import OwnerRef, render_all, render_pod_monitor
from tests.support.fake_kube import FakeKube, Write, merge_patch
from tests.support.resources import as_stored, make_doc, make_si

OWNER = OwnerRef(name="demo", uid="u-1")


def manifests() -> list[dict[str, Any]]:
    si = make_si(vllm={"version": "0.32.0", "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]})
    return [*render_all(si, None, OWNER), render_pod_monitor(si, OWNER)]


def test_merge_patch_merges_maps_replaces_lists_and_deletes_on_null() -> None:
    old = {"mode": "Speculative", "observed": {"a": 1, "b": 2}, "conditions": [{"type": "Ready"}]}
    patch = {"observed": {"b": None, "c": 3}, "conditions": [], "mode": None}
    assert merge_patch(old, patch) == {"observed": {"a": 1, "c": 3}, "conditions": []}
    assert old["observed"] == {"a": 1, "b": 2}  # the target is not changed in place


def test_a_status_patch_on_a_stale_resource_version_is_a_conflict() -> None:
    kube = FakeKube(as_stored(make_doc()))
    read = kube.get_resource("serving", "demo")
    assert read is not None
    rv = read["metadata"]["resourceVersion"]
    new_rv = kube.patch_status("serving", "demo", {"mode": "Baseline"}, rv)
    assert new_rv is not None and int(new_rv) > int(rv)
    with pytest.raises(ApiException) as conflict:
        kube.patch_status("serving", "demo", {"mode": "Speculative"}, rv)
    assert conflict.value.status == 409 and kube.conflicts == 1
    assert kube.body["status"] == {"mode": "Baseline"}
    kube.patch_status("serving", "demo", {"mode": "Speculative"})  # no version: no check
    assert kube.body["status"] == {"mode": "Speculative"}
    assert len(kube.status_patches) == 2
    with pytest.raises(ApiException) as missing:
        kube.patch_status("serving", "other", {"mode": "Baseline"})
    assert missing.value.status == 404


def test_reads_are_copies() -> None:
    kube = FakeKube(as_stored(make_doc()))
    read = kube.get_resource("serving", "demo")
    assert read is not None
    read["spec"]["replicas"] = 7
    assert kube.body["spec"]["replicas"] == 2
    assert kube.get_resource("elsewhere", "demo") is None


@pytest.mark.parametrize("index", range(4), ids=["spec", "base", "service", "podmonitor"])
def test_what_was_applied_is_not_drift(index: int) -> None:
    kube = FakeKube()
    manifest = manifests()[index]
    kube.apply(manifest)
    meta = manifest["metadata"]
    live = kube.live(manifest["kind"], meta["namespace"], meta["name"])
    assert live is not None
    assert [m["manager"] for m in live["metadata"]["managedFields"]] == [FIELD_MANAGER]
    assert not needs_apply(manifest, copy.deepcopy(live), FIELD_MANAGER)


def _env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_managed_fields_tell_another_managers_list_element_from_an_edit_of_ours() -> None:
    kube = FakeKube()
    desired = manifests()[0]
    kube.apply(desired)
    meta = desired["metadata"]
    live = kube.live("Deployment", meta["namespace"], meta["name"])
    assert live is not None
    # An admission webhook injects an env var: its element, kept by server-side apply.
    _env(live).append({"name": "INJECTED", "value": "1"})
    live["metadata"]["managedFields"].append({"manager": "injector", "operation": "Update", "fieldsV1": {}})
    assert not needs_apply(desired, copy.deepcopy(live), FIELD_MANAGER)
    # Someone edits one of SpecOps's own elements: drift.
    _env(live)[0]["value"] = "edited"
    assert needs_apply(desired, copy.deepcopy(live), FIELD_MANAGER)


def test_a_deployment_is_ready_at_once_and_its_generation_moves_with_its_spec() -> None:
    kube = FakeKube()
    spec, *_ = manifests()
    kube.apply(spec)
    ns, name = spec["metadata"]["namespace"], spec["metadata"]["name"]
    first = kube.get_deployment(ns, name)
    assert first is not None
    replicas = spec["spec"]["replicas"]
    assert first["status"]["readyReplicas"] == first["status"]["updatedReplicas"] == replicas
    kube.apply(spec)
    again = kube.get_deployment(ns, name)
    assert again is not None
    assert again["metadata"]["generation"] == first["metadata"]["generation"]
    assert int(again["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    kube.apply({**spec, "spec": {**spec["spec"], "replicas": replicas + 1}})
    resized = kube.get_deployment(ns, name)
    assert resized is not None
    assert resized["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert resized["status"]["readyReplicas"] == replicas + 1


def test_hooks_refuse_writes_and_let_another_writer_in() -> None:
    kube = FakeKube(as_stored(make_doc()))
    seen: list[Write] = []

    def refuse_services(write: Write) -> None:
        seen.append(write)
        if write.kind == "Service":
            raise ApiException(status=422, reason="Invalid")

    kube.before_write = refuse_services
    deployment, _, service, _ = manifests()
    kube.apply(deployment)
    with pytest.raises(ApiException):
        kube.apply(service)
    assert [w.kind for w in seen] == ["Deployment", "Service"]
    assert [w.kind for w in kube.writes] == ["Deployment"]  # the refused write is not made
    assert kube.get_service("serving", "demo") is None

    # Events are best effort, as the real client's: an API error is swallowed, not recorded.
    kube.before_write = lambda write: (_ for _ in ()).throw(ApiException(status=500))
    kube.post_event(kube.body, "Normal", "Deployed", "created")
    assert kube.events == []
    kube.before_write = None

    # Another writer gets in once, just before the next status patch.
    rv = kube.body["metadata"]["resourceVersion"]
    kube.interleave("patch_status", lambda: kube.write_status({"mode": "Baseline"}))
    with pytest.raises(ApiException):
        kube.patch_status("serving", "demo", {"verdict": "Healthy"}, rv)
    kube.patch_status("serving", "demo", {"verdict": "Healthy"}, kube.body["metadata"]["resourceVersion"])
    assert kube.body["status"] == {"mode": "Baseline", "verdict": "Healthy"}


def test_a_second_reconcile_of_an_unchanged_resource_writes_nothing() -> None:
    """What the apiserver stores (managed fields, ready pods, status as patched) reads back as
    what the reconciler wants: it applies once and records the ready pods on the next pass (it
    reads readiness before it applies), then never writes again."""
    kube = FakeKube(as_stored(make_doc()))
    reconciler = Reconciler(kube, clock=lambda: "2026-01-01T00:00:00Z")
    reconciler.reconcile("serving", "demo")
    assert [w.kind for w in kube.writes if w.verb == "apply"] == [
        "Deployment", "Deployment", "Service", "PodMonitor"
    ]  # fmt: skip
    made = len(kube.writes)
    reconciler.reconcile("serving", "demo")
    assert [w.verb for w in kube.writes[made:]] == ["patch_status"]
    assert kube.body["status"]["pools"]["speculative"]["readyReplicas"] == 2
    made = len(kube.writes)
    for _ in range(3):
        reconciler.reconcile("serving", "demo")
    assert kube.writes[made:] == []

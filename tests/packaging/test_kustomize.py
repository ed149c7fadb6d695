"""The kustomize base and overlays: they render, validate, and match the chart (same pod, same
permissions) for the equivalent values."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.packaging import rbac
from tests.support.k8s import K8S_VERSION
from tests.support.paths import MANIFESTS
from tests.support.tools import kubectl_bin, load_docs, run

# The kustomize base is the chart's single replica (no leader election, the operator's own
# self-signed webhook certificate): the chart's HA defaults need a generated Secret.
SINGLE = {"replicaCount": 1, "leaderElection": {"enabled": False}}
OVERLAYS = {
    "cluster-wide": SINGLE,
    "single-namespace": {**SINGLE, "watchNamespaces": ["serving"]},
}


def kustomize(overlay: str) -> list[dict[str, Any]]:
    out = run([kubectl_bin(), "kustomize", str(MANIFESTS / "overlays" / overlay)])
    return load_docs(out.stdout)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_and_validates(overlay: str) -> None:
    docs = kustomize(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 1 and kinds.count("Service") == 2
    assert "CustomResourceDefinition" in kinds and "ServiceAccount" in kinds and "Namespace" in kinds
    for doc in docs:
        if doc["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            expected = "serving" if doc["kind"] in ("Role", "RoleBinding") else "specops-system"
            assert doc["metadata"]["namespace"] == expected, doc["metadata"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_pod_matches_the_chart(render: Any, overlay: str) -> None:
    """Release "specops" in specops-system names everything as the base does."""
    chart = next(d for d in render(OVERLAYS[overlay]) if d["kind"] == "Deployment")
    kust = next(d for d in kustomize(overlay) if d["kind"] == "Deployment")
    assert kust["spec"]["template"]["spec"] == chart["spec"]["template"]["spec"]
    assert kust["spec"]["strategy"] == chart["spec"]["strategy"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_permissions_match_the_chart(render: Any, overlay: str) -> None:
    docs = kustomize(overlay)
    chart = render(OVERLAYS[overlay])

    def scopes(d: list[dict[str, Any]]) -> dict[str, set[rbac.Perm]]:
        out: dict[str, set[rbac.Perm]] = {}
        for (_, ns), perms in rbac.roles_by_kind(d).items():
            out.setdefault(ns, set()).update(perms)
        return out

    assert scopes(docs) == scopes(chart)
    subjects = {b[3] for b in rbac.bindings(docs)}
    assert subjects == {(("ServiceAccount", "specops-system", "specops"),)}
    roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Role", "ClusterRole")}
    refs = {tuple(b[2].split("/")) for b in rbac.bindings(docs)}
    assert refs == roles


def test_services_match_the_chart(render: Any) -> None:
    chart = {d["metadata"]["name"]: d["spec"] for d in render({}) if d["kind"] == "Service"}
    kust = {d["metadata"]["name"]: d["spec"] for d in kustomize("cluster-wide") if d["kind"] == "Service"}
    assert chart.keys() == kust.keys()
    for name, spec in kust.items():
        assert spec["ports"] == chart[name]["ports"]
        assert spec["selector"].items() <= chart[name]["selector"].items()

"""The operator's expected permissions, and helpers to compare RBAC rules as sets.

A permission is (API group, resource[/subresource], verb, resource name or "" for any). The sets
below are the exact grants of the chart and the kustomize overlays; test_install.py shows the
operator uses every one of them in a lifecycle and is refused nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Perm = tuple[str, str, str, str]
WEBHOOK_CONFIG = "specops.dev"


def perms(group: str, resource: str, verbs: Iterable[str], name: str = "") -> set[Perm]:
    return {(group, resource, verb, name) for verb in verbs}


# In every watched namespace (a Role each), or everywhere (in the ClusterRole).
NAMESPACED: set[Perm] = (
    perms("specops.dev", "speculativeinferences", ["get", "list", "watch"])
    | perms("specops.dev", "speculativeinferences/status", ["patch"])
    | perms("apps", "deployments", ["get", "list", "watch", "create", "patch"])
    | perms("", "services", ["get", "list", "watch", "create", "patch"])
    | perms("", "events", ["create"])
)
POD_MONITORS: set[Perm] = perms(
    "monitoring.coreos.com", "podmonitors", ["get", "list", "watch", "create", "patch"]
)
# GETs of what the read cache (specops.controller.cache) holds: sent only when the cache cannot
# answer (before its first list, after a watch error, just after the operator's own write), so a
# lifecycle may or may not use them.  Granted, but not required to be used.
CACHE_FALLBACK_GETS: set[Perm] = {
    ("specops.dev", "speculativeinferences", "get", ""),
    ("apps", "deployments", "get", ""),
    ("", "services", "get", ""),
    ("monitoring.coreos.com", "podmonitors", "get", ""),
}
# Cluster-scoped, in a ClusterRole in both modes.
CLUSTER_SCOPED: set[Perm] = perms("apiextensions.k8s.io", "customresourcedefinitions", ["list", "watch"])
WEBHOOKS: set[Perm] = {
    (group, kind, verb, name)
    for group in ["admissionregistration.k8s.io"]
    for kind in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    for verb, name in [("create", ""), ("patch", WEBHOOK_CONFIG)]
}
NAMESPACES: set[Perm] = perms("", "namespaces", ["list", "watch"])  # namespaced mode only
CLUSTER_PEERING: set[Perm] = perms("kopf.dev", "clusterkopfpeerings", ["list", "watch", "patch"])
NAMESPACED_PEERING: set[Perm] = perms("kopf.dev", "kopfpeerings", ["list", "watch", "patch"])


def leader_election(lease: str) -> set[Perm]:
    """In the operator's own namespace (a Role): its Lease. Create cannot be limited by name."""
    return perms("coordination.k8s.io", "leases", ["create"]) | perms(
        "coordination.k8s.io", "leases", ["get", "update"], lease
    )


# rbac.hotSwap: true (spec.rollout.strategy HotSwap), beside NAMESPACED.
HOT_SWAP: set[Perm] = (
    perms("", "pods", ["get", "list", "watch", "patch", "delete"])
    | perms("", "secrets", ["get", "create", "patch"])
    | perms("", "configmaps", ["get", "list", "watch", "create", "patch"])
    | perms("networking.k8s.io", "networkpolicies", ["get", "list", "watch", "create", "patch"])
    | perms("discovery.k8s.io", "endpointslices", ["get", "list", "watch", "create", "patch"])
)
# Used only when something goes wrong: a pod whose wake failed is deleted (the restart fallback);
# a pod, ConfigMap, NetworkPolicy or EndpointSlice is read alone only when the read cache cannot
# answer.  Granted, not required to be used.
HOT_SWAP_ON_FAILURE: set[Perm] = {("", "pods", "delete", "")} | {
    (group, kind, "get", "")
    for group, kind in [("", "pods"), ("", "configmaps"), ("networking.k8s.io", "networkpolicies"),
                        ("discovery.k8s.io", "endpointslices")]
}  # fmt: skip
CLUSTER_WIDE_DEFAULT = NAMESPACED | POD_MONITORS | CLUSTER_SCOPED | WEBHOOKS
NAMESPACED_MODE_CLUSTER_ROLE = CLUSTER_SCOPED | WEBHOOKS | NAMESPACES
NAMESPACED_MODE_ROLE = NAMESPACED | POD_MONITORS


def rule_perms(rules: Iterable[dict[str, Any]]) -> set[Perm]:
    out: set[Perm] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule, rule
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    for name in rule.get("resourceNames") or [""]:
                        out.add((group, resource, verb, name))
    return out


def roles_by_kind(docs: Iterable[dict[str, Any]]) -> dict[tuple[str, str], set[Perm]]:
    """(kind, namespace or "") -> union of the permissions of the (Cluster)Roles of that kind/namespace."""
    out: dict[tuple[str, str], set[Perm]] = {}
    for doc in docs:
        if doc.get("kind") in ("Role", "ClusterRole"):
            key = (doc["kind"], doc["metadata"].get("namespace", ""))
            out.setdefault(key, set()).update(rule_perms(doc.get("rules") or []))
    return out


def bindings(docs: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, tuple[tuple[str, str, str], ...]]]:
    """(kind, namespace, roleRef kind/name, subjects) of every (Cluster)RoleBinding."""
    out = []
    for doc in docs:
        if doc.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            subjects = tuple(sorted((s["kind"], s.get("namespace", ""), s["name"]) for s in doc["subjects"]))
            ref = f"{doc['roleRef']['kind']}/{doc['roleRef']['name']}"
            out.append((doc["kind"], doc["metadata"].get("namespace", ""), ref, subjects))
    return sorted(out)

"""The Helm chart, offline: lint, render several value sets, validate every built-in kind against
Kubernetes 1.32's schemas, the schema's refusals, RBAC per install mode, the pod's hardening."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.packaging import rbac
from tests.support.k8s import K8S_VERSION
from tests.support.paths import CHART, CRD_SOURCE, MANIFESTS

# Custom resources have no schema in kubernetes-validate (it raises SchemaNotFoundError): they are
# skipped here on purpose, and their fields are checked by the assertions of the tests below.
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "Certificate",
    "Issuer",
    "KopfPeering",
    "ClusterKopfPeering",
}

MONITORING = {
    "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboard": {"enabled": True, "namespace": "monitoring"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["serving", "batch"]},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "cert-manager-issuer": {
        "webhook": {
            "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
        }
    },
    "monitoring": MONITORING,
    "all-off": {
        "webhook": {"enabled": False},
        "metrics": {"service": {"enabled": False}},
        "rbac": {"podMonitors": False},
    },
    "single": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "hard-anti-affinity": {"replicaCount": 3, "podAntiAffinity": "hard"},
    "peering": {"peering": {"enabled": True}, "leaderElection": {"enabled": False}, "replicaCount": 2},
    "peering-namespaced": {
        "peering": {"enabled": True},
        "leaderElection": {"enabled": False},
        "replicaCount": 2,
        "watchNamespaces": ["serving"],
    },
}
# The objects the chart renders for replicas that elect a leader (the defaults), in specops-system.
HA_OBJECTS = {
    ("PodDisruptionBudget", "specops-system/specops"),
    ("Secret", "specops-system/specops-webhook-tls"),
    ("Role", "specops-system/specops-leader-election"),
    ("RoleBinding", "specops-system/specops-leader-election"),
}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# ------------------------------------------------------------------------------------ lint, render


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict(helm: Any, value_set: str, tmp_path: Path) -> None:
    values = tmp_path / "values.json"
    values.write_text(json.dumps(VALUE_SETS[value_set]))
    out = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_manifests_validate_against_kubernetes_schemas(render: Any, value_set: str) -> None:
    docs = render(VALUE_SETS[value_set])
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 5


def kinds_and_names(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], f"{d['metadata'].get('namespace', '')}/{d['metadata']['name']}") for d in docs}


def test_default_install_objects(render: Any) -> None:
    ns = "specops-system"
    single = {
        ("CustomResourceDefinition", "/speculativeinferences.specops.dev"),
        ("ServiceAccount", f"{ns}/specops"),
        ("ClusterRole", "/specops"),
        ("ClusterRoleBinding", "/specops"),
        ("Deployment", f"{ns}/specops"),
        ("Service", f"{ns}/specops-webhook"),
        ("Service", f"{ns}/specops-metrics"),
    }
    assert kinds_and_names(render({})) == single | HA_OBJECTS
    assert kinds_and_names(render(VALUE_SETS["single"])) == single


def test_ha_defaults(render: Any) -> None:
    """Two replicas electing a leader on a Lease, a PodDisruptionBudget, spread over nodes, one
    shared webhook certificate."""
    docs = render({})
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2 and "strategy" not in dep["spec"]  # a rolling update
    c = container(docs)
    assert [a for a in c["args"] if a.startswith("--lease") or a == "--leader-election"] == [
        "--leader-election",
        "--lease-name=specops",
        "--lease-namespace=specops-system",
        "--lease-duration=15",
        "--lease-renew-deadline=10",
        "--lease-retry-period=2",
    ]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget")
    # helm template knows policy/v1; on a 1.20 API server helm install renders policy/v1beta1
    # (tests/packaging/test_install.py).
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    hard = one(render(VALUE_SETS["hard-anti-affinity"]), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert list(hard["podAntiAffinity"]) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    custom = one(render({"affinity": {"nodeAffinity": {}}}), "Deployment")["spec"]["template"]["spec"]
    assert custom["affinity"] == {"nodeAffinity": {}}  # the user's own affinity replaces the spread
    # Every replica serves the same certificate: the chart's Secret, mounted and passed.
    secret = one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": "specops-webhook-tls"}} in pod["volumes"]
    assert "--webhook-ca=/etc/specops/webhook/ca.crt" in c["args"]
    # One replica: none of it.
    single = render(VALUE_SETS["single"])
    assert one(single, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "affinity" not in one(single, "Deployment")["spec"]["template"]["spec"]
    assert not [a for a in container(single)["args"] if a.startswith(("--lease", "--leader", "--webhook-ca"))]


def test_optional_objects_follow_their_toggles(render: Any) -> None:
    ns = "specops-system"
    monitoring = kinds_and_names(render(MONITORING))
    assert {
        ("ServiceMonitor", f"{ns}/specops"),
        ("PrometheusRule", f"{ns}/specops"),
        ("ConfigMap", "monitoring/specops-dashboard"),
    } <= monitoring
    assert {("Certificate", f"{ns}/specops-webhook"), ("Certificate", f"{ns}/specops-ca"),
            ("Issuer", f"{ns}/specops-selfsigned"), ("Issuer", f"{ns}/specops-ca")} <= kinds_and_names(
        render(VALUE_SETS["cert-manager"]))  # fmt: skip
    # With an existing issuer, only the serving certificate.
    with_issuer = render(VALUE_SETS["cert-manager-issuer"])
    assert [d["metadata"]["name"] for d in with_issuer if d["kind"] in ("Certificate", "Issuer")] == [
        "specops-webhook"
    ]
    assert one(with_issuer, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
    }
    assert kinds_and_names(render(VALUE_SETS["all-off"])) == {
        ("CustomResourceDefinition", "/speculativeinferences.specops.dev"),
        ("ServiceAccount", f"{ns}/specops"),
        ("ClusterRole", "/specops"),
        ("ClusterRoleBinding", "/specops"),
        ("Deployment", f"{ns}/specops"),
        ("PodDisruptionBudget", f"{ns}/specops"),
        ("Role", f"{ns}/specops-leader-election"),
        ("RoleBinding", f"{ns}/specops-leader-election"),
    }
    assert ("ClusterKopfPeering", "/specops") in kinds_and_names(render(VALUE_SETS["peering"]))
    assert ("KopfPeering", "serving/specops") in kinds_and_names(render(VALUE_SETS["peering-namespaced"]))


def test_chart_crds_are_the_generated_crd() -> None:
    """crds/ is generated from the models; the chart and the kustomize base carry byte copies."""
    source = CRD_SOURCE.read_bytes()
    copies = [CHART / "crds" / CRD_SOURCE.name, MANIFESTS / "base" / CRD_SOURCE.name]
    stale = [str(c) for c in copies if c.read_bytes() != source]
    assert not stale, f"copy {CRD_SOURCE} over {', '.join(stale)}"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD_SOURCE.name]


def test_chart_versions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == "0.1.0"


# ----------------------------------------------------------------------------- the operator pod


def test_default_operator_args(render: Any) -> None:
    c = container(render({}))
    assert c["image"] == "specops:0.1.0"
    assert "command" not in c  # the image's ENTRYPOINT is `specops run`
    assert c["args"] == [
        "--log-format=json",
        "--metrics-port=8080",
        "--health-port=8081",
        "--resync-seconds=30",
        "--status-figure-writes-per-second=2",
        "--prometheus-timeout=10",
        "--prometheus-deadline=30",
        "--standalone",
        "--leader-election",
        "--lease-name=specops",
        "--lease-namespace=specops-system",
        "--lease-duration=15",
        "--lease-renew-deadline=10",
        "--lease-retry-period=2",
        "--webhooks",
        "--webhook-port=9443",
        "--webhook-service=specops-system/specops-webhook:9443",
        "--webhook-cert=/etc/specops/webhook/tls.crt",
        "--webhook-key=/etc/specops/webhook/tls.key",
        "--webhook-ca=/etc/specops/webhook/ca.crt",
    ]


def test_args_follow_values(render: Any) -> None:
    args = container(render({**MONITORING, **VALUE_SETS["namespaced"], "operator": {"verbose": True}}))[
        "args"
    ]
    assert "--prometheus-url=http://prometheus-operated.monitoring.svc:9090" in args
    allowed = container(render({"prometheus": {"allowedUrls": ["http://thanos:9090", "https://a.example"]}}))
    assert [a for a in allowed["args"] if a.startswith("--allowed-prometheus-url")] == [
        "--allowed-prometheus-url=http://thanos:9090",
        "--allowed-prometheus-url=https://a.example",
    ]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=serving", "--namespace=batch"]
    assert "--verbose" in args
    assert "--no-read-cache" not in args
    assert "--no-read-cache" in container(render({"operator": {"readCache": False}}))["args"]
    c = container(render(VALUE_SETS["cert-manager"], namespace="ops"))
    assert "--webhook-service=ops/specops-webhook:9443" in c["args"]
    assert {"--webhook-cert=/etc/specops/webhook/tls.crt", "--webhook-key=/etc/specops/webhook/tls.key",
            "--webhook-ca=/etc/specops/webhook/ca.crt"} <= set(c["args"])  # fmt: skip
    assert {"name": "webhook-tls", "mountPath": "/etc/specops/webhook", "readOnly": True} in c["volumeMounts"]
    off = container(render(VALUE_SETS["all-off"]))
    assert "--no-webhooks" in off["args"]
    assert not [a for a in off["args"] if a.startswith("--webhook-")]
    assert [p["name"] for p in off["ports"]] == ["metrics", "health"]
    peering = render(VALUE_SETS["peering"])
    assert "--peering" in container(peering)["args"]
    assert one(peering, "Deployment")["spec"]["replicas"] == 2
    assert "strategy" not in one(peering, "Deployment")["spec"]
    assert "--leader-election" not in container(peering)["args"]
    assert one(render(VALUE_SETS["single"]), "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_pod_is_hardened(render: Any, value_set: str) -> None:
    docs = render(VALUE_SETS[value_set])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The operator writes its self-signed webhook certificate (and the discovery cache) to /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Never the label the operator uses to find the pools it manages.
    for doc in docs:
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != "specops", doc


def test_services_select_the_operator_pod(render: Any) -> None:
    docs = render(MONITORING)
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in container(docs)["ports"]}
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items(), svc["metadata"]["name"]
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    monitor = one(docs, "ServiceMonitor")
    metrics_svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "specops-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_webhook_service_name_matches_the_registered_host(render: Any) -> None:
    docs = render({}, namespace="ops")
    svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-webhook"))
    assert f"--webhook-service=ops/{svc['metadata']['name']}:9443" in container(docs)["args"]
    assert svc["spec"]["ports"] == [
        {"name": "webhook", "port": 9443, "targetPort": "webhook", "protocol": "TCP"}
    ]


def test_certificate_covers_the_webhook_host(render: Any) -> None:
    docs = render(VALUE_SETS["cert-manager"], namespace="ops")
    cert = next(d for d in by_kind(docs, "Certificate") if d["metadata"]["name"] == "specops-webhook")
    assert "specops-webhook.ops.svc" in cert["spec"]["dnsNames"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": cert["spec"]["secretName"]}} in pod["volumes"]


# ---------------------------------------------------------------------------------------- RBAC


LEADER = rbac.leader_election("specops")


def test_cluster_wide_rbac(render: Any) -> None:
    docs = render({})
    assert rbac.roles_by_kind(docs) == {
        ("ClusterRole", ""): rbac.CLUSTER_WIDE_DEFAULT,
        ("Role", "specops-system"): LEADER,
    }
    sa = (("ServiceAccount", "specops-system", "specops"),)
    assert rbac.bindings(docs) == [
        ("ClusterRoleBinding", "", "ClusterRole/specops", sa),
        ("RoleBinding", "specops-system", "Role/specops-leader-election", sa),
    ]


def test_namespaced_rbac(render: Any) -> None:
    docs = render(VALUE_SETS["namespaced"])
    assert rbac.roles_by_kind(docs) == {
        ("ClusterRole", ""): rbac.NAMESPACED_MODE_CLUSTER_ROLE,
        ("Role", "serving"): rbac.NAMESPACED_MODE_ROLE,
        ("Role", "batch"): rbac.NAMESPACED_MODE_ROLE,
        ("Role", "specops-system"): LEADER,
    }
    sa = (("ServiceAccount", "specops-system", "specops"),)
    assert rbac.bindings(docs) == [
        ("ClusterRoleBinding", "", "ClusterRole/specops-cluster-scoped", sa),
        ("RoleBinding", "batch", "Role/specops", sa),
        ("RoleBinding", "serving", "Role/specops", sa),
        ("RoleBinding", "specops-system", "Role/specops-leader-election", sa),
    ]


def test_rbac_toggles(render: Any) -> None:
    off = rbac.roles_by_kind(render(VALUE_SETS["all-off"]))
    assert off == {
        ("ClusterRole", ""): rbac.NAMESPACED | rbac.CLUSTER_SCOPED,
        ("Role", "specops-system"): LEADER,
    }
    single = rbac.roles_by_kind(render(VALUE_SETS["single"]))
    assert single == {("ClusterRole", ""): rbac.CLUSTER_WIDE_DEFAULT}
    peering = rbac.roles_by_kind(render(VALUE_SETS["peering"]))
    assert peering == {("ClusterRole", ""): rbac.CLUSTER_WIDE_DEFAULT | rbac.CLUSTER_PEERING}
    namespaced_peering = rbac.roles_by_kind(render(VALUE_SETS["peering-namespaced"]))
    assert namespaced_peering == {
        ("ClusterRole", ""): rbac.NAMESPACED_MODE_CLUSTER_ROLE,
        ("Role", "serving"): rbac.NAMESPACED_MODE_ROLE | rbac.NAMESPACED_PEERING,
    }
    no_rbac = render({"rbac": {"create": False}})
    assert not [d for d in no_rbac if "Role" in d["kind"]]


def test_existing_service_account(render: Any) -> None:
    docs = render({"serviceAccount": {"create": False, "name": "platform-sa"}})
    assert not by_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-sa"
    assert rbac.bindings(docs)[0][3] == (("ServiceAccount", "specops-system", "platform-sa"),)


# ------------------------------------------------------------------------------------ the schema

BAD_VALUES = [
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "replicaCount"),
    ({"peering": {"enabled": True}}, "peering.enabled"),  # and leaderElection, the default
    ({"podAntiAffinity": "sometimes"}, "podAntiAffinity"),
    ({"leaderElection": {"leaseDurationSeconds": 0}}, "leaderElection.leaseDurationSeconds"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    ({"image": {"repository": ""}}, "image.repository"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces.0"),
    ({"watchNamespaces": "serving"}, "watchNamespaces"),
    ({"operator": {"logFormat": "xml"}}, "operator.logFormat"),
    ({"operator": {"resyncSeconds": 0}}, "operator.resyncSeconds"),
    ({"prometheus": {"url": "prometheus:9090"}}, "prometheus.url"),
    ({"prometheus": {"allowedUrls": ["file:///etc/passwd"]}}, "prometheus.allowedUrls.0"),
    ({"prometheus": {"deadlineSeconds": 0}}, "prometheus.deadlineSeconds"),
    ({"operator": {"statusFigureWritesPerSecond": 0}}, "operator.statusFigureWritesPerSecond"),
    (
        {"webhook": {"certManager": {"issuerRef": {"name": "ca", "kind": "Vault"}}}},
        "webhook.certManager.issuerRef.kind",
    ),
    ({"webhook": {"certManager": {"duration": "one year"}}}, "webhook.certManager.duration"),
    ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
    ({"serviceAccount": {"create": False}}, "serviceAccount"),
    (
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled",
    ),
    ({"webhook": {"enable": True}}, "enable"),
    ({"webhook": {"enabled": False, "certManager": {"enabled": True}}}, "webhook.certManager.enabled"),
    ({"prometheusURL": "http://x"}, "prometheusURL"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_schema_rejects_bad_values(helm: Any, tmp_path: Path, values: dict[str, Any], field: str) -> None:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    out = helm("template", "specops", str(CHART), "-f", str(path), check=False)
    assert out.returncode != 0, out.stdout[:500]
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert field in out.stderr, out.stderr


def test_schema_is_draft_07() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


@pytest.mark.parametrize(
    "value_set", ["default", "single", "namespaced", "cert-manager", "all-off", "peering"]
)
def test_specops_run_accepts_the_chart_args(
    render: Any, value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The args go through the real `specops run` parser into the operator's options."""
    from typer.testing import CliRunner

    from specops import cli
    from specops.controller import main

    captured: list[main.OperatorOptions] = []
    monkeypatch.setattr(main, "run", captured.append)
    args = container(render({**VALUE_SETS[value_set], **MONITORING}))["args"]
    result = CliRunner().invoke(cli.app, ["run", *args])
    assert result.exit_code == 0, result.output
    (opts,) = captured
    assert (opts.metrics_port, opts.liveness_port, opts.log_format) == (8080, 8081, "json")
    assert opts.prometheus_url == MONITORING["prometheus"]["url"]
    assert opts.namespaces == VALUE_SETS[value_set].get("watchNamespaces", [])
    assert opts.standalone is (value_set != "peering")
    assert opts.leader_election is (value_set not in ("peering", "single"))
    if opts.leader_election:
        assert (opts.lease_name, opts.lease_namespace, opts.lease_duration) == (
            "specops",
            "specops-system",
            15.0,
        )
    assert opts.webhooks is (value_set != "all-off")
    if opts.webhooks:
        assert (opts.webhook_port, opts.webhook_service) == (9443, "specops-system/specops-webhook:9443")
        assert opts.webhook_listen == "0.0.0.0"
    mounted = value_set != "single" and value_set != "all-off"  # cert-manager's, or the shared one
    assert (opts.webhook_cert is not None, opts.webhook_key is not None, opts.webhook_ca is not None) == (
        (mounted,) * 3
    )

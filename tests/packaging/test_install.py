"""The chart on the test world's real kube-apiserver: install and uninstall, and the operator's
permissions proven both ways.

SUFFICIENT: the operator runs in-process with the chart's ServiceAccount token (TokenRequest API)
and goes through a lifecycle (create, status, webhook refusal, drift restore, delete) without one
403. It talks to the apiserver through a recording proxy, so the test also sees every request it
made; with the PodMonitor kind served, the lifecycle uses every granted permission, so no grant is
superfluous. MINIMAL: `kubectl auth can-i --list` for the ServiceAccount is exactly the expected
set, plus what any authenticated user may do.

No kubelet runs the operator's own pod (the image is not pullable here and nothing schedules it):
the Deployment exists, its pod stays Pending, which is all `helm install` needs.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.controller.main import OperatorOptions, OperatorThread
from specops.plan.hotswap_reconcile import AWAKE_ANNOTATION
from specops.render.hotswap import admin_secret_name, config_map_name, swap_labels, swap_name
from specops_testkit.testbed.controlplane import free_port, install_crds
from specops_testkit.testbed.stack import Testbed
from tests.packaging import rbac
from tests.packaging.apiproxy import RecordingProxy, Request
from tests.support.live_cluster import (
    POD_MONITOR_CRD,
    create_si,
    deployment,
    get_si,
    wait_for,
    webhook_points_at,
)
from tests.support.paths import CHART
from tests.support.resources import example_doc
from tests.support.tools import kubectl_bin, run

pytestmark = pytest.mark.integration

# What every authenticated identity may do on a 1.20 apiserver (system:basic-user, system:discovery,
# system:public-info-viewer); measured from a ServiceAccount with no bindings, and checked to be
# nothing more.
DEFAULT_RESOURCES = {
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}
CAN_I_ROW = re.compile(
    r"^(?P<res>\S*)\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+\[(?P<verbs>[^\]]*)\]\s*$"
)


@dataclass
class Install:
    mode: str  # cluster-wide | namespaced
    release: str
    namespace: str  # the operator's
    watched: str  # where the lifecycle runs
    service_account: str
    hot_swap: bool = False  # rbac.hotSwap, and a HotSwap resource in the lifecycle

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


# ------------------------------------------------------------------------------------ helpers


def pdb_v1beta1(api: client.ApiClient) -> Any:
    """PodDisruptionBudgets as a 1.20 API server serves them (the typed client no longer has v1beta1)."""
    return dynamic.DynamicClient(api).resources.get(api_version="policy/v1beta1", kind="PodDisruptionBudget")


def helm_install(helm: Any, testbed: Testbed, release: str, namespace: str, values: dict[str, Any],
                 tmp_path: Path) -> str:  # fmt: skip
    path = tmp_path / f"{release}-values.json"
    path.write_text(json.dumps(values))
    out = helm("install", release, str(CHART), "--kubeconfig", str(testbed.kubeconfig), "--namespace", namespace,
               "--create-namespace", "-f", str(path))  # fmt: skip
    return str(out.stdout)


def helm_uninstall(helm: Any, testbed: Testbed, release: str, namespace: str) -> None:
    helm("uninstall", release, "--kubeconfig", str(testbed.kubeconfig), "--namespace", namespace, "--wait")


def delete_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def service_account_kubeconfig(
    api: client.ApiClient, inst: Install, server: str, ca: Path, path: Path
) -> Path:
    """A kubeconfig holding a TokenRequest token for the install's ServiceAccount."""
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        inst.service_account, inst.namespace, {"spec": {"expirationSeconds": 3600}}
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": inst.service_account, "user": {"token": token.status.token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": inst.service_account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class LogCapture(logging.Handler):
    """Every record of the operator's and Kopf's loggers, debug included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._loggers = [logging.getLogger(n) for n in ("kopf", "specops")]
        self._levels = [lg.level for lg in self._loggers]

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" | {record.exc_info[1]!r}"
        self.lines.append(f"{record.levelname} {record.name}: {text}")

    def __enter__(self) -> LogCapture:
        for lg in self._loggers:
            lg.addHandler(self)
            lg.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.removeHandler(self)
            lg.setLevel(level)


def needed_permissions(requests: list[Request]) -> list[Request]:
    """The requests plus what the apiserver also authorizes: a server-side apply that created its
    object (201 to a PATCH) needs `create` as well as `patch`."""
    out = list(requests)
    for r in requests:
        if r.verb == "patch" and r.status == 201:
            out.append(Request("create", r.group, r.resource, r.subresource, r.namespace, r.name, r.status))
    return out


def covers(perm: rbac.Perm, r: Request) -> bool:
    group, resource, verb, name = perm
    return (group, resource, verb) == (r.group, r.rule_resource, r.verb) and (not name or name == r.name)


def can_i_list(testbed: Testbed, user: str, namespace: str) -> tuple[set[rbac.Perm], set[str]]:
    """(resource permissions, non-resource rows) from `kubectl auth can-i --list --as=<user>`."""
    out = run([kubectl_bin(), f"--kubeconfig={testbed.kubeconfig}", "auth", "can-i", "--list", f"--as={user}",
               "-n", namespace])  # fmt: skip
    perms: set[rbac.Perm] = set()
    non_resource: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        match = CAN_I_ROW.match(line)
        assert match, f"unexpected can-i row {line!r}"
        verbs = match["verbs"].split()
        if match["urls"]:
            non_resource.add(f"{match['urls']} {verbs}")
            continue
        res, _, sub = match["res"].partition("/")
        resource, _, group = res.partition(".")
        resource = f"{resource}/{sub}" if sub else resource
        for name in match["names"].split() or [""]:
            for verb in verbs:
                perms.add((group, resource, verb, name))
    return perms, non_resource


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pod_monitor_kind(testbed: Testbed) -> Iterator[None]:
    install_crds(testbed.kubeconfig, [POD_MONITOR_CRD])
    yield
    client.ApiextensionsV1Api(testbed.api).delete_custom_resource_definition(
        POD_MONITOR_CRD["metadata"]["name"]
    )


INSTALLS = {
    "cluster-wide": "cw",
    "namespaced": "ns",
    "cluster-wide-hot-swap": "hs",
    "namespaced-hot-swap": "nh",
}


@pytest.fixture(scope="module", params=list(INSTALLS))
def installed(
    request: pytest.FixtureRequest, helm: Any, testbed: Testbed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    """The chart installed cluster-wide or for one namespace, each without and with
    ``rbac.hotSwap`` (whose lifecycle runs a HotSwap resource instead)."""
    hot_swap = request.param.endswith("-hot-swap")
    mode = request.param.removesuffix("-hot-swap")
    suffix = uuid.uuid4().hex[:6]
    short = INSTALLS[request.param]
    inst = Install(
        mode,
        f"specops-{short}",
        f"ops-{short}-{suffix}",
        f"work-{short}-{suffix}",
        f"specops-{short}",
        hot_swap,
    )
    core = client.CoreV1Api(testbed.api)
    core.create_namespace({"metadata": {"name": inst.watched}})
    values: dict[str, Any] = {"watchNamespaces": [inst.watched]} if mode == "namespaced" else {}
    if hot_swap:
        values["rbac"] = {"hotSwap": True}
    helm_install(helm, testbed, inst.release, inst.namespace, values, tmp_path_factory.mktemp(inst.release))
    yield inst
    helm_uninstall(helm, testbed, inst.release, inst.namespace)
    for ns in (inst.watched, inst.namespace):
        delete_namespace(testbed.api, ns)


# -------------------------------------------------------------------------------- install/uninstall


def test_helm_install_and_uninstall(helm: Any, testbed: Testbed, tmp_path: Path) -> None:
    api = testbed.api
    ns = f"ops-{uuid.uuid4().hex[:6]}"
    release = "specops-iu"
    notes = helm_install(helm, testbed, release, ns, {}, tmp_path)
    assert "SpecOps 0.1.0 is installed" in notes and "kubectl apply --server-side" in notes
    core, apps, authz = client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    try:
        status = helm("status", release, "--kubeconfig", str(testbed.kubeconfig), "-n", ns, "-o", "json")
        assert json.loads(status.stdout)["info"]["status"] == "deployed"
        dep = apps.read_namespaced_deployment(release, ns)
        assert dep.spec.template.spec.service_account_name == release
        assert dep.spec.template.spec.containers[0].security_context.read_only_root_filesystem is True
        assert core.read_namespaced_service_account(release, ns)
        assert {s.metadata.name for s in core.list_namespaced_service(ns).items} == {
            f"{release}-webhook",
            f"{release}-metrics",
        }
        # The live ClusterRole, as the apiserver stored it.
        role = api.sanitize_for_serialization(authz.read_cluster_role(release))
        assert rbac.rule_perms(role["rules"]) == rbac.CLUSTER_WIDE_DEFAULT
        assert authz.read_cluster_role_binding(release).subjects[0].namespace == ns
        # The HA defaults: two replicas electing a leader on a Lease, a PodDisruptionBudget in the
        # version this 1.20 API server serves (policy/v1beta1), one shared webhook certificate.
        assert dep.spec.replicas == 2 and "--leader-election" in dep.spec.template.spec.containers[0].args
        assert dep.spec.template.spec.affinity.pod_anti_affinity is not None
        pdb = pdb_v1beta1(api).get(name=release, namespace=ns).to_dict()
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= dep.spec.template.metadata.labels.items()
        lease_role = api.sanitize_for_serialization(
            authz.read_namespaced_role(f"{release}-leader-election", ns)
        )
        assert rbac.rule_perms(lease_role["rules"]) == rbac.leader_election(release)
        secret = core.read_namespaced_secret(f"{release}-webhook-tls", ns)
        assert set(secret.data) == {"ca.crt", "tls.crt", "tls.key"}
        # An upgrade keeps the certificate (read back), so the registered caBundle stays valid.
        helm(
            "upgrade",
            release,
            str(CHART),
            "--kubeconfig",
            str(testbed.kubeconfig),
            "-n",
            ns,
            "--reuse-values",
        )
        assert core.read_namespaced_secret(f"{release}-webhook-tls", ns).data == secret.data
        # The operator's pods are created (and stay Pending: nothing runs them here).
        wait_for(lambda: len(core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=operator").items)
                 == 2, 30, "the operator's two pods")  # fmt: skip
    finally:
        helm_uninstall(helm, testbed, release, ns)
    gone = []
    for read in (
        lambda: apps.read_namespaced_deployment(release, ns),
        lambda: core.read_namespaced_service_account(release, ns),
        lambda: core.read_namespaced_service(f"{release}-webhook", ns),
        lambda: core.read_namespaced_service(f"{release}-metrics", ns),
        lambda: authz.read_cluster_role(release),
        lambda: authz.read_cluster_role_binding(release),
        lambda: pdb_v1beta1(api).get(name=release, namespace=ns),
        lambda: authz.read_namespaced_role(f"{release}-leader-election", ns),
        lambda: core.read_namespaced_secret(f"{release}-webhook-tls", ns),
    ):
        with pytest.raises(ApiException) as err:
            read()
        gone.append(err.value.status)
    assert gone == [404] * 9
    # Helm never deletes CRDs (nor the resources in them).
    assert client.ApiextensionsV1Api(api).read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    delete_namespace(api, ns)


# ------------------------------------------------------------------------------------------- RBAC


def test_rbac_is_sufficient_and_every_grant_is_used(
    installed: Install, pod_monitor_kind: None, testbed: Testbed, tmp_path: Path
) -> None:
    api = testbed.api
    assert testbed.state is not None
    ca = Path(testbed.state.run_dir) / "pki" / "ca.crt"
    proxy = RecordingProxy(testbed.state.server, ca, tmp_path / "proxy").start()
    kubeconfig = service_account_kubeconfig(api, installed, proxy.url, proxy.ca_path, tmp_path / "kubeconfig")
    opts = OperatorOptions(
        kubeconfig=str(kubeconfig),
        namespaces=[installed.watched] if installed.mode == "namespaced" else [],
        prometheus_url=testbed.prometheus_url,
        metrics_port=None,
        liveness_port=None,
        resync_seconds=2.0,
        webhook_listen="127.0.0.1",
        webhook_port=free_port(),
        # As the chart runs it: leader election on the release's Lease in the operator's namespace.
        leader_election=True,
        lease_name=installed.release,
        lease_namespace=installed.namespace,
    )
    ns = installed.watched
    apps = client.AppsV1Api(api)
    try:
        with LogCapture() as logs:
            operator = OperatorThread(opts).start()
            try:
                wait_for(lambda: webhook_points_at(api, opts.webhook_port), 30, "webhook registration")
                if installed.hot_swap:
                    run_hot_swap_lifecycle(api, ns)
                else:
                    run_lifecycle(api, ns, apps)
            finally:
                operator.stop()
    finally:
        proxy.stop()
    assert operator.error is None, operator.error

    forbidden = [line for line in logs.lines if re.search(r"\b403\b|Forbidden|forbidden|permission", line)]
    assert not forbidden, "\n".join(forbidden[:20])
    requests = proxy.recorded()
    assert [r for r in requests if r.status == 403] == []

    # The Lease's Role, in the operator's own namespace, in both modes.
    lease_scope = f"leases in {installed.namespace}"
    leases = [r for r in needed_permissions(requests) if r.resource == "leases"]
    assert {r.namespace for r in leases} == {installed.namespace}, leases
    others = [r for r in needed_permissions(requests) if r.resource != "leases"]
    optional = rbac.CACHE_FALLBACK_GETS
    hot_swap = rbac.HOT_SWAP if installed.hot_swap else set()
    if installed.hot_swap:
        # The Restart/Surge lifecycle is not run here: its Deployments' grants may go unused.
        optional = optional | rbac.HOT_SWAP_ON_FAILURE | rbac.NAMESPACED | rbac.POD_MONITORS
    if installed.mode == "cluster-wide":
        scopes = {"": rbac.CLUSTER_WIDE_DEFAULT | hot_swap}
        needed = {"": others}
    else:
        scopes = {"": rbac.NAMESPACED_MODE_CLUSTER_ROLE, ns: rbac.NAMESPACED_MODE_ROLE | hot_swap}
        needed = {"": [], ns: []}
        for r in others:
            assert r.namespace in needed, f"a request outside the watched namespace: {r}"
            needed[r.namespace].append(r)
    scopes[lease_scope] = rbac.leader_election(installed.release)
    needed[lease_scope] = leases
    for scope, granted in scopes.items():
        uncovered = [r for r in needed[scope] if not any(covers(p, r) for p in granted)]
        assert not uncovered, uncovered
        unused = {p for p in granted if not any(covers(p, r) for r in needed[scope])} - optional
        assert not unused, f"granted in {scope or 'the cluster'} but never used: {sorted(unused)}"


def run_lifecycle(api: client.ApiClient, ns: str, apps: client.AppsV1Api) -> None:
    doc = example_doc("ngram-summarization.yaml", ns)
    doc["spec"]["replicas"] = 1
    name = doc["metadata"]["name"]
    create_si(api, ns, doc)
    wait_for(lambda: deployment(api, ns, f"{name}-spec"), 30, "the speculative Deployment")
    wait_for(lambda: deployment(api, ns, f"{name}-base"), 30, "the baseline Deployment")
    wait_for(lambda: client.CoreV1Api(api).read_namespaced_service(name, ns), 30, "the Service")
    wait_for(lambda: client.CustomObjectsApi(api).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", ns, "podmonitors", name), 30, "the PodMonitor")  # fmt: skip
    si = wait_for(lambda: (s := get_si(api, ns, name)).get("status", {}).get("observedGeneration") and s,
                  30, "status.observedGeneration")  # fmt: skip
    assert si["status"]["observedGeneration"] == si["metadata"]["generation"]
    wait_for(lambda: client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}").items, 30, "an Event")  # fmt: skip

    # The webhook, registered by the operator with the ServiceAccount's rights, refuses this one.
    with pytest.raises(ApiException) as refused:
        create_si(api, ns, example_doc("invalid-bf16-on-h100.yaml", ns))
    assert "DoesNotFit" in str(refused.value.body) and "TokenizerMismatch" in str(refused.value.body)

    # Drift: an edited pool is restored, a deleted one recreated.
    apps.patch_namespaced_deployment(f"{name}-spec", ns, {"spec": {"replicas": 5}})
    wait_for(lambda: deployment(api, ns, f"{name}-spec").spec.replicas == 1, 30, "replicas restored")
    old_uid = deployment(api, ns, f"{name}-base").metadata.uid
    apps.delete_namespaced_deployment(f"{name}-base", ns)
    wait_for(lambda: (d := deployment(api, ns, f"{name}-base")) is not None and d.metadata.uid != old_uid,
             30, "baseline recreated")  # fmt: skip

    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    wait_for(lambda: deployment(api, ns, f"{name}-spec") is None and deployment(api, ns, f"{name}-base") is None,
             60, "garbage collection of the pools")  # fmt: skip


def run_hot_swap_lifecycle(api: client.ApiClient, ns: str) -> None:
    """A HotSwap resource: its objects and admin Secret created, its pod probed, swapped to the
    speculative engine and annotated, its EndpointSlices written; then deleted."""
    doc = example_doc("demo-llama70b.yaml", ns)
    doc["spec"]["replicas"] = 1
    doc["spec"]["rollout"] = {"strategy": "HotSwap"}
    doc["spec"]["policy"]["mode"] = "Speculative"
    name = doc["metadata"]["name"]
    create_si(api, ns, doc)
    core = client.CoreV1Api(api)
    wait_for(lambda: core.read_namespaced_secret(admin_secret_name(name), ns), 30, "the admin Secret")
    wait_for(lambda: core.read_namespaced_config_map(config_map_name(name), ns), 30, "the ConfigMap")
    wait_for(lambda: deployment(api, ns, swap_name(name)), 30, "the hot-swap Deployment")
    selector = ",".join(f"{k}={v}" for k, v in swap_labels(name).items())

    def swapped() -> bool:
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        return any((p.metadata.annotations or {}).get(AWAKE_ANNOTATION) == "speculative" for p in pods)

    wait_for(swapped, 180, "the pod swapped to its speculative engine")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    wait_for(lambda: deployment(api, ns, swap_name(name)) is None, 60, "garbage collection")


def test_rbac_is_minimal(installed: Install, testbed: Testbed) -> None:
    """`kubectl auth can-i --list` for the ServiceAccount: the expected grants and the defaults only."""
    core = client.CoreV1Api(testbed.api)
    nobody = f"nobody-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service_account(installed.namespace, {"metadata": {"name": nobody}})
    default_user = f"system:serviceaccount:{installed.namespace}:{nobody}"
    defaults, default_urls = can_i_list(testbed, default_user, installed.watched)
    assert {f"{r}.{g}" if g else r for g, r, _, _ in defaults} <= DEFAULT_RESOURCES, defaults

    granted, urls = can_i_list(testbed, installed.user, installed.watched)
    assert urls == default_urls
    elsewhere, _ = can_i_list(testbed, installed.user, "default")
    # In the operator's own namespace, its Lease besides what it holds everywhere.
    own, _ = can_i_list(testbed, installed.user, installed.namespace)
    assert own - defaults == elsewhere - defaults | rbac.leader_election(installed.release)
    hot_swap = rbac.HOT_SWAP if installed.hot_swap else set()
    if installed.mode == "cluster-wide":
        assert granted - defaults == rbac.CLUSTER_WIDE_DEFAULT | hot_swap
        assert elsewhere - defaults == rbac.CLUSTER_WIDE_DEFAULT | hot_swap
    else:
        assert granted - defaults == rbac.NAMESPACED_MODE_CLUSTER_ROLE | rbac.NAMESPACED_MODE_ROLE | hot_swap
        # Outside the watched namespace, only the cluster-scoped grants.
        assert elsewhere - defaults == rbac.NAMESPACED_MODE_CLUSTER_ROLE


def test_token_request_identity_is_the_service_account(
    installed: Install, testbed: Testbed, tmp_path: Path
) -> None:
    """The token the sufficiency test uses authenticates as the chart's ServiceAccount."""
    assert testbed.state is not None
    ca = Path(testbed.state.run_dir) / "pki" / "ca.crt"
    path = service_account_kubeconfig(testbed.api, installed, testbed.state.server, ca, tmp_path / "kc")
    out = run([kubectl_bin(), f"--kubeconfig={path}", "auth", "can-i", "create", "pods", "-n", installed.watched],
              check=False)  # fmt: skip
    assert out.stdout.strip() == "no"
    review = run([kubectl_bin(), f"--kubeconfig={path}", "auth", "can-i", "patch", "speculativeinferences.specops.dev",
                  "--subresource=status", "-n", installed.watched])  # fmt: skip
    assert review.stdout.strip() == "yes"


def test_server_side_apply_of_a_new_object_needs_create(
    testbed: Testbed, namespace: str, tmp_path: Path
) -> None:
    """Why `create` is granted next to `patch` on everything the operator applies: a server-side
    apply that creates its object is a PATCH, but the apiserver also authorizes it as a create."""
    api = testbed.api
    core, authz = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "applier"}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}
    authz.create_namespaced_role(namespace, {"metadata": {"name": "applier"}, "rules": [rule]})
    authz.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "applier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "applier"},
        "subjects": [{"kind": "ServiceAccount", "name": "applier", "namespace": namespace}],
    })  # fmt: skip
    assert testbed.state is not None
    inst = Install("namespaced", "", namespace, namespace, "applier")
    path = service_account_kubeconfig(
        api, inst, testbed.state.server, Path(testbed.state.run_dir) / "pki" / "ca.crt", tmp_path / "kc"
    )
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "applied", "namespace": namespace}}))  # fmt: skip
    apply = [kubectl_bin(), f"--kubeconfig={path}", "apply", "--server-side", "-f", str(manifest)]
    refused = run(apply, check=False)
    # (1.20 says only "forbidden: " here: the PATCH itself was authorized, the create was not.)
    assert refused.returncode != 0 and 'configmaps "applied" is forbidden' in refused.stderr, refused.stderr
    authz.patch_namespaced_role("applier", namespace, {"rules": [{**rule, "verbs": ["patch", "create"]}]})
    wait_for(lambda: run(apply, check=False).returncode == 0, 10, "apply with create granted")
    assert core.read_namespaced_config_map("applied", namespace)

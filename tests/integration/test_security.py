"""Security on the real test world: PromQL injection against the real Prometheus, the Hugging Face
token never leaving its Secret, the Prometheus URL allowlist (no request forgery through
spec.policy.prometheusUrl), the webhook serving TLS only, and the operator running on a read-only
root filesystem.

Least-privilege RBAC is tested in tests/packaging (rbac.py, test_install.py: the chart's grants,
which hold no Secrets, are all used in a lifecycle and nothing is refused); the chart's pod
hardening in tests/packaging/test_chart.py::test_pod_is_hardened.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from specops.api.v1alpha1 import GROUP, PLURAL, VERSION
from specops.metrics.promql import build_queries, selector
from specops_testkit.testbed.controlplane import free_port
from specops_testkit.testbed.faultproxy import FaultProxy
from specops_testkit.testbed.stack import Testbed
from tests.support.hostile import HOSTILE_LABEL_VALUES
from tests.support.live_cluster import (
    condition,
    create_si,
    deployment,
    get_si,
    kubectl,
    local_only,
    patch_si,
    wait_for,
    webhook_points_at,
)
from tests.support.resources import example_doc

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------ PromQL injection


def prom_query(url: str, promql: str) -> dict[str, Any]:
    """The raw answer, errors included (prometheus-api-client would raise on them)."""
    req = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 400 bad_data: a parse error
        answer = json.loads(exc.read())
    return answer


@local_only
def test_hostile_label_values_match_only_themselves_in_real_prometheus(testbed: Testbed) -> None:
    """Scrape targets carry hostile ``namespace`` labels (each target's ``up`` series has them);
    a selector built for one value must select exactly that series, and no query may fail to
    parse or gain series (``or vector(1)``) from a value."""
    url = testbed.prometheus_url
    run = uuid.uuid4().hex[:8]
    # Label values are any UTF-8; NUL is left out of the targets (it stays in the queries below).
    values = [v for v in HOSTILE_LABEL_VALUES if "\x00" not in v] + ["victim"]
    keys = [f"secprobe-{run}-{i}" for i in range(len(values))]
    for key, value in zip(keys, values, strict=True):
        labels = {"namespace": value, "specops_name": f"secprobe-{run}", "specops_pool": "speculative"}
        testbed.prometheus.set_target(key, "127.0.0.1:1", labels)  # nothing listens: up == 0
    try:
        probe = f'up{{specops_name="secprobe-{run}"}}'
        wait_for(
            lambda: len(prom_query(url, probe)["data"]["result"]) == len(values),
            60,
            "every probe target scraped",
        )
        for value in values:
            answer = prom_query(url, f"up{selector((value,))}")
            assert answer["status"] == "success", (value, answer)
            assert [s["metric"]["namespace"] for s in answer["data"]["result"]] == [value], value
        # Values no series has: an empty answer, not an error and not a vector(1).
        for value in ['"} or vector(1) #x', "a\x00b", "\\\\", "victim|.*"]:
            answer = prom_query(url, f"up{selector((value,))}")
            assert answer == {"status": "success", "data": {"resultType": "vector", "result": []}}, value
        # Every query the evaluator sends, for all the values at once.
        for signal_, promql in build_queries("5m", tuple(values)).items():
            answer = prom_query(url, promql)
            assert answer["status"] == "success", (signal_, answer)
            namespaces = {s["metric"].get("namespace") for s in answer["data"]["result"]}
            assert namespaces <= set(values), (signal_, namespaces)
        # The control: the same value spliced in raw does break out.
        raw = prom_query(url, 'up{namespace=~"' + '"} or vector(1) or up{namespace="x' + '"}')
        assert raw["status"] == "success" and any(not s["metric"] for s in raw["data"]["result"])
    finally:
        for key in keys:
            testbed.prometheus.remove_target(key)


@local_only
@pytest.mark.parametrize("window", ["1.5m", "0.5s", "1h30m", "10m0s", "500ms", "90s", "1s"])
def test_every_window_the_api_takes_parses_in_real_prometheus(testbed: Testbed, window: str) -> None:
    for signal_, promql in build_queries(window).items():
        answer = prom_query(testbed.prometheus_url, promql)
        assert answer["status"] == "success", (window, signal_, answer.get("error"))


@local_only
def test_a_fractional_window_spliced_raw_is_a_parse_error(testbed: Testbed) -> None:
    """Why windows are rebuilt: Prometheus itself refuses '1.5m' and '0s'."""
    for window in ("1.5m", "0s"):
        answer = prom_query(testbed.prometheus_url, f"rate(up[{window}])")
        assert answer["status"] == "error" and answer["errorType"] == "bad_data", answer


# ---------------------------------------------------------------------------- the HF token


def test_hf_token_never_leaves_its_secret(
    api: client.ApiClient,
    testbed: Testbed,
    namespace: str,
    start_operator: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A canary token through a whole lifecycle: it is in the Secret and nowhere else (everything
    logged in this process at DEBUG, Events, status, Deployments, ReplicaSets, Pods, Services); the
    pods get it only through a secretKeyRef.  That the operator never even reads Secrets is shown
    by tests/packaging/test_install.py: the chart grants none, and a lifecycle is refused nothing."""
    canary = f"hf_canary{uuid.uuid4().hex}"
    forms = [canary, base64.b64encode(canary.encode()).decode()]
    # kubectl, not this process's client: its debug log would carry the Secret's body.
    kubectl(
        testbed, "-n", namespace, "create", "secret", "generic", "hf-token", f"--from-literal=token={canary}"
    )
    stored = kubectl(testbed, "-n", namespace, "get", "secret", "hf-token", "-o", "json").stdout
    assert forms[1] in stored  # the control: the search finds what is there

    caplog.set_level(logging.DEBUG)
    start_operator()
    doc = example_doc()
    doc["spec"]["replicas"] = 1
    create_si(api, namespace, doc)
    name = doc["metadata"]["name"]
    wait_for(lambda: condition(get_si(api, namespace, name), "Ready").get("status") == "True", 90, "Ready")
    patch_si(api, namespace, name, {"spec": {"speculation": {"numSpeculativeTokens": 3}, "replicas": 2}})
    wait_for(lambda: deployment(api, namespace, f"{name}-spec").spec.replicas == 2, 30, "2 replicas")
    time.sleep(3)  # a few evaluations and resyncs
    ser = api.sanitize_for_serialization
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    deployments = ser(apps.list_namespaced_deployment(namespace))
    seen = {
        "operator logs": caplog.text,
        "events": json.dumps(ser(core.list_namespaced_event(namespace))),
        "resource and status": json.dumps(get_si(api, namespace, name)),
        "deployments": json.dumps(deployments),
        "replicasets": json.dumps(ser(apps.list_namespaced_replica_set(namespace))),
        "pods": json.dumps(ser(core.list_namespaced_pod(namespace))),
        "services": json.dumps(ser(core.list_namespaced_service(namespace))),
    }
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_for(lambda: deployment(api, namespace, f"{name}-spec") is None, 60, "garbage collection")
    seen["operator logs"] = caplog.text
    # The control for the logs: the operator's own lines were captured, with what it reconciled.
    assert f"{namespace}/{name} Deployed" in seen["operator logs"]
    assert f"{namespace}/{name} SpecApplied" in seen["operator logs"]
    for where, text in seen.items():
        for form in forms:
            assert form not in text, f"the HF token leaked into {where}"
    for dep in deployments["items"]:
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        token = [e for e in env if e["name"] == "HF_TOKEN"]
        assert token == [
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
        ]


# ----------------------------------------------------------------- the Prometheus URL allowlist


def test_admission_refuses_a_prometheus_url_off_the_allowlist(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    """Through the real API server: a URL the operator does not allow is refused with a message
    naming the field and the fix; an allowed one, and none at all, are admitted."""
    allowed = "http://thanos-query.monitoring.svc:9090"
    start_operator(allowed_prometheus_urls=[allowed])
    doc = example_doc()
    doc["spec"]["policy"] = {"prometheusUrl": "http://169.254.169.254/latest/meta-data"}
    with pytest.raises(client.ApiException) as refused:
        create_si(api, namespace, doc)
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status in (400, 422), message
    assert (
        "spec.policy.prometheusUrl: 'http://169.254.169.254/latest/meta-data' is not a Prometheus" in message
    )
    assert "--allowed-prometheus-url" in message and allowed in message and testbed.prometheus_url in message
    for i, url in enumerate([allowed + "/", testbed.prometheus_url, None]):
        doc["metadata"]["name"] = f"allowed-{i}"
        doc["spec"]["policy"] = {"prometheusUrl": url} if url else {}
        create_si(api, namespace, doc)


@local_only
def test_a_forged_url_that_slipped_past_admission_is_never_queried(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any
) -> None:
    """The webhook fails open (an operator down at creation admits anything), so the evaluator
    checks the allowlist too: the resource gets an Error verdict saying why, and its URL (here a
    proxy in front of the real Prometheus, counting requests) is never called."""
    with FaultProxy(testbed.prometheus_url) as forged:
        start_operator(webhooks=False)  # nothing at admission: as if the webhook were down
        doc = example_doc("demo-llama70b.yaml")
        doc["spec"]["policy"]["prometheusUrl"] = forged.url
        create_si(api, namespace, doc)
        name = doc["metadata"]["name"]
        cond = wait_for(lambda: (c := condition(get_si(api, namespace, name), "MetricsAvailable")).get("status")
                        == "False" and c, 60, "MetricsAvailable=False")  # fmt: skip
        assert cond["reason"] == "PrometheusError", cond
        assert (
            f"spec.policy.prometheusUrl {forged.url!r} is not on the operator's allowlist" in cond["message"]
        )
        # Several evaluations later (2 s apart): errors counted, and still not one request sent.
        wait_for(lambda: get_si(api, namespace, name)["status"].get("counters", {}).get("errors", 0) >= 3,
                 30, "3 evaluations")  # fmt: skip
        assert sum(forged.requests.values()) == 0, forged.requests
        assert get_si(api, namespace, name)["status"]["mode"] == "Speculative"  # held, never switched


# -------------------------------------------------------------------------- webhook TLS only


def _admission_review(doc: dict[str, Any]) -> bytes:
    request = {"uid": str(uuid.uuid4()), "operation": "CREATE", "object": doc, "oldObject": None,
               "kind": {"group": GROUP, "version": VERSION, "kind": "SpeculativeInference"},
               "resource": {"group": GROUP, "version": VERSION, "resource": PLURAL},
               "userInfo": {"username": "test"}, "dryRun": False}  # fmt: skip
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def registered_hooks(api: client.ApiClient, port: int) -> list[Any]:
    """The webhooks registered for an operator's port, once there (its server is then listening)."""

    def hooks() -> list[Any]:
        cfg = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration("specops.dev")
        return [w for w in cfg.webhooks or [] if f":{port}/" in (w.client_config.url or "")]

    return wait_for(hooks, 30, f"webhooks registered on port {port}")


def _plain_post(host: str, port: int, path: str, body: bytes) -> bytes:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        return conn.getresponse().read()
    finally:
        conn.close()


def test_webhook_serves_only_tls_with_its_ca(
    api: client.ApiClient, testbed: Testbed, start_operator: Any
) -> None:
    op = start_operator()
    hooks = registered_hooks(api, op.opts.webhook_port)
    for hook in hooks:
        assert hook.client_config.url.startswith("https://")
        assert hook.client_config.ca_bundle
    hook = next(h for h in hooks if "scale" not in h.client_config.url)
    parsed = urllib.parse.urlsplit(hook.client_config.url)
    host, port = parsed.hostname, parsed.port
    assert host and port
    bad = example_doc("invalid-bf16-on-h100.yaml")
    body = _admission_review(bad)

    # Plain HTTP on the webhook port gets no HTTP answer at all.
    with pytest.raises((http.client.HTTPException, OSError)):
        _plain_post(host, port, parsed.path, body)

    # TLS verified against a public trust store fails: the certificate is the operator's own.
    with pytest.raises(ssl.SSLCertVerificationError):
        http.client.HTTPSConnection(host, port, timeout=10, context=ssl.create_default_context()).connect()

    # TLS verified against the registered caBundle answers the review.
    ctx = ssl.create_default_context(cadata=base64.b64decode(hook.client_config.ca_bundle).decode())
    conn = http.client.HTTPSConnection(host, port, timeout=10, context=ctx)
    conn.request("POST", parsed.path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == 200
    assert conn.sock is None or conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()
    assert answer["response"]["allowed"] is False
    assert "spec.resources" in answer["response"]["status"]["message"]


# ------------------------------------------------------------------- read-only root filesystem


def _ro_command(writable: Path, argv: list[str]) -> list[str]:
    """``argv`` in a mount namespace where / is read-only and only ``writable`` is not: what the
    chart's readOnlyRootFilesystem with an emptyDir on /tmp gives the operator."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro / && shift && exec "$@"'
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to emulate a read-only root filesystem"
    return [unshare, "--mount", "--map-root-user", "sh", "-c", script, "sh", str(writable), *argv]


@local_only
def test_operator_runs_on_a_read_only_root_filesystem(
    api: client.ApiClient, testbed: Testbed, namespace: str, tmp_path: Path
) -> None:
    writable = tmp_path / "tmp"
    writable.mkdir()
    assert testbed.state is not None
    webhook_port, health_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        str(Path(sys.executable).parent / "specops"), "run",
        f"--kubeconfig={testbed.state.operator_kubeconfig}", f"--prometheus-url={testbed.prometheus_url}",
        "--webhook-listen=127.0.0.1", f"--webhook-port={webhook_port}", f"--health-port={health_port}",
        f"--metrics-port={metrics_port}", "--resync-seconds=2",
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(writable), "HOME": str(writable), "PYTHONDONTWRITEBYTECODE": "1"}
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(_ro_command(writable, argv), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The sandbox itself works: the root is read-only in it.
        probe = subprocess.run(
            _ro_command(writable, ["touch", str(tmp_path / "x")]), capture_output=True, text=True
        )
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe

        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(healthy, 60, "the operator's /healthz")
        wait_for(lambda: webhook_points_at(testbed.api, webhook_port), 30, "webhook registration")
        doc = example_doc("ngram-summarization.yaml")
        create_si(api, namespace, doc)
        wait_for(lambda: deployment(api, namespace, "summarizer-spec"), 30, "the speculative Deployment")
        with pytest.raises(client.ApiException) as refused:
            create_si(api, namespace, example_doc("invalid-bf16-on-h100.yaml"))
        assert refused.value.status in (400, 422) and "DoesNotFit" in str(refused.value.body)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            assert b"specops_" in resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log_text = log_path.read_text()
    assert "Read-only file system" not in log_text and "Traceback" not in log_text, log_text[-3000:]
    # What it wrote, all in its temporary directory: the webhook certificate, key private.
    keys = list(writable.glob("specops-webhook-*/tls.key"))
    assert len(keys) == 1 and (keys[0].stat().st_mode & 0o077) == 0


def test_no_plain_listener_on_the_webhook_port_even_for_localhost(
    api: client.ApiClient, start_operator: Any
) -> None:
    """A raw TCP client that speaks HTTP/1.1 gets a TLS alert or a closed socket, never HTTP."""
    op = start_operator()
    registered_hooks(api, op.opts.webhook_port)
    with socket.create_connection(("127.0.0.1", op.opts.webhook_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            reply = sock.recv(64)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/"), reply

"""The HotSwap strategy's manifests: the two-engine pod, the nginx path filter, the admin Secret, the
NetworkPolicy, and the EndpointSlices that route to awake engines only."""

from __future__ import annotations

import base64
import http.server
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from specops.api.v1alpha1 import SpeculativeInference
from specops.render.hotswap import (
    ADMIN_DIR,
    ADMIN_NGINX_KEY,
    ADMIN_PORT,
    ENGINE_PORTS,
    PLACEHOLDER_TOKEN,
    PUBLIC_PORTS,
    SwapPod,
    engine_command,
    render_admin_secret,
    render_endpoint_slices,
    render_hot_swap_all,
    render_launch_script,
    render_network_policy,
    render_nginx_config,
    render_swap_deployment,
    render_swap_pod_monitor,
    render_swap_service,
)
from specops.render.manifests import Pool, RenderError
from tests.support.hotswap import http_status
from tests.support.resources import make_si

TOKEN = "0123456789abcdef" * 4


@pytest.fixture
def si() -> SpeculativeInference:
    return make_si(rollout={"strategy": "HotSwap"})


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# ------------------------------------------------------------------------------------- engines


def test_engines_are_loopback_only_with_sleep_mode(si: SpeculativeInference) -> None:
    for pool in Pool:
        cmd = engine_command(si, pool)
        assert flag(cmd, "--host") == "127.0.0.1"
        assert flag(cmd, "--port") == str(ENGINE_PORTS[pool])
        assert "--enable-sleep-mode" in cmd
        assert flag(cmd, "--gpu-memory-utilization") == "0.9"
    assert "--speculative-config" in engine_command(si, Pool.SPECULATIVE)
    assert "--speculative-config" not in engine_command(si, Pool.BASELINE)


def test_engine_share_follows_the_budget() -> None:
    si = make_si(rollout={"strategy": "HotSwap"}, resources={"gpuMemoryUtilization": 0.99})
    shares = {pool: float(flag(engine_command(si, pool), "--gpu-memory-utilization") or 0) for pool in Pool}
    assert all(share < 0.99 for share in shares.values()), shares


def test_launch_script_starts_the_baseline_only_while_the_speculative_engine_sleeps(
    si: SpeculativeInference,
) -> None:
    script = render_launch_script(si)
    spec_start = script.index(f"--port {ENGINE_PORTS[Pool.SPECULATIVE]}")
    sleep_call = script.index("/sleep?level=1")
    asleep_check = script.index("/is_sleeping")
    base_start = script.index(f"--port {ENGINE_PORTS[Pool.BASELINE]}")
    assert spec_start < sleep_call < asleep_check < base_start
    assert "wait -n" in script  # either engine exiting ends the container
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_deployment_one_engine_container_holds_the_gpus(si: SpeculativeInference) -> None:
    dep = render_swap_deployment(si)
    assert dep["metadata"]["name"] == "demo-swap"
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    engines, proxy = pod["containers"]
    # The device plugin hands a pod's GPUs to the container that requests them: one container.
    assert engines["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in proxy["resources"].get("limits", {})
    assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in engines["env"]
    assert "ports" not in engines  # nothing reaches the engines but through the proxy
    assert engines["command"][0] == "/bin/bash"
    assert proxy["image"].startswith("nginx:")
    assert {p["containerPort"] for p in proxy["ports"]} == {*PUBLIC_PORTS.values(), ADMIN_PORT}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hotswap-admin"]["secret"]["secretName"] == "demo-hotswap-admin"
    assert volumes["hotswap-config"]["configMap"]["name"] == "demo-hotswap"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = engines[probe]["exec"]["command"][-1]
        assert all(str(port) in command for port in ENGINE_PORTS.values()), probe
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_hot_swap_manifests_need_the_strategy() -> None:
    with pytest.raises(RenderError, match="strategy: HotSwap"):
        render_swap_deployment(make_si())


# --------------------------------------------------------------------------------------- proxy


def server_block(config: str, port: int) -> str:
    start = config.index(f"listen {port};")
    return config[start : config.index("\n}", start)]


def test_public_ports_pass_only_the_api_health_metrics_and_version(si: SpeculativeInference) -> None:
    config = render_nginx_config(si)
    for pool, port in PUBLIC_PORTS.items():
        block = server_block(config, port)
        locations = [line.split("{")[0].strip() for line in block.splitlines() if "location" in line]
        assert locations == [
            "location /v1/",
            "location = /health",
            "location = /metrics",
            "location = /metrics/",
            "location = /version",
            "location /",
        ]
        assert "location / { return 404; }" in block
        assert f"127.0.0.1:{ENGINE_PORTS[pool]}" in block
        other = ENGINE_PORTS[Pool.BASELINE if pool is Pool.SPECULATIVE else Pool.SPECULATIVE]
        assert f"127.0.0.1:{other}" not in block
        for dev in ("sleep", "wake_up", "is_sleeping", "collective_rpc", "server_info"):
            assert dev not in block


def test_admin_port_needs_the_token_and_fixes_the_level(si: SpeculativeInference) -> None:
    config = render_nginx_config(si)
    block = server_block(config, ADMIN_PORT)
    assert block.count("if ($specops_admin != 1) { return 401; }") == 6
    assert block.count("rewrite ^ /sleep?level=1? break;") == 2
    assert f"include {ADMIN_DIR}/{ADMIN_NGINX_KEY};" in config


def test_admin_secret(si: SpeculativeInference) -> None:
    secret = render_admin_secret(si, TOKEN)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["token"] == TOKEN
    assert f'"Bearer {TOKEN}" 1;' in data[ADMIN_NGINX_KEY]
    assert "default 0;" in data[ADMIN_NGINX_KEY]
    for bad in ("short", 'x" 1; default 1; "' + "a" * 32, "a" * 31, "a b" * 20):
        with pytest.raises(RenderError, match="admin token"):
            render_admin_secret(si, bad)


def nginx_root(tmp_path: Path, si: SpeculativeInference, token: str, port_shift: int = 0) -> Path:
    """The rendered configuration under a throwaway nginx prefix (ports moved by ``port_shift``)."""
    config = render_nginx_config(si).replace(f"{ADMIN_DIR}/", f"{tmp_path}/")
    ports = "|".join(str(p) for p in (*ENGINE_PORTS.values(), *PUBLIC_PORTS.values(), ADMIN_PORT))
    config = re.sub(rf"(?<![0-9])({ports})(?![0-9])", lambda m: str(int(m.group(1)) + port_shift), config)
    secret = render_admin_secret(si, token)
    (tmp_path / ADMIN_NGINX_KEY).write_text(base64.b64decode(secret["data"][ADMIN_NGINX_KEY]).decode())
    (tmp_path / "specops.conf").write_text(config)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp_path};\n"
        f"  proxy_temp_path {tmp_path};\n  include {tmp_path}/specops.conf;\n}}\n"
    )
    return tmp_path / "nginx.conf"


NGINX = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")


@pytest.mark.skipif(not NGINX, reason="nginx is not installed (hack/setup-testbed.sh installs it)")
def test_nginx_accepts_the_rendered_configuration(tmp_path: Path, si: SpeculativeInference) -> None:
    conf = nginx_root(tmp_path, si, TOKEN)
    result = subprocess.run(
        [str(NGINX), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def _answer(self) -> None:
        self.seen.append((self.command, self.path))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, *args: Any) -> None:
        pass


def free_shift() -> int:
    """A port offset at which every port of the configuration is free on loopback."""
    for shift in range(20000, 40000, 997):
        ports = [p + shift for p in (*ENGINE_PORTS.values(), *PUBLIC_PORTS.values(), ADMIN_PORT)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return shift
        except OSError:
            continue
    raise RuntimeError("no free ports")


@pytest.fixture
def live_proxy(
    tmp_path: Path, si: SpeculativeInference
) -> Iterator[tuple[int, dict[Pool, list[tuple[str, str]]]]]:
    if not NGINX:
        pytest.skip("nginx is not installed (hack/setup-testbed.sh installs it)")
    shift = free_shift()
    seen: dict[Pool, list[tuple[str, str]]] = {pool: [] for pool in Pool}
    servers = []
    for pool in Pool:
        handler = type(f"Recorder{pool.suffix}", (Recorder,), {"seen": seen[pool]})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", ENGINE_PORTS[pool] + shift), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    conf = nginx_root(tmp_path, si, TOKEN, shift)
    proc = subprocess.Popen([str(NGINX), "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", ADMIN_PORT + shift), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    stderr = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    raise RuntimeError(f"nginx did not start: {stderr}") from None
                time.sleep(0.1)
        yield shift, seen
    finally:
        proc.terminate()
        proc.wait(10)
        for server in servers:
            server.shutdown()


def test_live_proxy_passes_and_blocks_the_right_paths(
    live_proxy: tuple[int, dict[Pool, list[tuple[str, str]]]],
) -> None:
    shift, seen = live_proxy
    spec = f"http://127.0.0.1:{PUBLIC_PORTS[Pool.SPECULATIVE] + shift}"
    admin = f"http://127.0.0.1:{ADMIN_PORT + shift}"
    assert http_status(f"{spec}/v1/models") == 200
    assert http_status(f"{spec}/v1/chat/completions", "POST") == 200
    assert http_status(f"{spec}/health") == 200
    assert http_status(f"{spec}/metrics") == 200
    for path in ("/sleep?level=1", "/wake_up", "/is_sleeping", "/collective_rpc", "/server_info",
                 "/v1/../sleep", "/v1/%2e%2e/sleep", "/v1/..%2fsleep", "/reset_prefix_cache"):  # fmt: skip
        method = "GET" if "is_sleeping" in path or "server_info" in path else "POST"
        assert http_status(f"{spec}{path}", method) == 404, path
    # The admin port: nothing without the token, the wrong method refused, level fixed at 1.
    assert http_status(f"{admin}/speculative/sleep", "POST") == 401
    assert http_status(f"{admin}/speculative/sleep", "POST", token="f" * 64) == 401
    assert http_status(f"{admin}/speculative/sleep", "GET", token=TOKEN) == 403
    assert http_status(f"{admin}/speculative/sleep?level=2&level=2", "POST", token=TOKEN) == 200
    assert http_status(f"{admin}/baseline/wake_up?tags=weights", "POST", token=TOKEN) == 200
    assert http_status(f"{admin}/baseline/is_sleeping", "GET", token=TOKEN) == 200
    assert http_status(f"{admin}/speculative/collective_rpc", "POST", token=TOKEN) == 404
    assert http_status(f"{admin}/v1/models", "GET", token=TOKEN) == 404
    assert seen[Pool.SPECULATIVE] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/sleep?level=1"),
    ]
    assert seen[Pool.BASELINE] == [("POST", "/wake_up"), ("GET", "/is_sleeping")]


# ------------------------------------------------------------------------------------- routing


def test_network_policy_admits_the_admin_port_from_the_operator_only(si: SpeculativeInference) -> None:
    policy = render_network_policy(si, operator_namespace="ops")
    public, admin = policy["spec"]["ingress"]
    assert "from" not in public
    assert {p["port"] for p in public["ports"]} == set(PUBLIC_PORTS.values())
    assert admin["ports"] == [{"port": ADMIN_PORT, "protocol": "TCP"}]
    (peer,) = admin["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert policy["spec"]["podSelector"]["matchLabels"]["specops.dev/pool"] == "hot-swap"


def test_service_has_no_selector(si: SpeculativeInference) -> None:
    service = render_swap_service(si)
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["name"] == "http"


def endpoints(slices: list[dict[str, Any]], name: str) -> list[tuple[str, int]]:
    (s,) = [s for s in slices if s["metadata"]["name"] == name]
    return [(e["targetRef"]["name"], s["ports"][0]["port"]) for e in s["endpoints"]]


@pytest.mark.parametrize(
    ("pods", "spec_ipv4", "base_ipv4", "base_ipv6"),
    [
        ([], [], [], []),
        (
            [SwapPod("p1", "10.0.0.1", Pool.SPECULATIVE), SwapPod("p0", "10.0.0.2", Pool.BASELINE)],
            [("p1", 8001)],
            [("p0", 8002)],
            [],
        ),
        # Mid-swap (neither engine awake), not ready, or without an address: no traffic.
        (
            [
                SwapPod("p0", "10.0.0.1", None),
                SwapPod("p1", "10.0.0.2", Pool.SPECULATIVE, ready=False),
                SwapPod("p2", None, Pool.BASELINE),
                SwapPod("p3", "10.0.0.4", Pool.SPECULATIVE),
            ],
            [("p3", 8001)],
            [],
            [],
        ),
        (
            [
                SwapPod("b", "10.0.0.2", Pool.SPECULATIVE),
                SwapPod("a", "10.0.0.1", Pool.SPECULATIVE),
                SwapPod("c", "fd00::3", Pool.BASELINE),
            ],
            [("a", 8001), ("b", 8001)],
            [],
            [("c", 8002)],
        ),
    ],
)
def test_endpoint_slices_list_awake_engines_only(
    si: SpeculativeInference,
    pods: list[SwapPod],
    spec_ipv4: list[tuple[str, int]],
    base_ipv4: list[tuple[str, int]],
    base_ipv6: list[tuple[str, int]],
) -> None:
    slices = render_endpoint_slices(si, pods)
    assert len(slices) == 4  # always all: an emptied pool is written empty
    for s in slices:
        assert s["metadata"]["labels"]["kubernetes.io/service-name"] == "demo"
        assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "specops.dev"
        assert s["ports"][0]["name"] == render_swap_service(si)["spec"]["ports"][0]["name"]
    assert endpoints(slices, "demo-spec-ipv4") == spec_ipv4
    assert endpoints(slices, "demo-base-ipv4") == base_ipv4
    assert endpoints(slices, "demo-base-ipv6") == base_ipv6


def test_pod_monitor_labels_each_engine_with_its_pool(si: SpeculativeInference) -> None:
    monitor = render_swap_pod_monitor(si)
    pools = {e["port"]: e["relabelings"][0]["replacement"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert pools == {"spec-http": "speculative", "base-http": "baseline"}


def test_render_all_kinds_and_the_placeholder_fails_closed(si: SpeculativeInference) -> None:
    kinds = [o["kind"] for o in render_hot_swap_all(si)]
    assert kinds == ["ConfigMap", "Deployment", "Service", *["EndpointSlice"] * 4, "NetworkPolicy"]
    secret = render_admin_secret(si, PLACEHOLDER_TOKEN)
    assert "REPLACED-BY-THE-OPERATOR" in base64.b64decode(secret["data"]["token"]).decode()


def test_endpoint_slices_in_the_version_the_cluster_serves(si: SpeculativeInference) -> None:
    """v1beta1 (Kubernetes 1.17-1.20) is written as the API server stores it: only the ready
    condition, the node in topology; else the drift check would rewrite the slices every time."""
    pods = [SwapPod("a", "10.0.0.1", Pool.SPECULATIVE, node_name="node-1")]
    v1 = render_endpoint_slices(si, pods)[0]
    assert v1["apiVersion"] == "discovery.k8s.io/v1"
    assert v1["endpoints"][0]["nodeName"] == "node-1"
    assert v1["endpoints"][0]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    beta = render_endpoint_slices(si, pods, api_version="discovery.k8s.io/v1beta1")[0]
    assert beta["apiVersion"] == "discovery.k8s.io/v1beta1"
    assert beta["endpoints"][0]["conditions"] == {"ready": True}
    assert beta["endpoints"][0]["topology"] == {"kubernetes.io/hostname": "node-1"}
    assert "nodeName" not in beta["endpoints"][0]
    with pytest.raises(RenderError, match="EndpointSlice API version"):
        render_endpoint_slices(si, pods, api_version="discovery.k8s.io/v2")

"""Manifests of the HotSwap rollout strategy (pure and deterministic).

Every pod of ``<name>-swap`` runs both engines on its GPUs: the speculative engine and the baseline
engine, each with ``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1``, bound to 127.0.0.1 on
ports of their own.  One is awake and serves, the other sleeps at level 1 (weights in host RAM).
Both run in one container: the device plugin gives a pod's GPUs to the container that requests
them, so two containers cannot share them.  A launcher (``launch.sh``) starts the speculative engine,
waits until it serves, puts it to sleep and only then starts the baseline engine: each engine sizes
its KV cache from the memory free at its start, so started together they mis-size each other's (vLLM
issue 55827), and vLLM refuses to start with less free memory than its share.

Nothing reaches an engine but through the nginx sidecar (official image, configuration rendered
here): per engine a public port that passes only ``/v1/*``, ``/health``, ``/metrics`` and
``/version``; and an admin port whose only paths are each engine's ``sleep`` (level 1, whatever the
client asks), ``wake_up`` and ``is_sleeping``, behind a bearer token from the operator's Secret.  A
NetworkPolicy admits the admin port from the operator's pods only.  Clients reach the awake engines
through a Service without selector whose EndpointSlices the operator writes from which engine of
each pod is awake (``render_endpoint_slices``).  docs/operator.md, "Hot swap".
"""

from __future__ import annotations

import base64
import copy
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specops.api.v1alpha1 import HOT_SWAP_SLEEP_LEVEL, RolloutStrategy, SpeculativeInference
from specops.render.manifests import (
    LABEL_COMPONENT,
    LABEL_POOL,
    PORT_NAME,
    OwnerRef,
    Pool,
    RenderError,
    _metadata,
    pod_monitor_interval,
    render_pool_deployment,
    selector_labels,
    startup_timeout_seconds,
)
from specops.vllm.budget import plan_budget
from specops.vllm.dialect import SERVER_DEV_MODE_ENV

SWAP_POOL = "hot-swap"
ENGINE_PORTS = {Pool.SPECULATIVE: 18001, Pool.BASELINE: 18002}  # 127.0.0.1 only
PUBLIC_PORTS = {Pool.SPECULATIVE: 8001, Pool.BASELINE: 8002}  # nginx, any client
PUBLIC_PORT_NAMES = {Pool.SPECULATIVE: "spec-http", Pool.BASELINE: "base-http"}
ADMIN_PORT = 8090  # nginx, the operator's pods only, bearer token
ADMIN_PORT_NAME = "admin"
# What each public port passes: the OpenAI-compatible API and the probes' and scrapers' paths.
PUBLIC_PREFIXES = ("/v1/",)
PUBLIC_EXACT = ("/health", "/metrics", "/metrics/", "/version")
ADMIN_ACTIONS = ("sleep", "wake_up", "is_sleeping")
ADMIN_METHODS = {"sleep": "POST", "wake_up": "POST", "is_sleeping": "GET"}

CONFIG_DIR = "/etc/specops/hotswap"
ADMIN_DIR = "/etc/specops/admin"
NGINX_CONF_DIR = "/etc/nginx/conf.d"
NGINX_CONF_KEY = "specops.conf"
LAUNCH_KEY = "launch.sh"
ADMIN_TOKEN_KEY = "token"
ADMIN_NGINX_KEY = "admin-token.conf"
PROXY_CONTAINER = "proxy"
ENGINES_CONTAINER = "vllm"
ENDPOINTSLICE_MANAGER = "specops.dev"
# What a Secret's token may hold: it is written into nginx's configuration, so nothing that could
# end a quoted string; 32-128 characters (the operator writes 64 hex digits).
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
# A token that matches no request: `specops render` shows the Secret with it (fail closed).
PLACEHOLDER_TOKEN = "REPLACED-BY-THE-OPERATOR-" + "0" * 16
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "specops", "app.kubernetes.io/component": "operator"}
DEFAULT_OPERATOR_NAMESPACE = "specops-system"


def swap_name(name: str) -> str:
    return f"{name}-swap"


def config_map_name(name: str) -> str:
    return f"{name}-hotswap"


def admin_secret_name(name: str) -> str:
    return f"{name}-hotswap-admin"


def swap_labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), LABEL_POOL: SWAP_POOL}


def _require_hot_swap(si: SpeculativeInference) -> None:
    if si.spec.rollout.effective_strategy is not RolloutStrategy.HOT_SWAP:
        raise RenderError("hot-swap manifests need spec.rollout.strategy: HotSwap")


# ----------------------------------------------------------------------------------- the engines


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    i = out.index(flag)
    out[i + 1] = value
    return out


# The vllm-openai images' own entry point, for renderings that leave the command to the image.
IMAGE_ENTRYPOINT = ("python3", "-m", "vllm.entrypoints.openai.api_server")


def engine_command(si: SpeculativeInference, pool: Pool) -> list[str]:
    """One engine of a hot-swap pod: the pool's own command line (as its Deployment would run it),
    bound to 127.0.0.1 on the engine's port, with its share of GPU memory (``plan_hot_swap``) and
    sleep mode on."""
    spec = si.spec
    hot_swap = plan_budget(spec).hot_swap
    share = spec.resources.gpu_memory_utilization
    if hot_swap is not None:
        engine = hot_swap.speculative if pool is Pool.SPECULATIVE else hot_swap.baseline
        share = engine.gpu_memory_utilization
    container = render_pool_deployment(si, pool, 1)["spec"]["template"]["spec"]["containers"][0]
    args = _set_flag(container["args"], "--port", str(ENGINE_PORTS[pool]))
    args = _set_flag(args, "--gpu-memory-utilization", f"{share:g}")
    command = container.get("command") or list(IMAGE_ENTRYPOINT)
    return [*command, *args, "--host", "127.0.0.1", "--enable-sleep-mode"]


def _http_call(method: str, path: str, port: str) -> str:
    """A python3 one-liner (the vLLM image has python3, not necessarily curl) printing the body;
    ``port`` is a shell word (a number or "$1")."""
    code = (
        "import sys,urllib.request as u;"
        f'r=u.urlopen(u.Request("http://127.0.0.1:"+sys.argv[1]+"{path}",method="{method}"),timeout=30);'
        "sys.stdout.write(r.read().decode())"
    )
    return f"python3 -c {shlex.quote(code)} {port}"


def render_launch_script(si: SpeculativeInference) -> str:
    """The container's launcher: speculative engine up, asleep, then the baseline engine."""
    spec_port, base_port = ENGINE_PORTS[Pool.SPECULATIVE], ENGINE_PORTS[Pool.BASELINE]
    spec_cmd = shlex.join(engine_command(si, Pool.SPECULATIVE))
    base_cmd = shlex.join(engine_command(si, Pool.BASELINE))
    health = _http_call("GET", "/health", '"$1"')
    sleep = _http_call("POST", f"/sleep?level={HOT_SWAP_SLEEP_LEVEL}", str(spec_port))
    asleep = _http_call("GET", "/is_sleeping", str(spec_port))
    return f"""#!/bin/bash
# Rendered by SpecOps: both engines of a hot-swap pod, started one after the other.  The baseline
# engine starts only while the speculative one sleeps: each sizes its KV cache from the GPU memory
# free at its start (vLLM issue 55827), and vLLM refuses to start with less free memory than its
# --gpu-memory-utilization share.  If either engine exits, the container exits (and restarts).
set -u
spec_pid=""
base_pid=""
stop() {{ kill -TERM $spec_pid $base_pid 2>/dev/null; wait; exit 143; }}
trap stop TERM INT
wait_healthy() {{  # port pid
  until {health} >/dev/null 2>&1; do
    kill -0 "$2" 2>/dev/null || {{ echo "engine on port $1 exited during start-up" >&2; exit 1; }}
    sleep 2
  done
}}
{spec_cmd} &
spec_pid=$!
wait_healthy {spec_port} $spec_pid
{sleep} >/dev/null || {{ echo "the speculative engine did not go to sleep" >&2; exit 1; }}
until {asleep} | grep -q '"is_sleeping": *true'; do sleep 1; done
{base_cmd} &
base_pid=$!
wait_healthy {base_port} $base_pid
echo "both engines up: baseline awake, speculative asleep (level {HOT_SWAP_SLEEP_LEVEL})"
wait -n $spec_pid $base_pid
status=$?
kill -TERM $spec_pid $base_pid 2>/dev/null
wait
exit $status
"""


def _exec_probe(*ports: int) -> dict[str, Any]:
    checks = " && ".join(_http_call("GET", "/health", str(p)) + " >/dev/null" for p in ports)
    return {"exec": {"command": ["/bin/bash", "-c", checks]}}


# ------------------------------------------------------------------------------------- the proxy


def render_nginx_config(si: SpeculativeInference) -> str:
    """nginx's server blocks (included in its http context from conf.d)."""
    lines = [
        f"# Rendered by SpecOps for {si.metadata.namespace or 'default'}/{si.metadata.name}; the operator "
        "overwrites edits.",
        "# The admin token: map $http_authorization $specops_admin (from the operator's Secret).",
        "map_hash_bucket_size 256;  # room for the token line",
        f"include {ADMIN_DIR}/{ADMIN_NGINX_KEY};",
        "server_tokens off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $host;",
        "proxy_buffering off;  # streamed completions",
        "proxy_request_buffering off;",
        "proxy_read_timeout 3600s;",
        "proxy_send_timeout 3600s;",
        "client_max_body_size 64m;",
        "",
    ]
    for pool in Pool:
        upstream = f"http://127.0.0.1:{ENGINE_PORTS[pool]}"
        lines += [
            f"# The {pool.value} engine's public port: the API, health, metrics and version only.",
            "server {",
            f"    listen {PUBLIC_PORTS[pool]};",
        ]
        for prefix in PUBLIC_PREFIXES:
            # The URI part makes nginx pass the normalised path (no ../ or %2e tricks).
            lines.append(f"    location {prefix} {{ proxy_pass {upstream}{prefix}; }}")
        for path in PUBLIC_EXACT:
            lines.append(f"    location = {path} {{ proxy_pass {upstream}{path}; }}")
        lines += ["    location / { return 404; }", "}", ""]
    lines += [
        "# The admin port: each engine's sleep (always level "
        f"{HOT_SWAP_SLEEP_LEVEL}), wake_up and is_sleeping, for the operator's bearer token only.",
        "server {",
        f"    listen {ADMIN_PORT};",
    ]
    for pool in Pool:
        for action in ADMIN_ACTIONS:
            target = f"/{action}?level={HOT_SWAP_SLEEP_LEVEL}?" if action == "sleep" else f"/{action}?"
            lines += [
                f"    location = /{pool.value}/{action} {{",
                "        if ($specops_admin != 1) { return 401; }",
                f"        limit_except {ADMIN_METHODS[action]} {{ deny all; }}",
                # The client's query is dropped (the trailing ?): level and tags are fixed here.
                f"        rewrite ^ {target} break;",
                f"        proxy_pass http://127.0.0.1:{ENGINE_PORTS[pool]};",
                "    }",
            ]
    lines += ["    location / { return 404; }", "}", ""]
    return "\n".join(lines)


def render_admin_secret(
    si: SpeculativeInference, token: str, owner: OwnerRef | None = None
) -> dict[str, Any]:
    """The operator's Secret: the bearer token, and nginx's map of it."""
    _require_hot_swap(si)
    if not _TOKEN.fullmatch(token):
        raise RenderError("the admin token must be 32-128 characters of A-Z, a-z, 0-9, '-' or '_'")
    nginx_map = f'map $http_authorization $specops_admin {{\n    default 0;\n    "Bearer {token}" 1;\n}}\n'
    name = si.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(admin_secret_name(name), si.metadata.namespace, swap_labels(name), owner),
        "type": "Opaque",
        "data": {
            ADMIN_TOKEN_KEY: base64.b64encode(token.encode()).decode(),
            ADMIN_NGINX_KEY: base64.b64encode(nginx_map.encode()).decode(),
        },
    }


def render_config_map(si: SpeculativeInference, owner: OwnerRef | None = None) -> dict[str, Any]:
    _require_hot_swap(si)
    name = si.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_map_name(name), si.metadata.namespace, swap_labels(name), owner),
        "data": {NGINX_CONF_KEY: render_nginx_config(si), LAUNCH_KEY: render_launch_script(si)},
    }


# ---------------------------------------------------------------------------------- the workload


def render_swap_deployment(si: SpeculativeInference, owner: OwnerRef | None = None) -> dict[str, Any]:
    """``<name>-swap``: spec.replicas pods, each with both engines and the proxy."""
    _require_hot_swap(si)
    spec = si.spec
    name = si.metadata.name
    deployment = copy.deepcopy(render_pool_deployment(si, Pool.BASELINE, spec.replicas, owner))
    labels = swap_labels(name)
    deployment["metadata"]["name"] = swap_name(name)
    deployment["metadata"]["labels"] = dict(labels)
    body = deployment["spec"]
    body["selector"] = {"matchLabels": dict(labels)}
    template = body["template"]
    template["metadata"]["labels"] = {**spec.pod_labels, **labels}
    annotations = template["metadata"]["annotations"]
    for key in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"):
        annotations.pop(key, None)  # two engines, two metrics ports: the PodMonitor names both
    # Both engines start in turn, the first also goes to sleep: twice the single-engine budget.
    startup = 2 * startup_timeout_seconds(spec)
    body["progressDeadlineSeconds"] = startup + 300
    pod = template["spec"]
    engines = pod["containers"][0]
    engines["name"] = ENGINES_CONTAINER
    engines["command"] = ["/bin/bash", f"{CONFIG_DIR}/{LAUNCH_KEY}"]
    engines["args"] = []
    engines.pop("ports", None)
    engines["env"] = [*engines["env"], {"name": SERVER_DEV_MODE_ENV, "value": "1"}]
    engines["volumeMounts"] = [
        *engines["volumeMounts"],
        {"name": "hotswap-config", "mountPath": CONFIG_DIR, "readOnly": True},
    ]
    both = _exec_probe(*ENGINE_PORTS.values())
    period = engines["startupProbe"]["periodSeconds"]
    engines["startupProbe"] = {
        **both,
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": max(1, math.ceil(startup / period)),
    }
    engines["readinessProbe"] = {**both, "periodSeconds": 5, "timeoutSeconds": 10, "failureThreshold": 3}
    engines["livenessProbe"] = {**both, "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4}
    proxy = {
        "name": PROXY_CONTAINER,
        "image": spec.rollout.hot_swap_settings.proxy_image,
        "ports": [
            *(
                {"name": PUBLIC_PORT_NAMES[p], "containerPort": PUBLIC_PORTS[p], "protocol": "TCP"}
                for p in Pool
            ),
            {"name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "volumeMounts": [
            {
                "name": "hotswap-config",
                "mountPath": f"{NGINX_CONF_DIR}/{NGINX_CONF_KEY}",
                "subPath": NGINX_CONF_KEY,
                "readOnly": True,
            },
            {"name": "hotswap-admin", "mountPath": ADMIN_DIR, "readOnly": True},
        ],
        "readinessProbe": {"tcpSocket": {"port": ADMIN_PORT_NAME}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    pod["containers"] = [engines, proxy]
    pod["volumes"] = [
        *pod["volumes"],
        {"name": "hotswap-config", "configMap": {"name": config_map_name(name)}},
        {"name": "hotswap-admin", "secret": {"secretName": admin_secret_name(name)}},
    ]
    template["metadata"]["labels"][LABEL_COMPONENT] = "engines"
    return deployment


def render_swap_service(si: SpeculativeInference, owner: OwnerRef | None = None) -> dict[str, Any]:
    """The Service clients use, without selector: its EndpointSlices list the awake engines."""
    name = si.metadata.name
    port = si.spec.vllm.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, si.metadata.namespace, selector_labels(name), owner),
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def render_network_policy(
    si: SpeculativeInference,
    owner: OwnerRef | None = None,
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
    operator_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Ingress to the hot-swap pods: the public ports from anywhere, the admin port from the
    operator's pods only, nothing else (the engines listen on 127.0.0.1 in any case)."""
    _require_hot_swap(si)
    name = si.metadata.name
    public = [{"port": PUBLIC_PORTS[p], "protocol": "TCP"} for p in Pool]
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}},
        "podSelector": {"matchLabels": dict(operator_labels or OPERATOR_POD_LABELS)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(config_map_name(name), si.metadata.namespace, swap_labels(name), owner),
        "spec": {
            "podSelector": {"matchLabels": swap_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": public},
                {"from": [operator_peer], "ports": [{"port": ADMIN_PORT, "protocol": "TCP"}]},
            ],
        },
    }


def render_swap_pod_monitor(si: SpeculativeInference, owner: OwnerRef | None = None) -> dict[str, Any]:
    """Both engines' metrics, each labelled with its pool (specops_pool), as SpecOps' queries expect."""
    name = si.metadata.name
    endpoints = [
        {
            "port": PUBLIC_PORT_NAMES[pool],
            "path": "/metrics",
            "interval": pod_monitor_interval(si.spec),
            "relabelings": [
                {"targetLabel": "specops_pool", "replacement": pool.value},
                {
                    "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                    "targetLabel": "specops_name",
                },
            ],
        }
        for pool in Pool
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(name, si.metadata.namespace, selector_labels(name), owner),
        "spec": {"selector": {"matchLabels": swap_labels(name)}, "podMetricsEndpoints": endpoints},
    }


# ------------------------------------------------------------------------------- routing state


@dataclass(frozen=True, slots=True)
class SwapPod:
    """What the operator knows of one hot-swap pod: its address and which engine is awake (None:
    neither, e.g. mid-swap, or unknown: the pod gets no traffic)."""

    name: str
    ip: str | None
    awake: Pool | None
    ready: bool = True
    node_name: str | None = None


def endpoint_slice_name(name: str, pool: Pool, family: str) -> str:
    return f"{name}-{pool.suffix}-{family.lower()}"


# The EndpointSlice API versions SpecOps writes, preferred first: v1 from Kubernetes 1.21, v1beta1
# before (1.17-1.20; removed in 1.25).  The controller writes the first one the cluster serves.
ENDPOINT_SLICE_V1 = "discovery.k8s.io/v1"
ENDPOINT_SLICE_V1BETA1 = "discovery.k8s.io/v1beta1"
ENDPOINT_SLICE_API_VERSIONS = (ENDPOINT_SLICE_V1, ENDPOINT_SLICE_V1BETA1)


def _endpoint(p: SwapPod, namespace: str | None, api_version: str) -> dict[str, Any]:
    """One ready pod's endpoint.  v1beta1 (1.20) keeps only ``ready`` of the conditions (serving and
    terminating are behind a feature gate that is off there) and names the node in ``topology``:
    written as the API server stores it, so the drift check does not rewrite it every time."""
    endpoint: dict[str, Any] = {
        "addresses": [p.ip],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "name": p.name, "namespace": namespace},
    }
    if api_version == ENDPOINT_SLICE_V1BETA1:
        endpoint["conditions"] = {"ready": True}
        if p.node_name:
            endpoint["topology"] = {"kubernetes.io/hostname": p.node_name}
    elif p.node_name:
        endpoint["nodeName"] = p.node_name
    return endpoint


def render_endpoint_slices(
    si: SpeculativeInference,
    pods: Sequence[SwapPod],
    owner: OwnerRef | None = None,
    api_version: str = ENDPOINT_SLICE_V1,
) -> list[dict[str, Any]]:
    """The Service's EndpointSlices: per pool and address family, the ready pods whose engine of
    that pool is awake, at that engine's public port.  Always all four, so a pool that empties is
    written empty rather than left stale.  ``api_version``: one of ``ENDPOINT_SLICE_API_VERSIONS``
    (the one the cluster serves)."""
    if api_version not in ENDPOINT_SLICE_API_VERSIONS:
        raise RenderError(f"EndpointSlice API version {api_version!r} is not one SpecOps writes")
    name = si.metadata.name
    slices = []
    for pool in Pool:
        for family in ("IPv4", "IPv6"):
            members = sorted(
                (
                    p
                    for p in pods
                    if p.awake is pool and p.ready and p.ip and (":" in p.ip) == (family == "IPv6")
                ),
                key=lambda p: p.name,
            )
            endpoints = [_endpoint(p, si.metadata.namespace, api_version) for p in members]
            labels = {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER,
                LABEL_POOL: pool.value,
            }
            slices.append(
                {
                    "apiVersion": api_version,
                    "kind": "EndpointSlice",
                    "metadata": _metadata(
                        endpoint_slice_name(name, pool, family), si.metadata.namespace, labels, owner
                    ),
                    "addressType": family,
                    "ports": [{"name": PORT_NAME, "port": PUBLIC_PORTS[pool], "protocol": "TCP"}],
                    "endpoints": endpoints,
                }
            )
    return slices


def render_hot_swap_all(
    si: SpeculativeInference,
    owner: OwnerRef | None = None,
    pods: Sequence[SwapPod] = (),
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
    endpoint_slice_api_version: str = ENDPOINT_SLICE_V1,
) -> list[dict[str, Any]]:
    """Everything a hot-swap resource runs on, except the admin Secret (its token is the operator's):
    ConfigMap, Deployment, Service, EndpointSlices (from ``pods``), NetworkPolicy."""
    return [
        render_config_map(si, owner),
        render_swap_deployment(si, owner),
        render_swap_service(si, owner),
        *render_endpoint_slices(si, pods, owner, endpoint_slice_api_version),
        render_network_policy(si, owner, operator_namespace),
    ]

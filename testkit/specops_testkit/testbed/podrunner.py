"""Stands in for the scheduler and the kubelet, and nothing else.

It registers one fake GPU Node, binds the Pending pods that SpecOps manages to it, starts one vLLM
emulator process per pod with the pod's own container args, gives each pod its own loopback IP
(127.b.x.y, one random block b per runner: the whole 127.0.0.0/8 range is local on Linux, so the
pod listens on its real containerPort; the API server refuses loopback addresses in Endpoints, so
clients find a Service's ready pods through its selector, as ``loadgen.endpoints_resolver`` does),
writes pod status like a kubelet (Running; Ready only once the emulator answers /health), adds and
removes the pod as a Prometheus target, restarts a crashed emulator, and stops it when the pod is
deleted (finishing the graceful deletion a kubelet would confirm).

A pod of the HotSwap strategy (``specops.render.hotswap``: label ``specops.dev/pool: hot-swap``)
runs as its containers say, with three stand-ins a real node would not need:

* **volumes**: its ConfigMap and Secret volumes are written to files under the pod's run directory,
  and every path under a mount point is rewritten to them (in the command and in those files);
* **the pod's network namespace**: the pod gets a second loopback address of its own that stands
  for its ``127.0.0.1``; the engines, the launcher and nginx's upstreams use it, and nginx listens
  on the pod IP (``listen N`` becomes ``listen <pod ip>:N``).  So, as in a real pod, only nginx's
  ports are on the pod IP: the engines' own ports are not reachable there;
* **the image**: ``vllm`` and ``python3`` on the launcher's PATH are the emulator and this
  interpreter, and the proxy container runs the host's nginx with the rendered configuration
  included in a minimal main file (the official image's ``nginx.conf`` includes ``conf.d/*.conf``
  the same way).

The launcher script runs unchanged otherwise (both engines, one after the other, the first put to
sleep before the second starts), the engines share one GPU-memory ledger per pod (emulator/sleep.py;
reset when the container restarts, as a dead process's GPU memory is freed), readiness is the
engines container's exec probe plus the proxy's TCP probe, and Prometheus scrapes each engine
through its public nginx port, labelled with its pool, as the rendered PodMonitor says.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from specops.api.catalog import GPUS
from specops.render.hotswap import PROXY_CONTAINER, PUBLIC_PORT_NAMES, SWAP_POOL
from specops.render.manifests import LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY
from specops.vllm.dialect import format_version, parse_version
from specops_testkit.emulator.sleep import ENV_GPU_LEDGER
from specops_testkit.testbed.processes import start_process, stop_process
from specops_testkit.testbed.prometheus import LocalPrometheus

log = logging.getLogger("specops_testkit.testbed.podrunner")
NODE_NAME = "specops-gpu-0"
GPU_TYPE_LABEL = "specops.dev/gpu-type"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def version_from_image(image: str, default: str) -> str:
    """'vllm/vllm-openai:v0.11.0' -> '0.11.0'; the default when the tag is not a version."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    try:
        return format_version(parse_version(tag))
    except ValueError:
        return default


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    ip: str
    port: int
    labels: dict[str, str]
    container: str
    grace_seconds: float
    prestop_sleep: float
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    restart_at: float | None = None  # CrashLoopBackOff: when the next start may happen
    started_at: str = field(default_factory=_now)
    # The main container's full command (None: the emulator with ``args``).
    argv: list[str] | None = None
    # A HotSwap pod: its nginx sidecar, its exec/TCP readiness probes, its scrape ports by pool.
    sidecar: list[str] | None = None
    sidecar_proc: subprocess.Popen[bytes] | None = None
    ready_exec: list[str] | None = None
    ready_tcp: int | None = None
    probe_period: float = 0.0
    next_probe: float = 0.0
    metrics_ports: dict[str, int] = field(default_factory=dict)  # pool -> port on the pod IP
    ledger: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}_{self.name}"


def _prestop_sleep(container: Any) -> float:
    """Seconds of a ``preStop: exec: [sleep, N]`` hook (the only kind SpecOps renders)."""
    pre_stop = getattr(getattr(container, "lifecycle", None), "pre_stop", None)
    action = getattr(pre_stop, "var_exec", None) or getattr(pre_stop, "_exec", None)
    command = getattr(action, "command", None)
    if command and command[0] == "sleep" and len(command) == 2:
        try:
            return float(command[1])
        except ValueError:
            return 0.0
    return 0.0


class PodRunner:
    def __init__(
        self,
        api: client.ApiClient,
        run_dir: Path,
        prometheus: LocalPrometheus | None = None,
        gpu_type: str = "H100-80GB",
        gpus: int = 64,
        emulator_env: dict[str, str] | None = None,
        default_version: str = "0.32.0",
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.run_dir = run_dir
        self.prometheus = prometheus
        self.gpu_type = gpu_type
        self.gpus = gpus
        self.emulator_env = emulator_env or {}
        self.default_version = default_version
        self.pods: dict[str, RunningPod] = {}
        # A block of its own in 127/8 per runner, so test worlds running side by side (or a stray
        # emulator of an earlier one) do not collide on pod addresses.
        block = random.randint(1, 250)
        self._ips = (f"127.{block}.{i // 250}.{i % 250 + 2}" for i in itertools.count())
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        (run_dir / "pods").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.register_node()
        for target in (self._watch_loop, self._supervise_loop):
            t = threading.Thread(target=target, name=f"podrunner-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for pod in list(self.pods.values()):
                self._kill(pod)
            self.pods.clear()
        for t in self._threads:
            t.join(timeout=5)

    def register_node(self) -> None:
        gpu = {"nvidia.com/gpu": str(self.gpus)}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {"kubernetes.io/hostname": NODE_NAME, GPU_TYPE_LABEL: self.gpu_type},
            },
        }
        try:
            self.core.create_node(node)
        except ApiException as exc:
            if exc.status != 409:
                raise
        capacity = {"cpu": "256", "memory": "2Ti", "pods": "500", **gpu}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "specops pod runner", "lastHeartbeatTime": _now()}
            ],
        }  # fmt: skip
        self.core.patch_node_status(NODE_NAME, {"status": status})

    # ---------------------------------------------------------------------------------- watch

    def _watch_loop(self) -> None:
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        while not self._stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(label_selector=selector)
                seen = set()
                for pod in listing.items:
                    seen.add(f"{pod.metadata.namespace}_{pod.metadata.name}")
                    self._sync(pod, deleted=False)
                with self._lock:
                    for key in [k for k in self.pods if k not in seen]:
                        self._forget(self.pods[key])
                w = watch.Watch()
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=5,
                ):
                    if self._stop.is_set():
                        w.stop()
                        break
                    self._sync(event["object"], deleted=event["type"] == "DELETED")
            except Exception as exc:  # the loop must survive an apiserver restart
                if not self._stop.is_set():
                    log.warning("pod watch failed (%s); re-listing", exc)
                    time.sleep(1)

    def _sync(self, pod: Any, deleted: bool) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        key = f"{ns}_{name}"
        with self._lock:
            running = self.pods.get(key)
            if running is not None and running.uid != pod.metadata.uid:
                self._forget(running)  # same name, new pod
                running = None
            if deleted or pod.metadata.deletion_timestamp is not None:
                if running is not None:
                    self._forget(running, graceful=True)
                if not deleted:
                    # Without a kubelet, nothing confirms a graceful deletion: do it.
                    try:
                        self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                return
            if not pod.spec.node_name:
                self._bind(ns, name)
                return
            if pod.spec.node_name == NODE_NAME and running is None:
                self._launch(pod)

    def _bind(self, ns: str, name: str) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=name),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=NODE_NAME),
        )
        try:
            # The generated client cannot deserialise the Binding response; skip preloading.
            self.core.create_namespaced_binding(ns, body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # ------------------------------------------------------------------------------ processes

    def _launch(self, pod: Any) -> None:
        if (pod.metadata.labels or {}).get(LABEL_POOL) == SWAP_POOL:
            self._launch_hot_swap(pod)
            return
        container = pod.spec.containers[0]
        port = next((p.container_port for p in container.ports or []), 8000)
        ip = next(self._ips)
        running = RunningPod(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            ip=ip,
            port=port,
            labels=dict(pod.metadata.labels or {}),
            container=container.name,
            grace_seconds=float(pod.spec.termination_grace_period_seconds or 30),
            prestop_sleep=_prestop_sleep(container),
            args=[*(container.command or []), *(container.args or [])],  # entry point, then args
            env=self._emulator_env(
                pod, container.image, ip, {"SPECOPS_EMULATOR_PARENT_PID": str(os.getpid())}
            ),
        )
        self.pods[running.key] = running
        self._spawn(running)
        self._write_status(running)

    def _emulator_env(self, pod: Any, image: str | None, host: str, extra: dict[str, str]) -> dict[str, str]:
        """A pod's emulator settings: the release its image names, the GPU type's memory, a seed
        from the pod's name, where to listen; then ``extra``; then the runner's own settings."""
        return {
            "SPECOPS_EMULATOR_HOST": host,
            "SPECOPS_EMULATOR_VLLM_VERSION": version_from_image(image or "", self.default_version),
            "SPECOPS_EMULATOR_GPU_MEMORY_GIB": f"{GPUS[self.gpu_type].memory_gib:g}",
            "SPECOPS_EMULATOR_SEED": str(zlib.crc32(pod.metadata.name.encode())),
            **extra,
            **self.emulator_env,
        }

    # --------------------------------------------------------------------------- hot-swap pods

    def _volume_files(self, pod: Any, pod_dir: Path) -> dict[str, dict[str, bytes]]:
        """Each ConfigMap and Secret volume's files (name -> key -> bytes); a missing one raises
        (like a kubelet, the pod waits: the watch retries)."""
        out: dict[str, dict[str, bytes]] = {}
        ns = pod.metadata.namespace
        for volume in pod.spec.volumes or []:
            if volume.config_map is not None:
                cm = self.core.read_namespaced_config_map(volume.config_map.name, ns)
                out[volume.name] = {k: v.encode() for k, v in (cm.data or {}).items()}
            elif volume.secret is not None:
                secret = self.core.read_namespaced_secret(volume.secret.secret_name, ns)
                out[volume.name] = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return out

    def _shims(self) -> Path:
        """``vllm`` (the emulator) and ``python3`` (this interpreter), as the vLLM image has them."""
        shims = self.run_dir / "shims"
        shims.mkdir(parents=True, exist_ok=True)
        for name, line in (
            # Its parent is the launcher, which dies with the runner (processes.py): the emulator
            # stops when its parent changes.
            (
                "vllm",
                "export SPECOPS_EMULATOR_PARENT_PID=$PPID\n"
                f'exec "{sys.executable}" -m specops_testkit.emulator vllm "$@"',
            ),
            ("python3", f'exec "{sys.executable}" "$@"'),
        ):
            path = shims / name
            path.write_text(f"#!/bin/sh\n{line}\n")
            path.chmod(0o755)
        return shims

    def _launch_hot_swap(self, pod: Any) -> None:
        """Both engines (the rendered launcher) and the nginx sidecar of a HotSwap pod."""
        if NGINX is None:
            raise RuntimeError("a HotSwap pod needs nginx (hack/setup-testbed.sh installs it)")
        key = f"{pod.metadata.namespace}_{pod.metadata.name}"
        pod_dir = self.run_dir / "pods" / key
        files = self._volume_files(pod, pod_dir)  # before anything is recorded: may raise
        ip, local_ip = next(self._ips), next(self._ips)
        mounts: dict[str, Path] = {}
        for container in pod.spec.containers:
            for vm in container.volume_mounts or []:
                if vm.name in files:
                    local = pod_dir / "volumes" / vm.name
                    mounts[vm.mount_path] = local / vm.sub_path if vm.sub_path else local

        def translate(text: str) -> str:
            for path in sorted(mounts, key=len, reverse=True):
                text = text.replace(path, str(mounts[path]))
            text = text.replace("127.0.0.1", local_ip)
            return re.sub(r"\blisten (\d+);", rf"listen {ip}:\1;", text)

        for volume, data in files.items():
            (pod_dir / "volumes" / volume).mkdir(parents=True, exist_ok=True)
            for name, raw in data.items():
                with contextlib.suppress(UnicodeDecodeError):  # text is translated, bytes kept
                    raw = translate(raw.decode()).encode()
                (pod_dir / "volumes" / volume / name).write_bytes(raw)
        engines = next(c for c in pod.spec.containers if c.name != PROXY_CONTAINER)
        proxy = next(c for c in pod.spec.containers if c.name == PROXY_CONTAINER)
        nginx_dir = pod_dir / "nginx"
        nginx_dir.mkdir(parents=True, exist_ok=True)
        includes = "".join(
            f"  include {local};\n"
            for path, local in sorted(mounts.items())
            if path.startswith("/etc/nginx/conf.d/")
        )
        # One process (no master forking a worker): it is the process the runner started, so it
        # dies with the runner however that ends; a forked worker outlived a killed master.
        (nginx_dir / "nginx.conf").write_text(
            f"daemon off;\nmaster_process off;\npid {nginx_dir}/nginx.pid;\n"
            f"error_log {nginx_dir}/error.log;\n"
            f"events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {nginx_dir};\n"
            f"  proxy_temp_path {nginx_dir};\n{includes}}}\n"
        )
        ports = {p.name: p.container_port for p in proxy.ports or []}
        probe = engines.readiness_probe
        probe_exec = getattr(probe, "_exec", None) or getattr(probe, "var_exec", None)
        tcp = getattr(getattr(proxy.readiness_probe, "tcp_socket", None), "port", None)
        running = RunningPod(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            ip=ip,
            port=0,
            labels=dict(pod.metadata.labels or {}),
            container=engines.name,
            grace_seconds=float(pod.spec.termination_grace_period_seconds or 30),
            prestop_sleep=_prestop_sleep(engines),
            args=[],
            argv=[translate(a) for a in [*(engines.command or []), *(engines.args or [])]],
            env={
                **{e.name: e.value or "" for e in engines.env or []},
                "PATH": f"{self._shims()}:{os.environ.get('PATH', '')}",
                **self._emulator_env(
                    pod, engines.image, local_ip, {ENV_GPU_LEDGER: str(pod_dir / "gpu-ledger.json")}
                ),
            },
            sidecar=[NGINX, "-c", str(nginx_dir / "nginx.conf"), "-p", str(nginx_dir)],
            ready_exec=[translate(a) for a in probe_exec.command] if probe_exec is not None else None,
            ready_tcp=ports.get(tcp, tcp) if isinstance(tcp, str) else tcp,
            probe_period=float(probe.period_seconds or 10) if probe else 10.0,
            metrics_ports={pool: ports[name] for pool, name in PUBLIC_PORT_NAMES.items() if name in ports},
            ledger=pod_dir / "gpu-ledger.json",
        )
        self.pods[running.key] = running
        self._spawn(running)
        self._write_status(running)

    def _probe_hot_swap(self, pod: RunningPod) -> bool:
        """The engines container's exec probe and the proxy's TCP probe, every probe period."""
        if pod.ready_tcp is not None:
            try:
                with socket.create_connection((pod.ip, pod.ready_tcp), timeout=1):
                    pass
            except OSError:
                return False
        if pod.ready_exec is None:
            return True
        env = {**os.environ, **pod.env}
        try:
            done = subprocess.run(pod.ready_exec, env=env, capture_output=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def _start_sidecar(self, pod: RunningPod) -> None:
        """A hot-swap pod's proxy, unless it is running already."""
        if pod.sidecar is not None and (pod.sidecar_proc is None or pod.sidecar_proc.poll() is not None):
            log_path = self.run_dir / "pods" / f"{pod.key}.proxy.log"
            pod.sidecar_proc = start_process(pod.sidecar, log_path, {**os.environ, **pod.env})

    def _spawn(self, pod: RunningPod) -> None:
        env = {**os.environ, **pod.env}
        logfile = self.run_dir / "pods" / f"{pod.key}.log"
        if pod.ledger is not None:
            pod.ledger.unlink(missing_ok=True)  # a dead engine's GPU memory is free again
        argv = pod.argv or [sys.executable, "-m", "specops_testkit.emulator", *pod.args]
        # Started from the runner's watch or supervision thread, which live as long as the runner:
        # an emulator dies with the runner's process however that ends (processes.py).
        pod.proc = start_process(argv, logfile, env)
        self._start_sidecar(pod)
        pod.next_probe = 0.0
        pod.ready = False
        pod.started_at = _now()
        log.info("started %s/%s on %s:%d (pid %d)", pod.namespace, pod.name, pod.ip, pod.port, pod.proc.pid)

    def _kill(self, pod: RunningPod, grace: float = 5.0, prestop: float = 0.0) -> None:
        if prestop > 0:
            time.sleep(prestop)  # the preStop hook: still serving while clients notice
        self._remove_targets(pod)
        proc, pod.proc = pod.proc, None
        if proc is not None and proc.poll() is None:
            stop_process(proc.pid, timeout=grace)
        sidecar, pod.sidecar_proc = pod.sidecar_proc, None
        if sidecar is not None and sidecar.poll() is None:
            stop_process(sidecar.pid, timeout=5)

    def _targets(self, pod: RunningPod) -> dict[str, tuple[str, dict[str, str]]]:
        """Prometheus targets: the pod's port, or each engine's public port labelled by its pool."""
        labels = self.target_labels(pod)
        if not pod.metrics_ports:
            return {pod.key: (f"{pod.ip}:{pod.port}", labels)}
        return {
            f"{pod.key}_{pool}": (f"{pod.ip}:{port}", {**labels, "specops_pool": str(pool)})
            for pool, port in pod.metrics_ports.items()
        }

    def _remove_targets(self, pod: RunningPod) -> None:
        if self.prometheus is not None:
            for key in self._targets(pod):
                self.prometheus.remove_target(key)

    def _forget(self, pod: RunningPod, graceful: bool = False) -> None:
        """Stop a pod's process.  Graceful, like a kubelet: SIGTERM (the server stops accepting and
        finishes its in-flight requests), SIGKILL after the pod's grace period, in the background so
        the watch goes on."""
        self.pods.pop(pod.key, None)
        if not graceful:
            self._kill(pod)
            return
        prestop = min(pod.prestop_sleep, pod.grace_seconds)
        grace = min(pod.grace_seconds - prestop, 60.0)
        threading.Thread(
            target=self._kill, args=(pod, grace, prestop), name=f"stop-{pod.key}", daemon=True
        ).start()

    def _supervise_loop(self) -> None:
        """Readiness probing, crash restarts, Prometheus targets: once a second per pod."""
        while not self._stop.wait(0.5):
            with self._lock:
                pods = list(self.pods.values())
            for pod in pods:
                try:
                    self._supervise(pod)
                except ApiException as exc:
                    if exc.status == 404:
                        with self._lock:
                            self._forget(pod)
                    else:
                        log.warning("status update for %s failed: %s", pod.key, exc)
                except Exception as exc:
                    log.warning("supervising %s failed: %s", pod.key, exc)

    def _supervise(self, pod: RunningPod) -> None:
        if pod.proc is None:
            return
        if pod.proc.poll() is not None:
            now = time.monotonic()
            if pod.restart_at is None:
                # Back off like a kubelet (doubling from 1 s, capped at 30 s here).
                delay = min(30.0, 2.0 ** min(pod.restarts, 5))
                log.warning("%s exited with %s; restarting in %.0f s", pod.key, pod.proc.returncode, delay)
                pod.restart_at = now + delay
                pod.ready = False
                self._remove_targets(pod)
                self._write_status(pod)
                return
            if now < pod.restart_at:
                return
            pod.restart_at = None
            pod.restarts += 1
            self._spawn(pod)
            self._write_status(pod)
            return
        if pod.sidecar_proc is not None and pod.sidecar_proc.poll() is not None:
            log.warning("%s: the proxy exited with %s; restarting it", pod.key, pod.sidecar_proc.returncode)
            self._start_sidecar(pod)
        if pod.argv is not None:  # probes of their own, each probe period
            now = time.monotonic()
            if now < pod.next_probe:
                return
            pod.next_probe = now + pod.probe_period
            healthy = self._probe_hot_swap(pod)
        else:
            healthy = self._healthy(pod)
        if healthy != pod.ready:
            pod.ready = healthy
            try:
                self._write_status(pod)
            except Exception:
                pod.ready = not healthy  # not written (API server down?): again next round
                raise
            if self.prometheus is not None:
                if healthy:
                    for key, (address, labels) in self._targets(pod).items():
                        self.prometheus.set_target(key, address, labels)
                else:
                    self._remove_targets(pod)

    @staticmethod
    def _healthy(pod: RunningPod) -> bool:
        try:
            with urllib.request.urlopen(f"http://{pod.ip}:{pod.port}/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    @staticmethod
    def target_labels(pod: RunningPod) -> dict[str, str]:
        """The labels a PodMonitor's relabelling gives these series in a real cluster."""
        return {
            "namespace": pod.namespace,
            "pod": pod.name,
            "specops_pool": pod.labels.get(LABEL_POOL, ""),
            "specops_name": pod.labels.get(LABEL_INSTANCE, ""),
        }

    def _write_status(self, pod: RunningPod) -> None:
        ready = "True" if pod.ready else "False"
        now = _now()
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "startTime": pod.started_at,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": pod.container,
                    "ready": pod.ready,
                    "started": True,
                    "restartCount": pod.restarts,
                    "image": "specops-emulator",
                    "imageID": "",
                    "state": {"running": {"startedAt": pod.started_at}},
                }
            ],
        }
        self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})

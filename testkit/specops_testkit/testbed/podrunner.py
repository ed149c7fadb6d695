"""Stands in for the scheduler and the kubelet, and nothing else.

It registers one fake GPU Node, binds the Pending pods that SpecOps manages to it, starts one vLLM
emulator process per pod with the pod's own container args, gives each pod its own loopback IP
(127.b.x.y, one random block b per runner: the whole 127.0.0.0/8 range is local on Linux, so the
pod listens on its real containerPort; the API server refuses loopback addresses in Endpoints, so
clients find a Service's ready pods through its selector, as ``loadgen.endpoints_resolver`` does),
writes pod status like a kubelet (Running; Ready only once the emulator answers /health), adds and
removes the pod as a Prometheus target, restarts a crashed emulator, and stops it when the pod is
deleted (finishing the graceful deletion a kubelet would confirm).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
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
from specops.render.manifests import LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY
from specops.vllm.dialect import format_version, parse_version
from specops_testkit.testbed.processes import start_process, stop_process
from specops_testkit.testbed.prometheus import LocalPrometheus

log = logging.getLogger("specops_testkit.testbed.podrunner")
NODE_NAME = "specops-gpu-0"
GPU_TYPE_LABEL = "specops.dev/gpu-type"


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
        container = pod.spec.containers[0]
        port = next((p.container_port for p in container.ports or []), 8000)
        version = version_from_image(container.image or "", self.default_version)
        gpu_memory = GPUS[self.gpu_type].memory_gib
        running = RunningPod(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            ip=next(self._ips),
            port=port,
            labels=dict(pod.metadata.labels or {}),
            container=container.name,
            grace_seconds=float(pod.spec.termination_grace_period_seconds or 30),
            prestop_sleep=_prestop_sleep(container),
            args=[*(container.command or []), *(container.args or [])],  # entry point, then args
            env={
                "SPECOPS_EMULATOR_HOST": "",  # set below once the IP is known
                "SPECOPS_EMULATOR_VLLM_VERSION": version,
                "SPECOPS_EMULATOR_GPU_MEMORY_GIB": f"{gpu_memory:g}",
                "SPECOPS_EMULATOR_SEED": str(zlib.crc32(pod.metadata.name.encode())),
                "SPECOPS_EMULATOR_PARENT_PID": str(os.getpid()),
                **self.emulator_env,
            },
        )
        running.env["SPECOPS_EMULATOR_HOST"] = running.ip
        self.pods[running.key] = running
        self._spawn(running)
        self._write_status(running)

    def _spawn(self, pod: RunningPod) -> None:
        env = {**os.environ, **pod.env}
        logfile = self.run_dir / "pods" / f"{pod.key}.log"
        # Started from the runner's watch or supervision thread, which live as long as the runner:
        # an emulator dies with the runner's process however that ends (processes.py).
        pod.proc = start_process([sys.executable, "-m", "specops_testkit.emulator", *pod.args], logfile, env)
        pod.ready = False
        pod.started_at = _now()
        log.info("started %s/%s on %s:%d (pid %d)", pod.namespace, pod.name, pod.ip, pod.port, pod.proc.pid)

    def _kill(self, pod: RunningPod, grace: float = 5.0, prestop: float = 0.0) -> None:
        if prestop > 0:
            time.sleep(prestop)  # the preStop hook: still serving while clients notice
        if self.prometheus is not None:
            self.prometheus.remove_target(pod.key)
        proc, pod.proc = pod.proc, None
        if proc is not None and proc.poll() is None:
            stop_process(proc.pid, timeout=grace)

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
                if self.prometheus is not None:
                    self.prometheus.remove_target(pod.key)
                self._write_status(pod)
                return
            if now < pod.restart_at:
                return
            pod.restart_at = None
            pod.restarts += 1
            self._spawn(pod)
            self._write_status(pod)
            return
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
                    self.prometheus.set_target(pod.key, f"{pod.ip}:{pod.port}", self.target_labels(pod))
                else:
                    self.prometheus.remove_target(pod.key)

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

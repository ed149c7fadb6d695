"""Scale on a real API server: one operator process, N resources, figures at each N.

``benchmarks/scale.py`` prints and writes the figures for N = 10, 100, 1000;
``tests/integration/test_scale_smoke.py`` checks the structural properties at small N with the
same code: Prometheus queries per evaluation cycle do not grow with N, and a steady period in
which nothing changes costs no API writes.

The operator runs as its own process (``specops run`` with the operator identity's kubeconfig), so
its memory is its own: VmRSS and VmHWM from /proc.  Its evaluation cycles are read from its own
metrics (``specops_evaluation_cycle_seconds``, ``specops_prometheus_queries``,
``specops_evaluations``), snapshotted just after a cycle ends (the next one starts a second
later), and its writes from the API server's audit log.  Resources evaluate every second: a
resource is due when its interval has passed since its last evaluation and cycles are at least a
second apart, so every cycle covers every resource.  No pods run: Deployments exist with their
pods Pending (nothing schedules them), so Prometheus answers with empty vectors (NoData).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from specops.api.v1alpha1 import API_VERSION, GROUP, KIND, PLURAL, VERSION
from specops.policy.state import Reason
from specops_testkit.testbed.audit import describe, writes_by
from specops_testkit.testbed.controlplane import OPERATOR_USER, ControlPlaneState, free_port, stop_pid
from specops_testkit.testbed.processes import start_process

Progress = Callable[[str], None]
RUN_LABEL = "specops.dev/scale-run"


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class World:
    """What the measurements need of a test world (a local control plane and Prometheus)."""

    kubeconfig: Path
    operator_kubeconfig: Path
    audit_log: Path
    prometheus_url: str

    @classmethod
    def from_state(cls, state: ControlPlaneState, prometheus_url: str) -> World:
        return cls(state.kubeconfig, state.operator_kubeconfig, state.audit_log, prometheus_url)


@contextlib.contextmanager
def local_world(run_dir: Path, progress: Progress = _print) -> Iterator[World]:
    """etcd + kube-apiserver + kube-controller-manager with the CRD, and Prometheus; no pod runner."""
    from specops.api.crd import build_crd
    from specops_testkit.testbed.controlplane import LocalControlPlane, stop_from_state
    from specops_testkit.testbed.prometheus import LocalPrometheus

    run_dir = run_dir.resolve()
    (run_dir / "cluster").mkdir(parents=True, exist_ok=True)
    stop_from_state(run_dir / "cluster")  # leftovers of a run killed hard
    control_plane = LocalControlPlane(run_dir / "cluster")
    prometheus = LocalPrometheus(run_dir / "prometheus")
    prometheus.stop()
    t0 = time.monotonic()
    try:
        state = control_plane.start(crds=[build_crd()])
        progress(f"kube-apiserver ready at {state.server} ({time.monotonic() - t0:.1f} s)")
        (run_dir / "prometheus").mkdir(parents=True, exist_ok=True)
        url = prometheus.start()
        progress(f"Prometheus ready at {url} ({time.monotonic() - t0:.1f} s)")
        yield World.from_state(state, url)
    finally:
        prometheus.stop()
        control_plane.stop()


# ------------------------------------------------------------------------------------ operator


@dataclass(frozen=True)
class Memory:
    rss_mib: float  # VmRSS: resident now
    hwm_mib: float  # VmHWM: the peak resident size so far


class OperatorProcess:
    """``specops run`` as a child process: its metrics, memory and CPU time, and a clean stop."""

    def __init__(
        self,
        world: World,
        log_path: Path,
        namespaces: tuple[str, ...] = (),
        resync_seconds: float = 5.0,
        status_refresh_seconds: float = 3600.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.world = world
        self.log_path = log_path
        self.namespaces = namespaces
        self.resync_seconds = resync_seconds
        self.status_refresh_seconds = status_refresh_seconds
        self.extra_args = extra_args
        self.metrics_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        self.metrics_port = free_port()
        cmd = [
            sys.executable, "-m", "specops.cli", "run",
            f"--kubeconfig={self.world.operator_kubeconfig}",
            f"--prometheus-url={self.world.prometheus_url}",
            f"--metrics-port={self.metrics_port}", "--health-port=0", "--no-webhooks",
            f"--resync-seconds={self.resync_seconds}",
            f"--status-refresh-seconds={self.status_refresh_seconds}",
            *(f"--namespace={ns}" for ns in self.namespaces),
            *self.extra_args,
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Tied to this process like every process of the test world (processes.py): a benchmark
        # stopped hard does not leave an operator behind.
        self.proc = start_process(cmd, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.proc.returncode}); see {self.log_path}")
            with contextlib.suppress(OSError):
                self.metrics()
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the operator's metrics did not answer within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics, each sample name summed over its labels."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    def memory(self) -> Memory:
        fields: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
        return Memory(rss_mib=fields["VmRSS"], hwm_mib=fields["VmHWM"])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        parts = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd on
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------- counters


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters, read just after an evaluation cycle ended."""

    at: float  # epoch seconds
    cycles: float
    cycle_seconds: float
    queries: float  # as the operator counted them
    evaluations: float
    writes: float  # as the operator counted them
    prometheus_queries: float  # instant queries Prometheus served (its own count)
    cpu_seconds: float


@dataclass(frozen=True)
class CycleStats:
    cycles: int
    cycle_seconds: float  # mean duration of one cycle
    resources_per_cycle: float
    queries_per_cycle: float
    prometheus_queries_per_cycle: float
    operator_writes: int  # the operator's own count of its writes
    cpu_seconds: float  # operator CPU time over the period
    seconds: float

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> CycleStats:
        cycles = round(b.cycles - a.cycles)
        per = max(cycles, 1)
        return cls(
            cycles=cycles,
            cycle_seconds=(b.cycle_seconds - a.cycle_seconds) / per,
            resources_per_cycle=(b.evaluations - a.evaluations) / per,
            queries_per_cycle=(b.queries - a.queries) / per,
            prometheus_queries_per_cycle=(b.prometheus_queries - a.prometheus_queries) / per,
            operator_writes=round(b.writes - a.writes),
            cpu_seconds=b.cpu_seconds - a.cpu_seconds,
            seconds=b.at - a.at,
        )


def prometheus_served_queries(url: str) -> float:
    """Instant queries a Prometheus server has answered (prometheus_http_requests_total)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "prometheus_http_requests_total" and sample.labels.get("handler") in (
                "/api/v1/query",
            ):
                total += sample.value
    return total


def apiserver_gets(api: client.ApiClient) -> float:
    """GET requests the API server has served, all clients (apiserver_request_total)."""
    cfg = api.configuration
    token = (cfg.api_key or {}).get("authorization", "") or (cfg.api_key or {}).get("BearerToken", "")
    token = token if token.startswith("Bearer ") else f"Bearer {token}"
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    req = urllib.request.Request(f"{cfg.host}/metrics", headers={"Authorization": token})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="GET"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------------- resources


def resource_doc(
    name: str, namespace: str, run_id: str, replicas: int, interval: str, window: str
) -> dict[str, Any]:
    """The INT8 70B + 8B draft example (manifests/examples/llama70b-int8-h100.yaml), smaller."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {RUN_LABEL: run_id}},
        "spec": {
            "replicas": replicas,
            "vllm": {"image": "vllm/vllm-openai:v0.32.0", "version": "0.32.0"},
            "target": {
                "model": "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8",
                "quantization": "int8",
                "tensorParallelSize": 2,
                "maxModelLen": 8192,
            },
            "speculation": {
                "method": "draft_model",
                "numSpeculativeTokens": 5,
                "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 2},
            },
            "resources": {"gpusPerReplica": 2, "gpuType": "H100-80GB"},
            "policy": {"mode": "Auto", "interval": interval, "window": window},
        },
    }


def _condition(si: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (si.get("status") or {}).get("conditions", []) if c.get("type") == type_), {})


def is_reconciled(si: dict[str, Any]) -> bool:
    """The operator has seen this generation: Deployments applied, status written."""
    status = si.get("status") or {}
    return bool(status.get("observedGeneration")) and status["observedGeneration"] == si["metadata"].get(
        "generation"
    )


def is_evaluated(si: dict[str, Any]) -> bool:
    """The metrics policy has run at least once (MetricsAvailable is no longer NotEvaluated)."""
    reason = _condition(si, "MetricsAvailable").get("reason")
    return reason is not None and reason != "NotEvaluated"


def is_settling(si: dict[str, Any]) -> bool:
    """Is something still due to change this resource's status?  The policy judges nothing for a
    window plus two intervals after a switch (and after creation), and status.replicas counts the
    pods the controller-manager has created so far (at its own pace, 20 writes a second): either
    change is a real one, not a no-op write."""
    status = si.get("status") or {}
    return status.get("verdictReason") == Reason.SETTLING or status.get("replicas", 0) != si["spec"].get(
        "replicas", 1
    )


# ------------------------------------------------------------------------------------ the run


@dataclass
class Settings:
    namespaces: int = 10  # resources are spread over this many namespaces
    namespace_prefix: str = "scale"
    replicas: int = 1  # per resource; its pods stay Pending (nothing schedules them)
    interval: str = "1s"  # every evaluation cycle covers every resource
    window: str = "10s"  # the policy settles for window + 2 intervals after creation
    resync_seconds: float = 5.0
    steady_cycles: int = 3  # at least this many cycles, and one whole resync pass, per steady period
    namespaced_operator: bool = False  # --namespace for each of ours (shared clusters) or cluster-wide
    create_threads: int = 4
    operator_args: tuple[str, ...] = ()  # more `specops run` flags (e.g. --evaluation-workers=1)


@dataclass
class Measurement:
    resources: int
    created: int  # new in this step
    create_seconds: float  # to send the creates
    reconcile_seconds: float  # first create -> every resource reconciled (observedGeneration)
    evaluate_seconds: float  # first create -> every resource evaluated once
    settled: bool  # the operator stopped writing before the steady period
    steady: CycleStats
    steady_writes: int  # write requests by the operator's identity in the steady period (audit log)
    api_gets_per_second: float  # GETs the API server served in the steady period (the operator's, in
    # effect: the controller-manager watches, this script reads nothing then)
    write_samples: list[str] = field(default_factory=list)
    rss_mib: float = 0.0
    hwm_mib: float = 0.0
    load_average: float = 0.0  # of the machine, over the last minute of the step (shared machines)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class ScaleRun:
    """Namespaces, one operator process, and resources added in steps; ``measure(n)`` grows to n."""

    def __init__(
        self, world: World, run_dir: Path, settings: Settings | None = None, progress: Progress = _print
    ) -> None:
        self.world = world
        self.settings = s = settings or Settings()
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.namespaces = tuple(f"{s.namespace_prefix}-{i:02d}" for i in range(s.namespaces))
        self.api = kube_config.new_client_from_config(config_file=str(world.kubeconfig))
        self.custom = client.CustomObjectsApi(self.api)
        self.operator = OperatorProcess(
            world,
            run_dir / "operator.log",
            namespaces=self.namespaces if s.namespaced_operator else (),
            resync_seconds=s.resync_seconds,
            extra_args=s.operator_args,
        )
        self.count = 0
        self.api_gets_per_second = 0.0

    def __enter__(self) -> ScaleRun:
        core = client.CoreV1Api(self.api)
        for ns in self.namespaces:
            try:
                core.create_namespace({"metadata": {"name": ns}})
            except ApiException as exc:
                if exc.status != 409:
                    raise
        self.operator.start()
        self.progress(f"operator running (pid {self.operator.pid}, log {self.operator.log_path})")
        return self

    def __exit__(self, *_: object) -> None:
        self.operator.stop()
        self.api.close()

    def delete_namespaces(self) -> None:
        core = client.CoreV1Api(self.api)
        for ns in self.namespaces:
            with contextlib.suppress(ApiException):
                core.delete_namespace(ns)

    # ------------------------------------------------------------------------------- steps

    def _check_operator(self) -> None:
        if not self.operator.alive():
            raise RuntimeError(f"the operator died; see {self.operator.log_path}")

    def list_resources(self, page: int = 500) -> list[dict[str, Any]]:
        """This run's resources, a page at a time: one list of thousands with their status can take
        the loaded API server longer than its 60 s request timeout (504 at 3,300 resources)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            resp: Any = self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, label_selector=f"{RUN_LABEL}={self.run_id}", limit=page,
                **({"_continue": token} if token else {}),
            )  # fmt: skip
            items.extend(resp.get("items", []))
            token = (resp.get("metadata") or {}).get("continue")
            if not token:
                return items

    def create(self, n: int) -> tuple[int, float]:
        """Create resources up to n in all; (how many were new, seconds to send them)."""
        s = self.settings
        todo = range(self.count, n)
        t0 = time.monotonic()

        def one(i: int) -> None:
            ns = self.namespaces[i % len(self.namespaces)]
            doc = resource_doc(f"si-{i:04d}", ns, self.run_id, s.replicas, s.interval, s.window)
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)

        with ThreadPoolExecutor(max_workers=s.create_threads) as pool:
            list(pool.map(one, todo))
        self.count = max(self.count, n)
        return len(todo), time.monotonic() - t0

    def wait_reconciled(self, t0: float, timeout: float) -> tuple[float, float]:
        """Seconds from ``t0`` (monotonic) until every resource was reconciled, and evaluated."""
        n = self.count
        reconciled_at: float | None = None
        last_report = 0.0
        every = max(1.0, n / 500)  # a list of 1,000 resources is a few MB
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_operator()
            items = self.list_resources()
            done = sum(is_reconciled(si) for si in items)
            evaluated = sum(is_reconciled(si) and is_evaluated(si) for si in items)
            now = time.monotonic()
            if reconciled_at is None and done >= n:
                reconciled_at = now
            if evaluated >= n and reconciled_at is not None:
                return reconciled_at - t0, now - t0
            if now - last_report >= 5:
                self.progress(f"  reconciled {done}/{n}, evaluated {evaluated}/{n} ({now - t0:.0f} s)")
                last_report = now
            time.sleep(every)
        raise TimeoutError(f"{n} resources not reconciled and evaluated within {timeout:.0f} s")

    def snapshot(self, timeout: float = 300.0) -> Snapshot:
        """Counters just after the next evaluation cycle ends: in the second before the next one
        starts, so the counters hold whole cycles only (else it waits for the next end)."""
        deadline = time.monotonic() + timeout
        cycles = "specops_evaluation_cycle_seconds_count"
        queries = "specops_prometheus_queries_total"
        m = self.operator.metrics()
        while True:
            first = m
            while m.get(cycles, 0) == first.get(cycles, 0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no evaluation cycle ended within {timeout:.0f} s")
                self._check_operator()
                time.sleep(0.1)
                m = self.operator.metrics()
            snap = Snapshot(
                at=time.time(),
                cycles=m.get(cycles, 0.0),
                cycle_seconds=m.get("specops_evaluation_cycle_seconds_sum", 0.0),
                queries=m.get(queries, 0.0),
                evaluations=m.get("specops_evaluations_total", 0.0),
                writes=m.get("specops_writes_total", 0.0),
                prometheus_queries=prometheus_served_queries(self.world.prometheus_url),
                cpu_seconds=self.operator.cpu_seconds(),
            )
            after = self.operator.metrics()
            if (after.get(cycles), after.get(queries)) == (m.get(cycles), m.get(queries)):
                return snap  # no query of the next cycle was sent meanwhile
            m = after

    def settle(self, timeout: float) -> bool:
        """Wait until no resource is settling any more (see ``is_settling``), then until the
        operator has made no write for a while (the first evaluations write MetricsAvailable,
        Deployment status changes reach pool status); False when either wait timed out."""
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while True:
            self._check_operator()
            settling = sum(is_settling(si) for si in self.list_resources())
            if not settling:
                break
            if time.monotonic() > deadline:
                return False
            if time.monotonic() - last_report >= 5:
                self.progress(f"  {settling} resources still settling (policy window, pods being created)")
                last_report = time.monotonic()
            time.sleep(max(1.0, self.count / 500))
        last = self.snapshot()
        quiet_since = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.snapshot()
            stats = CycleStats.between(last, snap)
            if snap.writes != last.writes:
                quiet_since = time.monotonic()
            last = snap
            # A whole cycle (every resource evaluated) and a resync period without a write.
            if stats.cycles and time.monotonic() - quiet_since >= max(3.0, self.settings.resync_seconds):
                return True
        return False

    def steady(self) -> tuple[CycleStats, list[dict[str, Any]]]:
        """A period of several cycles and one whole resync pass in which nothing changes: the
        cycle figures and the writes the operator's identity made meanwhile."""
        s = self.settings
        start = self.snapshot()
        gets = apiserver_gets(self.api)
        end = self.snapshot()
        while True:
            stats = CycleStats.between(start, end)
            # A resync pass reads what an evaluation reads: about a cycle's time after its sleep.
            if (
                stats.cycles >= s.steady_cycles
                and stats.seconds >= s.resync_seconds + 2 * stats.cycle_seconds
            ):
                break
            end = self.snapshot()
        self.api_gets_per_second = (apiserver_gets(self.api) - gets) / max(time.time() - start.at, 1e-9)
        return stats, writes_by(self.world.audit_log, OPERATOR_USER, since=start.at, until=end.at)

    def measure(self, n: int, reconcile_timeout: float | None = None) -> Measurement:
        """Grow to n resources, wait for them, settle, then a steady period; the figures."""
        t0 = time.monotonic()
        self.progress(f"  creating {n - self.count} resources ({self.count} -> {n})")
        created, create_seconds = self.create(n)
        reconcile, evaluate = self.wait_reconciled(t0, reconcile_timeout or 120.0 + 1.0 * n)
        self.progress(
            f"  all {n} reconciled after {reconcile:.1f} s, evaluated after {evaluate:.1f} s; settling"
        )
        settled = self.settle(120.0 + 0.5 * n)
        if not settled:
            self.progress("  the operator kept writing; measuring anyway")
        self.progress("  steady period")
        stats, writes = self.steady()
        mem = self.operator.memory()
        return Measurement(
            resources=n,
            created=created,
            create_seconds=create_seconds,
            reconcile_seconds=reconcile,
            evaluate_seconds=evaluate,
            settled=settled,
            steady=stats,
            steady_writes=len(writes),
            api_gets_per_second=self.api_gets_per_second,
            write_samples=[describe(w) for w in writes[:5]],
            rss_mib=mem.rss_mib,
            hwm_mib=mem.hwm_mib,
            load_average=os.getloadavg()[0],
        )

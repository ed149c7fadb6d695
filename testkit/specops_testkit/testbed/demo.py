"""The README's first command: the operator at work on the local closed loop.

Brings up the test world, starts the operator, applies an example resource, plays a scenario
(low load, a surge to saturation, low load again) against the Service's ready pods, prints a live
table, then the decision history, writes a timeline plot and stops everything it started.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from specops.api.crd import build_crd
from specops.api.v1alpha1 import GROUP, PLURAL, VERSION, ServingMode
from specops.controller.evaluator import prometheus_query
from specops.controller.main import OperatorOptions, OperatorThread
from specops.metrics.observation import build_observations
from specops.metrics.promql import build_queries, parse_vector
from specops.plan.status import epoch
from specops.policy.decide import Observation
from specops_testkit.testbed.controlplane import free_port
from specops_testkit.testbed.loadgen import Record, endpoints_resolver, run_load
from specops_testkit.testbed.processes import StopSignal, stop_on_signals
from specops_testkit.testbed.scenario import Scenario, load_scenario
from specops_testkit.testbed.stack import Testbed


@dataclass
class Tick:
    t: float
    phase: str
    offered_qps: float
    served_qps: float
    mode: str
    spec_ready: int
    base_ready: int
    acceptance: float | None
    p99_spec: float | None
    p99_base: float | None
    verdict: str
    waiting_spec: float | None = None  # requests queued in the pool (vllm:num_requests_waiting)
    waiting_base: float | None = None
    switch_cost: dict[str, Any] | None = None  # status.switchCost as read at this tick
    verdict_reason: str | None = None  # status.verdictReason
    switch_held: bool = False  # a fallback held back (status.switchDeferredSince is set)

    @property
    def verdict_text(self) -> str:
        """The verdict, with its reason unless Healthy, and whether a switch is held back."""
        text = self.verdict
        if self.verdict_reason and self.verdict not in ("Healthy", "-"):
            text += f" {self.verdict_reason}"
        return text + (" (switch held)" if self.switch_held else "")


@dataclass
class DemoResult:
    ticks: list[Tick] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    t0_wall: float = 0.0

    def switch_costs(self) -> dict[str, float]:
        """Each measured switch: its decision time (RFC 3339) -> seconds from the decision to the
        pools settled (status.switchCost.lastSwitchSeconds, kept for the decision it measured)."""
        out: dict[str, float] = {}
        for tick in self.ticks:
            cost = tick.switch_cost or {}
            if cost.get("measuredFor") and cost.get("lastSwitchSeconds") is not None:
                out[str(cost["measuredFor"])] = float(cost["lastSwitchSeconds"])
        return out

    def switch_cost_line(self) -> str:
        """status.switchCost in words, as the last tick read it."""
        cost = next((t.switch_cost for t in reversed(self.ticks) if t.switch_cost), None)
        if not cost:
            return "status.switchCost: not written"
        line = (
            f"status.switchCost: {cost.get('secondsPerReplica')} s per replica ({cost.get('source')}; "
            f"estimate {cost.get('estimatedSecondsPerReplica')} s)"
        )
        if cost.get("lastSwitchSeconds") is not None:
            line += (
                f"; last switch {cost['lastSwitchSeconds']} s from decision to pools settled, "
                f"{cost.get('lastReplicasMoved')} replica(s) moved, "
                f"{cost.get('lastUnavailableReplicaSeconds')} replica-seconds without a ready pod"
            )
        return line


def _get_si(api: Any, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def _fmt(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


HEADER = (
    f"{'t(s)':>6} {'phase':<10} {'offered':>7} {'served':>6} {'mode':<11} {'spec':>4} {'base':>4} "
    f"{'accept':>6} {'P99 TPOT spec':>13} {'base':>6} {'queued spec':>11} {'base':>5} {'verdict':<9}"
)


def _row(tick: Tick) -> str:
    return (
        f"{tick.t:6.0f} {tick.phase:<10} {tick.offered_qps:7.1f} {tick.served_qps:6.1f} {tick.mode:<11} "
        f"{tick.spec_ready:>4} {tick.base_ready:>4} {_fmt(tick.acceptance, 1, 2):>6} "
        f"{_fmt(tick.p99_spec, 1000):>10} ms {_fmt(tick.p99_base, 1000):>6} "
        f"{_fmt(tick.waiting_spec, 1, 0):>11} {_fmt(tick.waiting_base, 1, 0):>5} {tick.verdict_text}"
    )


def run_demo(
    resource: Path,
    scenario_path: Path,
    run_dir: Path,
    plot: Path | None,
    keep: bool = False,
    rollout: str | None = None,
) -> DemoResult:
    """Run the demo; SIGTERM and SIGHUP stop it as Ctrl-C does, every process it started with it
    (and, should this process be killed outright, the kernel takes them: testbed/processes.py).
    ``rollout``: spec.rollout.strategy for the resource (None: as written)."""
    with stop_on_signals():
        try:
            return _run_demo(resource, scenario_path, run_dir, plot, keep, rollout)
        except StopSignal as stop:
            print(f"== stopped by {signal.Signals(stop.signum).name}")
            raise


def _run_demo(
    resource: Path, scenario_path: Path, run_dir: Path, plot: Path | None, keep: bool, rollout: str | None
) -> DemoResult:
    doc = yaml.safe_load(resource.read_text())
    if rollout is not None:
        doc["spec"]["rollout"] = {"strategy": rollout}
    scenario = load_scenario(scenario_path)
    namespace = doc["metadata"].get("namespace", "default")
    name = doc["metadata"]["name"]
    result = DemoResult()
    strategy = ((doc["spec"].get("rollout") or {}).get("strategy")) or "as maxSurge says"
    print(f"== SpecOps demo: {resource.name} under scenario '{scenario.name}' ({scenario.seconds:.0f} s), "
          f"rollout strategy {strategy}")  # fmt: skip
    print("== [1/5] starting the local test world (etcd, kube-apiserver, controller-manager, Prometheus)")
    tb = Testbed(run_dir, crds=[build_crd()], emulator_env={"SPECOPS_EMULATOR_LOAD_SECONDS": "2"})
    op: OperatorThread | None = None
    try:
        tb.up()
        assert tb.state is not None
        print("== [2/5] starting the operator (validating webhook on loopback, policy loop)")
        op = local_operator(tb, resync_seconds=10.0)
        core = client.CoreV1Api(tb.api)
        if namespace != "default":
            core.create_namespace({"metadata": {"name": namespace}})
        print(f"== [3/5] applying {resource} ({namespace}/{name})")
        client.CustomObjectsApi(tb.api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, copy.deepcopy(doc)
        )
        _wait_ready(tb, namespace, name)
        print(f"== [4/5] playing '{scenario.name}': {scenario.description}")
        print(HEADER)
        _play(tb, scenario, namespace, name, result)
        si = _get_si(tb.api, namespace, name)
        result.decisions = (si.get("status") or {}).get("decisions", [])
        print("== [5/5] decisions (as `kubectl describe specinf` shows them):")
        for d in result.decisions:
            print(f"   {d['time']}  {d['from']:>11} -> {d['to']:<11} {d['reason']}: {d['message']}")
        if not result.decisions:
            print("   (none)")
        print(f"== {result.switch_cost_line()}")
        measured = result.switch_costs()
        if measured:
            print(
                "== each switch, decision to pools settled: "
                + ", ".join(f"{when[11:19]} {seconds:.1f} s" for when, seconds in sorted(measured.items()))
            )
        failed = sum(1 for r in result.records if not r.ok)
        print(f"== requests: {len(result.records)} sent, {failed} failed")
        if plot is not None:
            write_plot(result, plot, scenario)
            print(f"== timeline plot: {plot}")
        if keep:
            print(
                f"== kept running; KUBECONFIG={tb.kubeconfig}; Prometheus {tb.prometheus_url}; "
                "Ctrl-C (or SIGTERM, SIGHUP) stops"
            )
            while True:
                time.sleep(3600)
    finally:
        if op is not None:
            op.stop()
        tb.down()
        print("== stopped every process the demo started")
    return result


def local_operator(tb: Testbed, resync_seconds: float) -> OperatorThread:
    """The operator in this process, on the test world, with its webhook on loopback."""
    assert tb.state is not None
    return OperatorThread(
        OperatorOptions(
            kubeconfig=str(tb.state.operator_kubeconfig),
            prometheus_url=tb.prometheus_url,
            metrics_port=None,
            liveness_port=None,
            resync_seconds=resync_seconds,
            webhook_listen="127.0.0.1",
            webhook_port=free_port(),
        )
    ).start()


def _wait_ready(tb: Testbed, namespace: str, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        si = _get_si(tb.api, namespace, name)
        conds = {c["type"]: c for c in (si.get("status") or {}).get("conditions", [])}
        ready = conds.get("Ready", {})
        if ready.get("status") == "True":
            print(f"   pools ready: {ready.get('message')}")
            return
        time.sleep(1)
    raise RuntimeError(f"{namespace}/{name} not Ready after {timeout:.0f} s")


def _play(tb: Testbed, scenario: Scenario, namespace: str, name: str, result: DemoResult) -> None:
    records: list[Record] = []
    model = _served_model(tb, namespace, name)
    done = threading.Event()

    def load() -> None:
        try:
            resolver = endpoints_resolver(tb.api, namespace, name)
            records.extend(asyncio.run(run_load(scenario, resolver, model)))
        finally:
            done.set()

    thread = threading.Thread(target=load, name="loadgen", daemon=True)
    t0 = time.monotonic()
    result.t0_wall = time.time()
    thread.start()
    starts = []
    acc = 0.0
    for p in scenario.phases:
        starts.append((acc, p))
        acc += p.seconds
    while not done.wait(2.0):
        t = time.monotonic() - t0
        phase = next((p for s, p in reversed(starts) if t >= s), scenario.phases[0])
        si = _get_si(tb.api, namespace, name)
        st = si.get("status") or {}
        pools = st.get("pools") or {}
        live = _live_observation(tb.prometheus_url, namespace, name)
        spec_pool, base_pool = live.speculative, live.baseline
        tick = Tick(
            t=t,
            phase=phase.name[:10],
            offered_qps=phase.rate_at(t - next(s for s, p in starts if p is phase)),
            served_qps=sum(p.request_rate or 0.0 for p in (spec_pool, base_pool) if p is not None),
            mode=str(st.get("mode", "-")),
            spec_ready=int((pools.get("speculative") or {}).get("readyReplicas", 0)),
            base_ready=int((pools.get("baseline") or {}).get("readyReplicas", 0)),
            acceptance=spec_pool.acceptance if spec_pool else None,
            p99_spec=spec_pool.tpot_p99 if spec_pool else None,
            p99_base=base_pool.tpot_p99 if base_pool else None,
            verdict=str(st.get("verdict", "-")),
            waiting_spec=spec_pool.waiting if spec_pool else None,
            waiting_base=base_pool.waiting if base_pool else None,
            switch_cost=st.get("switchCost"),
            verdict_reason=st.get("verdictReason"),
            switch_held=bool(st.get("switchDeferredSince")),
        )
        result.ticks.append(tick)
        print(_row(tick), flush=True)
    thread.join()
    result.records = records
    (tb.run_dir / "requests.jsonl").write_text("\n".join(json.dumps(r.__dict__) for r in records))


def _live_observation(prometheus_url: str, namespace: str, name: str) -> Observation:
    """Live figures straight from Prometheus over the last 10 s (status holds slower-moving ones)."""
    query = prometheus_query(timeout=5.0)
    try:
        results = {sig: parse_vector(query(prometheus_url, q)) for sig, q in build_queries("10s").items()}
    except Exception:
        return Observation()
    return build_observations(results).get((namespace, name), Observation())


def _served_model(tb: Testbed, namespace: str, name: str) -> str:
    si = _get_si(tb.api, namespace, name)
    vllm = si["spec"].get("vllm") or {}
    return str(vllm.get("servedModelName") or si["spec"]["target"]["model"])


def write_plot(result: DemoResult, path: Path, scenario: Scenario) -> None:
    """Offered against served throughput, the queue and P99 TPOT per pool, and acceptance over
    time; decisions marked, and each measured switch shaded from its decision to the pools
    settled (status.switchCost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = result.ticks
    if not ticks:
        return
    ts = [k.t for k in ticks]
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    colors: dict[str, str] = {
        ServingMode.SPECULATIVE: "#c8e6c9",
        ServingMode.BASELINE: "#ffcdd2",
        ServingMode.PROBING: "#fff9c4",
    }
    for ax in axes:
        for a, b in itertools.pairwise(ticks):
            ax.axvspan(a.t, b.t, color=colors.get(a.mode, "#eeeeee"), linewidth=0)
    axes[0].plot(ts, [k.offered_qps for k in ticks], label="offered QPS", color="#555555", linestyle="--")
    axes[0].plot(ts, [k.served_qps for k in ticks], label="served QPS (Prometheus)", color="black")
    if any(k.switch_held for k in ticks):
        top = max(max(k.offered_qps, k.served_qps) for k in ticks)
        axes[0].fill_between(
            ts,
            0,
            [top if k.switch_held else 0 for k in ticks],
            step="post",
            color="#9e9e9e",
            alpha=0.3,
            linewidth=0,
            label="fallback held back (switch would overload)",
        )
    axes[0].set_ylabel("requests/s")
    axes[0].legend(loc="upper right")
    axes[0].set_title(f"SpecOps demo: {scenario.name} (green Speculative, yellow Probing, red Baseline)")
    axes[1].plot(ts, [k.acceptance for k in ticks], color="tab:blue", label="acceptance (speculative pool)")
    axes[1].axhline(0.5, color="tab:red", linewidth=0.8, linestyle=":", label="minAcceptanceRate")
    axes[1].axhline(0.65, color="tab:orange", linewidth=0.8, linestyle=":", label="break-even")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("acceptance")
    axes[1].legend(loc="lower right")
    ms = [None if k.p99_spec is None else k.p99_spec * 1000 for k in ticks]
    mb = [None if k.p99_base is None else k.p99_base * 1000 for k in ticks]
    axes[2].plot(ts, ms, color="tab:green", label="P99 TPOT speculative")
    axes[2].plot(ts, mb, color="tab:red", label="P99 TPOT baseline")
    axes[2].set_ylabel("ms")
    axes[2].legend(loc="upper right")
    axes[3].plot(ts, [k.waiting_spec for k in ticks], color="tab:green", label="queued, speculative pool")
    axes[3].plot(ts, [k.waiting_base for k in ticks], color="tab:red", label="queued, baseline pool")
    axes[3].set_ylabel("requests waiting")
    axes[3].set_xlabel("seconds since the scenario started")
    axes[3].legend(loc="upper right")
    costs = result.switch_costs()
    for d in result.decisions:
        when = epoch(d["time"]) - result.t0_wall
        if 0 <= when <= ticks[-1].t:
            for ax in axes:
                ax.axvline(when, color="black", linewidth=0.8)
            axes[0].annotate(d["reason"], (when, axes[0].get_ylim()[1]), rotation=90, va="top", fontsize=8)
            seconds = costs.get(d["time"])
            if seconds is not None:
                for ax in axes:
                    ax.axvspan(
                        when, when + seconds, facecolor="none", edgecolor="#555555", hatch="//", linewidth=0
                    )
                axes[3].annotate(
                    f"switch cost {seconds:.0f} s", (when, axes[3].get_ylim()[1]), va="top", fontsize=8
                )
    fig.text(0.01, 0.005, result.switch_cost_line(), fontsize=7, color="#333333")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

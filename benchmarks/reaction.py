"""Reaction time in the real closed loop (issue #7, part 3): prints figures, asserts nothing.

The local test world (etcd, kube-apiserver, kube-controller-manager, Prometheus), emulated GPU
pods and the operator in-process.  For each policy setting (interval, window) Prometheus scrapes at
the interval the operator's own PodMonitor would ask for (``render.manifests.pod_monitor_interval``),
and the demo resource serves low-temperature chat; then the temperature jumps to 1.0, where
acceptance falls below minAcceptanceRate.  Measured from that onset, by polling every 0.25 s (so
to about a quarter of a second, not to the whole second status timestamps carry):

* decision:  the status records the fallback;
* changed:   the pool Deployments leave the speculative split (first rollout step applied);
* ready:     both replicas serve from the baseline pool (Deployments at 0/2, all ready).

The floor is what the data allows: the window must fill with the new regime (two scrape intervals
of delay plus the rate window).  The target is interval + window + 5 s.

    python benchmarks/reaction.py [--settings 2s/10s,5s/20s,10s/30s] [--out .local/benchmarks]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from specops.api.crd import build_crd
from specops.api.v1alpha1 import GROUP, PLURAL, VERSION, ServingMode, parse_duration
from specops.checks.validation import load_resource
from specops.controller.main import OperatorThread
from specops.render.manifests import pod_monitor_interval
from specops_testkit.testbed.demo import local_operator
from specops_testkit.testbed.loadgen import endpoints_resolver, run_load
from specops_testkit.testbed.prometheus import prometheus_config
from specops_testkit.testbed.scenario import Scenario
from specops_testkit.testbed.stack import Testbed

ROOT = Path(__file__).resolve().parents[1]
RESOURCE = ROOT / "manifests" / "examples" / "demo-llama70b.yaml"
QPS = 2.0
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Reaction:
    interval: float
    window: float
    scrape: float  # the PodMonitor's interval for this setting, which Prometheus used
    decision: float | None
    changed: float | None
    ready: float | None

    @property
    def floor(self) -> float:
        return 2 * self.scrape + self.window

    @property
    def target(self) -> float:
        return self.interval + self.window + 5


def _si(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return obj


def _split(api: client.ApiClient, ns: str, name: str) -> tuple[int, int, int, int]:
    """Replicas asked for and ready, speculative then baseline (zeros before the pools exist)."""
    apps = client.AppsV1Api(api)
    try:
        s = apps.read_namespaced_deployment(f"{name}-spec", ns)
        b = apps.read_namespaced_deployment(f"{name}-base", ns)
    except client.ApiException as exc:
        if exc.status == 404:
            return (0, 0, 0, 0)
        raise
    return (s.spec.replicas, b.spec.replicas, s.status.ready_replicas or 0, b.status.ready_replicas or 0)


def _wait(check: Any, timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def set_scrape_interval(tb: Testbed, interval: str) -> None:
    """Scrape at ``interval`` from now on (Prometheus reloads its configuration in place)."""
    prom = tb.prometheus
    prom.scrape_interval = interval
    (prom.run_dir / "prometheus.yml").write_text(prometheus_config(interval, prom.targets_dir))
    request = urllib.request.Request(f"{prom.url}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def measure(tb: Testbed, n: int, interval: str, window: str) -> Reaction:
    doc = yaml.safe_load(RESOURCE.read_text())
    ns = f"reaction-{n}"
    name = doc["metadata"]["name"]
    doc["metadata"]["namespace"] = ns
    doc["spec"]["policy"].update({"interval": interval, "window": window, "cooldown": "30m"})
    scrape = pod_monitor_interval(load_resource(copy.deepcopy(doc)).spec)
    set_scrape_interval(tb, scrape)
    client.CoreV1Api(tb.api).create_namespace({"metadata": {"name": ns}})
    client.CustomObjectsApi(tb.api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, copy.deepcopy(doc)
    )
    _wait(lambda: _split(tb.api, ns, name)[2] == 2, 180, "two ready speculative replicas", every=1)
    i, w = parse_duration(interval), parse_duration(window)
    cold = w + 2 * i + 15  # the window fills and the first evaluations settle
    hot = 2 * (w + i) + 40
    scenario = Scenario.model_validate(
        {
            "name": "reaction",
            "seed": n,
            "phases": [
                {"name": "cold", "duration": f"{cold:g}s", "qps": QPS, "temperature": 0.2},
                {"name": "hot", "duration": f"{hot:g}s", "qps": QPS, "temperature": 1.0},
            ],
        }
    )
    resolver = endpoints_resolver(tb.api, ns, name)
    model = doc["spec"]["target"]["model"]
    thread = threading.Thread(target=lambda: asyncio.run(run_load(scenario, resolver, model)), daemon=True)
    start = time.monotonic()
    thread.start()
    onset = start + cold
    print(
        f"   {interval}/{window}: scrape every {scrape}, cold {cold:.0f} s, then temperature 1.0 for "
        f"{hot:.0f} s",
        flush=True,
    )
    decision = changed = ready = None
    fallback: dict[str, Any] | None = None
    deadline = onset + hot
    while time.monotonic() < deadline and ready is None:
        if decision is None:
            decisions = (_si(tb.api, ns, name).get("status") or {}).get("decisions", [])
            fallback = next((d for d in decisions if d["to"] == ServingMode.BASELINE), None)
            if fallback is not None:
                decision = time.monotonic() - onset
        spec, base, _, base_ready = _split(tb.api, ns, name)
        now = time.monotonic()
        if changed is None and (spec, base) != (2, 0):
            changed = now - onset
        if changed is not None and (spec, base) == (0, 2) and base_ready == 2:
            ready = now - onset
        time.sleep(POLL_SECONDS)
    thread.join(timeout=hot + 60)
    if fallback is not None and fallback["reason"] != "AcceptanceBelowThreshold":
        print(f"   note: fell back for {fallback['reason']}, not AcceptanceBelowThreshold", flush=True)
    client.CoreV1Api(tb.api).delete_namespace(ns)
    return Reaction(i, w, parse_duration(scrape), decision, changed, ready)


def _s(x: float | None) -> str:
    return "not seen" if x is None else f"{x:.1f}"


def table(rows: list[Reaction]) -> str:
    lines = [
        "| interval / window | scrape s | floor (2 scrapes + window) s | target (interval + window + 5) s "
        "| onset -> decision s | onset -> Deployments changed s | onset -> pools ready s | within target |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        ok = "yes" if r.changed is not None and r.changed <= r.target else "no"
        lines.append(
            f"| {r.interval:g} s / {r.window:g} s | {r.scrape:g} | {r.floor:g} | {r.target:g} "
            f"| {_s(r.decision)} | {_s(r.changed)} | {_s(r.ready)} | {ok} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default="2s/10s,5s/20s,10s/30s", help="interval/window pairs")
    parser.add_argument("--out", type=Path, default=Path(".local/benchmarks"))
    parser.add_argument("--run-dir", type=Path, default=Path(".local/reaction"))
    args = parser.parse_args()
    settings = [tuple(s.split("/")) for s in args.settings.split(",")]
    print(
        f"== [1/{len(settings) + 1}] starting the test world (control plane, Prometheus, pod runner)",
        flush=True,
    )
    tb = Testbed(args.run_dir, crds=[build_crd()], emulator_env={"SPECOPS_EMULATOR_LOAD_SECONDS": "2"})
    tb.up()
    op: OperatorThread | None = None
    rows: list[Reaction] = []
    try:
        op = local_operator(tb, resync_seconds=5.0)
        for n, (interval, window) in enumerate(settings, 1):
            print(f"== [{n + 1}/{len(settings) + 1}] interval {interval}, window {window}", flush=True)
            rows.append(measure(tb, n, interval, window))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        if op is not None:
            op.stop()
        tb.down()
    out = table(rows)
    print(out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reaction.md").write_text(out + "\n")
    print(f"written: {args.out / 'reaction.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

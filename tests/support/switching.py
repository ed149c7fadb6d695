"""A mode switch on the real control plane, and operators as processes that can be SIGKILLed:
what the fault and failover tests share.

A switch here is a real fall-back: three speculative replicas serve traffic at temperature 1.0,
acceptance drops under 0.5, the policy falls back to Baseline, and the switch moves one replica at a
time (``hot_switch`` returns once the first step is applied).  ``assert_switched_once`` and
``assert_one_way_within_budget`` say it finished in one consistent state.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from specops_testkit.testbed.stack import Testbed
from tests.support.closed_loop import LOW_QPS, NAME, Load, demo_doc
from tests.support.live_cluster import condition, create_si, deployment, event_reasons, get_si, wait_for

REPLICAS = 3
SPEC, BASE = f"{NAME}-spec", f"{NAME}-base"


class OperatorProcess:
    """``specops run`` as its own process (in its own session), so it can be SIGKILLed."""

    def __init__(
        self,
        testbed: Testbed,
        namespace: str,
        log: Path,
        args: Sequence[str] = (),
        kubeconfig: Path | None = None,
    ) -> None:
        """``args``: more ``specops run`` flags; ``kubeconfig``: another way to the API server (a
        proxy) than the operator's own kubeconfig."""
        assert testbed.state is not None
        exe = Path(sys.executable).parent / "specops"
        cmd = [
            str(exe), "run", "--namespace", namespace,
            "--kubeconfig", str(kubeconfig or testbed.state.operator_kubeconfig),
            "--prometheus-url", testbed.prometheus_url,
            "--no-webhooks", "--metrics-port", "0", "--health-port", "0", "--resync-seconds", "5", *args,
        ]  # fmt: skip
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no cleanup handler, no last write."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def pools(api: client.ApiClient, ns: str) -> tuple[int, int] | None:
    """(speculative, baseline) replicas the Deployments ask for.  The baseline is read first: in a
    switch to Baseline it only grows and the speculative pool only shrinks, so a sum read this way
    is never above the sum at the moment of the second read."""
    base = deployment(api, ns, BASE)
    spec = deployment(api, ns, SPEC)
    if spec is None or base is None:
        return None
    return int(spec.spec.replicas), int(base.spec.replicas)


class PoolWatcher:
    """Samples the pools every 0.2 s (through faults: a failed read is skipped)."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api, ns), daemon=True)
        self._thread.start()

    def _run(self, api: client.ApiClient, ns: str) -> None:
        while not self._stop.wait(0.2):
            try:
                got = pools(api, ns)
            except Exception:
                continue  # the API server is down
            if got is not None and (not self.samples or self.samples[-1] != got):
                self.samples.append(got)

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def hot_switch(api: client.ApiClient, ns: str) -> tuple[Load, PoolWatcher]:
    """Three speculative replicas, then traffic at temperature 1.0 until the fall-back's first step
    (one replica moved) is applied.  Returns the load (still running) and a watcher of the pools."""
    doc = demo_doc(cooldown="10m")  # no probe afterwards: the fall-back is the only switch
    doc["spec"]["replicas"] = REPLICAS
    create_si(api, ns, doc)
    si = wait_for(lambda: condition(s := get_si(api, ns, NAME), "Ready").get("status") == "True" and s,
                  150, "3 speculative replicas ready")  # fmt: skip
    assert si["status"]["pools"]["speculative"] == {"replicas": REPLICAS, "readyReplicas": REPLICAS}
    watcher = PoolWatcher(api, ns)
    load = Load(api, ns, [{"name": "hot", "duration": "60s", "qps": LOW_QPS, "temperature": 1.0}])
    wait_for(lambda: (p := pools(api, ns)) is not None and p[1] >= 1, 90, "the first step of the fall-back",
             every=0.05)  # fmt: skip
    return load, watcher


def assert_switched_once(api: client.ApiClient, ns: str, recorded: list[dict[str, Any]]) -> None:
    """Converged: every replica in the baseline pool, status agreeing, the one transition only."""

    def converged() -> dict[str, Any] | None:
        si = get_si(api, ns, NAME)
        st = si.get("status", {})
        done = (
            pools(api, ns) == (0, REPLICAS)
            and st.get("pools", {}).get("baseline") == {"replicas": REPLICAS, "readyReplicas": REPLICAS}
            and condition(si, "Ready").get("status") == "True"
        )
        return si if done else None

    si = wait_for(converged, 150, f"all {REPLICAS} replicas ready in the baseline pool", every=0.5)
    st = si["status"]
    assert st["mode"] == "Baseline"
    assert st["pools"]["speculative"] == {"replicas": 0, "readyReplicas": 0}
    assert st["observedGeneration"] == si["metadata"]["generation"]
    assert condition(si, "SpeculationActive")["reason"] == "FellBack"
    # Each pool runs its own args: the speculative pool drafts, the baseline does not.
    spec_args = deployment(api, ns, SPEC).spec.template.spec.containers[0].args
    base_args = deployment(api, ns, BASE).spec.template.spec.containers[0].args
    assert "--speculative-config" in spec_args and "--speculative-config" not in base_args
    # The decision history is the one recorded before the fault: one transition, nothing after.
    assert st["decisions"] == recorded, st["decisions"]
    assert event_reasons(api, ns, NAME).count("AcceptanceBelowThreshold") == 1, event_reasons(api, ns, NAME)


def assert_one_way_within_budget(samples: list[tuple[int, int]]) -> None:
    assert samples and samples[-1] == (0, REPLICAS), samples
    assert all(s + b <= REPLICAS for s, b in samples), f"more pods asked for than spec.replicas: {samples}"
    for (s1, b1), (s2, b2) in itertools.pairwise(samples):
        assert s2 <= s1 and b2 >= b1, f"the switch went back: {samples}"

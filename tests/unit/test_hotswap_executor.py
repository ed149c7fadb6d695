"""The operator executing the HotSwap strategy (controller.hotswap through the Reconciler) on the
in-memory API server: the admin Secret, the swap's order of steps, the failed wake, the restart
fallback, and an operator stopped mid-swap."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from specops.controller.hotswap import HotSwapExecutor, HttpAdmin, SwapTimings, running_from_metrics
from specops.controller.reconciler import Reconciler
from specops.plan.hotswap_reconcile import AWAKE_ANNOTATION, FALLBACK_ANNOTATION
from specops.render.manifests import Pool
from tests.support.fake_kube import FakeKube, Write
from tests.support.hotswap import NAMESPACE, FakeEngines, swap_pod
from tests.support.resources import as_stored, make_doc

NOW = "2026-01-01T00:00:00Z"
SPEC, BASE = Pool.SPECULATIVE, Pool.BASELINE


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def now(self) -> float:
        return self.t


def world(engines: FakeEngines, **spec: Any) -> tuple[FakeKube, Reconciler, Clock]:
    kube = FakeKube(as_stored(make_doc(rollout={"strategy": "HotSwap"}, **spec)), pod_monitors=False)
    clock = Clock()
    executor = HotSwapExecutor(
        kube, engines.client, SwapTimings(drain_seconds=60, poll_seconds=1), clock.sleep, clock.now
    )
    return kube, Reconciler(kube, clock=lambda: NOW, hot_swap=executor), clock


def annotations(kube: FakeKube, pod: str) -> dict[str, str]:
    live = kube.live("Pod", NAMESPACE, pod)
    assert live is not None
    return dict(live["metadata"].get("annotations") or {})


def routed(kube: FakeKube, pool: Pool) -> list[str]:
    live = kube.live("EndpointSlice", NAMESPACE, f"demo-{pool.suffix}-ipv4")
    assert live is not None
    return [e["targetRef"]["name"] for e in live["endpoints"]]


def test_first_reconcile_creates_the_secret_once_and_never_logs_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, rec, _ = world(FakeEngines())
    with caplog.at_level(logging.DEBUG):
        out = rec.reconcile(NAMESPACE, "demo")
    assert out is not None and out.applied[0] == "Secret/demo-hotswap-admin"
    secret = kube.live("Secret", NAMESPACE, "demo-hotswap-admin")
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 64 and int(token, 16) >= 0
    assert token not in caplog.text
    assert kube.live("Deployment", NAMESPACE, "demo-swap") is not None
    assert kube.live("Deployment", NAMESPACE, "demo-spec") is None
    again = rec.reconcile(NAMESPACE, "demo")
    assert again is not None and again.applied == [], "a second reconcile changes nothing"
    secret2 = kube.live("Secret", NAMESPACE, "demo-hotswap-admin")
    assert secret2 is not None and secret2["data"] == secret["data"], "created once"


def test_swaps_one_replica_per_reconcile_in_order_and_authenticated() -> None:
    engines = FakeEngines()
    kube, rec, _ = world(engines)
    rec.reconcile(NAMESPACE, "demo")
    for i in (1, 2):
        kube.add(swap_pod(f"pod-{i}", f"10.0.0.{i}", "baseline"))
        engines.pod(f"10.0.0.{i}", BASE)
    engines.running[("10.0.0.1", BASE)] = [3, 1, 0]
    steps: list[tuple[int, list[str]]] = []

    def record(write: Write) -> None:
        if write.verb == "patch_pod":  # engine calls made so far, and who the baseline slice lists
            steps.append((len(engines.calls), routed(kube, BASE)))

    # Reconcile 2 routes both pods on baseline, then swaps pod-1.
    kube.before_write = record
    rec.reconcile(NAMESPACE, "demo")
    secret = kube.live("Secret", NAMESPACE, "demo-hotswap-admin")
    assert secret is not None
    assert engines.tokens[-1] == base64.b64decode(secret["data"]["token"]).decode()
    calls = [c for c in engines.calls if c.startswith(("sleep", "wake_up", "is_sleeping", "running"))]
    assert calls == [
        "running 10.0.0.1 baseline", "running 10.0.0.1 baseline", "running 10.0.0.1 baseline",
        "sleep 10.0.0.1 baseline", "is_sleeping 10.0.0.1 baseline",
        "wake_up 10.0.0.1 speculative", "is_sleeping 10.0.0.1 speculative", "is_sleeping 10.0.0.1 baseline",
    ]  # fmt: skip
    # (a) routed away before any engine call, then annotated "swapping"; (f) after the calls.
    assert steps == [(0, ["pod-2"]), (8, ["pod-2"])]
    assert annotations(kube, "pod-1")[AWAKE_ANNOTATION] == "speculative"
    assert routed(kube, SPEC) == ["pod-1"] and routed(kube, BASE) == ["pod-2"]
    assert engines.asleep["10.0.0.1"] == {SPEC: False, BASE: True}
    rec.reconcile(NAMESPACE, "demo")
    assert routed(kube, SPEC) == ["pod-1", "pod-2"] and routed(kube, BASE) == []
    n = len(engines.calls)
    rec.reconcile(NAMESPACE, "demo")
    assert engines.calls[n:] == [], "at target: no call to any pod"
    # Status is planned before a swap: it shows the swap one reconcile later.
    pools = kube.body["status"]["pools"]
    assert (pools["speculative"]["replicas"], pools["baseline"]["replicas"]) == (2, 0)


def test_the_drain_is_bounded_by_the_grace() -> None:
    engines = FakeEngines()
    kube, rec, clock = world(engines, replicas=1)
    rec.reconcile(NAMESPACE, "demo")
    kube.add(swap_pod("pod-1", "10.0.0.1", "baseline"))
    engines.pod("10.0.0.1", BASE)
    engines.running[("10.0.0.1", BASE)] = [5.0]  # a request that never ends
    rec.reconcile(NAMESPACE, "demo")
    assert clock.t == SwapTimings().route_settle_seconds + 60  # the routing pause, then the grace
    assert annotations(kube, "pod-1")[AWAKE_ANNOTATION] == "speculative"


class AdminHandler(http.server.BaseHTTPRequestHandler):
    """A pod's nginx admin port and public /metrics: the token checked, speculative wakes fail."""

    token = ""
    asleep: ClassVar[dict[str, bool]] = {}
    seen: ClassVar[list[str]] = []

    def _answer(self, code: int, body: dict[str, Any] | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        self.seen.append(f"{method} {self.path}")
        if self.path == "/metrics":
            self._answer(200, 'vllm:num_requests_running{model_name="m"} 0.0\n')
            return
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._answer(401, "")
            return
        pool, _, action = self.path.strip("/").partition("/")
        if action == "is_sleeping":
            self._answer(200, {"is_sleeping": self.asleep[pool]})
        elif action == "sleep":
            self.asleep[pool] = True
            self._answer(200, "")
        elif action == "wake_up" and pool == "speculative":
            self._answer(500, {"error": "CUDA out of memory"})
        else:
            self.asleep[pool] = False
            self._answer(200, "")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AdminHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_failed_wake_goes_back_and_falls_back_to_a_restart(admin_server: int) -> None:
    kube = FakeKube(as_stored(make_doc(rollout={"strategy": "HotSwap"}, replicas=1)), pod_monitors=False)
    ports = dict.fromkeys(Pool, admin_server)

    def client(token: str) -> HttpAdmin:
        AdminHandler.token = token
        return HttpAdmin(token, timeout=5, wake_timeout=5, admin_port=admin_server, public_ports=ports)

    executor = HotSwapExecutor(kube, client, SwapTimings(drain_seconds=1, poll_seconds=0.01))
    rec = Reconciler(kube, clock=lambda: NOW, hot_swap=executor)
    rec.reconcile(NAMESPACE, "demo")
    kube.add(swap_pod("pod-1", "127.0.0.1", "baseline"))
    AdminHandler.asleep = {"speculative": True, "baseline": False}
    AdminHandler.seen = []
    rec.reconcile(NAMESPACE, "demo")
    assert "POST /speculative/wake_up" in AdminHandler.seen
    assert AdminHandler.asleep == {"speculative": True, "baseline": False}, "never both asleep"
    assert AdminHandler.seen[-3:] == [
        "POST /speculative/sleep",
        "POST /baseline/wake_up",
        "GET /baseline/is_sleeping",
    ]
    notes = annotations(kube, "pod-1")
    assert notes[AWAKE_ANNOTATION] == "baseline"
    assert "HTTP 500" in notes[FALLBACK_ANNOTATION]
    assert "HotSwapFailed" in kube.reasons
    assert routed(kube, BASE) == ["pod-1"], "routed back on the engine that works"
    # The next reconcile restarts that replica and says why in status.
    rec.reconcile(NAMESPACE, "demo")
    assert kube.live("Pod", NAMESPACE, "pod-1") is None
    cond = next(c for c in kube.body["status"]["conditions"] if c["type"] == "HotSwapReady")
    assert (cond["status"], cond["reason"]) == ("False", "HotSwapFailed")


def test_a_wrong_token_is_refused(admin_server: int) -> None:
    AdminHandler.token = "a" * 64
    admin = HttpAdmin("b" * 64, timeout=5, admin_port=admin_server)
    with pytest.raises(Exception, match="HTTP 401"):
        admin.is_sleeping("127.0.0.1", SPEC)


def test_an_operator_stopped_mid_swap_converges() -> None:
    engines = FakeEngines()
    kube, rec, _ = world(engines)
    rec.reconcile(NAMESPACE, "demo")
    # Stopped between (c) and (f): pod-1 annotated "swapping", both engines asleep.
    kube.add(swap_pod("pod-1", "10.0.0.1", "swapping"))
    kube.add(swap_pod("pod-2", "10.0.0.2", "speculative"))
    engines.asleep["10.0.0.1"] = {SPEC: True, BASE: True}
    engines.pod("10.0.0.2", SPEC)
    rec.reconcile(NAMESPACE, "demo")
    assert engines.asleep["10.0.0.1"] == {SPEC: False, BASE: True}, "woken on the target's engine"
    assert annotations(kube, "pod-1")[AWAKE_ANNOTATION] == "speculative"
    assert routed(kube, SPEC) == ["pod-1", "pod-2"]
    assert not any(c.endswith("10.0.0.2 speculative") and c.startswith("is_") for c in engines.calls), (
        "an annotated pod is not probed"
    )


def test_stopped_before_the_sleep_the_probe_restores_the_annotation() -> None:
    engines = FakeEngines()
    kube, rec, _ = world(engines, replicas=1, policy={"mode": "Baseline"})
    rec.reconcile(NAMESPACE, "demo")
    kube.add(swap_pod("pod-1", "10.0.0.1", "swapping"))
    engines.pod("10.0.0.1", BASE)
    rec.reconcile(NAMESPACE, "demo")
    assert annotations(kube, "pod-1")[AWAKE_ANNOTATION] == "baseline"
    assert routed(kube, BASE) == ["pod-1"]
    assert not any(c.startswith(("sleep", "wake_up")) for c in engines.calls)


def test_running_from_metrics_sums_the_engine_gauge() -> None:
    text = '# HELP x\nvllm:num_requests_running{a="1"} 2.0\nvllm:num_requests_waiting 9\nvllm:num_requests_running{a="2"} 1\n'
    assert running_from_metrics(text) == 3.0


def test_endpoint_slices_in_the_version_the_cluster_serves() -> None:
    """Kubernetes 1.20 (the local test world) serves EndpointSlices only at v1beta1."""
    engines = FakeEngines()
    kube, rec, _ = world(engines)
    kube.unserved = {"discovery.k8s.io/v1"}
    rec.reconcile(NAMESPACE, "demo")
    kube.add(swap_pod("pod-1", "10.0.0.1", "baseline"))
    engines.pod("10.0.0.1", BASE)
    rec.reconcile(NAMESPACE, "demo")  # routes pod-1 on baseline, then swaps it to speculative
    slices = [a for a in kube.applied if a["kind"] == "EndpointSlice"]
    assert slices and {a["apiVersion"] for a in slices} == {"discovery.k8s.io/v1beta1"}
    assert routed(kube, SPEC) == ["pod-1"]
    n = len(kube.applied)
    rec.reconcile(NAMESPACE, "demo")
    assert kube.applied[n:] == [], "the stored v1beta1 slices are not rewritten"

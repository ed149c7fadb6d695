"""Executes the HotSwap strategy's plans: the admin Secret, the pods' admin ports, the swap itself.

``HotSwapExecutor.reconcile`` reads the hot-swap objects and pods, probes the pods whose
annotation does not say which engine is awake, asks ``plan_hot_swap_reconcile`` and executes it.
A swap (``run_swap``), one replica at a time:

(a) the EndpointSlices without the pod (clients routed away); the pod annotated ``swapping``; a
    pause (``route_settle_seconds``) for the clients' proxies to see it;
(b) the drain: until the awake engine's ``vllm:num_requests_running`` is 0, at most ``drain_seconds``
    (the pod's termination grace);
(c) ``POST /<from>/sleep`` on the admin port (nginx fixes level 1);
(d) ``POST /<to>/wake_up``;
(e) ``GET /<engine>/is_sleeping`` on both: from asleep, to awake;
(f) the pod annotated with the awake engine;
(g) the EndpointSlices with the pod on its new engine.

Every call carries the operator's bearer token and a timeout.  A wake that fails or times out puts
the half-woken engine back to sleep, wakes the previous one (never both asleep), routes the pod
back on it, annotates the pod ``specops.dev/hot-swap-fallback`` (the next plan restarts it: the
Restart strategy for that replica), posts a Warning ``HotSwapFailed`` and the status condition
``HotSwapReady`` says it.  The token is never logged.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from specops.controller.kube import KubeApi
from specops.plan.hotswap import Swap
from specops.plan.hotswap_reconcile import (
    AWAKE_ANNOTATION,
    FALLBACK_ANNOTATION,
    HOT_SWAP_FAILED,
    SWAPPING,
    HotSwapObserved,
    HotSwapPlan,
    Repair,
    SwapPodView,
    needs_probe,
    plan_hot_swap_reconcile,
    pod_view,
)
from specops.plan.status import ConditionValue
from specops.render.hotswap import (
    ADMIN_PORT,
    ADMIN_TOKEN_KEY,
    ENDPOINT_SLICE_API_VERSIONS,
    PUBLIC_PORTS,
    SwapPod,
    admin_secret_name,
    config_map_name,
    endpoint_slice_name,
    render_admin_secret,
    render_endpoint_slices,
    swap_labels,
    swap_name,
)
from specops.render.manifests import TERMINATION_GRACE_SECONDS, Pool

log = logging.getLogger("specops.hotswap")


class AdminError(RuntimeError):
    """An admin call that failed, timed out or answered what it should not."""


class AdminClient(Protocol):
    """A hot-swap pod's engines, through its nginx sidecar (admin port, bearer token)."""

    def is_sleeping(self, ip: str, pool: Pool) -> bool: ...

    def sleep(self, ip: str, pool: Pool) -> None: ...

    def wake_up(self, ip: str, pool: Pool) -> None: ...

    def running_requests(self, ip: str, pool: Pool) -> float: ...


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def running_from_metrics(text: str) -> float:
    """The sum of ``vllm:num_requests_running`` in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class HttpAdmin:
    """``AdminClient`` over HTTP: ``http://<pod ip>:<admin port>/<pool>/<action>`` with the token;
    the drain reads ``/metrics`` on the engine's public port.  ``timeout``: each call's;
    ``wake_timeout``: a wake's (a level-1 wake moves the weights back: seconds to tens)."""

    def __init__(
        self,
        token: str,
        timeout: float = 10.0,
        wake_timeout: float = 120.0,
        admin_port: int = ADMIN_PORT,
        public_ports: Mapping[Pool, int] | None = None,
    ) -> None:
        self._auth = f"Bearer {token}"
        self.timeout = timeout
        self.wake_timeout = wake_timeout
        self.admin_port = admin_port
        self.public_ports = dict(public_ports or PUBLIC_PORTS)

    def _call(self, method: str, url: str, timeout: float, auth: bool = True) -> str:
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        if auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return str(resp.read().decode())
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{method} {url}: HTTP {exc.code}") from None
        except (OSError, TimeoutError) as exc:  # URLError, refused, timed out
            raise AdminError(f"{method} {url}: {exc}") from None

    def _admin(self, ip: str, pool: Pool, action: str) -> str:
        return f"http://{_host(ip)}:{self.admin_port}/{pool.value}/{action}"

    def is_sleeping(self, ip: str, pool: Pool) -> bool:
        body = self._call("GET", self._admin(ip, pool, "is_sleeping"), self.timeout)
        try:
            return bool(json.loads(body)["is_sleeping"])
        except (ValueError, KeyError, TypeError):
            raise AdminError(f"is_sleeping on {ip} ({pool.value}): unexpected answer") from None

    def sleep(self, ip: str, pool: Pool) -> None:
        self._call("POST", self._admin(ip, pool, "sleep"), self.wake_timeout)

    def wake_up(self, ip: str, pool: Pool) -> None:
        self._call("POST", self._admin(ip, pool, "wake_up"), self.wake_timeout)

    def running_requests(self, ip: str, pool: Pool) -> float:
        url = f"http://{_host(ip)}:{self.public_ports[pool]}/metrics"
        return running_from_metrics(self._call("GET", url, self.timeout, auth=False))


@dataclass(frozen=True, slots=True)
class SwapTimings:
    """``drain_seconds``: the longest wait for in-flight requests (the pod's termination grace);
    ``poll_seconds``: between two reads of the running requests; ``route_settle_seconds``: the wait
    after the EndpointSlices drop a pod, before its drain is read, for the clients' proxies
    (kube-proxy, a gateway) to stop sending it new requests: one that still arrived after the
    engine went to sleep would wait in its queue until the next wake."""

    drain_seconds: float = float(TERMINATION_GRACE_SECONDS)
    poll_seconds: float = 1.0
    route_settle_seconds: float = 2.0


@dataclass
class HotSwapOutcome:
    """What a hot-swap reconcile did besides the applies (for logs and tests)."""

    secret_created: bool = False
    annotated: list[str] | None = None
    restarted: str | None = None
    repaired: str | None = None
    swapped: Swap | None = None
    failed: str | None = None


def read_token(secret: Mapping[str, Any]) -> str:
    data = secret.get("data") or {}
    raw = data.get(ADMIN_TOKEN_KEY)
    if not raw:
        raise AdminError(f"Secret {secret['metadata']['name']} holds no {ADMIN_TOKEN_KEY!r}")
    return base64.b64decode(raw).decode()


def served_endpoint_slice_version(kube: KubeApi) -> str | None:
    """The first EndpointSlice version SpecOps writes that the cluster serves (v1 from 1.21), or
    None when it serves neither."""
    return next((v for v in ENDPOINT_SLICE_API_VERSIONS if kube.serves(v, "EndpointSlice")), None)


class HotSwapExecutor:
    """Reads the hot-swap world, plans, executes.  ``admin``: an ``AdminClient`` for a token."""

    def __init__(
        self,
        kube: KubeApi,
        admin: Callable[[str], AdminClient] = HttpAdmin,
        timings: SwapTimings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.admin = admin
        self.timings = timings or SwapTimings()
        self._sleep = sleep
        self._monotonic = monotonic

    # ------------------------------------------------------------------------------------ reads

    def observe(self, body: Mapping[str, Any], client: AdminClient | None) -> HotSwapObserved:
        """What the plan reads: the resource's objects, its pods (each probed for which engine is
        awake when the view needs it, through ``client``: None when the admin Secret is missing)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        slices = self.endpoint_slice_api_version()
        keys = [
            ("v1", "ConfigMap", config_map_name(name)),
            ("networking.k8s.io/v1", "NetworkPolicy", config_map_name(name)),
            ("apps/v1", "Deployment", swap_name(name)),
            ("v1", "Service", name),
            *(
                (slices, "EndpointSlice", endpoint_slice_name(name, pool, family))
                for pool in Pool
                for family in ("IPv4", "IPv6")
            ),
        ]
        live = {(kind, obj): self.kube.get_object(api, kind, ns, obj) for api, kind, obj in keys}
        pods = []
        for pod in self.kube.list_pods(ns, swap_labels(name)):
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue  # terminating: neither routed nor swapped
            view = pod_view(pod)
            if client is not None and view.ip is not None and needs_probe(view):
                view = self._probe(client, view)
            pods.append(view)
        return HotSwapObserved(
            live=live, secret_exists=client is not None, pods=tuple(pods), endpoint_slice_api_version=slices
        )

    def endpoint_slice_api_version(self) -> str:
        api_version = served_endpoint_slice_version(self.kube)
        if api_version is None:
            raise AdminError(
                "the cluster serves no EndpointSlice version SpecOps writes (discovery.k8s.io/v1, v1beta1)"
            )
        return api_version

    def _probe(self, client: AdminClient, view: SwapPodView) -> SwapPodView:
        assert view.ip is not None
        try:
            asleep = {pool: client.is_sleeping(view.ip, pool) for pool in Pool}
        except AdminError as exc:
            log.info("pod %s: is_sleeping not answered (%s); probed again next time", view.name, exc)
            return view
        return replace(view, asleep=asleep)

    def _client(self, namespace: str, name: str) -> AdminClient | None:
        secret = self.kube.get_object("v1", "Secret", namespace, admin_secret_name(name))
        return self.admin(read_token(secret)) if secret is not None else None

    # --------------------------------------------------------------------------- the reconcile

    def plan(
        self,
        body: Mapping[str, Any],
        now: str,
        status: Any = None,
        metrics_condition: ConditionValue | None = None,
    ) -> tuple[HotSwapPlan, AdminClient | None]:
        meta = body["metadata"]
        client = self._client(meta["namespace"], meta["name"])
        observed = self.observe(body, client)
        return plan_hot_swap_reconcile(
            body, observed, now, status=status, metrics_condition=metrics_condition
        ), client

    def ensure_secret(self, plan: HotSwapPlan) -> bool:
        """Create the admin Secret with a fresh random token when the plan says it is missing."""
        if plan.secret is None or plan.si is None:
            return False
        token = secrets.token_hex(32)
        self.kube.apply(render_admin_secret(plan.si, token, plan.owner))
        log.info("created the hot-swap admin Secret %s", plan.secret)  # the token is never logged
        return True

    def act(
        self,
        body: Mapping[str, Any],
        plan: HotSwapPlan,
        client: AdminClient | None,
        post_event: Callable[[str, str, str], None],
    ) -> HotSwapOutcome:
        """What comes after the applies: annotations, then the one restart, repair or swap."""
        out = HotSwapOutcome()
        ns = body["metadata"]["namespace"]
        for pod, pool in plan.annotate:
            self.kube.patch_pod_annotations(ns, pod, {AWAKE_ANNOTATION: pool.value})
        out.annotated = [pod for pod, _ in plan.annotate]
        if plan.restart is not None:
            self.kube.delete_pod(ns, plan.restart)
            out.restarted = plan.restart
            return out
        if client is None:
            return out  # no token yet (the Secret was just created): the next reconcile swaps
        if plan.repair is not None:
            out.repaired = plan.repair.pod
            failed = self.repair(ns, plan, plan.repair, client)
            if failed:
                out.failed = failed
                post_event("Warning", HOT_SWAP_FAILED, failed)
            return out
        if plan.swap is not None:
            out.swapped = plan.swap
            failed = self.run_swap(ns, plan, plan.swap, client)
            if failed:
                out.failed = failed
                post_event("Warning", HOT_SWAP_FAILED, failed)
        return out

    # --------------------------------------------------------------------------------- routing

    def _route(self, plan: HotSwapPlan, pod: str, awake: Pool | None) -> None:
        """The EndpointSlices with ``pod`` on ``awake`` (None: on no engine), others as planned."""
        assert plan.si is not None
        pods = [
            SwapPod(p.name, p.ip, awake if p.name == pod else p.awake, p.ready, p.node_name)
            for p in plan.pods
        ]
        for manifest in render_endpoint_slices(plan.si, pods, plan.owner, plan.endpoint_slice_api_version):
            self.kube.apply(manifest)

    # ---------------------------------------------------------------------------------- a swap

    def _drain(self, client: AdminClient, ip: str, pool: Pool) -> None:
        deadline = self._monotonic() + self.timings.drain_seconds
        while True:
            try:
                if client.running_requests(ip, pool) <= 0:
                    return
            except (AdminError, ValueError, IndexError) as exc:
                log.info("drain of %s: metrics not read (%s); waiting the grace out", ip, exc)
            if self._monotonic() >= deadline:
                return
            self._sleep(self.timings.poll_seconds)

    def run_swap(self, namespace: str, plan: HotSwapPlan, swap: Swap, client: AdminClient) -> str | None:
        """Steps (a)-(g); a failure message (the replica is then back on ``swap.from_pool`` where it
        could be woken, annotated for the Restart fallback), or None."""
        view = next(p for p in plan.pods if p.name == swap.replica)
        assert view.ip is not None, "plan_swap picks pods whose engine was read"
        ip, src, dst = view.ip, swap.from_pool, swap.to_pool
        self._route(plan, view.name, None)  # (a)
        self.kube.patch_pod_annotations(namespace, view.name, {AWAKE_ANNOTATION: SWAPPING})
        self._sleep(self.timings.route_settle_seconds)
        self._drain(client, ip, src)  # (b)
        try:
            client.sleep(ip, src)  # (c)
            if not client.is_sleeping(ip, src):
                raise AdminError(f"{src.value} engine still awake after /sleep")
        except AdminError as exc:
            return self._fail(
                namespace, plan, view, src, f"sleep of the {src.value} engine failed: {exc}", client
            )
        try:
            client.wake_up(ip, dst)  # (d)
            if client.is_sleeping(ip, dst) or not client.is_sleeping(ip, src):  # (e)
                raise AdminError(f"after the wake, {dst.value} is not awake or {src.value} is not asleep")
        except AdminError as exc:
            return self._fail(
                namespace, plan, view, src, f"wake of the {dst.value} engine failed: {exc}", client
            )
        self.kube.patch_pod_annotations(namespace, view.name, {AWAKE_ANNOTATION: dst.value})  # (f)
        self._route(plan, view.name, dst)  # (g)
        log.info("pod %s swapped: %s -> %s", view.name, src.value, dst.value)
        return None

    def _fail(
        self, namespace: str, plan: HotSwapPlan, view: SwapPodView, back: Pool, why: str, client: AdminClient
    ) -> str:
        """Back on ``back``: the other engine to sleep (best effort), ``back`` awake and confirmed,
        routed, annotated for the Restart fallback.  Never both asleep while a wake can help."""
        assert view.ip is not None
        other = Pool.BASELINE if back is Pool.SPECULATIVE else Pool.SPECULATIVE
        with contextlib.suppress(AdminError):  # it did not wake, or cannot be reached
            client.sleep(view.ip, other)
        try:
            client.wake_up(view.ip, back)
            restored = not client.is_sleeping(view.ip, back)
        except AdminError:
            restored = False
        message = f"pod {view.name}: {why}; " + (
            f"back on the {back.value} engine" if restored else f"the {back.value} engine did not wake either"
        )
        self.kube.patch_pod_annotations(
            namespace,
            view.name,
            {AWAKE_ANNOTATION: back.value if restored else SWAPPING, FALLBACK_ANNOTATION: why[:200]},
        )
        self._route(plan, view.name, back if restored else None)
        log.warning("%s; the pod will be restarted (Restart strategy for this replica)", message)
        return message

    def repair(self, namespace: str, plan: HotSwapPlan, repair: Repair, client: AdminClient) -> str | None:
        """A pod with both engines asleep (or both awake): ``repair.sleep`` to sleep, ``repair.wake``
        awake, confirmed, annotated and routed.  A failure marks the pod for the Restart fallback."""
        view = next(p for p in plan.pods if p.name == repair.pod)
        assert view.ip is not None
        try:
            if repair.sleep is not None:
                self._route(plan, view.name, None)
                client.sleep(view.ip, repair.sleep)
            client.wake_up(view.ip, repair.wake)
            if client.is_sleeping(view.ip, repair.wake):
                raise AdminError(f"the {repair.wake.value} engine is still asleep after /wake_up")
        except AdminError as exc:
            why = f"repair (wake the {repair.wake.value} engine) failed: {exc}"
            self.kube.patch_pod_annotations(namespace, view.name, {FALLBACK_ANNOTATION: why[:200]})
            return f"pod {view.name}: {why}"
        self.kube.patch_pod_annotations(namespace, view.name, {AWAKE_ANNOTATION: repair.wake.value})
        self._route(plan, view.name, repair.wake)
        log.info("pod %s repaired: %s engine awake", view.name, repair.wake.value)
        return None

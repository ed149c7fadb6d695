"""Start the operator: credentials, Kopf settings, the webhook server, metrics and health."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client
from kubernetes import config as kube_config

from specops import __version__
from specops.checks.admission import normalise_prometheus_url
from specops.controller.cache import CachedKube, cached_kube
from specops.controller.certs import make_self_signed
from specops.controller.evaluator import Evaluator
from specops.controller.handlers import register
from specops.controller.kube import Kube
from specops.controller.leader import LeaderElector, LeaseSettings, default_identity, default_namespace
from specops.controller.ratelimit import figure_write_budget
from specops.controller.reconciler import Reconciler

log = logging.getLogger("specops.operator")


@dataclass
class OperatorOptions:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    kubeconfig: str | None = None  # None: in-cluster, else $KUBECONFIG / ~/.kube/config
    prometheus_url: str | None = None
    prometheus_timeout: float = 10.0  # seconds per read of a query; past it, an Error verdict
    prometheus_deadline: float = 30.0  # seconds for all the queries of one evaluation, however slow
    evaluation_workers: int = 8  # resources evaluated at once
    # URLs a resource's spec.policy.prometheusUrl may name, besides prometheus_url itself.
    allowed_prometheus_urls: list[str] = field(default_factory=list)
    log_format: str = "text"  # text | json
    verbose: bool = False
    metrics_port: int | None = 8080
    liveness_port: int | None = 8081
    standalone: bool = True
    peering_name: str = "specops"
    resync_seconds: float = 30.0
    evaluate: bool = True  # the metrics policy loop
    status_refresh_seconds: float = 60.0  # figures older than this are refreshed (within the budget)
    status_figure_writes_per_second: float = 2.0  # all resources together; state changes not counted
    webhooks: bool = True
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_host: str | None = None  # the name the API server calls; default: the listen address
    webhook_service: str | None = None  # NAMESPACE/NAME[:PORT]: register by Service reference
    webhook_cert: str | None = None  # provided certificate (cert-manager); else self-signed
    webhook_key: str | None = None
    webhook_ca: str | None = None
    webhook_config_name: str = "specops.dev"
    # Leader election on a coordination.k8s.io/v1 Lease: replicas all serve the webhook, one acts.
    leader_election: bool = False
    lease_name: str = "specops"
    lease_namespace: str | None = None  # default: the pod's namespace, else "default"
    leader_identity: str | None = None  # default: POD_NAME or the host name, plus a random suffix
    lease_duration: float = 15.0
    lease_renew_deadline: float = 10.0
    lease_retry_period: float = 2.0
    # Reads from watches (specops.controller.cache) instead of a GET per object per reconcile.
    read_cache: bool = True

    def lease_settings(self) -> LeaseSettings:
        return LeaseSettings(
            name=self.lease_name,
            namespace=self.lease_namespace or default_namespace(),
            identity=self.leader_identity or default_identity(),
            lease_duration=self.lease_duration,
            renew_deadline=self.lease_renew_deadline,
            retry_period=self.lease_retry_period,
        )


def prometheus_allowlist(opts: OperatorOptions) -> tuple[str, ...]:
    """The Prometheus URLs resources may name: the operator's own and the allowed ones.

    Raises ValueError naming the flag when one is not an http(s) URL with a host."""
    flagged = [("--prometheus-url", opts.prometheus_url)]
    flagged += [("--allowed-prometheus-url", url) for url in opts.allowed_prometheus_urls]
    for flag, url in flagged:
        if url is not None and normalise_prometheus_url(url) is None:
            raise ValueError(f"{flag} {url!r}: write an http:// or https:// URL with a host")
    return tuple(dict.fromkeys(u for u in [opts.prometheus_url, *opts.allowed_prometheus_urls] if u))


# Connections kept to the API server: the evaluation workers, the reconciles Kopf starts and the
# leader election all share the client (urllib3 would otherwise open and drop extra ones).
API_CONNECTIONS = 32


def api_client(kubeconfig: str | None) -> client.ApiClient:
    cfg = client.Configuration()
    if kubeconfig:
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            kube_config.load_incluster_config(client_configuration=cfg)
        except kube_config.ConfigException:
            kube_config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = API_CONNECTIONS
    return client.ApiClient(cfg)


class ServiceWebhookServer(kopf.WebhookServer):
    """Kopf's webhook server, registered by Service reference instead of URL.

    The API server resolves a ``url`` with its own DNS, which in most clusters cannot see
    ``*.svc`` names; a ``service`` reference is routed by the API server itself."""

    service: tuple[str, str, int] = ("", "", 443)

    async def __call__(self, fn: Any) -> AsyncIterator[kopf.WebhookClientConfig]:
        namespace, name, port = self.service
        async for config in super().__call__(fn):
            ref = kopf.WebhookClientConfigService(namespace=namespace, name=name, port=port, path="")
            out = kopf.WebhookClientConfig(service=ref)
            if config.get("caBundle"):
                out["caBundle"] = config["caBundle"]
            yield out


def parse_service_ref(text: str) -> tuple[str, str, int]:
    """'specops-system/specops-webhook:443' -> (namespace, name, port)."""
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name or (port and not port.isdigit()):
        raise ValueError(f"--webhook-service {text!r}: write NAMESPACE/NAME[:PORT]")
    return namespace, name, int(port or 443)


def _webhook_server(opts: OperatorOptions) -> kopf.WebhookServer:
    service = parse_service_ref(opts.webhook_service) if opts.webhook_service else None
    host = opts.webhook_host or (f"{service[1]}.{service[0]}.svc" if service else opts.webhook_listen)
    if opts.webhook_cert and opts.webhook_key:
        cert, key, ca = opts.webhook_cert, opts.webhook_key, opts.webhook_ca
    else:
        certdir = Path(tempfile.mkdtemp(prefix="specops-webhook-"))
        ca_path, cert_path, key_path = make_self_signed(certdir, [host, "localhost", "127.0.0.1"])
        cert, key, ca = str(cert_path), str(key_path), str(ca_path)
    if service:
        server = ServiceWebhookServer(
            addr=opts.webhook_listen,
            port=opts.webhook_port,
            host=host,
            certfile=cert,
            pkeyfile=key,
            cafile=ca,
        )
        server.service = service
        return server
    return kopf.WebhookServer(
        addr=opts.webhook_listen, port=opts.webhook_port, host=host, certfile=cert, pkeyfile=key, cafile=ca
    )


def build(opts: OperatorOptions) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings, client.ApiClient]:
    """A registry and settings for one operator instance (tests build one per test)."""
    allowed_urls = prometheus_allowlist(opts)
    api = api_client(opts.kubeconfig)
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    leadership = None
    if opts.leader_election:
        lease = opts.lease_settings()
        if problems := lease.problems():
            raise ValueError("; ".join(problems))
        leadership = LeaderElector(api, lease)
        # Each replica's requests carry its identity (audit logs tell the replicas apart).
        api.user_agent = f"specops/{__version__} ({lease.identity})"
    kube = Kube(api, may_write=leadership.is_leader if leadership is not None else None)
    reads: Kube | CachedKube = cached_kube(kube, tuple(opts.namespaces)) if opts.read_cache else kube
    reconciler = Reconciler(
        reads,
        status_refresh_seconds=opts.status_refresh_seconds,
        figure_writes=figure_write_budget(opts.status_figure_writes_per_second),
    )
    evaluator = (
        Evaluator(
            reconciler,
            opts.prometheus_url,
            tuple(opts.namespaces),
            query_timeout=opts.prometheus_timeout,
            allowed_urls=allowed_urls,
            deadline=opts.prometheus_deadline,
            workers=opts.evaluation_workers,
        )
        if opts.evaluate
        else None
    )
    register(
        registry,
        reconciler,
        evaluator,
        resync_seconds=opts.resync_seconds,
        webhooks=opts.webhooks,
        allowed_prometheus_urls=allowed_urls,
        leadership=leadership,
        cache=reads.cache if isinstance(reads, CachedKube) else None,
    )

    cfg = api.configuration

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        token = (cfg.api_key or {}).get("authorization", "") or (cfg.api_key or {}).get("BearerToken", "")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            token=token.removeprefix("Bearer ").strip() or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            default_namespace=None,
        )

    # Nothing on the user's object: no progress annotations, no finalizer, logs not posted as
    # Events (SpecOps posts its own, with distinct reasons).
    settings.persistence.finalizer = "specops.dev/finalizer"
    settings.posting.enabled = False
    settings.peering.standalone = opts.standalone
    settings.peering.name = opts.peering_name
    settings.peering.mandatory = not opts.standalone
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 16
    if opts.webhooks:
        settings.admission.server = _webhook_server(opts)
        settings.admission.managed = opts.webhook_config_name
    return registry, settings, api


async def run_async(
    opts: OperatorOptions,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    registry, settings, api = build(opts)
    liveness = f"http://0.0.0.0:{opts.liveness_port}/healthz" if opts.liveness_port else None
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=not opts.namespaces,
            namespaces=opts.namespaces,
            standalone=opts.standalone,
            # Naming a peering object makes Kopf wait for the peering CRD, even when standalone.
            peering_name=None if opts.standalone else opts.peering_name,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        api.close()


def run(opts: OperatorOptions) -> None:
    kopf.configure(
        verbose=opts.verbose,
        log_format=kopf.LogFormat.JSON if opts.log_format == "json" else kopf.LogFormat.FULL,
    )
    if opts.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(opts.metrics_port)
    asyncio.run(run_async(opts))


class OperatorThread:
    """The operator in a background thread with its own event loop (tests, demo, benchmarks)."""

    def __init__(self, opts: OperatorOptions) -> None:
        self.opts = opts
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="specops-operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(run_async(self.opts, self.stop_flag, self.ready_flag))
        except BaseException as exc:
            self.error = exc
            self.ready_flag.set()

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self._thread.start()
        if not self.ready_flag.wait(timeout) or self.error is not None:
            raise RuntimeError(f"operator did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self._thread.join(timeout)

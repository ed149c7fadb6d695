"""A recording reverse proxy in front of the kube-apiserver, for proving RBAC rules are used.

The operator under test is given a kubeconfig pointing here (TLS with a throwaway CA); every
request is forwarded unchanged (its bearer token included) and recorded as the RBAC attributes the
apiserver authorizes: verb, API group, resource, subresource, namespace, name, plus the status code.
Watches and other long responses are streamed through.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from specops.controller.certs import make_self_signed

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Request:
    """One API request in RBAC terms (what an authorizer sees)."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    status: int

    @property
    def rule_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def rbac_attributes(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str, str, str, str]:
    """(verb, group, resource, subresource, namespace, name) of a resource request; verb "" for
    non-resource paths (discovery, /version)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return "", "", "", "", "", ""
    if not rest:
        return "", "", "", "", "", ""  # group/version discovery
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if method == "GET":
        watching = query.get("watch", "").lower() in ("1", "true")
        verb = "watch" if watching else ("get" if name else "list")
    else:
        verb = _VERBS.get(method, method.lower())
        if method == "DELETE" and not name:
            verb = "deletecollection"
    return verb, group, resource, subresource, namespace, name


class RecordingProxy:
    """HTTPS on 127.0.0.1 forwarding to ``upstream`` (verified with ``upstream_ca``)."""

    def __init__(self, upstream: str, upstream_ca: Path, workdir: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_ca = upstream_ca
        self.ca_path, self._cert, self._key = make_self_signed(workdir, ["127.0.0.1", "localhost"])
        self.requests: list[Request] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="apiproxy", daemon=True)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> RecordingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def recorded(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        upstream_ssl = ssl.create_default_context(cafile=str(self.upstream_ca))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(str(self._cert), str(self._key))
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self._runner.cleanup()
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        verb, group, resource, sub, ns, name = rbac_attributes(
            request.method, request.path, dict(request.query)
        )
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            # Forward headers as sent: no Content-Type of aiohttp's own (the kubernetes client sends
            # none on some creates, which the apiserver reads as JSON).
            skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
        ) as upstream:
            if verb:
                with self._lock:
                    self.requests.append(Request(verb, group, resource, sub, ns, name, upstream.status))
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    response.headers[key] = value
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client went away (a watch cancelled at operator stop)
            return response

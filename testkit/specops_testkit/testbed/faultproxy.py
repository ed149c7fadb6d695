"""A fault-injecting HTTP proxy in front of a real Prometheus, for reliability tests.

Point the operator's Prometheus URL at the proxy and switch its fault at runtime, in process
(``proxy.set(Fault.SLOW, delay=5)``) or over HTTP (``POST /-/fault?mode=slow&delay=5``; ``GET
/-/fault`` shows the mode and the requests counted per mode):

=========  ==================================================================================
pass       forward unchanged
error      HTTP 500 with Prometheus's error JSON, upstream not asked
slow       forward, answering only after ``delay`` seconds (headers included)
trickle    forward, headers at once, then the body a few bytes every ``delay`` seconds: no single
           read waits long, so only a deadline on the whole answer stops it
nan        forward, every sample's value replaced with ``NaN`` (vectors, matrices, scalars)
inf        the same with ``+Inf``
empty      forward, every vector or matrix answer emptied (as for series that do not exist)
garbage    HTTP 200 with a body that is not JSON
=========  ==================================================================================

``python -m specops_testkit.testbed.faultproxy http://127.0.0.1:9090 --port 9091 --mode nan`` runs one
in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp import web

CONTROL_PATH = "/-/fault"
SESSION = web.AppKey("session", aiohttp.ClientSession)


class Fault(StrEnum):
    PASS = "pass"
    ERROR = "error"
    SLOW = "slow"
    TRICKLE = "trickle"
    NAN = "nan"
    INF = "inf"
    EMPTY = "empty"
    GARBAGE = "garbage"


TRICKLE_BYTES = 8  # body bytes per piece in trickle mode
_REPLACEMENT = {Fault.NAN: "NaN", Fault.INF: "+Inf"}


def rewrite(answer: dict[str, Any], fault: Fault) -> dict[str, Any]:
    """A Prometheus query answer as the fault shows it (answers that are not successes pass)."""
    data = answer.get("data")
    if answer.get("status") != "success" or not isinstance(data, dict):
        return answer
    kind, result = data.get("resultType"), data.get("result")
    if fault is Fault.EMPTY and kind in ("vector", "matrix"):
        return {**answer, "data": {**data, "result": []}}
    value = _REPLACEMENT.get(fault)
    if value is None:
        return answer
    if kind == "vector" and isinstance(result, list):
        result = [{**row, "value": [row["value"][0], value]} for row in result]
    elif kind == "matrix" and isinstance(result, list):
        result = [{**row, "values": [[t, value] for t, _ in row["values"]]} for row in result]
    elif kind == "scalar" and isinstance(result, list):
        result = [result[0], value]
    return {**answer, "data": {**data, "result": result}}


class FaultProxy:
    """The proxy on a loopback port, served by its own event loop in a background thread."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self.fault = Fault.PASS
        self.delay = 0.0
        self.requests: Counter[str] = Counter()  # forwarded or faked requests, per mode
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set(self, fault: Fault | str, delay: float | None = None) -> None:
        self.fault = Fault(fault)
        if delay is not None:
            self.delay = delay

    # --------------------------------------------------------------------------- serving

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", CONTROL_PATH, self._control)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.cleanup_ctx.append(self._session_ctx)
        return app

    async def _session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    async def _control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                delay = request.query.get("delay")
                self.set(request.query.get("mode", self.fault), float(delay) if delay else None)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"mode": self.fault.value, "delay": self.delay, "requests": self.requests})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault, delay = self.fault, self.delay
        self.requests[fault.value] += 1
        if fault is Fault.ERROR:
            body = {"status": "error", "errorType": "internal", "error": "injected by the fault proxy"}
            return web.json_response(body, status=500)
        if fault is Fault.GARBAGE:
            return web.Response(text="<html>not Prometheus</html>", content_type="text/html")
        if fault is Fault.SLOW:
            await asyncio.sleep(delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        try:
            async with request.app[SESSION].request(
                request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
            ) as upstream:
                raw = await upstream.read()
                status = upstream.status
                ctype = upstream.headers.get("Content-Type", "application/octet-stream")
        except aiohttp.ClientError as exc:  # upstream down: what a real reverse proxy answers
            return web.Response(status=502, text=f"fault proxy: upstream unavailable: {exc}")
        if fault in (Fault.NAN, Fault.INF, Fault.EMPTY) and ctype.startswith("application/json"):
            # Anything that is not a query answer is forwarded as it came.
            with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
                raw = json.dumps(rewrite(json.loads(raw), fault)).encode()
        if fault is Fault.TRICKLE:
            return await self._trickle(request, raw, status, ctype, delay)
        return web.Response(body=raw, status=status, headers={"Content-Type": ctype})

    async def _trickle(
        self, request: web.Request, raw: bytes, status: int, ctype: str, delay: float
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
        resp.content_length = len(raw)
        await resp.prepare(request)
        try:
            for i in range(0, len(raw), TRICKLE_BYTES):
                await resp.write(raw[i : i + TRICKLE_BYTES])
                await asyncio.sleep(delay)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client gave up: what a deadline is for
        return resp

    async def serve(self) -> None:
        """Serve until ``stop`` (the thread's main; also usable in a running loop)."""
        runner = web.AppRunner(self.app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def start(self, timeout: float = 10.0) -> FaultProxy:
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"fault proxy did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m specops_testkit.testbed.faultproxy", description=__doc__)
    parser.add_argument("upstream", help="the Prometheus to proxy, e.g. http://127.0.0.1:9090")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9091)
    parser.add_argument("--mode", choices=[f.value for f in Fault], default=Fault.PASS.value)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds, for --mode slow and trickle")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, args.host, args.port)
    proxy.set(args.mode, args.delay)
    print(f"fault proxy on http://{args.host}:{args.port} -> {args.upstream} ({args.mode})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(proxy.serve())


if __name__ == "__main__":
    main()

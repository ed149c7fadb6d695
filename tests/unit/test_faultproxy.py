"""The fault proxy's modes against a stub Prometheus, and the operator's query client through it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from specops.controller.evaluator import describe_failure, prometheus_query
from specops.metrics.promql import parse_vector
from specops_testkit.testbed.faultproxy import Fault, FaultProxy, rewrite

ROW = {
    "metric": {"namespace": "ns", "specops_name": "a", "specops_pool": "speculative"},
    "value": [1.0, "0.75"],
}


def answer(kind: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": result}}


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    async def query(request: web.Request) -> web.Response:
        return web.json_response(answer("vector", [ROW]))

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    p = FaultProxy(f"http://127.0.0.1:{runner.addresses[0][1]}")
    task = asyncio.create_task(p.serve())
    while not p.port:
        await asyncio.sleep(0.01)
    yield p
    p.stop()
    await task
    await runner.cleanup()


async def get(p: FaultProxy, path: str = "/api/v1/query?query=up") -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(p.url + path) as r:
        return r.status, await r.text()


@pytest.mark.asyncio
async def test_modes(proxy: FaultProxy) -> None:
    status, body = await get(proxy)
    assert status == 200 and '"0.75"' in body
    proxy.set(Fault.ERROR)
    assert (await get(proxy))[0] == 500
    proxy.set(Fault.GARBAGE)
    assert (await get(proxy)) == (200, "<html>not Prometheus</html>")
    proxy.set(Fault.NAN)
    assert '"NaN"' in (await get(proxy))[1]
    proxy.set(Fault.EMPTY)
    assert '"result": []' in (await get(proxy))[1]
    # Switched over HTTP too.
    async with aiohttp.ClientSession() as s, s.post(proxy.url + "/-/fault?mode=slow&delay=0.2") as r:
        assert (await r.json())["mode"] == "slow"
    assert proxy.fault is Fault.SLOW and proxy.delay == 0.2
    assert (await get(proxy))[0] == 200
    assert proxy.requests == {"pass": 1, "error": 1, "garbage": 1, "nan": 1, "empty": 1, "slow": 1}


def test_rewrite_covers_every_result_type() -> None:
    matrix = answer("matrix", [{"metric": {}, "values": [[1, "1"], [2, "2"]]}])
    assert rewrite(matrix, Fault.INF)["data"]["result"][0]["values"] == [[1, "+Inf"], [2, "+Inf"]]
    assert rewrite(answer("scalar", [1, "3"]), Fault.NAN)["data"]["result"] == [1, "NaN"]
    assert rewrite(matrix, Fault.EMPTY)["data"]["result"] == []
    failed = {"status": "error", "error": "bad query"}
    assert rewrite(failed, Fault.NAN) == failed
    nan = parse_vector(rewrite(answer("vector", [ROW]), Fault.NAN)["data"]["result"])
    assert math.isnan(nan[0].value)


async def failure(query: Any, url: str) -> tuple[str, str]:
    with pytest.raises(Exception) as info:  # noqa: PT011 (any failure: describe_failure names it)
        await asyncio.to_thread(query, url, "up")
    assert isinstance(info.value, Exception)
    return describe_failure(info.value, 0.3)


@pytest.mark.asyncio
async def test_operator_client_through_the_faults(proxy: FaultProxy) -> None:
    """The operator's query client: each failure named by its cause; a query past the timeout is
    not sent again (that would double the wait), a 500 is not retried, a 502 is, once."""
    query = prometheus_query(timeout=0.3)
    assert (await asyncio.to_thread(query, proxy.url, "up"))[0]["value"][1] == "0.75"
    proxy.set(Fault.SLOW, delay=1.5)
    assert await failure(query, proxy.url) == ("timeout", "timed out: no answer within 0.3 s")
    assert proxy.requests["slow"] == 1
    proxy.set(Fault.ERROR)
    kind, cause = await failure(query, proxy.url)
    assert (kind, cause[:9]) == ("http_error", "HTTP 500 "), cause
    assert "injected by the fault proxy" in cause
    assert proxy.requests["error"] == 1
    proxy.set(Fault.PASS)
    proxy.upstream = "http://127.0.0.1:1"  # the proxy answers 502, as a gateway would
    kind, cause = await failure(query, proxy.url)
    assert (kind, "502" in cause) == ("http_error", True), cause
    assert proxy.requests["pass"] == 1 + 2
    assert await failure(query, "http://127.0.0.1:1") == (
        "unreachable",
        "cannot connect: [Errno 111] Connection refused",
    )

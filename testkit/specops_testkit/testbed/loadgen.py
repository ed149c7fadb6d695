"""Open-loop load generator: Poisson arrivals from a scenario, spread over the ready pods.

Open loop on purpose: arrivals do not wait for answers, so a saturated service builds a queue
instead of slowing the client down (a closed loop would hide exactly the tail latency SpecOps
watches).  Each request is streamed to measure TTFT; one JSON line per request is written.
Bounded in requests and time, it always stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

import aiohttp

from specops.render.hotswap import ENDPOINT_SLICE_API_VERSIONS
from specops_testkit.testbed.scenario import Arrival, Scenario, arrivals

Resolver = Callable[[], Sequence[str]]


@dataclass
class Record:
    t: float
    phase: str
    target: str
    temperature: float
    prompt_kind: str
    max_tokens: int
    ok: bool
    status: int
    ttft: float | None
    e2e: float | None
    output_tokens: int
    tpot: float | None
    error: str | None = None


def _prompt(arrival: Arrival, rng: random.Random) -> str:
    # Three-letter words and a space: one token each by the usual 4-characters-a-token estimate
    # (the emulator's), so the prompt is promptTokens long.
    words = " ".join(
        rng.choice(("one", "two", "six", "ten", "red", "sky")) for _ in range(arrival.prompt_tokens)
    )
    if arrival.prompt_kind == "summarization":
        return f"Summarize the following article.\n\n{words}"
    return words


async def _one(
    session: aiohttp.ClientSession, target: str, model: str, arrival: Arrival, t0: float, prompt: str
) -> Record:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": arrival.max_tokens,
        "temperature": arrival.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "prompt_kind": arrival.prompt_kind,
    }
    start = time.monotonic()
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    rec = Record(
        t=round(start - t0, 3), phase=arrival.phase, target=target, temperature=arrival.temperature,
        prompt_kind=arrival.prompt_kind, max_tokens=arrival.max_tokens, ok=False, status=0,
        ttft=None, e2e=None, output_tokens=0, tpot=None,
    )  # fmt: skip
    try:
        async with session.post(f"http://{target}/v1/completions", json=body) as resp:
            rec.status = resp.status
            if resp.status != 200:
                rec.error = (await resp.text())[:200]
                return rec
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage_tokens = int(chunk["usage"].get("completion_tokens", 0))
                if any(c.get("text") for c in chunk.get("choices", [])):
                    chunks += 1
                    if first is None:
                        first = time.monotonic()
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
        return rec
    end = time.monotonic()
    tokens = usage_tokens if usage_tokens is not None else chunks
    rec.ok = True
    rec.ttft = round(first - start, 6) if first is not None else None
    rec.e2e = round(end - start, 6)
    rec.output_tokens = tokens
    if first is not None and tokens > 1:
        rec.tpot = round((end - first) / (tokens - 1), 6)
    return rec


async def run_load(
    scenario: Scenario,
    resolve: Resolver,
    model: str,
    out: IO[str] | None = None,
    max_requests: int = 100_000,
    max_in_flight: int = 4096,
    request_timeout: float = 120.0,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Play ``scenario`` against the addresses ``resolve`` returns (re-read twice a second)."""
    plan = arrivals(scenario)[:max_requests]
    rng = random.Random(scenario.seed)
    records: list[Record] = []
    in_flight: set[asyncio.Task[Record]] = set()
    targets: Sequence[str] = ()
    resolved_at = -1.0
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    connector = aiohttp.TCPConnector(limit=max_in_flight)

    def done(task: asyncio.Task[Record]) -> None:
        in_flight.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        rec = task.result()
        records.append(rec)
        if out is not None:
            out.write(json.dumps(asdict(rec)) + "\n")
        if on_record is not None:
            on_record(rec)

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.monotonic()
        for arrival in plan:
            delay = arrival.t - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            if now - resolved_at >= 0.5:
                targets = await asyncio.to_thread(resolve)
                resolved_at = now
            if not targets or len(in_flight) >= max_in_flight:
                rec = Record(
                    t=round(now - t0, 3), phase=arrival.phase, target="", temperature=arrival.temperature,
                    prompt_kind=arrival.prompt_kind, max_tokens=arrival.max_tokens, ok=False, status=0,
                    ttft=None, e2e=None, output_tokens=0, tpot=None,
                    error="no ready endpoint" if not targets else "client in-flight limit",
                )  # fmt: skip
                records.append(rec)
                continue
            target = rng.choice(list(targets))
            task = asyncio.create_task(_one(session, target, model, arrival, t0, _prompt(arrival, rng)))
            in_flight.add(task)
            task.add_done_callback(done)
        if in_flight:
            await asyncio.wait(in_flight, timeout=request_timeout)
    return records


def endpoints_resolver(api: Any, namespace: str, service: str) -> Resolver:
    """Where a Service routes, as ``ip:port`` (what kube-proxy would route to).

    A Service with a selector: its ready pods, read from the pods, not the Endpoints object (pods
    here get loopback IPs, 127.b.x.y, which the API server refuses in Endpoints, so the
    controller-manager cannot write them).  A Service without one (the HotSwap strategy's): the
    ready endpoints of the EndpointSlices labelled with its name, as whoever manages them wrote
    them, at the slice's port whose name matches the Service port's.
    """
    from kubernetes import client, dynamic

    core = client.CoreV1Api(api)
    slices_api: list[Any] = []  # the EndpointSlice resource, found on first use

    def from_slices(port_name: str | None) -> list[str]:
        if not slices_api:
            discovery = dynamic.DynamicClient(api)
            for version in ENDPOINT_SLICE_API_VERSIONS:
                try:
                    slices_api.append(discovery.resources.get(api_version=version, kind="EndpointSlice"))
                    break
                except dynamic.exceptions.ResourceNotFoundError:
                    continue
        listing = slices_api[0].get(
            namespace=namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
        out: list[str] = []
        for item in listing.to_dict().get("items") or []:
            port = next((p["port"] for p in item.get("ports") or [] if p.get("name") == port_name), None)
            if port is None:
                continue
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                out.extend(f"{address}:{port}" for address in endpoint.get("addresses") or [])
        return sorted(out)

    def resolve() -> list[str]:
        try:
            svc = core.read_namespaced_service(service, namespace)
            if not svc.spec.selector:
                return from_slices(svc.spec.ports[0].name if svc.spec.ports else None)
            selector = ",".join(f"{k}={v}" for k, v in (svc.spec.selector or {}).items())
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        except Exception:
            return []
        out = []
        for pod in pods:
            conds = {c.type: c.status for c in (pod.status.conditions or [])}
            if pod.metadata.deletion_timestamp or conds.get("Ready") != "True" or not pod.status.pod_ip:
                continue
            ports = [p.container_port for c in pod.spec.containers for p in (c.ports or [])]
            out.append(f"{pod.status.pod_ip}:{ports[0] if ports else 8000}")
        return sorted(out)

    return resolve


def summarize(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Per phase: requests, errors, P50/P99 TPOT and P99 TTFT (seconds)."""
    by_phase: dict[str, list[Record]] = {}
    for r in records:
        by_phase.setdefault(r.phase, []).append(r)

    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]

    out = {}
    for phase, recs in by_phase.items():
        tpots = [r.tpot for r in recs if r.tpot is not None]
        ttfts = [r.ttft for r in recs if r.ttft is not None]
        out[phase] = {
            "requests": float(len(recs)),
            "errors": float(sum(not r.ok for r in recs)),
            "p50_tpot": pct(tpots, 0.5),
            "p99_tpot": pct(tpots, 0.99),
            "p99_ttft": pct(ttfts, 0.99),
        }
    return out

"""The emulator's vLLM sleep mode: the dev-mode gate, endpoints per release, levels, pause modes,
durations and the GPU memory two engines share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from specops.vllm.dialect import parse_version
from specops_testkit.emulator import sleep as sleep_mode
from specops_testkit.emulator.args import ServingConfig, StartupError, derive_config, parse_args
from specops_testkit.emulator.server import Emulator, ServerSettings

MODEL = ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "4096"]
DRAFT = [
    "--speculative-config",
    '{"method":"draft_model","model":"meta-llama/Llama-3.2-1B-Instruct","num_speculative_tokens":3}',
]


def config(version: str = "0.32.0", *extra: str, sleep: bool = True, util: float = 0.9) -> ServingConfig:
    v = parse_version(version)
    argv = [
        *MODEL,
        "--gpu-memory-utilization",
        str(util),
        *(["--enable-sleep-mode"] if sleep else []),
        *extra,
    ]
    return derive_config(parse_args(argv, v), v, 80.0)


def settings(dev: bool = True, ledger: Path | None = None) -> ServerSettings:
    return ServerSettings(time_scale=200.0, load_seconds=0.0, seed=3, dev_mode=dev,
                          gpu_ledger=str(ledger) if ledger else None)  # fmt: skip


Start = Callable[[ServingConfig, ServerSettings], Awaitable[tuple[Emulator, str]]]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def _start(cfg: ServingConfig, s: ServerSettings) -> tuple[Emulator, str]:
        emulator = Emulator(cfg, s)
        runner = web.AppRunner(emulator.app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return emulator, f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield _start
    for runner in runners:
        await runner.cleanup()


async def status(session: aiohttp.ClientSession, method: str, url: str) -> int:
    async with session.request(method, url) as r:
        await r.read()
        return r.status


async def json_of(session: aiohttp.ClientSession, method: str, url: str) -> object:
    async with session.request(method, url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def completion(session: aiohttp.ClientSession, base: str, tokens: int = 40) -> Awaitable[dict[str, object]]:
    async def go() -> dict[str, object]:
        body = {"prompt": "hello", "max_tokens": tokens, "ignore_eos": True}
        async with session.post(f"{base}/v1/completions", json=body) as r:
            assert r.status == 200
            out: dict[str, object] = await r.json()
            return out

    return go()


# -------------------------------------------------------------------------------------- pure


@pytest.mark.parametrize(("raw", "on"), [("1", True), ("0", False), ("", None), ("true", None)])
def test_dev_mode_reads_an_integer_like_vllm(raw: str, on: bool | None) -> None:
    env = {"VLLM_SERVER_DEV_MODE": raw}
    if on is None:
        with pytest.raises(StartupError, match="VLLM_SERVER_DEV_MODE"):
            sleep_mode.dev_mode(env)
    else:
        assert sleep_mode.dev_mode(env) is on
    assert sleep_mode.dev_mode({}) is False


def test_durations_follow_the_published_wakes() -> None:
    # 2.9 s for a 30B model on one GPU (57 GiB), 5.3-5.7 s for Qwen3-235B-FP8 on 4 GPUs (219 GiB).
    assert sleep_mode.switch_seconds(57.0, 1) == pytest.approx(2.9)
    assert 5.3 <= sleep_mode.switch_seconds(219.0, 1) <= 5.7
    # The demo pair (70B INT8 + 8B BF16, 81 GiB) wakes in about 3.3 s; level 2 moves no weights.
    assert 3.0 < sleep_mode.switch_seconds(80.7, 1) < 3.6
    assert sleep_mode.switch_seconds(80.7, 2) < sleep_mode.switch_seconds(80.7, 1)
    assert sleep_mode.switch_seconds(80.7, 0) == 0.0


def test_sleeping_residual_matches_the_reported_figure() -> None:
    v = parse_version("0.32.0")
    small = derive_config(
        parse_args(["--model", "meta-llama/Llama-3.2-3B-Instruct", "--max-model-len", "4096"], v), v, 80.0
    )
    assert sleep_mode.asleep_gib(small) == pytest.approx(1.2, abs=0.1)


@pytest.mark.parametrize(
    ("version", "routes"),
    [
        ("0.7.2", ()),
        ("0.7.3", ("/sleep", "/wake_up")),
        ("0.8.0", ("/sleep", "/wake_up", "/is_sleeping")),
        ("0.32.0", ("/sleep", "/wake_up", "/is_sleeping")),
    ],
)
def test_routes_per_release(version: str, routes: tuple[str, ...]) -> None:
    v = parse_version(version)
    assert sleep_mode.sleep_routes(v, dev=True) == routes
    assert sleep_mode.sleep_routes(v, dev=False) == ()


# ------------------------------------------------------------------------------------- served


@pytest.mark.asyncio
async def test_without_dev_mode_there_are_no_sleep_endpoints(start: Start) -> None:
    _, base = await start(config(), settings(dev=False))
    async with aiohttp.ClientSession() as s:
        assert await status(s, "POST", f"{base}/sleep?level=1") == 404
        assert await status(s, "POST", f"{base}/wake_up") == 404
        assert await status(s, "GET", f"{base}/is_sleeping") == 404


@pytest.mark.asyncio
async def test_sleep_holds_new_requests_until_wake(start: Start) -> None:
    emulator, base = await start(config(), settings())
    async with aiohttp.ClientSession() as s:
        assert await json_of(s, "GET", f"{base}/is_sleeping") == {"is_sleeping": False}
        assert await json_of(s, "POST", f"{base}/sleep?level=1") == {"status": "sleeping", "level": 1}
        assert await json_of(s, "GET", f"{base}/is_sleeping") == {"is_sleeping": True}
        assert await status(s, "GET", f"{base}/health") == 200  # asleep is not unhealthy
        held = asyncio.ensure_future(completion(s, base))
        await asyncio.sleep(0.2)
        assert not held.done()  # queued, not served, while asleep
        assert await json_of(s, "POST", f"{base}/wake_up") == {"status": "awake", "tags": None}
        done = await asyncio.wait_for(held, 10)
        assert done["usage"]["completion_tokens"] == 40  # type: ignore[index]
        assert await json_of(s, "GET", f"{base}/is_sleeping") == {"is_sleeping": False}
        assert emulator.sleep_state.level is None


@pytest.mark.asyncio
async def test_abort_ends_in_flight_requests_and_keep_resumes_them(start: Start) -> None:
    _, base = await start(config(), settings())
    async with aiohttp.ClientSession() as s:
        running = asyncio.ensure_future(completion(s, base, tokens=4000))
        await asyncio.sleep(0.1)
        await json_of(s, "POST", f"{base}/sleep?level=1")  # mode abort, the default
        aborted = await asyncio.wait_for(running, 10)
        assert aborted["usage"]["completion_tokens"] < 4000  # type: ignore[index]
        await json_of(s, "POST", f"{base}/wake_up")
        kept = asyncio.ensure_future(completion(s, base, tokens=400))
        await asyncio.sleep(0.05)
        await json_of(s, "POST", f"{base}/sleep?level=1&mode=keep")
        await asyncio.sleep(0.1)
        assert not kept.done()
        await json_of(s, "POST", f"{base}/wake_up")
        finished = await asyncio.wait_for(kept, 10)
        assert finished["usage"]["completion_tokens"] == 400  # type: ignore[index]


@pytest.mark.asyncio
async def test_wait_lets_in_flight_requests_finish(start: Start) -> None:
    _, base = await start(config(), settings())
    async with aiohttp.ClientSession() as s:
        running = asyncio.ensure_future(completion(s, base, tokens=300))
        await asyncio.sleep(0.05)
        await json_of(s, "POST", f"{base}/sleep?level=1&mode=wait")
        assert running.done()
        assert (await running)["usage"]["completion_tokens"] == 300  # type: ignore[index]


@pytest.mark.asyncio
async def test_wake_by_tags_and_levels(start: Start) -> None:
    emulator, base = await start(config(), settings())
    async with aiohttp.ClientSession() as s:
        await json_of(s, "POST", f"{base}/sleep?level=2")
        assert emulator.sleep_state.weights_discarded
        assert await json_of(s, "POST", f"{base}/wake_up?tags=weights") == {
            "status": "sleeping",
            "tags": ["weights"],
        }
        assert await json_of(s, "GET", f"{base}/is_sleeping") == {"is_sleeping": True}
        assert await json_of(s, "POST", f"{base}/wake_up?tags=kv_cache") == {
            "status": "awake",
            "tags": ["kv_cache"],
        }
        # Level 0 pauses scheduling only (0.32).
        await json_of(s, "POST", f"{base}/sleep?level=0")
        assert await json_of(s, "GET", f"{base}/is_sleeping") == {"is_sleeping": True}
        assert emulator.sleep_state.asleep_tags == set()
        await json_of(s, "POST", f"{base}/wake_up")
        assert await json_of(s, "GET", f"{base}/is_sleeping") == {"is_sleeping": False}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("version", "query", "code"),
    [
        ("0.32.0", "level=3", 422),
        ("0.32.0", "level=one", 422),
        ("0.32.0", "mode=later", 422),
        ("0.20.0", "mode=later", 500),
        ("0.20.0", "level=0", 500),
        ("0.10.2", "level=x", 500),
    ],
)
async def test_bad_sleep_queries(start: Start, version: str, query: str, code: int) -> None:
    _, base = await start(config(version), settings())
    async with aiohttp.ClientSession() as s:
        assert await status(s, "POST", f"{base}/sleep?{query}") == code


@pytest.mark.asyncio
async def test_older_releases_answer_empty_and_ignore_tags(start: Start) -> None:
    emulator, base = await start(config("0.8.0"), settings())
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/sleep?level=1&mode=keep") as r:
            assert r.status == 200 and await r.read() == b""
        await status(s, "POST", f"{base}/wake_up?tags=weights")  # 0.8.0 has no tags: wakes all
        assert emulator.sleep_state.asleep_tags == set()


@pytest.mark.asyncio
async def test_sleep_needs_the_flag(start: Start) -> None:
    _, base = await start(config(sleep=False), settings())
    async with aiohttp.ClientSession() as s:
        assert await status(s, "POST", f"{base}/sleep?level=1") == 500


# --------------------------------------------------------------------------- two engines, one GPU


def test_second_engine_starts_only_while_the_first_sleeps(tmp_path: Path) -> None:
    ledger_path = tmp_path / "gpu.json"
    first, second = config(), config("0.32.0", *DRAFT)
    a = sleep_mode.GpuLedger(ledger_path, "a")
    sleep_mode.claim_at_start(first, a)
    with pytest.raises(StartupError, match="less than desired GPU memory utilization"):
        sleep_mode.claim_at_start(second, sleep_mode.GpuLedger(ledger_path, "b"))
    a.claim(80.0, sleep_mode.asleep_gib(first), "{need}")  # the first one sleeps
    sleep_mode.claim_at_start(second, sleep_mode.GpuLedger(ledger_path, "b"))
    a.release()
    assert sleep_mode.GpuLedger(ledger_path, "c").others() == pytest.approx(72.0)


@pytest.mark.asyncio
async def test_wake_that_does_not_fit_fails_and_stays_asleep(start: Start, tmp_path: Path) -> None:
    ledger = tmp_path / "gpu.json"
    spec_cfg, base_cfg = config("0.32.0", *DRAFT), config()
    spec_engine, spec_base = await start(spec_cfg, settings(ledger=ledger))
    sleep_mode.claim_at_start(spec_cfg, spec_engine.ledger)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as s:
        await json_of(s, "POST", f"{spec_base}/sleep?level=1")
        base_engine, base_url = await start(base_cfg, settings(ledger=ledger))
        base_engine.ledger = sleep_mode.GpuLedger(ledger, "baseline")
        sleep_mode.claim_at_start(base_cfg, base_engine.ledger)
        # Both awake would need 2 x 72 GiB of 80: the wake fails and the engine stays asleep.
        assert await status(s, "POST", f"{spec_base}/wake_up") == 500
        assert await json_of(s, "GET", f"{spec_base}/is_sleeping") == {"is_sleeping": True}
        # The swap done right: the awake engine sleeps first, then the other wakes.
        await json_of(s, "POST", f"{base_url}/sleep?level=1")
        assert await json_of(s, "POST", f"{spec_base}/wake_up") == {"status": "awake", "tags": None}
        assert await json_of(s, "GET", f"{base_url}/is_sleeping") == {"is_sleeping": True}

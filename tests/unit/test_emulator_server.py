"""The emulator's HTTP server on a loopback port: health, OpenAI endpoints and vLLM's metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from specops.render.manifests import Pool, vllm_args
from specops.vllm.dialect import parse_version
from specops_testkit.emulator.args import ServingConfig, derive_config, parse_args
from specops_testkit.emulator.metrics import E2E_BUCKETS_SHORT, ITL_BUCKETS, MetricSet
from specops_testkit.emulator.perf import PromptKind, acceptance, per_position_alpha
from specops_testkit.emulator.server import Emulator, ServerSettings
from tests.support.resources import load_example

FAST = ServerSettings(time_scale=200.0, load_seconds=0.3, seed=11)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def example_config(name: str, pool: Pool) -> ServingConfig:
    spec = load_example(name).spec
    version = parse_version(spec.vllm.version)
    return derive_config(
        parse_args(vllm_args(spec, pool), version), version, 80.0, spec.target.quantization.value
    )


Start = Callable[[ServingConfig], Awaitable[tuple[Emulator, str]]]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def _start(config: ServingConfig) -> tuple[Emulator, str]:
        emulator = Emulator(config, FAST)
        runner = web.AppRunner(emulator.app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return emulator, f"http://127.0.0.1:{port}"

    yield _start
    for runner in runners:
        await runner.cleanup()


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> list[int]:
    statuses = []
    for _ in range(200):
        async with session.get(f"{base}/health") as resp:
            statuses.append(resp.status)
            if resp.status == 200:
                return statuses
        await asyncio.sleep(0.02)
    raise AssertionError(f"never healthy: {statuses[-5:]}")


async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[Samples, dict[str, Any]]:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: Samples = {}
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


async def complete(session: aiohttp.ClientSession, base: str, **body: Any) -> dict[str, Any]:
    async with session.post(f"{base}/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


@pytest.mark.asyncio
async def test_speculative_pod_serves_and_counts_acceptance(start: Start) -> None:
    config = example_config("eagle3-llama8b.yaml", Pool.SPECULATIVE)
    _, base = await start(config)
    name = config.served_model_name
    async with aiohttp.ClientSession() as session:
        statuses = await wait_healthy(session, base)
        assert statuses[0] == 503
        async with session.get(f"{base}/v1/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == [name]

        one = await complete(session, base, model=name, prompt="Hello", max_tokens=12, ignore_eos=True)
        assert one["usage"]["completion_tokens"] == 12
        assert one["choices"][0]["finish_reason"] == "length"
        assert one["choices"][0]["text"]

        chunks = []
        body = {
            "model": name,
            "messages": [{"role": "user", "content": "Summarise this."}],
            "max_tokens": 30,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0,
        }
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    chunks.append(line.removeprefix("data: "))
        assert chunks[-1] == "[DONE]"
        parsed = [json.loads(c) for c in chunks[:-1]]
        assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
        assert parsed[-1]["usage"]["completion_tokens"] == 30
        assert parsed[-2]["choices"][0]["finish_reason"] == "length"

        # Low temperature, enough tokens to measure acceptance.
        jobs = [
            complete(
                session, base, model=name, prompt="x" * 400, max_tokens=250, temperature=0.0, ignore_eos=True
            )
            for _ in range(8)
        ]
        await asyncio.gather(*jobs)
        samples, families = await scrape(session, base)

    labels = {"model_name": name, "engine": "0"}
    drafts = total(samples, "vllm:spec_decode_num_drafts_total", **labels)
    draft_tokens = total(samples, "vllm:spec_decode_num_draft_tokens_total", **labels)
    accepted = total(samples, "vllm:spec_decode_num_accepted_tokens_total", **labels)
    first = total(samples, "vllm:spec_decode_num_accepted_tokens_per_pos_total", position="0", **labels)
    assert config.engine.proposer is not None
    rate = acceptance(config.engine.proposer.method, PromptKind.CHAT, 0.0, config.engine.proposer.pairing)
    k = config.num_speculative_tokens
    assert drafts > 300
    assert draft_tokens == drafts * k
    # accepted / draft tokens is the acceptance (what the operator thresholds); position 0 is alpha.
    assert accepted / draft_tokens == pytest.approx(rate, abs=0.07)
    assert first / drafts == pytest.approx(per_position_alpha(rate, k), abs=0.07)
    assert {
        s.labels["position"] for s in families["vllm:spec_decode_num_accepted_tokens_per_pos"].samples
    } == {str(i) for i in range(k)}
    assert total(samples, "vllm:request_success_total", finished_reason="length") == 10
    assert total(samples, "vllm:time_to_first_token_seconds_count") == 10
    # One inter-token observation per step per request, however many tokens the step emitted.
    itl = total(samples, "vllm:inter_token_latency_seconds_count")
    assert drafts <= itl < 12 + 30 + 8 * 250
    buckets = sorted(
        float(s.labels["le"])
        for s in families["vllm:inter_token_latency_seconds"].samples
        if "le" in s.labels
    )
    assert buckets[:-1] == list(ITL_BUCKETS)
    assert total(samples, "vllm:request_time_per_output_token_seconds_count") == 10
    assert "vllm:kv_cache_usage_perc" in names(samples)
    assert total(samples, "vllm:num_requests_running") == 0


@pytest.mark.asyncio
async def test_baseline_pod_has_no_spec_decode_series(start: Start) -> None:
    config = example_config("eagle3-llama8b.yaml", Pool.BASELINE)
    _, base = await start(config)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base)
        await complete(session, base, prompt="Hello", max_tokens=20)
        samples, _ = await scrape(session, base)
    assert not {n for n in names(samples) if "spec_decode" in n}
    assert total(samples, "vllm:e2e_request_latency_seconds_count") == 1


@pytest.mark.asyncio
async def test_legacy_pod_exports_the_v0_acceptance_gauge(start: Start) -> None:
    config = example_config("legacy-vllm-0.6.yaml", Pool.SPECULATIVE)
    assert config.v0_engine
    _, base = await start(config)
    name = config.served_model_name
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base)
        jobs = [
            complete(session, base, prompt="y" * 200, max_tokens=800, temperature=0.0, ignore_eos=True)
            for _ in range(4)
        ]
        await asyncio.gather(*jobs)
        samples, families = await scrape(session, base)
    got = names(samples)
    assert "vllm:spec_decode_draft_acceptance_rate" in got
    assert "vllm:spec_decode_efficiency" in got
    assert "vllm:spec_decode_num_drafts_total" not in got
    assert "vllm:spec_decode_num_accepted_tokens_per_pos_total" not in got
    assert "vllm:inter_token_latency_seconds_count" not in got
    assert "vllm:request_time_per_output_token_seconds_count" not in got
    assert "vllm:gpu_cache_usage_perc" in got
    # V0 labels carry no engine.  Its gauge reads the same acceptance as V1's counter ratio (the
    # emulator counts the accepted prefix on V0 too; real V0 summed every accepted position).
    gauge = samples[("vllm:spec_decode_draft_acceptance_rate", frozenset({("model_name", name)}))]
    assert config.engine.proposer is not None
    rate = acceptance(config.engine.proposer.method, PromptKind.CHAT, 0.0, config.engine.proposer.pairing)
    assert gauge == pytest.approx(rate, abs=0.07)
    assert gauge < per_position_alpha(rate, config.engine.proposer.num_speculative_tokens) - 0.05
    e2e = sorted(
        float(s.labels["le"])
        for s in families["vllm:e2e_request_latency_seconds"].samples
        if "le" in s.labels
    )
    assert e2e[:-1] == list(E2E_BUCKETS_SHORT)
    assert total(samples, "vllm:time_per_output_token_seconds_count") > 0


@pytest.mark.asyncio
async def test_bad_requests_get_vllm_errors(start: Start) -> None:
    config = example_config("eagle3-llama8b.yaml", Pool.BASELINE)
    _, base = await start(config)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base)
        cases = [
            ({"model": "other", "prompt": "x"}, {}, 404),
            ({"prompt": "x", "prompt_kind": "poetry"}, {}, 400),
            ({"prompt": "x"}, {"X-SpecOps-Prompt-Kind": "summarization"}, 200),
            ({"prompt": "x", "max_tokens": 9000}, {}, 400),
            ({"prompt": 42}, {}, 400),
        ]
        for body, headers, status in cases:
            async with session.post(f"{base}/v1/completions", json=body, headers=headers) as resp:
                assert resp.status == status, body
                if status != 200:
                    assert (await resp.json())["object"] == "error"


@pytest.mark.asyncio
async def test_client_going_away_aborts_the_request(start: Start) -> None:
    config = example_config("eagle3-llama8b.yaml", Pool.BASELINE)
    emulator, base = await start(config)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base)
        body = {"prompt": "x", "max_tokens": 5000, "ignore_eos": True, "stream": True}
        async with session.post(f"{base}/v1/completions", json=body) as resp:
            await resp.content.readline()
        for _ in range(200):
            samples, _ = await scrape(session, base)
            if total(samples, "vllm:request_success_total", finished_reason="abort") == 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the abort was never counted")
    assert not emulator.engine.has_work


@pytest.mark.parametrize(
    ("version", "v0", "expected", "absent"),
    [
        (
            "0.32.0",
            False,
            {"vllm:inter_token_latency_seconds", "vllm:kv_cache_usage_perc"},
            {"vllm:time_per_output_token_seconds", "vllm:gpu_cache_usage_perc"},
        ),
        (
            "0.10.2",
            False,
            {
                "vllm:time_per_output_token_seconds",
                "vllm:inter_token_latency_seconds",
                "vllm:gpu_cache_usage_perc",
                "vllm:kv_cache_usage_perc",
            },
            set(),
        ),
        (
            "0.8.3",
            False,
            {"vllm:time_per_output_token_seconds", "vllm:gpu_cache_usage_perc"},
            {"vllm:inter_token_latency_seconds", "vllm:kv_cache_usage_perc"},
        ),
    ],
)
def test_metric_names_follow_the_release(
    version: str, v0: bool, expected: set[str], absent: set[str]
) -> None:
    ms = MetricSet(parse_version(version), v0, speculative=True)
    exported = set(ms.itl_names) | set(ms.kv_usage_names)
    assert expected <= exported
    assert not absent & exported
    assert ms.v1_spec_counters
    assert ms.v1_spec_drafts == (parse_version(version) >= parse_version("0.8.5"))
    assert ms.labelnames == ("model_name", "engine")

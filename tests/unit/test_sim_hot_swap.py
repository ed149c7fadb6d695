"""The simulator's HotSwap: a replica swaps engines in place (drain, sleep, wake), no new pod."""

from __future__ import annotations

import math
import random

import pytest

from specops.api.v1alpha1 import RolloutStrategy
from specops.render.manifests import Pool, PoolSplit
from specops_testkit.emulator.perf import PromptKind, Request
from specops_testkit.sim.fleet import Fleet, engine_config, simulate
from specops_testkit.sim.hotswap import engine_weights_gib, swap_seconds
from specops_testkit.testbed.scenario import Arrival
from tests.support.resources import make_si

STARTUP = 60.0


def fleet(speculative: int, baseline: int) -> Fleet:
    spec = make_si().spec
    configs = {pool: engine_config(spec, pool) for pool in Pool}
    f = Fleet(configs, PoolSplit(speculative, baseline), STARTUP, seed=1)
    f.swap_seconds = swap_seconds(configs)
    return f


def test_demo_pair_swaps_in_seconds() -> None:
    spec = make_si().spec
    configs = {pool: engine_config(spec, pool) for pool in Pool}
    # 70B INT8 (65.8 GiB) with an 8B BF16 draft (15 GiB): one engine to sleep, the other awake.
    assert engine_weights_gib(configs[Pool.SPECULATIVE]) == pytest.approx(80.7, abs=0.5)
    assert engine_weights_gib(configs[Pool.BASELINE]) == pytest.approx(65.8, abs=0.5)
    assert 5.0 < swap_seconds(configs) < 8.0  # far from a 60 s cold start


def test_a_switch_swaps_one_replica_in_place() -> None:
    f = fleet(2, 0)
    pods_before = [p.name for p in f.pods]
    f.apply(PoolSplit(1, 1), now=10.0)
    assert [p.name for p in f.pods] == pods_before  # no new pod, no extra GPU
    swapping = [p for p in f.pods if p.swapping_to is not None]
    assert len(swapping) == 1 and swapping[0].swapping_to is Pool.BASELINE
    assert not swapping[0].ready(10.0)  # routed away at once
    assert len(f.live(Pool.SPECULATIVE, 10.0)) == 1
    f.retire(10.0)  # idle: drained at once, then sleep + wake
    pod = swapping[0]
    assert pod.pool is Pool.BASELINE and pod.swapping_to is None
    assert pod.ready_at == pytest.approx(10.0 + (f.swap_seconds or 0))
    assert not pod.ready(pod.ready_at - 0.01) and pod.ready(pod.ready_at)
    assert pod.engine.config is f.configs[Pool.BASELINE]


def test_a_swap_waits_for_in_flight_requests() -> None:
    f = fleet(1, 0)
    pod = f.pods[0]
    request = Request("r", prompt_tokens=100, max_tokens=50, temperature=0.0, prompt_kind=PromptKind.CHAT)
    pod.engine.add(request)
    f.apply(PoolSplit(0, 1), now=0.0)
    f.retire(0.0)
    assert pod.swapping_to is Pool.BASELINE  # still draining
    rng = random.Random(0)
    now = 0.0
    while pod.engine.has_work:
        now = pod.engine.step(rng, now).end
    pod.free_at = now
    f.retire(now)
    assert request.finished and pod.pool is Pool.BASELINE
    assert pod.ready_at == pytest.approx(now + (f.swap_seconds or 0))


def test_one_swap_at_a_time() -> None:
    f = fleet(3, 0)
    f.apply(PoolSplit(2, 1), now=0.0)
    f.apply(PoolSplit(1, 2), now=0.0)  # the rollout never asks this mid-swap; the fleet restarts then
    assert sum(p.swapping_to is not None for p in f.pods) == 1


def test_restart_strategy_is_unchanged() -> None:
    f = fleet(2, 0)
    f.swap_seconds = None
    f.apply(PoolSplit(1, 1), now=0.0)
    assert len(f.pods) == 3 and all(p.swapping_to is None for p in f.pods)
    assert any(p.ready_at == math.inf for p in f.pods)  # the successor waits for the GPUs


def test_simulated_hot_swap_switches_without_failures_or_new_pods() -> None:
    si = make_si(rollout={"strategy": "HotSwap"}, policy={"interval": "10s", "window": "60s"})
    assert si.spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP
    # Low load, then high temperature at the same load (acceptance collapses; a swap's short dip is
    # absorbed): the policy falls back, by swaps.  (A surge far past what the pools hold is ridden
    # out instead: the replica left could not carry a swapped one's load, docs/operator.md.)
    traffic = [Arrival(i * 0.5, "low", 0.0, "chat", 200, 100) for i in range(240)]
    traffic += [Arrival(120 + i * 0.5, "hot", 1.0, "chat", 200, 200) for i in range(480)]
    run = simulate(si.spec, traffic, startup_seconds=STARTUP, seed=2, adaptive=True)
    assert all(s.tpot is not None for s in run.served), "a request failed"
    assert any(t.to_mode.value == "Baseline" for t in run.transitions)

"""The simulator's derived-table strategies: the pods they build and the acceptance they derive from."""

from __future__ import annotations

import itertools

import pytest

from specops.render.manifests import Pool
from specops.vllm.speculation_table import derive_for_spec, flat_profile
from specops_testkit.emulator.perf import PromptKind, acceptance, per_position_alpha
from specops_testkit.sim.fleet import engine_config
from specops_testkit.sim.suite import (
    DERIVED,
    DERIVED_LIVE,
    SPECOPS_DERIVED,
    STATIC,
    STRATEGIES,
    live_table,
    pool_acceptance,
    with_auto_table,
)
from specops_testkit.testbed.scenario import Arrival
from tests.support.resources import load_scenario_resource

CHAT = load_scenario_resource("chat-llama70b.yaml").spec


def _traffic(*temperatures: float) -> list[Arrival]:
    return [
        Arrival(
            t=float(i), phase="p", prompt_tokens=256, max_tokens=128, temperature=temp, prompt_kind="chat"
        )
        for i, temp in enumerate(temperatures)
    ]


def test_the_derived_strategies_are_listed_and_the_table_ones_need_no_policy() -> None:
    assert {DERIVED, DERIVED_LIVE, SPECOPS_DERIVED} <= set(STRATEGIES)
    assert {DERIVED, DERIVED_LIVE} <= set(STATIC) and SPECOPS_DERIVED not in STATIC


def test_auto_pods_run_the_derived_table_with_the_drafts_memory() -> None:
    auto = engine_config(with_auto_table(CHAT), Pool.SPECULATIVE)
    plain_spec = engine_config(CHAT, Pool.SPECULATIVE)
    table = derive_for_spec(with_auto_table(CHAT))
    assert table is not None and auto.proposer is not None
    assert [list(row) for row in auto.proposer.k_by_batch_size] == table.vllm_rows()
    assert auto.kv_capacity_tokens == plain_spec.kv_capacity_tokens


def test_pool_acceptance_is_what_the_per_position_counters_would_read() -> None:
    cfg = engine_config(CHAT, Pool.SPECULATIVE)
    assert cfg.proposer is not None
    p = cfg.proposer
    rate = acceptance(p.method, PromptKind.CHAT, 0.3, p.pairing, cfg.constants)
    alpha = per_position_alpha(rate, 5, cfg.constants)
    # One temperature: every position reads the pair's alpha.
    assert pool_acceptance(CHAT, _traffic(0.3, 0.3)) == pytest.approx((alpha,) * 5)
    # A mix: later positions are reached mostly by the easy requests, so they read higher.
    mixed = pool_acceptance(CHAT, _traffic(0.1, 1.0))
    assert all(b >= a for a, b in itertools.pairwise(mixed)) and mixed[-1] > mixed[0]


def test_live_table_is_written_as_a_manual_table() -> None:
    spec = live_table(CHAT, _traffic(1.2, 1.2, 1.2))  # hot: low acceptance, less drafting
    rows = spec.speculation.tokens_per_batch_size
    assert rows and rows[0].min_batch_size == 1
    prior = derive_for_spec(CHAT, flat_profile(0.7, 5))
    assert prior is not None
    assert rows[0].num_speculative_tokens < prior.k_at(1)

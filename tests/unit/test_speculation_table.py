"""The derived k-by-batch-size table and the step-cost model under it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specops.api.v1alpha1 import DerivedSpeculationTable, SpeculativeInferenceSpec
from specops.vllm.speculation_table import (
    AcceptanceSource,
    SpeculationTable,
    TableRow,
    best_k,
    break_even_acceptance,
    conditional_from_cumulative,
    cumulative_from_conditional,
    default_acceptance,
    derive_for_spec,
    derive_table,
    derived_table_status,
    expected_tokens,
    flat_profile,
    status_table,
    table_changed_materially,
)
from specops.vllm.step_cost import GPU_PERFORMANCE, Shard, StepCostModel, pass_seconds, step_cost_model
from tests.support.resources import make_si

# ------------------------------------------------------------------------------ the step model

H200 = GPU_PERFORMANCE["H200-141GB"]
LLAMA8B_KV = 32 * 2 * 8 * 128 * 2  # bytes per token, BF16


def llama8b(tp: int) -> Shard:
    return Shard(
        layers=32,
        weight_bytes=8.03e9 * 2 / tp,
        flops_per_token=2 * 8.03e9 / tp,
        kv_bytes_per_token=LLAMA8B_KV / tp,
    )


# Measured decode step times (ms) of Llama-3.1-8B shapes on one H200, 2,048 cached tokens per
# sequence, by (tensor parallel size, batch, new tokens per sequence); docs/speculation-table.md.
MEASURED_MS = {
    (1, 1, 1): 5.83, (1, 1, 6): 6.20, (1, 16, 1): 6.32, (1, 16, 6): 7.08,
    (1, 64, 1): 9.56, (1, 64, 6): 16.06, (1, 128, 1): 15.20, (1, 128, 6): 27.82,
    (1, 256, 1): 24.44, (1, 256, 4): 41.35, (1, 256, 6): 53.86,
    (2, 1, 1): 4.20, (2, 1, 6): 4.48, (2, 16, 1): 4.35, (2, 16, 6): 4.85,
    (2, 64, 1): 5.66, (2, 64, 6): 8.81, (2, 128, 1): 7.89, (2, 128, 6): 15.01,
    (2, 256, 1): 12.91, (2, 256, 4): 21.92, (2, 256, 6): 28.38,
}  # fmt: skip


@pytest.mark.parametrize(("key", "measured_ms"), MEASURED_MS.items(), ids=str)
def test_step_model_is_near_the_measured_h200_steps(key: tuple[int, int, int], measured_ms: float) -> None:
    tp, batch, new = key
    modelled = pass_seconds(llama8b(tp), H200, batch, new, 2048) * 1000
    assert modelled == pytest.approx(measured_ms, rel=0.15)


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("batch", [1, 16, 64, 128, 256])
def test_step_model_prices_verification_against_a_plain_step_as_measured(tp: int, batch: int) -> None:
    # What the table needs most: the cost of k + 1 positions over 1 at the same batch.
    measured = MEASURED_MS[(tp, batch, 6)] / MEASURED_MS[(tp, batch, 1)]
    shard = llama8b(tp)
    modelled = pass_seconds(shard, H200, batch, 6, 2048) / pass_seconds(shard, H200, batch, 1, 2048)
    assert modelled == pytest.approx(measured, rel=0.12)


H200_70B_8B = SpeculativeInferenceSpec.model_validate(
    {
        "target": {
            "model": "meta-llama/Llama-3.1-70B-Instruct",
            "tensorParallelSize": 2,
            "maxModelLen": 8192,
        },
        "speculation": {
            "method": "draft_model",
            "numSpeculativeTokens": 5,
            "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
        },
        "resources": {"gpusPerReplica": 2, "gpuType": "H200-141GB"},
    }
)


@pytest.mark.parametrize(("batch", "published"), [(1, 0.2), (64, 0.37), (128, 0.5), (256, 0.75)])
def test_break_even_acceptance_rises_with_load_as_published(batch: int, published: float) -> None:
    # Llama-3.1-70B with an 8B draft at k=5, both BF16 at tensor parallel 2 on H200s: break-even
    # counter acceptance of about 0.2 at batch 1 rising to about 0.75 at batch 256, from the same
    # measurements.  Tolerance: 0.1 absolute at each batch size.
    cost = step_cost_model(H200_70B_8B, context_tokens=2048)
    assert cost is not None
    assert break_even_acceptance(cost, batch, 5) == pytest.approx(published, abs=0.1)


def test_break_even_acceptance_never_falls_as_the_batch_grows() -> None:
    cost = step_cost_model(H200_70B_8B, context_tokens=2048)
    assert cost is not None
    curve = [break_even_acceptance(cost, b, 5) for b in range(1, 513)]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(curve))


def test_step_cost_model_needs_known_models() -> None:
    unknown = make_si(
        speculation={"draft": {"model": "acme/tiny-draft", "parameters": "1B", "tokenizer": "llama3"}}
    )
    assert step_cost_model(unknown.spec) is None  # no layer shape for the draft
    assert derive_for_spec(unknown.spec) is None


def test_gpu_memory_without_a_type_is_costed_as_the_fallback_gpu() -> None:
    cost = step_cost_model(make_si(resources={"gpuType": None, "gpuMemoryGiB": 80}).spec)
    assert cost is not None and cost.gpu.key == "H100-80GB"


# ---------------------------------------------------------------------------------- acceptance


@given(st.lists(st.floats(0.0, 1.0).filter(lambda a: a == 0 or a > 1e-6), min_size=1, max_size=8))
def test_cumulative_and_conditional_acceptance_convert_both_ways(conditional: list[float]) -> None:
    cumulative = cumulative_from_conditional(conditional)
    assert all(b <= a for a, b in itertools.pairwise(cumulative))
    back = conditional_from_cumulative(cumulative)
    for i, (a, b) in enumerate(zip(conditional, back, strict=True)):
        if i == 0 or cumulative[i - 1] > 0:
            assert b == pytest.approx(a, abs=1e-9)


def test_expected_tokens_is_leviathans_formula_for_a_flat_profile() -> None:
    a = 0.8
    assert expected_tokens((a,) * 5, 5) == pytest.approx((1 - a**6) / (1 - a))
    assert expected_tokens((a,) * 5, 0) == 1.0
    assert expected_tokens((0.9, 0.5), 4) == pytest.approx(1 + 0.9 + 0.45 + 0.225 + 0.1125)  # last repeats


@given(st.floats(0.0, 1.0), st.integers(1, 16))
def test_flat_profile_makes_the_counters_read_the_rate(rate: float, k: int) -> None:
    profile = flat_profile(rate, k)
    assert len(profile) == k
    assert (expected_tokens(profile, k) - 1) / k == pytest.approx(rate, abs=1e-4)


@pytest.mark.parametrize("bad", [[1.2], [-0.1], [0.5, float("nan")]])
def test_acceptance_outside_zero_to_one_is_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="fraction"):
        cumulative_from_conditional(bad)


# --------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class LinearCost:
    """A toy step: fixed part, per-token compute, per-draft-pass cost."""

    fixed: float
    per_token: float
    per_draft: float

    def step_seconds(self, batch: int, k: int) -> float:
        return self.fixed + batch * (k + 1) * self.per_token + k * self.per_draft


def test_memory_bound_steps_draft_everything_and_compute_bound_ones_nothing() -> None:
    free = derive_table((0.8,) * 5, LinearCost(0.02, 0.0, 0.0), max_k=5, max_batch_size=64)
    assert free.vllm_rows() == [[1, 64, 5]]
    costly = derive_table((0.8,) * 5, LinearCost(0.0, 0.01, 0.0), max_k=5, max_batch_size=64)
    assert costly.vllm_rows() == [[1, 64, 0]]


def test_rows_cover_every_batch_size_once_and_merge_equal_k() -> None:
    table = derive_table((0.85,) * 5, LinearCost(0.02, 1e-5, 1e-3), max_k=5, max_batch_size=1024)
    rows = table.vllm_rows()
    assert rows[0][0] == 1 and rows[-1][1] == 1024
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(rows))
    assert all(a[2] != b[2] for a, b in itertools.pairwise(rows))
    assert 2 <= len(rows) <= 6
    assert table.k_at(1) == 5 and table.k_at(10**6) == rows[-1][2]


CHAT = make_si().spec  # Llama-3.1-70B INT8 + 8B draft, 2 x H100, k=5
NGRAM = make_si(
    target={"model": "Qwen/Qwen2.5-14B-Instruct", "quantization": "none", "tensorParallelSize": 1},
    speculation={"method": "ngram", "numSpeculativeTokens": 4, "draft": None},
    resources={"gpusPerReplica": 1, "gpuType": "L40S-48GB"},
).spec
EAGLE = make_si(
    target={"model": "meta-llama/Llama-3.1-8B-Instruct", "quantization": "none", "tensorParallelSize": 1},
    speculation={
        "method": "eagle3",
        "numSpeculativeTokens": 6,
        "draft": {"model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"},
    },
    resources={"gpusPerReplica": 1, "gpuType": "A100-80GB"},
).spec
SPECS = {"chat": CHAT, "h200-bf16": H200_70B_8B, "ngram": NGRAM, "eagle3": EAGLE}


def _cost(name: str) -> StepCostModel:
    cost = step_cost_model(SPECS[name])
    assert cost is not None
    return cost


COSTS = {name: _cost(name) for name in SPECS}
specs = st.sampled_from(sorted(SPECS))
profiles = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(name=specs, profile=profiles)
def test_best_k_never_rises_with_the_batch(name: str, profile: list[float]) -> None:
    # The raw optimum, before derive_table's guard: the cost model itself gives a k that only falls.
    cost, max_k = COSTS[name], SPECS[name].speculation.num_speculative_tokens
    ks = [
        best_k(profile, cost, b, max_k)[0]
        for b in (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
    ]
    assert all(b <= a for a, b in itertools.pairwise(ks)), ks


@dataclass(frozen=True)
class CheaperDraftsUnderLoad:
    """A cost whose draft passes get cheaper as the batch grows: left alone, it drafts more at 64."""

    def step_seconds(self, batch: int, k: int) -> float:
        return 0.02 + k * (0.02 if batch < 64 else 0.001)


def test_the_table_never_drafts_more_under_more_load() -> None:
    raw = [best_k((0.7,) * 5, CheaperDraftsUnderLoad(), b, 5)[0] for b in (1, 64)]
    assert raw[0] < raw[1]
    table = derive_table((0.7,) * 5, CheaperDraftsUnderLoad(), max_k=5, max_batch_size=128)
    assert table.k_at(64) == table.k_at(1) == raw[0]


@settings(max_examples=40, deadline=None)
@given(name=specs, low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_k_never_falls_as_acceptance_rises(name: str, low: float, high: float) -> None:
    low, high = sorted((low, high))
    cost, max_k = COSTS[name], SPECS[name].speculation.num_speculative_tokens
    a = derive_table((low,) * max_k, cost, max_k=max_k, max_batch_size=512)
    b = derive_table((high,) * max_k, cost, max_k=max_k, max_batch_size=512)
    assert all(a.k_at(n) <= b.k_at(n) for n in range(1, 513))


@settings(max_examples=40, deadline=None)
@given(name=specs, profile=profiles)
def test_drafting_only_where_it_pays(name: str, profile: list[float]) -> None:
    cost, max_k = COSTS[name], SPECS[name].speculation.num_speculative_tokens
    table = derive_table(profile, cost, max_k=max_k, max_batch_size=512)
    for row in table.rows:
        assert row.speedup_min <= row.speedup_max
        if row.num_speculative_tokens > 0:
            assert row.speedup_min >= 1.02  # MIN_GAIN (rounded to 4 places)
        else:
            assert row.speedup_min == row.speedup_max == 1.0
    assert len(table.rows) <= max_k + 1
    assert all(
        b.num_speculative_tokens < a.num_speculative_tokens
        for a, b in zip(table.rows, table.rows[1:], strict=False)
    )


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.02])
def test_no_acceptance_no_drafting(name: str, alpha: float) -> None:
    max_k = SPECS[name].speculation.num_speculative_tokens
    table = derive_table((alpha,) * max_k, COSTS[name], max_k=max_k, max_batch_size=1024)
    assert table.vllm_rows() == [[1, 1024, 0]]


def test_default_table_for_the_chat_resource() -> None:
    # The catalog's prior (counter acceptance 0.70 at k=5) on 2 x H100 with an INT8 70B target:
    # full k at small batches, less as the batch grows, none past a few hundred sequences.
    table = derive_for_spec(CHAT)
    assert table is not None
    assert default_acceptance(CHAT) == flat_profile(0.70, 5)
    assert table.k_at(1) == 5 and table.k_at(1024) == 0
    assert 1.5 < table.speedup_at(1) < 2.2
    assert table.speedup_at(1024) == 1.0


def test_live_acceptance_replaces_the_prior() -> None:
    low = derive_for_spec(CHAT, (0.3,) * 5)
    prior = derive_for_spec(CHAT)
    assert low is not None and prior is not None
    assert low.k_at(1) < prior.k_at(1)
    assert low.acceptance == (0.3,) * 5


def test_status_model_carries_the_rows_and_the_data_they_came_from() -> None:
    table = derive_for_spec(CHAT)
    assert table is not None
    status = derived_table_status(table, AcceptanceSource.DEFAULT, "2030-01-01T00:00:00Z")
    assert isinstance(status, DerivedSpeculationTable)
    assert [
        [r.min_batch_size, r.max_batch_size, r.num_speculative_tokens] for r in status.rows
    ] == table.vllm_rows()
    assert status.acceptance_source == "Default"
    assert len(status.acceptance_per_position) == 5
    dumped = status.model_dump(by_alias=True)
    assert set(dumped["rows"][0]) == {
        "minBatchSize", "maxBatchSize", "numSpeculativeTokens", "expectedSpeedupMin", "expectedSpeedupMax",
    }  # fmt: skip


def test_status_table_uses_observed_acceptance_else_the_prior() -> None:
    prior = status_table(CHAT, [], "2030-01-01T00:00:00Z")
    live = status_table(CHAT, [0.5, 0.45, 0.4, 0.4, 0.4], "2030-01-01T00:00:00Z")
    assert prior is not None and live is not None
    assert (prior.acceptance_source, live.acceptance_source) == ("Default", "Live")
    assert live.acceptance_per_position == [0.5, 0.45, 0.4, 0.4, 0.4]
    assert live.rows[0].num_speculative_tokens < prior.rows[0].num_speculative_tokens
    unknown = make_si(
        speculation={"draft": {"model": "acme/tiny", "parameters": "1B", "tokenizer": "llama3"}}
    )
    assert status_table(unknown.spec, [], "2030-01-01T00:00:00Z") is None


# ------------------------------------------------------------------------------ re-rendering


def _table(*rows: tuple[int, int, int]) -> SpeculationTable:
    return SpeculationTable(
        rows=tuple(TableRow(lo, hi, k, 1.0, 1.0) for lo, hi, k in rows), acceptance=(), speedups=()
    )


@pytest.mark.parametrize(
    ("old", "new", "material"),
    [
        (None, _table((1, 1024, 3)), True),
        (_table((1, 1024, 3)), _table((1, 1024, 3)), False),
        # k moves by one somewhere: noise.
        (
            _table((1, 20, 5), (21, 100, 2), (101, 1024, 0)),
            _table((1, 20, 4), (21, 100, 2), (101, 1024, 0)),
            False,
        ),
        # k moves by two: material.
        (
            _table((1, 20, 5), (21, 100, 2), (101, 1024, 0)),
            _table((1, 20, 3), (21, 100, 2), (101, 1024, 0)),
            True,
        ),
        # The drafting cut-off moves by 10%: noise; by 50%: material.
        (_table((1, 100, 2), (101, 1024, 0)), _table((1, 110, 2), (111, 1024, 0)), False),
        (_table((1, 100, 2), (101, 1024, 0)), _table((1, 150, 2), (151, 1024, 0)), True),
        # Far from any edge of either table, k differs by two: material.
        (_table((1, 1024, 3)), _table((1, 10, 3), (11, 500, 1), (501, 1024, 3)), True),
        (
            _table((1, 100, 1), (101, 400, 3), (401, 1024, 1)),
            _table((1, 80, 1), (81, 125, 3), (126, 330, 1), (331, 500, 3), (501, 1024, 1)),
            True,
        ),
        # Drafting on or off altogether.
        (_table((1, 1024, 0)), _table((1, 4, 1), (5, 1024, 0)), True),
        (_table((1, 4, 1), (5, 1024, 0)), _table((1, 1024, 0)), True),
    ],
)
def test_table_changed_materially(
    old: SpeculationTable | None, new: SpeculationTable, material: bool
) -> None:
    assert table_changed_materially(old, new) is material

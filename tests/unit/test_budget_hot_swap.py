"""The hot-swap budget: both engines on the same GPUs, one asleep, and host RAM for the sleeping weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from specops.cli import app
from specops.vllm.budget import (
    SLEEP_RESIDUAL_BASE_GIB,
    plan_budget,
    quantity_gib,
    sleeping_residual_gib,
)
from tests.support.resources import make_doc, make_si

HOT_SWAP = {"strategy": "HotSwap"}


def test_residual_matches_the_reported_figures() -> None:
    # About 1.2 GiB for a 3B model (6 GiB of BF16 weights on one GPU) ...
    assert sleeping_residual_gib(6.0) == pytest.approx(1.2, abs=0.05)
    # ... and several GiB per GPU for a very large model (Qwen3-235B-FP8 on 4 GPUs, ~55 GiB each).
    assert 3.0 <= sleeping_residual_gib(55.0) <= 5.0
    assert sleeping_residual_gib(0.0) == SLEEP_RESIDUAL_BASE_GIB


def test_no_hot_swap_figures_for_other_strategies() -> None:
    assert plan_budget(make_si().spec).hot_swap is None
    assert plan_budget(make_si(rollout={"strategy": "Surge"}).spec).hot_swap is None


def test_demo_pair_fits_with_both_engines() -> None:
    plan = plan_budget(make_si(rollout=HOT_SWAP).spec)
    hs = plan.hot_swap
    assert hs is not None and plan.fits
    # 70B INT8 over 2 GPUs is 32.9 GiB per GPU; the 8B BF16 draft adds 7.5.
    assert hs.baseline.weights_per_gpu_gib == pytest.approx(65.75 / 2, abs=0.01)
    assert hs.speculative.weights_per_gpu_gib == pytest.approx(65.75 / 2 + 14.96 / 2, abs=0.01)
    # At 0.9 of 80 GiB, 8 GiB per GPU is left: room for either engine asleep, no share lowered.
    assert hs.speculative.gpu_memory_utilization == hs.baseline.gpu_memory_utilization == 0.9
    assert hs.speculative.kv_cache_gib == pytest.approx(plan.kv_cache_gib, abs=0.01)
    assert hs.baseline.max_concurrent_sequences == plan.max_concurrent_sequences_without_draft
    # Asleep, the speculative engine keeps target + draft in host RAM; mid-swap both engines do.
    assert hs.speculative.host_memory_asleep_gib == pytest.approx(65.75 + 14.96, abs=0.02)
    assert hs.baseline.host_memory_asleep_gib == pytest.approx(65.75, abs=0.01)
    assert hs.host_memory_peak_gib == pytest.approx(2 * 65.75 + 14.96, abs=0.02)
    for engine, other in ((hs.speculative, hs.baseline), (hs.baseline, hs.speculative)):
        # Per GPU: the awake engine's share plus the other's residual fits the GPU.
        assert engine.gpu_memory_utilization * 80 + other.sleeping_residual_gib <= 80


def test_share_is_lowered_when_the_sleeping_engine_would_not_fit() -> None:
    si = make_si(rollout=HOT_SWAP, resources={"gpuMemoryUtilization": 0.99})
    plan = plan_budget(si.spec)
    hs = plan.hot_swap
    assert hs is not None
    assert hs.speculative.gpu_memory_utilization < 0.99
    assert hs.baseline.gpu_memory_utilization < 0.99
    for engine, other in ((hs.speculative, hs.baseline), (hs.baseline, hs.speculative)):
        assert engine.gpu_memory_utilization * 80 + other.sleeping_residual_gib <= 80
        assert (engine.gpu_memory_utilization + 0.01) * 80 + other.sleeping_residual_gib > 80  # no slack
    lowered = [f for f in plan.warnings if f.code == "HotSwapShareLowered"]
    assert {f.field for f in lowered} == {"spec.resources.gpuMemoryUtilization"}
    assert len(lowered) == 2


def test_refused_when_an_engine_cannot_hold_its_weights_beside_the_other() -> None:
    # 70B BF16 on 2 x 80 GiB: 65.7 GiB per GPU, 73.2 with the draft; beside the other engine asleep
    # (4.6 GiB per GPU) the speculative engine's share holds no KV cache.
    si = make_si(
        rollout=HOT_SWAP,
        target={"model": "meta-llama/Llama-3.1-70B-Instruct", "quantization": "none"},
        resources={"gpuMemoryUtilization": 0.95},
    )
    plan = plan_budget(si.spec)
    errors = [f for f in plan.errors if f.code == "HotSwapDoesNotFit"]
    assert errors, plan.findings
    assert errors[0].field == "spec.rollout.strategy"
    assert "strategy Restart or Surge" in errors[0].message


@pytest.mark.parametrize(
    ("memory", "refused"), [("64Gi", True), ("80Gi", True), ("96Gi", False), ("120G", False), (None, False)]
)
def test_host_memory_limit_must_hold_the_sleeping_weights(memory: str | None, refused: bool) -> None:
    resources = {"memory": memory} if memory else {}
    plan = plan_budget(make_si(rollout=HOT_SWAP, resources=resources).spec)
    codes = [(f.code, f.field) for f in plan.errors]
    assert (("HostMemoryTooSmall", "spec.resources.memory") in codes) is refused


@pytest.mark.parametrize(
    ("text", "gib"),
    [
        ("64Gi", 64.0),
        ("1Ti", 1024.0),
        ("1073741824", 1.0),
        ("1.5Gi", 1.5),
        ("2G", 2e9 / 2**30),
        ("lots", None),
    ],
)
def test_quantity_gib(text: str, gib: float | None) -> None:
    assert quantity_gib(text) == (pytest.approx(gib) if gib is not None else None)


def test_plan_shows_the_hot_swap(tmp_path: Path) -> None:
    path = tmp_path / "si.yaml"
    path.write_text(yaml.safe_dump(make_doc(rollout=HOT_SWAP)))
    runner = CliRunner()
    table = runner.invoke(app, ["plan", str(path)])
    assert table.exit_code == 0, table.output
    assert "hot swap: speculative engine" in table.output
    assert "host RAM per replica, peak" in table.output
    out = runner.invoke(app, ["plan", str(path), "-o", "json"])
    doc = json.loads(out.output)
    docs = doc if isinstance(doc, list) else [doc]
    hs = docs[0]["hot_swap"]
    assert hs["speculative"]["gpu_memory_utilization"] == 0.9
    assert hs["host_memory_peak_gib"] == pytest.approx(146.46, abs=0.02)

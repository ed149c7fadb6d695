"""spec.rollout.strategy: Restart, Surge (maxSurge 1) and HotSwap, and the vLLM versions HotSwap needs."""

from __future__ import annotations

from typing import Any

import pytest

from specops.api.v1alpha1 import HOT_SWAP_SLEEP_LEVEL, RolloutSpec, RolloutStrategy
from specops.checks.validation import ResourceError, check_resource, load_resource
from specops.vllm.dialect import (
    MANAGED_FLAGS,
    SLEEP_MODE_SINCE,
    flag_allowed,
    format_version,
    parse_version,
    sleep_mode_gate,
)
from tests.support.resources import make_doc, make_si


@pytest.mark.parametrize(
    ("rollout", "strategy", "surge"),
    [
        ({}, RolloutStrategy.RESTART, 0),
        ({"maxSurge": 0}, RolloutStrategy.RESTART, 0),
        ({"maxSurge": 1}, RolloutStrategy.SURGE, 1),
        ({"strategy": "Restart"}, RolloutStrategy.RESTART, 0),
        ({"strategy": "Surge"}, RolloutStrategy.SURGE, 1),
        # The apiserver fills maxSurge: 0 in; beside Surge it reads as unset.
        ({"strategy": "Surge", "maxSurge": 0}, RolloutStrategy.SURGE, 1),
        ({"strategy": "Surge", "maxSurge": 1}, RolloutStrategy.SURGE, 1),
        ({"strategy": "HotSwap"}, RolloutStrategy.HOT_SWAP, 0),
        ({"strategy": "HotSwap", "maxSurge": 0}, RolloutStrategy.HOT_SWAP, 0),
    ],
)
def test_strategy_and_surge(rollout: dict[str, Any], strategy: RolloutStrategy, surge: int) -> None:
    spec = RolloutSpec.model_validate(rollout)
    assert spec.effective_strategy is strategy
    assert spec.max_surge == surge


@pytest.mark.parametrize(
    ("rollout", "fragment"),
    [
        ({"strategy": "Restart", "maxSurge": 1}, "strategy Restart starts no extra pod"),
        ({"strategy": "HotSwap", "maxSurge": 1}, "strategy HotSwap starts no extra pod"),
        ({"hotSwap": {}}, "rollout.hotSwap applies only to strategy HotSwap"),
        ({"strategy": "Surge", "hotSwap": {}}, "rollout.hotSwap applies only to strategy HotSwap"),
        ({"strategy": "BlueGreen"}, "HotSwap"),
    ],
)
def test_bad_combinations_name_the_field(rollout: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ResourceError) as info:
        load_resource(make_doc(rollout=rollout))
    fields = [f.field for f in info.value.findings]
    assert any(f.startswith("spec.rollout") for f in fields), info.value.findings
    assert any(fragment in f.message for f in info.value.findings), info.value.findings


def test_sleep_level_is_one() -> None:
    # Level 2 discards the weights and is reported broken with a draft model (vLLM issue 52479).
    assert HOT_SWAP_SLEEP_LEVEL == 1


@pytest.mark.parametrize(
    ("version", "allowed"),
    [("0.7.3", False), ("0.7.9", False), ("0.8.0", True), ("0.10.2", True), ("0.32.0", True)],
)
def test_hot_swap_gated_by_version(version: str, allowed: bool) -> None:
    # 0.7.3 had /sleep and /wake_up but no /is_sleeping (read off the released wheels).
    assert sleep_mode_gate().allows(parse_version(version)) is allowed
    si = make_si(
        rollout={"strategy": "HotSwap"},
        vllm={"version": version},
        speculation={"method": "ngram", "draft": None},
    )
    codes = {f.code: f for f in check_resource(si).errors}
    assert ("StrategyUnsupportedByVersion" not in codes) is allowed
    if not allowed:
        finding = codes["StrategyUnsupportedByVersion"]
        assert finding.field == "spec.rollout.strategy"
        assert format_version(SLEEP_MODE_SINCE) in finding.message


def test_sleep_mode_flag_is_managed_and_gated() -> None:
    assert MANAGED_FLAGS["--enable-sleep-mode"] == "spec.rollout.strategy"
    assert not flag_allowed(parse_version("0.6.6"), "--enable-sleep-mode")
    assert flag_allowed(parse_version("0.10.2"), "--enable-sleep-mode")
    si = make_si(vllm={"extraArgs": ["--enable-sleep-mode"]})
    errors = check_resource(si).errors
    assert [(f.code, f.field) for f in errors] == [("ManagedFlagInExtraArgs", "spec.vllm.extraArgs[0]")]


def test_single_replica_hot_swap_warning_does_not_advise_surge() -> None:
    si = make_si(replicas=1, rollout={"strategy": "HotSwap"})
    warnings = [f for f in check_resource(si).warnings if f.code == "SingleReplicaNoSurge"]
    assert len(warnings) == 1
    assert "maxSurge" not in warnings[0].message
    assert warnings[0].field == "spec.replicas"

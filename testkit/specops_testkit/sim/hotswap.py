"""The HotSwap strategy in the simulator: how long a replica's swap keeps it out of service.

A swap drains the replica (the fleet stops routing to it and lets it finish), puts its awake engine
to sleep at level 1 and wakes the other: no pod restart, no extra GPU.  Sleep and wake take the
emulator's durations (``emulator.sleep.switch_seconds``, from vLLM's published figures, by the
weights each engine moves).
"""

from __future__ import annotations

from specops.api.catalog import GIB
from specops.api.v1alpha1 import RolloutStrategy, SpeculativeInferenceSpec
from specops.render.manifests import Pool
from specops_testkit.emulator.perf import EngineConfig
from specops_testkit.emulator.sleep import switch_seconds


def engine_weights_gib(config: EngineConfig) -> float:
    """An engine's weights over all its GPUs (the target's, plus the draft's when it has one)."""
    draft = config.proposer.draft if config.proposer is not None else None
    return (config.target.weight_bytes + (draft.weight_bytes if draft is not None else 0.0)) / GIB


def swap_seconds(configs: dict[Pool, EngineConfig]) -> float:
    """One engine to sleep, the other awake: the same either way (both engines move their weights)."""
    return sum(switch_seconds(engine_weights_gib(c), 1) for c in configs.values())


def with_hot_swap(spec: SpeculativeInferenceSpec) -> SpeculativeInferenceSpec:
    """``spec`` with ``spec.rollout.strategy: HotSwap`` (and no surge)."""
    rollout = spec.rollout.model_copy(update={"strategy": RolloutStrategy.HOT_SWAP, "max_surge": 0})
    return spec.model_copy(update={"rollout": rollout})

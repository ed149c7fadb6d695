"""Strategies compared on one scenario, and the figures the benchmark reports.

* ``always-speculative`` and ``never-speculative``: the two static configurations;
* ``vllm-dynamic``: speculative pods with vLLM's own k-by-batch-size table (``DYNAMIC_TABLE``), no
  operator: what vLLM does alone;
* ``specops``: the operator's policy and rollout in the loop (starting speculative), with the
  resource's ``spec.rollout.maxSurge`` (0 by default: a moved replica is out of service while it
  drains and starts);
* ``specops-surge``: the same with ``spec.rollout.maxSurge: 1`` (GPUs for one more pod);
* ``oracle``: for each phase, whichever static configuration had the lower P99 TPOT on that
  phase's requests, stitched together.  It switches for free at phase boundaries, so it is a
  bound no real controller reaches.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from specops.api.v1alpha1 import BatchSizeTokens, SpeculativeInference, SpeculativeInferenceSpec
from specops.policy.decide import BASELINE, PROBING, SPECULATIVE
from specops_testkit.emulator.workload import quantile
from specops_testkit.sim.fleet import Run, Served, simulate
from specops_testkit.testbed.scenario import SLO, Scenario, arrivals, load_scenario

ALWAYS, NEVER, DYNAMIC, SPECOPS, SPECOPS_SURGE, ORACLE = (
    "always-speculative",
    "never-speculative",
    "vllm-dynamic",
    "specops",
    "specops-surge",
    "oracle",
)
STRATEGIES = (ALWAYS, NEVER, DYNAMIC, SPECOPS, SPECOPS_SURGE, ORACLE)


def dynamic_table(k: int) -> list[BatchSizeTokens]:
    """A k-by-batch-size table as a vLLM user would write it: full k for small batches, fewer
    draft tokens as the batch grows, none from 32 running sequences."""
    return [
        BatchSizeTokens(min_batch_size=1, max_batch_size=8, num_speculative_tokens=k),
        BatchSizeTokens(min_batch_size=9, max_batch_size=31, num_speculative_tokens=min(k, 2)),
        BatchSizeTokens(min_batch_size=32, max_batch_size=1 << 20, num_speculative_tokens=0),
    ]


@dataclass(frozen=True, slots=True)
class Figures:
    requests: int
    failed: int
    p50_tpot: float
    p99_tpot: float
    p99_ttft: float
    slo_share: float
    transitions: int


def figures(served: Sequence[Served], slo: SLO, transitions: int) -> Figures:
    done = [s for s in served if s.tpot is not None and s.ttft is not None]
    if not done:
        raise ValueError("no finished requests")
    tpots = [s.tpot for s in done if s.tpot is not None]
    ttfts = [s.ttft for s in done if s.ttft is not None]
    good = sum(1 for s in done if (s.tpot or 0.0) <= slo.tpot and (s.ttft or 0.0) <= slo.ttft)
    return Figures(
        requests=len(served),
        failed=len(served) - len(done),
        p50_tpot=quantile(tpots, 0.5),
        p99_tpot=quantile(tpots, 0.99),
        p99_ttft=quantile(ttfts, 0.99),
        slo_share=good / len(served),
        transitions=transitions,
    )


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    spec: SpeculativeInferenceSpec
    runs: dict[str, Run]  # every strategy but the oracle
    oracle: list[Served]
    oracle_choice: dict[str, str]  # phase -> the static strategy the oracle used
    figures: dict[str, Figures]

    @property
    def regime_changes(self) -> int:
        """How often the best static configuration changes between consecutive phases."""
        return _changes(self.oracle_choice)

    @property
    def switches(self) -> int:
        """SpecOps' changes of the serving configuration (Speculative <-> Baseline), probes aside."""
        serving = [SPECULATIVE]
        for t in self.runs[SPECOPS].transitions:
            mode = t.to_mode if t.to_mode != PROBING else None
            if mode is not None and mode != serving[-1]:
                serving.append(mode)
        return len(serving) - 1

    @property
    def probes(self) -> int:
        return sum(1 for t in self.runs[SPECOPS].transitions if t.to_mode == PROBING)


def _oracle(scenario: Scenario, always: Run, never: Run) -> tuple[list[Served], dict[str, str]]:
    served: list[Served] = []
    choice: dict[str, str] = {}
    for phase in scenario.phases:
        options = {
            name: [s for s in run.served if s.phase == phase.name]
            for name, run in ((ALWAYS, always), (NEVER, never))
        }
        tails: dict[str, float] = {}
        for name, rows in options.items():
            tpots = [s.tpot for s in rows if s.tpot is not None]
            tails[name] = quantile(tpots, 0.99) if tpots else float("inf")
        if all(not rows for rows in options.values()):
            continue
        best = min(tails, key=lambda n: (tails[n], n != ALWAYS))
        choice[phase.name] = best
        served.extend(options[best])
    served.sort(key=lambda s: s.arrival)
    return served, choice


def load_resource(scenario_path: Path, scenario: Scenario) -> SpeculativeInferenceSpec:
    if scenario.resource is None:
        raise ValueError(f"{scenario_path}: resource: name the SpeculativeInference manifest to simulate")
    doc = yaml.safe_load((scenario_path.parent / scenario.resource).read_text())
    return SpeculativeInference.model_validate(doc).spec


def run_scenario(
    scenario: Scenario, spec: SpeculativeInferenceSpec, strategies: Sequence[str] = STRATEGIES
) -> ScenarioResult:
    todo = set(strategies)
    if ORACLE in todo:
        todo |= {ALWAYS, NEVER}
    traffic = arrivals(scenario)
    runs: dict[str, Run] = {}

    def run(
        adaptive: bool,
        mode: str = SPECULATIVE,
        override: SpeculativeInferenceSpec | None = None,
        served: SpeculativeInferenceSpec = spec,
    ) -> Run:
        return simulate(
            served,
            traffic,
            startup_seconds=scenario.startup_seconds,
            seed=scenario.seed,
            adaptive=adaptive,
            initial_mode=mode,
            spec_override=override,
        )

    if ALWAYS in todo:
        runs[ALWAYS] = run(adaptive=False)
    if NEVER in todo:
        runs[NEVER] = run(adaptive=False, mode=BASELINE)
    if DYNAMIC in todo:
        speculation = spec.speculation.model_copy(
            update={"tokens_per_batch_size": dynamic_table(spec.speculation.num_speculative_tokens)}
        )
        dynamic = spec.model_copy(update={"speculation": speculation})
        runs[DYNAMIC] = run(adaptive=False, override=dynamic)
    if SPECOPS in todo:
        runs[SPECOPS] = run(adaptive=True)
    if SPECOPS_SURGE in todo:
        surge = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"max_surge": 1})})
        runs[SPECOPS_SURGE] = run(adaptive=True, served=surge)
    oracle: list[Served] = []
    choice: dict[str, str] = {}
    if ORACLE in todo:
        oracle, choice = _oracle(scenario, runs[ALWAYS], runs[NEVER])
    figs = {name: figures(run.served, scenario.slo, len(run.transitions)) for name, run in runs.items()}
    if ORACLE in todo:
        figs[ORACLE] = figures(oracle, scenario.slo, _changes(choice))
    ordered = {name: figs[name] for name in STRATEGIES if name in figs}
    return ScenarioResult(scenario, spec, runs, oracle, choice, ordered)


def _changes(choice: dict[str, str]) -> int:
    """Changes between consecutive phases' choices (``choice`` is in phase order)."""
    values = list(choice.values())
    return sum(1 for a, b in itertools.pairwise(values) if a != b)


def run_file(path: Path, scale: float = 1.0, strategies: Sequence[str] = STRATEGIES) -> ScenarioResult:
    scenario = load_scenario(path)
    spec = load_resource(path, scenario)
    if scale != 1.0:
        scenario = scenario.scaled(scale)
    return run_scenario(scenario, spec, strategies)

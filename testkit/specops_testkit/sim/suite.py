"""Strategies compared on one scenario, and the figures the benchmark reports.

* ``always-speculative`` and ``never-speculative``: the two static configurations;
* ``vllm-dynamic``: speculative pods with vLLM's own k-by-batch-size table as a user would write it
  (``dynamic_table``), no operator: what vLLM does alone;
* ``derived-table``: speculative pods with the table SpecOps derives (``tokensPerBatchSizeMode:
  Auto``, from the catalog's prior acceptance: what a new deployment renders), no operator;
* ``derived-table-live``: the same with the table derived from the acceptance the pool shows over
  the scenario (what the live per-position counters converge to), no operator;
* ``specops``: the operator's policy and rollout in the loop (starting speculative), with the
  resource's ``spec.rollout.maxSurge`` (0 by default: a moved replica is out of service while it
  drains and starts);
* ``specops-surge``: the same with ``spec.rollout.maxSurge: 1`` (GPUs for one more pod);
* ``specops-derived``: SpecOps whose speculative pool runs the derived table (``Auto``);
* ``specops-hot-swap``: the same with ``spec.rollout.strategy: HotSwap`` (both engines in every pod,
  a switch is a drain, a sleep and a wake; no extra GPU);
* ``oracle``: for each phase, whichever static configuration had the lower P99 TPOT on that
  phase's requests, stitched together.  It switches for free at phase boundaries, so it is a
  bound no real controller reaches.
* ``hindsight``: the best switching schedule found knowing the scenario in advance, every switch
  executed by the operator's rollout and paying its drain, model load and lost capacity
  (``sim.hindsight``): the fair bound for a controller that must pay for its switches.

Each scenario runs under two policy profiles: ``scenario`` (the resource's ``spec.policy`` as
written, a fast profile in the shipped scenarios) and ``defaults`` (``spec.policy`` reset to the
model's defaults, Prometheus settings kept).  Only the strategies that run the policy are run
again for the second; the static ones do not read it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from specops.api.v1alpha1 import (
    BatchSizeTokens,
    PolicySpec,
    ServingMode,
    SpeculativeInference,
    SpeculativeInferenceSpec,
    TokensPerBatchSizeMode,
)
from specops.policy.decide import Transition
from specops.render.manifests import Pool
from specops.vllm.speculation_table import conditional_from_cumulative, derive_for_spec
from specops_testkit.emulator.perf import PromptKind, acceptance, per_position_alpha
from specops_testkit.emulator.workload import quantile
from specops_testkit.sim.fleet import Run, Served, engine_config, simulate
from specops_testkit.sim.hindsight import HindsightResult, hindsight
from specops_testkit.sim.hotswap import with_hot_swap
from specops_testkit.testbed.scenario import SLO, Arrival, Scenario, arrivals, load_scenario

ALWAYS, NEVER, DYNAMIC, SPECOPS, SPECOPS_SURGE, ORACLE = (
    "always-speculative",
    "never-speculative",
    "vllm-dynamic",
    "specops",
    "specops-surge",
    "oracle",
)
HINDSIGHT = "hindsight"
# HotSwap (spec.rollout.strategy): both engines in every pod; a switch drains, sleeps and wakes.
SPECOPS_HOT_SWAP = "specops-hot-swap"
DERIVED, DERIVED_LIVE, SPECOPS_DERIVED = "derived-table", "derived-table-live", "specops-derived"
STRATEGIES = (
    ALWAYS,
    NEVER,
    DYNAMIC,
    DERIVED,
    DERIVED_LIVE,
    SPECOPS,
    SPECOPS_SURGE,
    SPECOPS_HOT_SWAP,
    SPECOPS_DERIVED,
    ORACLE,
    HINDSIGHT,
)
# Runs that never read spec.policy's decisions (the hindsight schedules its own switches).
STATIC = (ALWAYS, NEVER, DYNAMIC, DERIVED, DERIVED_LIVE, HINDSIGHT)
PROFILE_SCENARIO, PROFILE_DEFAULTS = "scenario", "defaults"
PROFILES = (PROFILE_SCENARIO, PROFILE_DEFAULTS)


def dynamic_table(k: int) -> list[BatchSizeTokens]:
    """A k-by-batch-size table as a vLLM user would write it: full k for small batches, fewer
    draft tokens as the batch grows, none from 32 running sequences."""
    return [
        BatchSizeTokens(min_batch_size=1, max_batch_size=8, num_speculative_tokens=k),
        BatchSizeTokens(min_batch_size=9, max_batch_size=31, num_speculative_tokens=min(k, 2)),
        BatchSizeTokens(min_batch_size=32, max_batch_size=1 << 20, num_speculative_tokens=0),
    ]


def with_table(spec: SpeculativeInferenceSpec, rows: list[BatchSizeTokens]) -> SpeculativeInferenceSpec:
    speculation = spec.speculation.model_copy(
        update={"tokens_per_batch_size": rows, "tokens_per_batch_size_mode": TokensPerBatchSizeMode.MANUAL}
    )
    return spec.model_copy(update={"speculation": speculation})


def with_auto_table(spec: SpeculativeInferenceSpec) -> SpeculativeInferenceSpec:
    """``spec`` with ``tokensPerBatchSizeMode: Auto`` (the renderer derives the table)."""
    speculation = spec.speculation.model_copy(
        update={"tokens_per_batch_size": None, "tokens_per_batch_size_mode": TokensPerBatchSizeMode.AUTO}
    )
    return spec.model_copy(update={"speculation": speculation})


def pool_acceptance(spec: SpeculativeInferenceSpec, traffic: Sequence[Arrival]) -> tuple[float, ...]:
    """The conditional per-position acceptance the speculative pool's counters would show over
    ``traffic`` at its configured k: every request's per-position alpha (the emulator's), the
    cumulative acceptance at each position averaged over requests, then made conditional."""
    cfg = engine_config(spec, Pool.SPECULATIVE)
    p = cfg.proposer
    if p is None or not traffic:
        raise ValueError("the speculative pool has no proposer")
    k = p.num_speculative_tokens
    alphas = [
        per_position_alpha(
            acceptance(p.method, PromptKind(a.prompt_kind), a.temperature, p.pairing, cfg.constants),
            k,
            cfg.constants,
        )
        for a in traffic
    ]
    cumulative = [sum(alpha**i for alpha in alphas) / len(alphas) for i in range(1, k + 1)]
    return conditional_from_cumulative(cumulative)


def live_table(spec: SpeculativeInferenceSpec, traffic: Sequence[Arrival]) -> SpeculativeInferenceSpec:
    """``spec`` with the table derived from ``pool_acceptance`` written in as a manual table."""
    table = derive_for_spec(spec, pool_acceptance(spec, traffic))
    if table is None:
        raise ValueError("the resource's models have no shape to derive a table from")
    rows = [
        BatchSizeTokens(min_batch_size=lo, max_batch_size=hi, num_speculative_tokens=k)
        for lo, hi, k in table.vllm_rows()
    ]
    return with_table(spec, rows)


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


def serving_switches(transitions: Sequence[Transition]) -> int:
    """Changes of the serving configuration (Speculative <-> Baseline), probes aside."""
    serving = [ServingMode.SPECULATIVE]
    for t in transitions:
        mode = t.to_mode if t.to_mode != ServingMode.PROBING else None
        if mode is not None and mode != serving[-1]:
            serving.append(mode)
    return len(serving) - 1


def probe_count(transitions: Sequence[Transition]) -> int:
    return sum(1 for t in transitions if t.to_mode == ServingMode.PROBING)


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    spec: SpeculativeInferenceSpec
    runs: dict[str, Run]  # every strategy but the oracle
    oracle: list[Served]
    oracle_choice: dict[str, str]  # phase -> the static strategy the oracle used
    figures: dict[str, Figures]
    profile: str = PROFILE_SCENARIO  # which spec.policy the adaptive strategies ran with
    hindsight: HindsightResult | None = None  # the hindsight's schedule and search, when run

    @property
    def label(self) -> str:
        """The scenario's name, with the policy profile unless it is the scenario's own."""
        name = self.scenario.name
        return name if self.profile == PROFILE_SCENARIO else f"{name} ({self.profile})"

    def strategy_switches(self, strategy: str) -> int:
        """Serving-configuration changes of one strategy: the oracle's are its regime changes."""
        if strategy == ORACLE:
            return self.regime_changes
        if strategy == HINDSIGHT and self.hindsight is not None:
            return len(self.hindsight.schedule.switches)  # it may start in Baseline
        run = self.runs.get(strategy)
        return 0 if run is None else serving_switches(run.transitions)

    def strategy_probes(self, strategy: str) -> int:
        run = self.runs.get(strategy)
        return 0 if run is None else probe_count(run.transitions)

    @property
    def regime_changes(self) -> int:
        """How often the best static configuration changes between consecutive phases."""
        return _changes(self.oracle_choice)

    @property
    def switches(self) -> int:
        """SpecOps' changes of the serving configuration (Speculative <-> Baseline), probes aside."""
        return serving_switches(self.runs[SPECOPS].transitions)

    @property
    def probes(self) -> int:
        return probe_count(self.runs[SPECOPS].transitions)


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


def with_default_policy(spec: SpeculativeInferenceSpec) -> SpeculativeInferenceSpec:
    """``spec`` with ``spec.policy`` reset to the shipped defaults, except where Prometheus is
    (those fields say where the metrics are, not how the policy decides)."""
    kept = {
        name: getattr(spec.policy, name)
        for name in PolicySpec.model_fields
        if "prometheus" in name or "scrape" in name
    }
    return spec.model_copy(update={"policy": PolicySpec().model_copy(update=kept)})


def run_scenario(
    scenario: Scenario,
    spec: SpeculativeInferenceSpec,
    strategies: Sequence[str] = STRATEGIES,
    *,
    profile: str = PROFILE_SCENARIO,
    reuse: dict[str, Run] | None = None,
    reuse_hindsight: HindsightResult | None = None,
) -> ScenarioResult:
    """Run ``strategies`` on ``scenario``; runs in ``reuse`` (same scenario, same traffic) are
    taken as they are instead of being simulated again."""
    todo = set(strategies)
    if ORACLE in todo:
        todo |= {ALWAYS, NEVER}
    traffic = arrivals(scenario)
    hpa = [(c.seconds, c.replicas) for c in scenario.replica_changes]
    runs: dict[str, Run] = {name: run for name, run in (reuse or {}).items() if name in todo}
    todo -= set(runs)
    searched = reuse_hindsight if HINDSIGHT in runs else None

    def run(
        adaptive: bool,
        mode: ServingMode = ServingMode.SPECULATIVE,
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
            replica_changes=hpa,
        )

    if ALWAYS in todo:
        runs[ALWAYS] = run(adaptive=False)
    if NEVER in todo:
        runs[NEVER] = run(adaptive=False, mode=ServingMode.BASELINE)
    if DYNAMIC in todo:
        dynamic = with_table(spec, dynamic_table(spec.speculation.num_speculative_tokens))
        runs[DYNAMIC] = run(adaptive=False, override=dynamic)
    if DERIVED in todo:
        runs[DERIVED] = run(adaptive=False, override=with_auto_table(spec))
    if DERIVED_LIVE in todo:
        runs[DERIVED_LIVE] = run(adaptive=False, override=live_table(spec, traffic))
    if SPECOPS in todo:
        runs[SPECOPS] = run(adaptive=True)
    if SPECOPS_SURGE in todo:
        surge = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"max_surge": 1})})
        runs[SPECOPS_SURGE] = run(adaptive=True, served=surge)
    if SPECOPS_DERIVED in todo:
        runs[SPECOPS_DERIVED] = run(adaptive=True, override=with_auto_table(spec))
    if SPECOPS_HOT_SWAP in todo:
        runs[SPECOPS_HOT_SWAP] = run(adaptive=True, served=with_hot_swap(spec))
    if HINDSIGHT in todo:
        searched = hindsight(
            spec, traffic, startup_seconds=scenario.startup_seconds, seed=scenario.seed, replica_changes=hpa
        )
        runs[HINDSIGHT] = searched.run
    oracle: list[Served] = []
    choice: dict[str, str] = {}
    if ORACLE in todo:
        oracle, choice = _oracle(scenario, runs[ALWAYS], runs[NEVER])
    figs = {name: figures(run.served, scenario.slo, len(run.transitions)) for name, run in runs.items()}
    if ORACLE in todo:
        figs[ORACLE] = figures(oracle, scenario.slo, _changes(choice))
    ordered = {name: figs[name] for name in STRATEGIES if name in figs}
    return ScenarioResult(scenario, spec, runs, oracle, choice, ordered, profile, searched)


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


def run_file_profiles(
    path: Path, scale: float = 1.0, strategies: Sequence[str] = STRATEGIES
) -> list[ScenarioResult]:
    """The scenario under its resource's policy, then under the shipped policy defaults (the
    static runs are shared: they do not read the policy)."""
    written = run_file(path, scale, strategies)
    defaults = with_default_policy(written.spec)
    same = defaults == written.spec
    shared = {n: r for n, r in written.runs.items() if same or n in STATIC}
    return [
        written,
        run_scenario(
            written.scenario,
            defaults,
            strategies,
            profile=PROFILE_DEFAULTS,
            reuse=shared,
            reuse_hindsight=written.hindsight,
        ),
    ]

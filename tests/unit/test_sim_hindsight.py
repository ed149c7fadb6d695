"""The hindsight bound: switches executed and paid for as the operator's rollout executes them,
a path search that trades them against the static configurations, and never worse than the
better of those."""

from __future__ import annotations

import pytest

from specops.api.v1alpha1 import ServingMode, SpeculativeInferenceSpec
from specops.render.manifests import PoolSplit
from specops_testkit.sim.fleet import Served, simulate
from specops_testkit.sim.hindsight import (
    Schedule,
    ScheduledRun,
    SearchInputs,
    Trial,
    best_path,
    stitch,
    tail,
)
from specops_testkit.sim.suite import ALWAYS, HINDSIGHT, NEVER, ORACLE, run_scenario
from specops_testkit.testbed.scenario import Scenario, arrivals
from tests.support.resources import load_scenario_resource

S, B = ServingMode.SPECULATIVE, ServingMode.BASELINE


def chat_spec(**rollout: int) -> SpeculativeInferenceSpec:
    spec = load_scenario_resource("chat-llama70b.yaml").spec
    return spec.model_copy(update={"rollout": spec.rollout.model_copy(update=rollout)}) if rollout else spec


def shift() -> Scenario:
    """Cold chat (speculation wins), hot chat (it loses on the tail), cold again."""
    return Scenario.model_validate(
        {
            "name": "shift",
            "seed": 3,
            "phases": [
                {"name": "cold", "duration": "3m", "qps": 4, "temperature": 0.2},
                {"name": "hot", "duration": "5m", "qps": 4, "temperature": 1.2},
                {"name": "cold-again", "duration": "3m", "qps": 4, "temperature": 0.2},
            ],
        }
    )


@pytest.mark.parametrize("mode", [S, B])
def test_without_a_switch_it_serves_exactly_what_the_simulator_serves(mode: ServingMode) -> None:
    traffic = arrivals(shift())[:400]
    spec = chat_spec()
    expected = simulate(spec, traffic, startup_seconds=60, seed=3, adaptive=False, initial_mode=mode)
    run = ScheduledRun(spec, traffic, startup_seconds=60, seed=3, initial_mode=mode)
    run.run_until(30.0)
    copied = run.copy()  # a copy taken mid-run serves the rest the same way
    assert run.finish().served == expected.served
    assert copied.finish().served == expected.served


def test_a_switch_moves_one_replica_at_a_time_and_pays_for_it() -> None:
    traffic = arrivals(shift())
    spec = chat_spec()
    run = ScheduledRun(spec, traffic, startup_seconds=60, seed=3, initial_mode=S)
    run.switch_at(60.0, B)
    splits = []
    run.run_while(lambda r: r.now < 60.0 or not r.settled())
    settled_at = run.now
    run.finish()
    splits = {p.pool for p in run.fleet.pods if p.gone_at is None}
    assert [(t.at, t.from_mode, t.to_mode) for t in run.transitions] == [(60.0, S, B)]
    assert run.fleet.applied == PoolSplit(0, 2)
    assert len(splits) == 1
    # Two replicas, each drained then started (60 s): at least two model loads.
    assert settled_at - 60.0 >= 120.0


def _served(i: int, tpot: float | None) -> Served:
    return Served(float(i), "p", 0.2, None, 0.1, tpot, None, None)


def _inputs(spec_tpots: list[float], base_tpots: list[float], trial: str) -> SearchInputs:
    """Ten requests per decision point, a switch possible at each; its trial covers the segment
    after the decision and resumes at the next: ``free`` serves it as the other configuration
    would have, ``failing`` fails every request of it (a prohibitive cost)."""
    n = len(spec_tpots)
    static = {
        S: [_served(10 * j + i, t) for j, t in enumerate(spec_tpots) for i in range(10)],
        B: [_served(10 * j + i, t) for j, t in enumerate(base_tpots) for i in range(10)],
    }
    inputs = SearchInputs([float(j) for j in range(n)], [10 * j for j in range(n + 1)], static)
    for j in range(1, n):
        for mode in (S, B):
            other = B if mode == S else S
            window: tuple[Served | None, ...] = (
                tuple(static[other][10 * j : 10 * (j + 1)]) if trial == "free" else (None,) * 10
            )
            inputs.trials[(j, mode)] = Trial(j, mode, 10 * j, 10 * (j + 1), j + 1, window)
    return inputs


# Speculation wins the first and last segments, the baseline the middle ones; each loses its
# bad segments by a wide margin.
SPEC_TPOTS = [0.02, 0.30, 0.30, 0.02]
BASE_TPOTS = [0.30, 0.10, 0.10, 0.30]


def test_with_free_switches_the_path_is_the_better_configuration_of_every_segment() -> None:
    inputs = _inputs(SPEC_TPOTS, BASE_TPOTS, "free")
    count, schedule = best_path(inputs, tau=0.2)
    assert schedule == Schedule(S, ((1, B), (3, S)))
    assert count == 0
    assert tail(stitch(inputs, schedule)) == pytest.approx(0.10)


@pytest.mark.parametrize("tau", [0.05, 0.2, 0.5])
def test_with_a_prohibitive_switch_cost_it_never_switches(tau: float) -> None:
    _, schedule = best_path(_inputs(SPEC_TPOTS, BASE_TPOTS, "failing"), tau)
    assert schedule.switches == ()


def test_a_switch_is_not_made_where_it_changes_nothing_the_tail_sees() -> None:
    # Speculation wins the first half by a little, below the threshold: only the tail counts.
    inputs = _inputs([0.02, 0.02, 0.30, 0.30], [0.03, 0.03, 0.10, 0.10], "free")
    _, schedule = best_path(inputs, tau=0.05)
    assert schedule.switches == ()  # fewer switches on a tie


@pytest.fixture(scope="module")
def shift_hindsight() -> tuple[float, float, float, object]:
    scenario = shift()
    result = run_scenario(scenario, chat_spec(), (ALWAYS, NEVER, ORACLE, HINDSIGHT))
    f = result.figures
    return f[ALWAYS].p99_tpot, f[NEVER].p99_tpot, f[HINDSIGHT].p99_tpot, result


def test_hindsight_is_never_worse_than_the_better_static_configuration(
    shift_hindsight: tuple[float, float, float, object],
) -> None:
    always, never, hind, result = shift_hindsight
    assert hind <= min(always, never)
    searched = result.hindsight  # type: ignore[attr-defined]
    assert searched is not None
    # What is reported is a real run of the chosen schedule, not the stitched estimate.
    assert [t.at for t in searched.run.transitions] == [t for t, _ in searched.switch_times]
    assert result.strategy_switches(HINDSIGHT) == len(searched.schedule.switches)  # type: ignore[attr-defined]


def test_with_free_switches_hindsight_reaches_the_free_oracle() -> None:
    # No model load and a surge pod: a switch costs (almost) nothing, so knowing the future is
    # worth what the oracle gets by switching for free.
    scenario = shift().model_copy(update={"startup_seconds": 0.0})
    result = run_scenario(scenario, chat_spec(max_surge=1), (ALWAYS, NEVER, ORACLE, HINDSIGHT))
    f = result.figures
    assert f[HINDSIGHT].p99_tpot <= f[ORACLE].p99_tpot * 1.05

"""The faster-than-real-time simulator: Prometheus arithmetic, determinism, and the real policy
reacting to what the emulator's model serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from specops.api.v1alpha1 import SpeculativeInferenceSpec
from specops.policy.decide import BASELINE, PROBING, SPECULATIVE
from specops_testkit.sim.fleet import histogram_quantile, simulate
from specops_testkit.sim.suite import ALWAYS, NEVER, ORACLE, SPECOPS, run_scenario
from specops_testkit.testbed.scenario import Scenario, arrivals, load_scenario
from tests.support.paths import SCENARIOS
from tests.support.resources import load_scenario_resource


def chat_spec() -> SpeculativeInferenceSpec:
    return load_scenario_resource("chat-llama70b.yaml").spec


@pytest.mark.parametrize(
    ("q", "values", "expected"),
    [
        (0.5, [], None),
        # All in the (0.01, 0.025] bucket: the rank is interpolated inside it.
        (0.5, [0.02] * 10, 0.0175),
        (1.0, [0.02] * 10, 0.025),
        # Below the first bound: interpolated from zero.
        (0.5, [0.001] * 4, 0.005),
        # Past the last finite bound: the last finite bound, as Prometheus answers.
        (0.99, [1000.0] * 5, 80.0),
        # 90 fast, 10 slow: P99 lands in the slow bucket (0.1, 0.15], nine tenths in.
        (0.99, [0.02] * 90 + [0.12] * 10, 0.145),
    ],
)
def test_histogram_quantile_matches_prometheus(q: float, values: list[float], expected: float | None) -> None:
    from specops_testkit.emulator.metrics import ITL_BUCKETS

    got = histogram_quantile(q, ITL_BUCKETS, values)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def shift(cold: float = 0.2, hot: float = 1.0) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "shift",
            "seed": 3,
            "phases": [
                {"name": "cold", "duration": "4m", "qps": 4, "temperature": cold},
                {"name": "hot", "duration": "6m", "qps": 4, "temperature": hot},
            ],
        }
    )


def test_simulation_is_deterministic() -> None:
    traffic = arrivals(shift())
    a = simulate(chat_spec(), traffic, startup_seconds=60, seed=3, adaptive=True)
    b = simulate(chat_spec(), traffic, startup_seconds=60, seed=3, adaptive=True)
    assert [s.tpot for s in a.served] == [s.tpot for s in b.served]
    assert a.transitions == b.transitions


def test_static_configurations_never_switch_and_serve_every_request() -> None:
    traffic = arrivals(shift())
    for mode in (SPECULATIVE, BASELINE):
        run = simulate(chat_spec(), traffic, startup_seconds=60, seed=3, adaptive=False, initial_mode=mode)
        assert run.transitions == []
        assert {p.mode for p in run.timeline} == {mode}
        assert len(run.served) == len(traffic)
        assert all(s.tpot is not None for s in run.served)


def test_policy_falls_back_when_temperature_rises() -> None:
    run = simulate(chat_spec(), arrivals(shift()), startup_seconds=60, seed=3, adaptive=True)
    first = run.transitions[0]
    assert (first.from_mode, first.to_mode, first.reason) == (
        SPECULATIVE,
        BASELINE,
        "AcceptanceBelowThreshold",
    )
    # After the hot phase starts (240 s), within one window and a few evaluations.
    assert 240 < first.at <= 240 + 60 + 4 * 10
    # The rollout moved both replicas to the baseline pool, one at a time.
    splits = [(p.split.speculative, p.split.baseline) for p in run.timeline if p.t > first.at]
    assert (1, 1) in splits and (0, 2) in splits


def test_policy_stays_speculative_where_it_wins() -> None:
    run = simulate(chat_spec(), arrivals(shift(hot=0.2)), startup_seconds=60, seed=3, adaptive=True)
    assert run.transitions == []


def test_oracle_takes_the_better_static_config_per_phase() -> None:
    result = run_scenario(shift(), chat_spec(), strategies=(ORACLE,))
    assert result.oracle_choice == {"cold": ALWAYS, "hot": NEVER}
    assert result.regime_changes == 1
    # The oracle serves every request once, from the configuration it chose for its phase.
    assert len(result.oracle) == len(result.runs[ALWAYS].served)
    f = result.figures
    assert f[ORACLE].p99_tpot <= max(f[ALWAYS].p99_tpot, f[NEVER].p99_tpot)


def test_switch_count_ignores_probes() -> None:
    result = run_scenario(shift(), chat_spec(), strategies=(SPECOPS,))
    modes = [t.to_mode for t in result.runs[SPECOPS].transitions]
    # Hot to the end: one fallback, then probes that lose (Probing -> Baseline is no switch).
    assert modes[0] == BASELINE
    assert result.switches == 1
    assert result.probes == modes.count(PROBING)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_scenario_files_load(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.seconds > 0
    if scenario.resource is not None:
        assert (path.parent / scenario.resource).is_file()


def test_simulate_command_writes_table_and_plots(tmp_path: Path) -> None:
    """The benchmark suite's smoke run: two scenarios at 5% of their length, every strategy."""
    from typer.testing import CliRunner

    from specops.cli import app

    files = [str(SCENARIOS / n) for n in ("temperature-shift.yaml", "ngram-summarization.yaml")]
    result = CliRunner().invoke(app, ["simulate", *files, "--scale", "0.05", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "simulation.md").read_text()
    for name in ("temperature-shift", "ngram-summarization"):
        assert f"| {name} |" in report
        assert (tmp_path / f"sim-{name}.png").stat().st_size > 10_000
    for strategy in (
        "always-speculative",
        "never-speculative",
        "vllm-dynamic",
        "specops",
        "specops-surge",
        "oracle",
    ):
        assert f"| {strategy} |" in report


def test_simulate_command_names_a_missing_resource(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from specops.cli import app

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nphases: [{name: a, duration: 10s, qps: 1}]\n")
    result = CliRunner().invoke(app, ["simulate", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "resource" in result.output


def test_surge_rollout_keeps_capacity_during_a_switch() -> None:
    """With maxSurge 1 the pools never serve with fewer ready pods than spec.replicas during the
    fallback; with 0 one replica is out while it drains and starts."""
    spec = chat_spec()
    surge = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"max_surge": 1})})
    traffic = arrivals(shift())
    plain = simulate(spec, traffic, startup_seconds=60, seed=3, adaptive=True)
    surged = simulate(surge, traffic, startup_seconds=60, seed=3, adaptive=True)
    assert [t.reason for t in plain.transitions][:1] == [t.reason for t in surged.transitions][:1]
    assert max(p.split.total for p in plain.timeline) == 2
    assert max(p.split.total for p in surged.timeline) == 3

    # Ready pods as Prometheus saw them: the plain rollout dips to one, the surge never does.
    def fewest(run: object) -> int:
        counts = []
        for p in run.timeline:  # type: ignore[attr-defined]
            counts.append(sum(m.replicas for m in (p.speculative, p.baseline) if m is not None))
        return min(counts[10:])

    assert fewest(plain) == 1
    assert fewest(surged) >= 2

"""The faster-than-real-time simulator: Prometheus arithmetic, determinism, and the real policy
reacting to what the emulator's model serves."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from specops.api.v1alpha1 import PolicySpec, ServingMode, SpeculativeInferenceSpec
from specops.plan.rollout import split_for_mode
from specops.render.manifests import Pool, PoolSplit
from specops_testkit.emulator.workload import quantile
from specops_testkit.sim.fleet import Fleet, Served, histogram_quantile, simulate
from specops_testkit.sim.suite import (
    ALWAYS,
    NEVER,
    ORACLE,
    SPECOPS,
    ScenarioResult,
    run_file_profiles,
    run_scenario,
    with_default_policy,
)
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
    for mode in (ServingMode.SPECULATIVE, ServingMode.BASELINE):
        run = simulate(chat_spec(), traffic, startup_seconds=60, seed=3, adaptive=False, initial_mode=mode)
        assert run.transitions == []
        assert {p.mode for p in run.timeline} == {mode}
        assert len(run.served) == len(traffic)
        assert all(s.tpot is not None for s in run.served)


def test_policy_falls_back_when_temperature_rises() -> None:
    run = simulate(chat_spec(), arrivals(shift()), startup_seconds=60, seed=3, adaptive=True)
    first = run.transitions[0]
    assert (first.from_mode, first.to_mode, first.reason) == (
        ServingMode.SPECULATIVE,
        ServingMode.BASELINE,
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


def _p99_tpot(served: Sequence[Served], start: float = 0.0, end: float = math.inf) -> float:
    tpots = [s.tpot for s in served if start <= s.arrival < end and s.tpot is not None]
    return quantile(tpots, 0.99)


@pytest.fixture(scope="module")
def shift_result() -> ScenarioResult:
    """The short temperature shift with the static runs, the oracle and SpecOps (shared: each
    simulation takes seconds)."""
    return run_scenario(shift(), chat_spec(), strategies=(ORACLE, SPECOPS))


def test_oracle_is_as_good_as_the_better_static_config_in_every_phase(shift_result: ScenarioResult) -> None:
    result = shift_result
    # Speculation wins the cold phase's tail, loses the hot one's (the emulator's model).
    assert result.oracle_choice == {"cold": ALWAYS, "hot": NEVER}
    assert result.regime_changes == 1
    # The oracle serves every request once.
    assert sorted(s.arrival for s in result.oracle) == [s.arrival for s in result.runs[ALWAYS].served]
    for phase in ("cold", "hot"):
        oracle = _p99_tpot([s for s in result.oracle if s.phase == phase])
        statics = [_p99_tpot([s for s in result.runs[n].served if s.phase == phase]) for n in (ALWAYS, NEVER)]
        assert oracle <= min(statics), (phase, oracle, statics)


def test_specops_serves_each_regime_like_the_better_static_config(shift_result: ScenarioResult) -> None:
    """Cold: SpecOps serves speculatively, as always-speculative does.  Hot: once the fallback has
    moved the last replica, no request reaches the speculative pool (a draining pod is out of
    the Service); once both baseline pods serve, and until the next decision, the tail is
    never-speculative's, not always-speculative's.  Fails when the policy does not fall back, the
    pools are not resized, or the Service routes to pods that are not ready."""
    runs = shift_result.runs
    cold = [_p99_tpot(runs[n].served, 0, 240) for n in (SPECOPS, ALWAYS)]
    assert cold[0] == pytest.approx(cold[1], rel=0.05)
    fallback, after = runs[SPECOPS].transitions[0], runs[SPECOPS].transitions[1:]
    assert fallback.to_mode == ServingMode.BASELINE
    # No request reaches a baseline pod before its model has loaded (a minute after the switch).
    first_baseline = min(s.arrival for s in runs[SPECOPS].served if s.pool is Pool.BASELINE)
    assert first_baseline >= fallback.at + 60
    end = after[0].at if after else math.inf
    points = [p for p in runs[SPECOPS].timeline if fallback.at < p.t < end]
    moved = next(p.t for p in points if p.split == PoolSplit(0, 2))
    settled = next(
        p.t for p in points if p.t >= moved and p.baseline is not None and p.baseline.replicas == 2
    )
    window = [s for s in runs[SPECOPS].served if moved <= s.arrival < end]
    assert len(window) > 100
    assert {s.pool for s in window} == {Pool.BASELINE}
    tails = {n: _p99_tpot(runs[n].served, settled, end) for n in (SPECOPS, ALWAYS, NEVER)}
    assert tails[NEVER] < tails[ALWAYS]
    assert tails[SPECOPS] <= tails[NEVER] * 1.05, tails


def test_the_service_spreads_requests_uniformly_over_ready_pods() -> None:
    """A static one-and-one split: each pool's single pod gets about half the requests."""
    scenario = Scenario.model_validate(
        {"name": "even", "seed": 4, "phases": [{"name": "a", "duration": "2m", "qps": 4, "temperature": 0.2}]}
    )
    traffic = arrivals(scenario)
    run = simulate(
        chat_spec(), traffic, startup_seconds=60, seed=4, adaptive=False, initial_mode=ServingMode.PROBING
    )
    assert {p.split for p in run.timeline} == {PoolSplit(1, 1)}
    share = sum(1 for s in run.served if s.pool is Pool.BASELINE) / len(run.served)
    assert len(run.served) == len(traffic) > 400
    assert 0.42 < share < 0.58, share


def test_switch_count_ignores_probes(shift_result: ScenarioResult) -> None:
    result = shift_result
    modes = [t.to_mode for t in result.runs[SPECOPS].transitions]
    # Hot to the end: one fallback, then probes that lose (Probing -> Baseline is no switch).
    assert modes[0] == ServingMode.BASELINE
    assert result.switches == 1
    assert result.probes == modes.count(ServingMode.PROBING)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_scenario_files_load(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.seconds > 0
    if scenario.resource is not None:
        assert (path.parent / scenario.resource).is_file()


def test_simulate_command_writes_table_json_and_plots(tmp_path: Path) -> None:
    """The benchmark suite's smoke run: two scenarios at 5% of their length, every strategy, under
    the scenario's policy profile and the shipped defaults; ``-o json`` on stdout."""
    from typer.testing import CliRunner

    from specops.cli import app

    names = ("temperature-shift", "ngram-summarization")
    files = [str(SCENARIOS / f"{n}.yaml") for n in names]
    result = CliRunner().invoke(
        app, ["simulate", *files, "--scale", "0.05", "--out", str(tmp_path), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == json.loads((tmp_path / "simulation.json").read_text())
    rows = doc["results"]
    strategies = [
        "always-speculative",
        "never-speculative",
        "vllm-dynamic",
        "derived-table",
        "derived-table-live",
        "specops",
        "specops-surge",
        "specops-hot-swap",
        "specops-derived",
        "oracle",
        "hindsight",
    ]
    assert [(r["scenario"], r["policy_profile"], r["strategy"]) for r in rows] == [
        (n, profile, s) for n in names for profile in ("scenario", "defaults") for s in strategies
    ]
    for r in rows:
        assert set(r) >= {
            "scenario", "policy_profile", "strategy", "p50_tpot_ms", "p99_tpot_ms", "p99_ttft_ms",
            "slo_share", "failed", "completed", "switches", "probes",
        }  # fmt: skip
        assert 0 < r["p50_tpot_ms"] <= r["p99_tpot_ms"] < 1000
        assert 0 <= r["slo_share"] <= 1 and r["failed"] >= 0 and r["completed"] > 0
    report = (tmp_path / "simulation.md").read_text()
    for name in names:
        for profile in ("scenario", "defaults"):
            assert f"| {name} | {profile} |" in report
        assert (tmp_path / f"sim-{name}.png").stat().st_size > 10_000
        assert (tmp_path / f"sim-{name}-defaults.png").stat().st_size > 10_000
    for strategy in strategies:
        assert f"| {strategy} |" in report
    assert "[1/2] temperature-shift.yaml" in result.stderr


def test_simulate_without_matplotlib_says_so_first_and_writes_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from specops.cli import app

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    path = SCENARIOS / "low-load-chat.yaml"
    result = CliRunner().invoke(app, ["simulate", str(path), "--scale", "0.05", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert "matplotlib is not installed" in first and "specops-testkit[plots]" in first
    assert "| low-load-chat | scenario |" in result.stdout
    assert "| low-load-chat | scenario |" in (tmp_path / "simulation.md").read_text()
    assert json.loads((tmp_path / "simulation.json").read_text())["results"]
    assert not list(tmp_path.glob("*.png"))


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


def _one_at_a_time(before: PoolSplit, after: PoolSplit) -> bool:
    """At most one replica leaves one pool for the other in one step (resizes aside)."""
    d_spec, d_base = after.speculative - before.speculative, after.baseline - before.baseline
    return min(max(d_spec, 0), max(-d_base, 0)) + min(max(d_base, 0), max(-d_spec, 0)) <= 1


@pytest.mark.parametrize("max_surge", [0, 1])
def test_hpa_resizes_during_switches_keep_a_ready_pod_and_move_one_replica_at_a_time(
    max_surge: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scenarios/hpa.yaml: spec.replicas changes (2 -> 3 -> 4 -> 2) while SpecOps switches.  With
    replicas >= 2 the service never has no ready pod, every Deployment change moves at most one
    replica between the pools, and no request fails."""
    scenario = load_scenario(SCENARIOS / "hpa.yaml")
    spec = chat_spec()
    spec = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"max_surge": max_surge})})
    ready: list[tuple[float, int]] = []
    applied: list[tuple[PoolSplit, PoolSplit]] = []
    retire, apply = Fleet.retire, Fleet.apply

    def retire_and_count(fleet: Fleet, now: float) -> None:
        retire(fleet, now)
        ready.append((now, sum(len(fleet.live(pool, now)) for pool in Pool)))

    def apply_and_record(fleet: Fleet, split: PoolSplit, now: float) -> None:
        applied.append((fleet.applied, split))
        apply(fleet, split, now)

    monkeypatch.setattr(Fleet, "retire", retire_and_count)
    monkeypatch.setattr(Fleet, "apply", apply_and_record)
    changes = [(c.seconds, c.replicas) for c in scenario.replica_changes]
    assert min(r for _, r in changes) >= 2
    run = simulate(
        spec,
        arrivals(scenario),
        startup_seconds=scenario.startup_seconds,
        seed=scenario.seed,
        adaptive=True,
        replica_changes=changes,
    )
    assert run.transitions and applied
    assert min(n for _, n in ready) >= 1, [t for t, n in ready if n == 0][:5]
    bad = [(a, b) for a, b in applied if not _one_at_a_time(a, b)]
    assert not bad
    assert run.timeline[-1].split.total == changes[-1][1]
    # The scenario does what it says: resizes land while a switch is under way (the first during
    # the fallback; the later ones depend on when the policy probes).
    replicas = 2
    mid_switch = 0
    for at, new in changes:
        point = [p for p in run.timeline if p.t < at][-1]
        if point.split != split_for_mode(point.mode, replicas, spec.policy.probe.replicas):
            mid_switch += 1
        replicas = new
    assert mid_switch >= 1
    assert all(s.tpot is not None for s in run.served)


def test_single_replica_without_surge_loses_no_request_to_specops() -> None:
    """scenarios/single-replica.yaml (issue 13's outage): one replica, maxSurge 0, temperature
    rising after 4 minutes.  SpecOps holds the switch (it would stop the only pod) under both
    policy profiles, so it fails no request and serves as always-speculative does."""
    results = run_file_profiles(SCENARIOS / "single-replica.yaml", strategies=(SPECOPS,))
    assert [r.profile for r in results] == ["scenario", "defaults"]
    for r in results:
        assert r.spec.replicas == 1 and r.spec.rollout.max_surge == 0
        run = r.runs[SPECOPS]
        assert len(run.served) > 3000
        assert r.figures[SPECOPS].failed == 0
        assert run.transitions == []


def test_default_policy_profile_keeps_only_prometheus_settings() -> None:
    spec = chat_spec()
    custom = spec.policy.model_copy(update={"prometheus_url": "http://prom.example:9090"})
    reset = with_default_policy(spec.model_copy(update={"policy": custom})).policy
    assert reset == PolicySpec(prometheus_url="http://prom.example:9090")
    assert spec.policy.interval != reset.interval

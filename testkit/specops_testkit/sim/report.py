"""The simulator's output: a markdown table per scenario, the same figures as JSON rows, and PNG
timelines (matplotlib, the test kit's ``plots`` extra)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specops.api.v1alpha1 import ServingMode
from specops.policy.decide import PoolMetrics
from specops_testkit.sim.fleet import Run, TimelinePoint
from specops_testkit.sim.suite import (
    ALWAYS,
    DERIVED,
    DERIVED_LIVE,
    DYNAMIC,
    HINDSIGHT,
    NEVER,
    ORACLE,
    SPECOPS,
    SPECOPS_DERIVED,
    SPECOPS_SURGE,
    ScenarioResult,
)

MODE_COLORS: dict[str, str] = {
    ServingMode.SPECULATIVE: "#c8e6c9",
    ServingMode.BASELINE: "#ffcdd2",
    ServingMode.PROBING: "#fff9c4",
}


def _ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def vs_oracle(result: ScenarioResult, strategy: str = SPECOPS, bound: str = ORACLE) -> float | None:
    """A strategy's P99 TPOT over the oracle's (or another ``bound``'s), minus one (0.05 = 5% worse)."""
    figs = result.figures
    if strategy not in figs or bound not in figs:
        return None
    return figs[strategy].p99_tpot / figs[bound].p99_tpot - 1


def vs_hindsight(result: ScenarioResult, strategy: str = SPECOPS) -> float | None:
    """A strategy's P99 TPOT over the hindsight's (switches paid for), minus one."""
    return vs_oracle(result, strategy, HINDSIGHT)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def scenario_table(result: ScenarioResult) -> str:
    slo = result.scenario.slo
    lines = [
        f"| strategy | P50 TPOT ms | P99 TPOT ms | P99 TTFT s | SLO share (TPOT <= {slo.tpot * 1000:g} ms, "
        f"TTFT <= {slo.ttft:g} s) | failed | transitions |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in result.figures.items():
        lines.append(
            f"| {name} | {_ms(f.p50_tpot)} | {_ms(f.p99_tpot)} | {f.p99_ttft:.2f} | {f.slo_share:.1%} | "
            f"{f.failed} | {f.transitions} |"
        )
    return "\n".join(lines)


def summary_table(results: Sequence[ScenarioResult]) -> str:
    """One row per scenario: P99 TPOT of every strategy, SpecOps against the oracle, transitions."""
    lines = [
        "| scenario | policy profile | always-spec | never-spec | vllm-dynamic | specops "
        "| specops maxSurge 1 | oracle | hindsight | specops vs oracle | specops vs hindsight "
        "| maxSurge 1 vs oracle | beats both static | switches / regime changes | probes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for r in results:
        f = r.figures
        cells = [
            _ms(f[name].p99_tpot) if name in f else "-"
            for name in (ALWAYS, NEVER, DYNAMIC, SPECOPS, SPECOPS_SURGE, ORACLE, HINDSIGHT)
        ]
        gap_cell = f"{_pct(vs_oracle(r))} | {_pct(vs_hindsight(r))}"
        surge_cell = _pct(vs_oracle(r, SPECOPS_SURGE))
        beats = (
            "yes"
            if SPECOPS in f and f[SPECOPS].p99_tpot < min(f[ALWAYS].p99_tpot, f[NEVER].p99_tpot)
            else "no"
        )
        lines.append(
            f"| {r.scenario.name} | {r.profile} | {' | '.join(cells)} | {gap_cell} | {surge_cell} "
            f"| {beats} | {r.switches} / {r.regime_changes} | {r.probes} |"
        )
    return "\n".join(lines)


def _vs(result: ScenarioResult, strategy: str, *others: str) -> float | None:
    """``strategy``'s P99 TPOT over the best of ``others``', minus one (negative: better)."""
    f = result.figures
    if strategy not in f or not all(o in f for o in others):
        return None
    return f[strategy].p99_tpot / min(f[o].p99_tpot for o in others) - 1


def derived_table_summary(results: Sequence[ScenarioResult]) -> str:
    """The derived k-by-batch-size table against the user-written one, the static configurations
    and the oracle (P99 TPOT in ms; comparisons negative where the derived table is better)."""
    lines = [
        "| scenario | policy profile | always-spec | never-spec | vllm-dynamic (user table) | derived-table "
        "| derived-table-live | specops | specops-derived | oracle | derived vs user table "
        "| derived vs better static | specops-derived vs oracle |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = (ALWAYS, NEVER, DYNAMIC, DERIVED, DERIVED_LIVE, SPECOPS, SPECOPS_DERIVED, ORACLE)
    for r in results:
        f = r.figures
        cells = [_ms(f[name].p99_tpot) if name in f else "-" for name in names]
        lines.append(
            f"| {r.scenario.name} | {r.profile} | {' | '.join(cells)} | {_pct(_vs(r, DERIVED, DYNAMIC))} "
            f"| {_pct(_vs(r, DERIVED, ALWAYS, NEVER))} | {_pct(_vs(r, SPECOPS_DERIVED, ORACLE))} |"
        )
    return "\n".join(lines)


def decisions(run: Run) -> str:
    if not run.transitions:
        return "No transitions."
    return "\n".join(
        f"- {t.at:7.0f} s  {t.from_mode} -> {t.to_mode}  **{t.reason}**: {t.message}" for t in run.transitions
    )


def markdown(results: Sequence[ScenarioResult], plots: dict[str, str]) -> str:
    parts = ["## Summary (P99 TPOT in ms)", "", summary_table(results), ""]
    parts += ["## The derived speculation table (P99 TPOT in ms)", "", derived_table_summary(results), ""]
    for r in results:
        parts += [f"## {r.label}", "", r.scenario.description, f"Policy profile: {r.profile}.", ""]
        if r.oracle_choice:
            chosen = ", ".join(f"{phase}: {name}" for phase, name in r.oracle_choice.items())
            parts += [f"Oracle's choice per phase: {chosen}.", ""]
        if r.hindsight is not None:
            parts += [f"Hindsight's schedule (switches paid for): {r.hindsight.describe()}.", ""]
        parts += [scenario_table(r), ""]
        if SPECOPS in r.runs:
            parts += ["SpecOps' decisions (simulated seconds):", "", decisions(r.runs[SPECOPS]), ""]
        if r.label in plots:
            parts += [f"![{r.label} timeline]({plots[r.label]})", ""]
    return "\n".join(parts)


def rows(results: Sequence[ScenarioResult]) -> list[dict[str, Any]]:
    """One row per scenario, policy profile and strategy: what ``specops simulate -o json``
    prints (times in milliseconds, the SLO share as a fraction)."""
    out: list[dict[str, Any]] = []
    for r in results:
        for name, f in r.figures.items():
            out.append(
                {
                    "scenario": r.scenario.name,
                    "policy_profile": r.profile,
                    "strategy": name,
                    "p50_tpot_ms": round(f.p50_tpot * 1000, 3),
                    "p99_tpot_ms": round(f.p99_tpot * 1000, 3),
                    "p99_ttft_ms": round(f.p99_ttft * 1000, 3),
                    "slo_share": round(f.slo_share, 5),
                    "failed": f.failed,
                    "completed": f.requests - f.failed,
                    "switches": r.strategy_switches(name),
                    "probes": r.strategy_probes(name),
                    "p99_tpot_vs_oracle": _ratio(vs_oracle(r, name)),
                    "p99_tpot_vs_hindsight": _ratio(vs_hindsight(r, name)),
                }
            )
    return out


def _ratio(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def json_document(results: Sequence[ScenarioResult], scale: float) -> str:
    return json.dumps({"scale": scale, "results": rows(results)}, indent=2)


def plot(result: ScenarioResult, path: Path) -> None:
    """SpecOps' mode, the offered load, acceptance and P99 TPOT per pool as the policy saw them,
    with the static configurations' P99 TPOT for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = result.runs[SPECOPS]
    pts = run.timeline
    if not pts:
        return
    ts = [p.t / 60 for p in pts]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for ax in axes:
        for a, b in itertools.pairwise(pts):
            ax.axvspan(a.t / 60, b.t / 60, color=MODE_COLORS.get(a.mode, "#eeeeee"), linewidth=0)
    axes[0].plot(ts, [p.qps for p in pts], color="black", label="offered QPS (window mean)")
    axes[0].set_ylabel("requests/s")
    axes[0].legend(loc="upper right")
    axes[0].set_title(f"{result.label}: SpecOps (green Speculative, yellow Probing, red Baseline), simulated")

    axes[1].plot(
        ts,
        [p.speculative.acceptance if p.speculative else None for p in pts],
        color="tab:blue",
        label="acceptance (speculative pool)",
    )
    policy = result.spec.policy
    axes[1].axhline(
        policy.min_acceptance_rate, color="tab:red", linewidth=0.8, linestyle=":", label="minAcceptanceRate"
    )
    axes[1].axhline(
        policy.break_even_acceptance_rate,
        color="tab:orange",
        linewidth=0.8,
        linestyle=":",
        label="break-even",
    )
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("acceptance")
    axes[1].legend(loc="lower right")

    def p99(metrics: PoolMetrics | None) -> float | None:
        value = None if metrics is None else metrics.tpot_p99
        return None if value is None else value * 1000

    axes[2].plot(ts, [p99(p.speculative) for p in pts], color="tab:green", label="SpecOps: speculative pool")
    axes[2].plot(ts, [p99(p.baseline) for p in pts], color="tab:red", label="SpecOps: baseline pool")
    for name, style in ((ALWAYS, "#2e7d32"), (NEVER, "#c62828")):
        if name in result.runs:
            other = result.runs[name].timeline
            axes[2].plot(
                [p.t / 60 for p in other],
                [p99(p.speculative if name == ALWAYS else p.baseline) for p in other],
                color=style,
                linestyle=":",
                linewidth=1,
                label=f"{name} (static)",
            )
    if SPECOPS_SURGE in result.runs:
        surged = result.runs[SPECOPS_SURGE].timeline

        def worst(p: TimelinePoint) -> float | None:
            values = [v for v in (p99(p.speculative), p99(p.baseline)) if v]
            return max(values) if values else None

        axes[2].plot(
            [p.t / 60 for p in surged],
            [worst(p) for p in surged],
            color="tab:blue",
            linestyle="--",
            linewidth=1,
            label="SpecOps maxSurge 1 (worse pool)",
        )
    axes[2].set_ylabel("P99 TPOT ms (window)")
    axes[2].set_xlabel("minutes")
    axes[2].legend(loc="upper right", fontsize=8)
    start = 0.0
    for phase in result.scenario.phases:
        axes[2].annotate(
            phase.name, (start / 60, axes[2].get_ylim()[1]), va="top", fontsize=7, color="#555555"
        )
        for ax in axes:
            ax.axvline(start / 60, color="#777777", linewidth=0.8, linestyle="--")
        start += phase.seconds
    for t in run.transitions:
        for ax in axes:
            ax.axvline(t.at / 60, color="black", linewidth=0.6)
        axes[0].annotate(t.reason, (t.at / 60, axes[0].get_ylim()[1]), rotation=90, va="top", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_name(result: ScenarioResult) -> str:
    suffix = "" if result.label == result.scenario.name else f"-{result.profile}"
    return f"sim-{result.scenario.name}{suffix}.png"


def write(results: Sequence[ScenarioResult], out: Path, with_plots: bool = True, scale: float = 1.0) -> Path:
    """Write ``simulation.md`` and ``simulation.json`` into ``out``, then one PNG per scenario and
    profile (the figures are on disk before any plotting starts); return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "simulation.md"
    path.write_text(markdown(results, {}))
    (out / "simulation.json").write_text(json_document(results, scale) + "\n")
    if not with_plots:
        return path
    plots: dict[str, str] = {}
    for r in results:
        if SPECOPS in r.runs:
            plot(r, out / plot_name(r))
            plots[r.label] = plot_name(r)
    path.write_text(markdown(results, plots))
    return path

"""The test kit's commands, registered with the ``specops`` CLI through the ``specops.commands``
entry points (the product never imports the kit)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class DemoRollout(StrEnum):
    """``spec.rollout.strategy`` for the demo (unset: as the resource says), by the names of
    ``RolloutStrategy``'s members."""

    RESTART = "restart"
    SURGE = "surge"
    HOT_SWAP = "hot-swap"


def demo(
    resource: Annotated[Path, typer.Option(help="Resource to deploy.")] = Path(
        "manifests/examples/demo-llama70b.yaml"
    ),
    scenario: Annotated[Path, typer.Option(help="Load scenario.")] = Path("scenarios/demo.yaml"),
    run_dir: Annotated[Path, typer.Option(help="Where logs and state go.")] = Path(".local/demo"),
    plot: Annotated[Path, typer.Option(help="Timeline PNG to write.")] = Path("demo-timeline.png"),
    keep: Annotated[bool, typer.Option(help="Keep everything running afterwards (Ctrl-C stops).")] = False,
    rollout: Annotated[
        DemoRollout | None,
        typer.Option(
            help="Switch by restarting pods, with a surge pod, or by hot swap (both engines in every "
            "pod, vLLM sleep mode: switches in seconds). Default: as the resource says."
        ),
    ] = None,
) -> None:
    """Run the operator on the local closed loop: falls back when acceptance collapses, probes, re-enables."""
    from specops.api.v1alpha1 import RolloutStrategy
    from specops_testkit.testbed.demo import run_demo

    strategy = RolloutStrategy[rollout.name].value if rollout else None  # the same member names
    run_demo(resource, scenario, run_dir, plot, keep=keep, rollout=strategy)


class SimulateOutput(StrEnum):
    TABLE = "table"
    JSON = "json"


def plots_available() -> bool:
    """Is matplotlib (the test kit's ``plots`` extra) importable?"""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def simulate(
    scenarios: Annotated[
        list[Path] | None,
        typer.Argument(help="Scenario files (default: every scenarios/*.yaml with a resource)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Where simulation.md, simulation.json and the PNG timelines go.")
    ] = Path(".local/benchmarks"),
    scale: Annotated[float, typer.Option(help="Phase length factor (0.1 for a smoke run).")] = 1.0,
    plots: Annotated[bool, typer.Option(help="Write PNG timelines (needs the kit's plots extra).")] = True,
    output: Annotated[
        SimulateOutput,
        typer.Option("--output", "-o", help="stdout: the summary table, or every figure as JSON."),
    ] = SimulateOutput.TABLE,
) -> None:
    """Compare always/never-speculative, vLLM's dynamic table, SpecOps and an oracle on scenarios,
    faster than real time (the emulator's performance model, the operator's policy in the loop),
    under each resource's policy and under the shipped policy defaults.  Progress goes to stderr."""
    import time

    from specops_testkit.sim import report
    from specops_testkit.sim.suite import run_file_profiles
    from specops_testkit.testbed.scenario import load_scenario

    if plots and not plots_available():
        typer.echo(
            "warning: matplotlib is not installed, so no PNG timelines will be drawn; the tables are "
            "written all the same. Install the test kit's plots extra for them: "
            "pip install 'specops-testkit[plots]' (or pass --no-plots).",
            err=True,
        )
        plots = False
    paths = scenarios or sorted(p for p in Path("scenarios").glob("*.yaml") if load_scenario(p).resource)
    results = []
    for n, path in enumerate(paths, 1):
        t0 = time.monotonic()
        typer.echo(f"[{n}/{len(paths)}] {path.name} ...", err=True)
        try:
            results.extend(run_file_profiles(path, scale))
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {path}: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"[{n}/{len(paths)}] {path.name} done in {time.monotonic() - t0:.0f} s", err=True)
    written = report.write(results, out, with_plots=plots, scale=scale)
    if output is SimulateOutput.JSON:
        typer.echo(report.json_document(results, scale))
        typer.echo(f"full report: {written}", err=True)
    else:
        typer.echo(report.summary_table(results))
        typer.echo(f"\nfull report: {written}")

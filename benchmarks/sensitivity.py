"""Do the simulator's conclusions survive the model's uncertainty?  Vary each fitted or estimated
constant of the emulator's V1 performance model (and the pods' start-up time) by -30% and +30%,
rerun every scenario, and report whether each scenario's ranking of strategies changes.

Every scenario serves vLLM 0.32 (the V1 engine), so the constants varied are those its engines
read (``perf.V1_CONSTANTS``); the V0-only fits (``draft_pass_overhead_s`` 4.7 ms, the V0 lookup and
scorer costs) do not reach a V1 pod and are not varied (docs/emulator.md, "What is calibrated").
A constant is varied only on the scenarios whose proposer reads it (the n-gram constants on the
n-gram scenario, the draft model's on the chat ones); the others keep the base run's ranking by
construction.

Strategies ranked (by P99 TPOT, lower first): always-speculative, never-speculative,
vllm-dynamic, specops and specops-surge, under each scenario's own policy; the bounds (oracle,
hindsight) are not strategies one deploys and are left out, and so is the defaults profile (the
run would take twice as long).  The same seeds and arrivals are used throughout, so a change of
ranking comes from the constant, not from sampling; a flip between two strategies whose P99 TPOT
differ by less than ``--tie`` (2%) in both runs is reported as a near-tie.

Writes ``sensitivity.md`` and ``sensitivity.json`` into ``--out`` (default docs/benchmarks).

    python benchmarks/sensitivity.py [--scale 0.15] [--knobs a,b] [--scenarios s1,s2] [--out DIR]

Only the strategies whose runs read a constant are run again for it (never-speculative has no
proposer; only vllm-dynamic has a table; the start-up time reaches the static runs only where an
HPA resizes them).  At ``--scale 0.15`` it takes about an hour on two busy cores; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specops.api.v1alpha1 import Method
from specops_testkit.emulator import args as emulator_args
from specops_testkit.emulator.perf import V0_CONSTANTS, V1_CONSTANTS, PerfConstants, PromptKind
from specops_testkit.sim.suite import (
    ALWAYS,
    DYNAMIC,
    NEVER,
    SPECOPS,
    SPECOPS_SURGE,
    load_resource,
    run_scenario,
)
from specops_testkit.testbed.scenario import Scenario, load_scenario

RANKED = (ALWAYS, NEVER, DYNAMIC, SPECOPS, SPECOPS_SURGE)
FACTORS = (0.7, 1.3)
DRAFTING = frozenset({Method.DRAFT_MODEL, Method.EAGLE, Method.EAGLE3, Method.MTP, Method.MEDUSA})
LOOKUP = frozenset({Method.NGRAM, Method.SUFFIX})


@dataclass(frozen=True, slots=True)
class Knob:
    """One constant to vary: how to scale it, which proposers read it, and where it comes from."""

    name: str
    origin: str
    scale: Callable[[PerfConstants, float], PerfConstants] | None = None  # None: start-up time
    methods: frozenset[Method] | None = None  # None: every scenario
    # The strategies whose runs read it (the others keep the base run's figures); None: all.
    strategies: frozenset[str] | None = None

    def applies(self, method: Method) -> bool:
        return self.methods is None or method in self.methods

    def rerun(self, scenario: Scenario) -> tuple[str, ...]:
        if self.scale is None and scenario.replica_changes:
            return RANKED  # static runs start pods too when an HPA resizes them
        return tuple(s for s in RANKED if self.strategies is None or s in self.strategies)


def _field(name: str) -> Callable[[PerfConstants, float], PerfConstants]:
    def scale(c: PerfConstants, f: float) -> PerfConstants:
        return dataclasses.replace(c, **{name: getattr(c, name) * f})

    return scale


def _kind_entry(name: str, kind: PromptKind) -> Callable[[PerfConstants, float], PerfConstants]:
    """Scale one prompt kind's entry of a (kind, value) table, capped at 1 (a probability)."""

    def scale(c: PerfConstants, f: float) -> PerfConstants:
        table = tuple((k, min(1.0, v * f) if k is kind else v) for k, v in getattr(c, name))
        changes: dict[str, Any] = {name: table}
        return dataclasses.replace(c, **changes)

    return scale


def _overhead_curve(c: PerfConstants, f: float) -> PerfConstants:
    table = tuple((x, y * f) for x, y in c.dynamic_table_overhead)
    return dataclasses.replace(c, dynamic_table_overhead=table)


SPECULATIVE_PODS = frozenset({ALWAYS, DYNAMIC, SPECOPS, SPECOPS_SURGE})  # never-speculative has none
KNOBS = (
    Knob("hbm_bytes_per_s", "effective HBM bandwidth, chosen (70B step ~17 ms)", _field("hbm_bytes_per_s")),
    Knob("flops_per_s", "effective FLOP/s, chosen", _field("flops_per_s")),
    Knob("pass_overhead_s", "fixed cost per target pass, chosen", _field("pass_overhead_s")),
    Knob(
        "draft_pass_overhead_s",
        "V1 draft pass overhead, estimated (the V0 value is fitted)",
        _field("draft_pass_overhead_s"),
        frozenset({Method.DRAFT_MODEL}),
        SPECULATIVE_PODS,
    ),
    Knob(
        "acceptance_draft_model",
        "acceptance at T 0, assumed (docs/domain.md)",
        _field("acceptance_draft_model"),
        frozenset({Method.DRAFT_MODEL}),
        SPECULATIVE_PODS,
    ),
    Knob(
        "ngram_acceptance[summarization]",
        "fitted (QPS 1 n-gram point)",
        _kind_entry("ngram_acceptance", PromptKind.SUMMARIZATION),
        LOOKUP,
        SPECULATIVE_PODS,
    ),
    Knob(
        "lookup_s_per_seq",
        "V1 n-gram lookup, estimated",
        _field("lookup_s_per_seq"),
        LOOKUP,
        SPECULATIVE_PODS,
    ),
    Knob(
        "dynamic_table_overhead",
        "k-by-batch-size table overhead (vLLM issue 49548)",
        _overhead_curve,
        DRAFTING | LOOKUP,
        frozenset({DYNAMIC}),
    ),
    Knob(
        "startup_seconds",
        "pod start-up (model load), the scenarios' assumption",
        strategies=frozenset({SPECOPS, SPECOPS_SURGE}),
    ),
)
# Not varied, and why: seq_overhead_s and spec_seq_overhead_s (20 us per sequence per step, a
# few per cent of a step at most: +-30% moves it by about 1%); ngram_match (it scales n-gram
# acceptance as ngram_acceptance does); the V0-only fits (no V1 pod reads them);
# verify_position_overhead_s and verify_context_rereads (0 on V1).


@contextlib.contextmanager
def v1_constants(constants: PerfConstants) -> Iterator[None]:
    """Engines derived from container arguments (``args.derive_config``, which the simulator
    calls for every pod) get ``constants`` for the V1 engine while this is active."""
    original = getattr(emulator_args, "constants_for")  # noqa: B009 (a patch, not an API)
    setattr(emulator_args, "constants_for", lambda v0_engine: V0_CONSTANTS if v0_engine else constants)  # noqa: B010
    try:
        yield
    finally:
        setattr(emulator_args, "constants_for", original)  # noqa: B010


def p99s(scenario: Scenario, path: Path, strategies: Sequence[str] = RANKED) -> dict[str, float]:
    spec = load_resource(path, scenario)
    result = run_scenario(scenario, spec, strategies)
    return {name: result.figures[name].p99_tpot for name in strategies}


def ranking(figures: dict[str, float]) -> list[str]:
    return sorted(figures, key=lambda name: (figures[name], RANKED.index(name)))


@dataclass(frozen=True, slots=True)
class Flip:
    """Two strategies in the other order than in the base run."""

    better: str  # better in the base run
    worse: str
    base_gap: float  # worse's P99 over better's, minus one, in the base run
    varied_gap: float  # the same in the varied run (negative: the order flipped)

    def near_tie(self, tie: float) -> bool:
        return abs(self.base_gap) < tie and abs(self.varied_gap) < tie


def flips(base: dict[str, float], varied: dict[str, float]) -> list[Flip]:
    out = []
    order = ranking(base)
    for a, b in itertools.combinations(order, 2):  # a ranked above b in the base run
        if ranking({a: varied[a], b: varied[b]})[0] != a:
            out.append(Flip(a, b, base[b] / base[a] - 1, varied[b] / varied[a] - 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.15, help="phase length factor (default 0.15)")
    parser.add_argument("--knobs", default="", help="comma-separated knob names (default: all)")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--tie", type=float, default=0.02, help="gap below which a flip is a near-tie")
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="other arrival seeds the base run is repeated with (the noise floor)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    knobs = [k for k in KNOBS if not args.knobs or k.name in args.knobs.split(",")]  # "none": seeds only
    paths = sorted(p for p in Path("scenarios").glob("*.yaml") if load_scenario(p).resource)
    if args.scenarios:
        paths = [p for p in paths if load_scenario(p).name in args.scenarios.split(",")]
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", file=sys.stderr, flush=True)

    report: list[dict[str, Any]] = []
    for path in paths:
        scenario = load_scenario(path).scaled(args.scale)
        method = load_resource(path, scenario).speculation.method
        say(f"{scenario.name}: base run")
        base = p99s(scenario, path)
        entry: dict[str, Any] = {
            "scenario": scenario.name,
            "base": base,
            "ranking": ranking(base),
            "seeds": [],
            "varied": [],
        }
        for extra in range(1, args.seeds + 1):
            say(f"{scenario.name}: base run, seed {scenario.seed + extra}")
            other = p99s(scenario.model_copy(update={"seed": scenario.seed + extra}), path)
            entry["seeds"].append(
                {
                    "seed": scenario.seed + extra,
                    "p99_tpot": other,
                    "ranking": ranking(other),
                    "flips": [dataclasses.asdict(f) for f in flips(base, other)],
                }
            )
        for knob in knobs:
            if not knob.applies(method):
                continue
            for factor in FACTORS:
                say(f"{scenario.name}: {knob.name} x{factor:g}")
                rerun = knob.rerun(scenario)
                if knob.scale is None:
                    longer = scenario.model_copy(
                        update={"startup_seconds": scenario.startup_seconds * factor}
                    )
                    varied = base | p99s(longer, path, rerun)
                else:
                    with v1_constants(knob.scale(V1_CONSTANTS, factor)):
                        varied = base | p99s(scenario, path, rerun)
                changed = flips(base, varied)
                entry["varied"].append(
                    {
                        "knob": knob.name,
                        "factor": factor,
                        "p99_tpot": varied,
                        "ranking": ranking(varied),
                        "flips": [
                            dataclasses.asdict(f) | {"near_tie": f.near_tie(args.tie)} for f in changed
                        ],
                    }
                )
        report.append(entry)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"scale": args.scale, "tie": args.tie, "knobs": [k.name for k in knobs], "scenarios": report}
    (args.out / "sensitivity.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "sensitivity.md").write_text(markdown(document, knobs))
    say(f"wrote {args.out / 'sensitivity.md'}")
    return 0


def markdown(document: dict[str, Any], knobs: Sequence[Knob]) -> str:
    tie = document["tie"]
    lines = [
        f"# Sensitivity: each constant x0.7 and x1.3 (scenarios at scale {document['scale']:g})",
        "",
        "Generated by `python benchmarks/sensitivity.py`; summarised in",
        "[../benchmarks.md](../benchmarks.md).",
        "Strategies ranked by P99 TPOT (ms), best first. A flip names the pair that changed order, with",
        f"the gap in the base run and in the varied one; a near-tie is a flip within {tie:.0%} both times.",
        "",
        "| constant | origin |",
        "|---|---|",
        *[f"| `{k.name}` | {k.origin} |" for k in knobs],
        "",
    ]
    for entry in document["scenarios"]:
        base = entry["base"]
        lines += [
            f"## {entry['scenario']}",
            "",
            "Base ranking: " + " < ".join(f"{n} ({base[n] * 1000:.1f})" for n in entry["ranking"]) + ".",
            "",
            "| constant | factor | ranking unchanged | flips (base gap -> varied gap) |",
            "|---|---:|:---:|---|",
        ]
        for other in entry.get("seeds", []):
            order = " < ".join(f"{n} ({other['p99_tpot'][n] * 1000:.1f})" for n in other["ranking"])
            same = "yes" if not other["flips"] else "no"
            lines.append(f"| (arrivals, seed {other['seed']}) | - | {same} | {order} |")
        for v in entry["varied"]:
            flips_text = "; ".join(
                f"{f['better']} / {f['worse']} ({f['base_gap']:+.1%} -> {f['varied_gap']:+.1%})"
                + (" near-tie" if f["near_tie"] else "")
                for f in v["flips"]
            )
            same = (
                "yes"
                if not v["flips"]
                else ("near-tie only" if all(f["near_tie"] for f in v["flips"]) else "no")
            )
            lines.append(f"| `{v['knob']}` | x{v['factor']:g} | {same} | {flips_text or '-'} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

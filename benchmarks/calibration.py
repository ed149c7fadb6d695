"""Check the emulator's performance model against the published figures it was fitted to, and print
the product's demo figures.

Runs docs/domain.md, section 3's four measurements (Llama-3-70B on 4 x H100: a draft model on ShareGPT,
n-gram on CNN/DailyMail, each at QPS 1 and at high QPS) in virtual time: Poisson arrivals through
``specops_testkit.emulator.perf.Engine``, no sleeping.  Prints measured against published factors (baseline
TPOT over speculative TPOT) and whether each is within +-15%.

Then the demo configuration (Llama-3.1-70B INT8 + Llama-3.1-8B draft, k=5, TP 2 on 80 GiB GPUs,
vLLM 0.32.0, chat, max_tokens 128): the acceptance its counters report at temperature 0.2 and 1.0,
mean TPOT of a speculative and a baseline pod at 1, 2, 4, ... requests/s per replica with their
waiting queues, and the rates where speculation starts to lose, where each pod starts to queue and
where the speculative pod's TPOT is the better again (both saturated).  About 20 s in all.

Then two checks of the fit itself: validation against published figures no constant was fitted
to (vLLM issue 49548's k=0 table overhead, which the V1 table's overhead constant was set from,
and the EAGLE-3 head for Llama-3.3-70B at k=7, which nothing was fitted to); and, with
``--leave-one-out`` (a few minutes), each of the four points predicted by the four fitted
constants refitted to the other three, starting from their priors.

Usage: python benchmarks/calibration.py [--seed N] [--skip-demo] [--leave-one-out]
Exit code 1 when a calibration point is outside the tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time

from specops_testkit.emulator.calibration import (
    DEMO_MAX_TOKENS,
    DEMO_PROMPT_TOKENS,
    DEMO_TEMPERATURE,
    EAGLE3_K,
    FITTED,
    POINTS,
    demo_acceptance,
    demo_load,
    demo_thresholds,
    describe_factor,
    eagle3_acceptance_length,
    fit_constants,
    from_priors,
    k0_table_overhead,
    leave_one_out,
    measure,
)
from specops_testkit.emulator.perf import V0_CONSTANTS

TOLERANCE = 0.15


def calibration(seed: int) -> int:
    """Print the four published points; return how many are outside the tolerance."""
    header = (
        f"{'scenario':34} {'base TPOT':>10} {'spec TPOT':>10} {'measured':>15} {'published':>15}  within 15%?"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for point in POINTS:
        m = measure(point, seed=seed)
        ok = abs(m.deviation - 1.0) <= TOLERANCE
        failures += not ok
        print(
            f"{point.name:34} {m.baseline.mean_tpot * 1000:8.1f}ms {m.speculative.mean_tpot * 1000:8.1f}ms "
            f"{describe_factor(m.measured):>15} {describe_factor(point.published):>15}  "
            f"{'yes' if ok else 'NO'} ({m.deviation - 1.0:+.0%})"
        )
    return failures


def demo(seed: int) -> None:
    """Print the demo configuration's acceptance and its pods' latency against load."""
    print(
        "\ndemo: Llama-3.1-70B INT8 + Llama-3.1-8B draft, k=5, TP 2 x 80 GiB, vLLM 0.32.0 (V1), chat, "
        f"prompt {DEMO_PROMPT_TOKENS} tokens, max_tokens {DEMO_MAX_TOKENS}"
    )
    for temperature in (DEMO_TEMPERATURE, 1.0):
        rate, alpha = demo_acceptance(temperature)
        measured = demo_load(1.0, temperature, seconds=300.0, seed=seed)
        print(
            f"  T {temperature:.1f}: acceptance (accepted/draft tokens) {rate:.3f} model, "
            f"{measured.speculative.acceptance or 0.0:.3f} measured at 1 req/s; per-position alpha "
            f"{alpha:.3f}; mean TPOT spec {measured.speculative.summary.mean_tpot * 1000:.1f} ms vs "
            f"base {measured.baseline.summary.mean_tpot * 1000:.1f} ms"
        )
    th = demo_thresholds(seed=seed)
    header = (
        f"  {'req/s/replica':>13} {'base TPOT':>10} {'spec TPOT':>10} {'spec/base':>9} "
        f"{'base p99':>9} {'spec p99':>9} {'base wait':>9} {'spec wait':>9} {'base TTFT':>9} {'spec TTFT':>9}"
    )
    print(f"\n  T {DEMO_TEMPERATURE}: mean per-request TPOT, mean vllm:num_requests_waiting, mean TTFT")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for p in th.points:
        b, s = p.baseline, p.speculative
        print(
            f"  {p.rate:13g} {b.summary.mean_tpot * 1000:8.1f}ms {s.summary.mean_tpot * 1000:8.1f}ms "
            f"{p.tpot_ratio:9.2f} {b.summary.p99_tpot * 1000:7.1f}ms {s.summary.p99_tpot * 1000:7.1f}ms "
            f"{b.mean_waiting:9.1f} {s.mean_waiting:9.1f} "
            f"{b.summary.mean_ttft:8.2f}s {s.summary.mean_ttft:8.2f}s"
        )
    print(
        f"\n  speculation loses on mean TPOT from {th.spec_loses:g} req/s per replica; the speculative pod "
        f"queues from {th.spec_queues:g}, the baseline pod from {th.baseline_queues:g}; from "
        f"{th.spec_wins_again:g} the speculative pod's TPOT is the better again (its batch is capped by "
        "its smaller KV cache while the baseline's keeps growing: its requests wait instead)"
    )


def validation() -> None:
    """Published figures the fit did not use, against the model."""
    print("\nvalidation (figures no fitted constant was fitted to):")
    print("  vLLM issue 49548, k=0 table against a plain engine (demo pair, V1, closed loop):")
    for row in k0_table_overhead():
        print(
            f"    concurrency {row.concurrency:3d}: TPOT {row.modelled:+.1%} modelled, {row.published:+.1%} "
            f"published ({row.modelled - row.published:+.1%} points)"
        )
    print(f"  EAGLE-3 for Llama-3.3-70B, k={EAGLE3_K}, mean acceptance length (bonus token included):")
    for e in eagle3_acceptance_length():
        print(
            f"    temperature {e.temperature:.0f}: {e.modelled:.2f} modelled, {e.published:.2f} published "
            f"({e.modelled / e.published - 1:+.0%})"
        )


def held_out(seed: int) -> None:
    """Each point predicted by the constants refitted to the other three."""
    print("\nleave-one-out: the four fitted constants refitted (from their priors) to three points")
    names = " ".join(f"{f.name:>32}" for f in FITTED)
    print(f"  {'held-out point':34} {'predicted':>15} {'published':>15} {'error':>7}  {names}")
    print(
        f"  {'(value in the shipped fit)':34} {'':>15} {'':>15} {'':>7}  "
        + " ".join(f"{f.get(V0_CONSTANTS):32.4g}" for f in FITTED)
    )
    check = fit_constants(POINTS, from_priors(), seed=seed)
    print(
        f"  {'(all four refitted: a check)':34} {'':>15} {'':>15} {'':>7}  "
        + " ".join(f"{check.value(f.name):32.4g}" for f in FITTED),
        flush=True,
    )
    for h in leave_one_out(seed=seed):
        values = " ".join(f"{h.fit.value(f.name):32.4g}" for f in FITTED)
        print(
            f"  {h.point.name:34} {describe_factor(h.predicted):>15} "
            f"{describe_factor(h.point.published):>15} {h.error:+7.0%}  {values}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-demo", action="store_true", help="only the four calibration points")
    parser.add_argument(
        "--leave-one-out", action="store_true", help="refit on three points, predict the fourth (minutes)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    failures = calibration(args.seed)
    if not args.skip_demo:
        demo(args.seed)
    validation()
    if args.leave_one_out:
        held_out(args.seed)
    print(f"({time.perf_counter() - started:.1f} s, seed {args.seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

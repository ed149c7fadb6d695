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

Usage: python benchmarks/calibration.py [--seed N] [--skip-demo]
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
    POINTS,
    demo_acceptance,
    demo_load,
    demo_thresholds,
    describe_factor,
    measure,
)

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-demo", action="store_true", help="only the four calibration points")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    failures = calibration(args.seed)
    if not args.skip_demo:
        demo(args.seed)
    print(f"({time.perf_counter() - started:.1f} s, seed {args.seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

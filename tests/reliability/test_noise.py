"""Noise: acceptance oscillating +-0.05 around minAcceptanceRate for one simulated hour.

The simulator (specops_testkit.sim) serves the traffic with the emulator's model and runs the operator's
real policy and rollout code.  Acceptance is set through the temperature (the emulator's
acceptance falls with it), switching every minute (a square wave) or every 15-90 s at random
within the band.  SpecOps falls back once (half the windows are below the threshold) and must not
flap: exactly one switch of the serving configuration.  Probes while in Baseline never win here
(acceptance stays under the break-even rate); each one lost doubles the next cooldown, so they
grow further apart and an hour holds only a few.
"""

from __future__ import annotations

import random

import pytest

from specops.api.v1alpha1 import PolicySpec, ServingMode, SpeculativeInferenceSpec
from specops.policy.state import Reason
from specops_testkit.emulator.calibration import demo_acceptance
from specops_testkit.sim.suite import SPECOPS, run_scenario
from specops_testkit.testbed.scenario import Scenario
from tests.support.resources import load_scenario_resource

THRESHOLD = 0.5
NOISE = 0.05
HOUR = 3600.0


def temperature_for(acceptance: float) -> float:
    """The temperature at which the demo pair's acceptance is ``acceptance`` (it falls with T)."""
    lo, hi = 0.0, 2.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if demo_acceptance(mid)[0] > acceptance else (lo, mid)
    return (lo + hi) / 2


def noisy(shape: str, seed: int = 8) -> Scenario:
    rng = random.Random(seed)
    phases = []
    t = 0.0
    while t < HOUR:
        if shape == "square":
            seconds, acc = 60.0, THRESHOLD + (NOISE if len(phases) % 2 == 0 else -NOISE)
        else:
            seconds, acc = rng.uniform(15, 90), rng.uniform(THRESHOLD - NOISE, THRESHOLD + NOISE)
        seconds = min(seconds, HOUR - t)
        phases.append(
            {
                "name": f"p{len(phases)}",
                "duration": f"{seconds:.1f}s",
                "qps": 4,
                "temperature": temperature_for(acc),
            }
        )
        t += seconds
    return Scenario.model_validate({"name": f"noise-{shape}", "seed": seed, "phases": phases})


def spec(profile: str) -> SpeculativeInferenceSpec:
    s = load_scenario_resource("chat-llama70b.yaml").spec
    if profile == "defaults":
        s = s.model_copy(update={"policy": PolicySpec()})
    return s


def test_temperature_mapping_hits_the_band() -> None:
    for acc in (THRESHOLD - NOISE, THRESHOLD, THRESHOLD + NOISE):
        assert demo_acceptance(temperature_for(acc))[0] == pytest.approx(acc, abs=0.002)


@pytest.mark.parametrize("profile", ["fast", "defaults"])
@pytest.mark.parametrize("shape", ["square", "random"])
def test_noise_around_the_threshold_falls_back_once_and_backs_off_probes(profile: str, shape: str) -> None:
    result = run_scenario(noisy(shape), spec(profile), strategies=(SPECOPS,))
    run = result.runs[SPECOPS]
    seen = [
        p.speculative.acceptance
        for p in run.timeline
        if p.speculative and p.speculative.acceptance is not None
    ]
    # Not vacuous: the policy saw acceptance on both sides of the threshold, inside the band.
    assert min(seen) < THRESHOLD < max(seen), (min(seen), max(seen))
    # Windows are samples (a probe's first one is a single replica's): a little wider than the band,
    # and never at the break-even rate, where a probe could rightly win.
    assert min(seen) > THRESHOLD - 3 * NOISE and max(seen) < 0.65
    transitions = [(round(t.at), str(t.to_mode), str(t.reason)) for t in run.transitions]
    print(f"\n{profile}/{shape}: {result.switches} switch(es), {result.probes} probe(s): {transitions}")
    # Half the windows are under the threshold: SpecOps falls back, once (no probe can win here,
    # so more switches would need a bug; none would mean the breaches never added up).
    assert result.switches == 1, transitions
    # Not flapping through probes either: each probe lost doubles the next cooldown (up to x8),
    # so the gaps between probes grow, and an hour holds only a few of them.
    cooldown = spec(profile).policy.cooldown_seconds
    ends = [t.at for t in run.transitions if t.from_mode == ServingMode.PROBING]
    starts = [t.at for t in run.transitions if t.to_mode == ServingMode.PROBING]
    assert [t.reason for t in run.transitions if t.from_mode == ServingMode.PROBING] == [
        Reason.PROBE_LOST
    ] * len(ends)
    for lost, (end, next_start) in enumerate(zip(ends, starts[1:], strict=False), start=1):
        assert next_start - end >= cooldown * 2 ** min(lost, 3), transitions
    assert result.probes <= probes_allowed(HOUR, cooldown), transitions


def probes_allowed(seconds: float, cooldown: float) -> int:
    """The most probes a backoff of cooldown x1, x2, x4, x8, x8, ... lets start in ``seconds``
    (each probe itself lasting no time: a generous bound)."""
    n, t = 0, cooldown
    while t <= seconds:
        n += 1
        t += cooldown * 2 ** min(n, 3)
    return n

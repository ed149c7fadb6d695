"""Load scenarios: phases of open-loop traffic (pure models, shared by the load generator and the
faster-than-real-time simulator)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from specops.api.v1alpha1 import Duration, parse_duration


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class TemperatureShare(_Model):
    value: float = Field(ge=0.0, le=2.0)
    weight: float = Field(gt=0.0)


class Phase(_Model):
    name: str
    duration: Duration
    qps: float = Field(
        ge=0.0, description="Mean arrival rate (Poisson); at the end of the phase if qpsTo is set."
    )
    qps_to: float | None = Field(default=None, ge=0.0, description="Ramp linearly from qps to this.")
    temperature: float | list[TemperatureShare] = 0.7
    prompt_kind: str = Field(default="chat", pattern="^(chat|summarization|code)$")
    prompt_tokens: int = Field(default=256, ge=1)
    max_tokens: int = Field(default=128, ge=1)

    @property
    def seconds(self) -> float:
        return parse_duration(self.duration)

    def rate_at(self, t: float) -> float:
        if self.qps_to is None:
            return self.qps
        return self.qps + (self.qps_to - self.qps) * min(1.0, t / self.seconds)

    def draw_temperature(self, rng: random.Random) -> float:
        if isinstance(self.temperature, float | int):
            return float(self.temperature)
        shares = self.temperature
        return rng.choices([s.value for s in shares], weights=[s.weight for s in shares])[0]


class SLO(_Model):
    """What a request must get to count as served well (the benchmark's SLO share)."""

    tpot: float = Field(default=0.05, gt=0, description="Highest TPOT in seconds.")
    ttft: float = Field(default=2.0, gt=0, description="Highest time to first token in seconds.")


class ReplicaChange(_Model):
    """``spec.replicas`` set to ``replicas`` at ``at`` from the scenario's start (an HPA's decision)."""

    at: Duration
    replicas: int = Field(ge=1)

    @property
    def seconds(self) -> float:
        return parse_duration(self.at)


class Scenario(_Model):
    name: str
    description: str = ""
    seed: int = 1
    phases: list[Phase] = Field(min_length=1)
    # Read by the simulator (benchmarks); the load generator ignores them.
    resource: str | None = Field(
        default=None,
        description="The SpeculativeInference manifest served, relative to the scenario file.",
    )
    slo: SLO = Field(default_factory=SLO)
    startup_seconds: float = Field(default=60.0, ge=0, description="Pod start-up (model load) time.")
    replica_changes: list[ReplicaChange] = Field(
        default_factory=list,
        description="spec.replicas changes during the run, as an HPA makes them (simulator only).",
    )

    @model_validator(mode="after")
    def _names(self) -> Scenario:
        names = [p.name for p in self.phases]
        if len(names) != len(set(names)):
            raise ValueError("phase names must be unique")
        times = [c.seconds for c in self.replica_changes]
        if times != sorted(times):
            raise ValueError("replicaChanges: list the changes in time order (at ascending)")
        return self

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with every phase ``factor`` times as long (for smoke runs)."""
        phases = [p.model_copy(update={"duration": f"{p.seconds * factor:.3f}s"}) for p in self.phases]
        changes = [c.model_copy(update={"at": f"{c.seconds * factor:.3f}s"}) for c in self.replica_changes]
        return self.model_copy(update={"phases": phases, "replica_changes": changes})


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float
    phase: str
    temperature: float
    prompt_kind: str
    prompt_tokens: int
    max_tokens: int


def arrivals(scenario: Scenario) -> list[Arrival]:
    """Poisson arrival times (thinning for ramps), deterministic for the scenario's seed."""
    rng = random.Random(scenario.seed)
    out: list[Arrival] = []
    start = 0.0
    for phase in scenario.phases:
        peak = max(phase.qps, phase.qps_to or 0.0)
        t = 0.0
        while peak > 0:
            t += rng.expovariate(peak)
            if t >= phase.seconds:
                break
            if rng.random() * peak <= phase.rate_at(t):
                out.append(
                    Arrival(
                        t=start + t,
                        phase=phase.name,
                        temperature=phase.draw_temperature(rng),
                        prompt_kind=phase.prompt_kind,
                        prompt_tokens=phase.prompt_tokens,
                        max_tokens=phase.max_tokens,
                    )
                )
        start += phase.seconds
    return out


def load_scenario(path: Path) -> Scenario:
    return Scenario.model_validate(yaml.safe_load(path.read_text()))

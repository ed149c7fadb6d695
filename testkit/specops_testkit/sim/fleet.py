"""A discrete-event simulation of one SpeculativeInference's service, faster than real time.

What runs is the real thing wherever it can be:

* every pod is a ``perf.Engine`` built from the container arguments ``render.vllm_args`` writes for
  its pool, parsed and sized by the emulator's ``args`` module (the same path an emulated pod takes);
* the controller is the operator's pure code, executed the way the operator executes it: each
  evaluation runs ``plan_evaluation`` (the policy's decision and the switch to store), each
  reconcile runs ``plan_reconcile`` on the resource as stored and executes the ``Plan`` it returns:
  its Deployment applies set the pools' sizes, its status merge patch is applied to the stored
  status, which the next plan reads back (``SimController``);
* what the policy sees is built the way Prometheus would answer the operator's queries: counters
  and histograms as of the last scrape, ``rate()`` over the policy window, ``histogram_quantile``
  over vLLM's TPOT buckets, gauges averaged over the window.

What is modelled, not run: the Service spreads requests uniformly at random over ready pods (as
kube-proxy does); a pod leaving a pool stops getting requests, finishes what it holds, and frees its
GPUs; the pod replacing it starts then and serves ``startup_seconds`` later (model load).  A pod
still holding requests when its termination grace period (``render.TERMINATION_GRACE_SECONDS``)
runs out is killed and those requests fail, as do requests that arrive while no pod is ready.
"""

from __future__ import annotations

import bisect
import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from specops.api.v1alpha1 import (
    PolicySpec,
    RolloutStrategy,
    ServingMode,
    SpeculativeInferenceSpec,
    parse_duration,
)
from specops.plan.hotswap import ReplicaEngine, Swap, plan_swap
from specops.plan.reconcile import Observed, Plan, plan_evaluation, plan_reconcile, plan_status_after_switch
from specops.plan.rollout import split_for_mode
from specops.plan.status import rfc3339
from specops.policy.decide import Observation, PoolMetrics, Transition
from specops.render.manifests import TERMINATION_GRACE_SECONDS, Pool, PoolSplit, vllm_args
from specops.vllm.budget import vram_per_gpu_gib
from specops.vllm.dialect import parse_version
from specops_testkit.emulator.args import derive_config, parse_args
from specops_testkit.emulator.metrics import ITL_BUCKETS, TTFT_BUCKETS
from specops_testkit.emulator.perf import (
    Engine,
    EngineConfig,
    FinishReason,
    PromptKind,
    Request,
    StepResult,
    sample_eos_after,
)
from specops_testkit.sim.hotswap import swap_seconds
from specops_testkit.testbed.scenario import Arrival

SCRAPE_SECONDS = 5.0  # the testbed's (and a typical PodMonitor's) scrape interval
CONTROL_TICK = 1.0  # how often the simulated operator looks at rollouts
RESYNC_SECONDS = 60.0  # the operator's periodic reconcile


def engine_config(spec: SpeculativeInferenceSpec, pool: Pool) -> EngineConfig:
    """A pool's engine as an emulated pod derives it from its rendered command line (and the GPU
    memory the pod runner gives it)."""
    version = parse_version(spec.vllm.version)
    args = parse_args(vllm_args(spec, pool), version)
    return derive_config(args, version, vram_per_gpu_gib(spec), spec.target.quantization.value).engine


def histogram_quantile(q: float, bounds: Sequence[float], values: Sequence[float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over ``values`` bucketed at ``bounds`` (+Inf last):
    linear interpolation inside the bucket that holds the rank; the highest finite bound when
    the rank falls in +Inf; None without observations."""
    if not values:
        return None
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
    rank = q * len(values)
    seen = 0
    for i, c in enumerate(counts):
        if seen + c >= rank and c:
            if i == len(bounds):
                return bounds[-1]
            lo = 0.0 if i == 0 else bounds[i - 1]
            return lo + (bounds[i] - lo) * (rank - seen) / c
        seen += c
    return bounds[-1]


@dataclass(slots=True)
class SimPod:
    name: str
    pool: Pool
    engine: Engine
    ready_at: float  # inf until its GPUs are free and its start-up has begun
    rng: random.Random
    terminating_at: float | None = None
    free_at: float = 0.0  # end of the step in flight
    gone_at: float | None = None
    successor: SimPod | None = None  # the pod waiting for this one's GPUs
    swapping_to: Pool | None = None  # HotSwap: draining, then sleep + wake into this pool
    swap_started: float = 0.0

    @property
    def active(self) -> bool:
        """Neither leaving nor gone (it may still be starting)."""
        return self.terminating_at is None and self.gone_at is None

    def ready(self, now: float) -> bool:
        return self.terminating_at is None and self.gone_at is None and self.ready_at <= now


@dataclass(frozen=True, slots=True)
class Served:
    """One request's outcome (times in seconds from the start of the scenario)."""

    arrival: float
    phase: str
    temperature: float
    pool: Pool | None  # None: failed, no ready pod
    ttft: float | None
    tpot: float | None
    e2e: float | None
    finished_at: float | None


@dataclass(slots=True)
class _Series:
    """Time-stamped samples with running totals, for window sums by bisection."""

    times: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)

    def add(self, t: float, value: float) -> None:
        self.times.append(t)
        self.totals.append((self.totals[-1] if self.totals else 0.0) + value)

    def _total_at(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t)
        return self.totals[i - 1] if i else 0.0

    def sum(self, start: float, end: float) -> float:
        return self._total_at(end) - self._total_at(start)


@dataclass(slots=True)
class PoolRecord:
    drafted: _Series = field(default_factory=_Series)
    accepted: _Series = field(default_factory=_Series)
    finished_times: list[float] = field(default_factory=list)
    tpots: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    # One row per scrape: (time, live replicas, waiting, running) summed over the pool's pods.
    scrapes: list[tuple[float, int, float, float]] = field(default_factory=list)

    def _window(self, times: list[float], values: list[float], start: float, end: float) -> list[float]:
        return values[bisect.bisect_right(times, start) : bisect.bisect_right(times, end)]

    def metrics(self, start: float, end: float) -> PoolMetrics | None:
        """What the operator's queries would read for this pool over (start, end]."""
        rows = [s for s in self.scrapes if start < s[0] <= end]
        if not rows:
            return None
        span = end - start
        replicas = rows[-1][1]
        drafted = self.drafted.sum(start, end)
        tpots = self._window(self.finished_times, self.tpots, start, end)
        ttfts = self._window(self.finished_times, self.ttfts, start, end)
        return PoolMetrics(
            replicas=replicas,
            request_rate=len(tpots) / span,
            acceptance=self.accepted.sum(start, end) / drafted if drafted else None,
            tpot_p50=histogram_quantile(0.5, ITL_BUCKETS, tpots),
            tpot_p99=histogram_quantile(0.99, ITL_BUCKETS, tpots),
            ttft_p99=histogram_quantile(0.99, TTFT_BUCKETS, ttfts),
            waiting=sum(r[2] for r in rows) / len(rows),
            running=sum(r[3] for r in rows) / len(rows),
        )


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    t: float
    mode: str
    split: PoolSplit
    qps: float  # arrivals per second over the last window
    speculative: PoolMetrics | None
    baseline: PoolMetrics | None
    verdict: str


@dataclass(slots=True)
class Run:
    """Everything one simulated run produced."""

    served: list[Served]
    timeline: list[TimelinePoint]
    transitions: list[Transition]
    end: float


class Fleet:
    """The pods of one service, the Service's routing and the metrics Prometheus would hold."""

    def __init__(
        self,
        configs: dict[Pool, EngineConfig],
        split: PoolSplit,
        startup_seconds: float,
        seed: int,
    ) -> None:
        self.configs = configs
        self.startup = startup_seconds
        self.seed = seed
        self.pods: list[SimPod] = []
        self.records = {Pool.SPECULATIVE: PoolRecord(), Pool.BASELINE: PoolRecord()}
        self.applied = split
        self._count = 0
        self.swap_seconds: float | None = None  # HotSwap: a replica's sleep + wake
        for pool, n in ((Pool.SPECULATIVE, split.speculative), (Pool.BASELINE, split.baseline)):
            for _ in range(n):
                self._new_pod(pool, ready_at=0.0)

    def _new_pod(self, pool: Pool, ready_at: float) -> SimPod:
        self._count += 1
        pod = SimPod(
            name=f"{pool.suffix}-{self._count}",
            pool=pool,
            engine=Engine(self.configs[pool]),
            ready_at=ready_at,
            rng=random.Random(self.seed * 1000 + self._count),
        )
        self.pods.append(pod)
        return pod

    def live(self, pool: Pool, now: float) -> list[SimPod]:
        return [p for p in self.pods if p.pool is pool and p.ready(now)]

    def _leaving(self, pool: Pool, now: float) -> SimPod:
        candidates = [p for p in self.pods if p.pool is pool and p.active]
        # The Deployment controller removes a pod that is not ready first, else the newest.
        candidates.sort(key=lambda p: (p.ready_at <= now, p.ready_at))
        return candidates[0]

    def apply(self, split: PoolSplit, now: float) -> None:
        """Make the pools ``split``, as the Deployment controller would.

        One replica moving between the pools (``maxSurge: 0``): a pod of the shrinking pool drains
        and its successor starts once the GPUs are free.  A pool growing alone (a surge step):
        the new pod starts now.  A pool shrinking alone: one of its pods drains.
        """
        d_spec = split.speculative - self.applied.speculative
        d_base = split.baseline - self.applied.baseline
        swap = self._hot_swap(split, now) if {d_spec, d_base} == {1, -1} else None
        if swap is not None:
            self.swap(next(p for p in self.pods if p.name == swap.replica), swap.to_pool, now)
        elif {d_spec, d_base} == {1, -1}:
            to = Pool.SPECULATIVE if d_spec > 0 else Pool.BASELINE
            old = self._leaving(Pool.BASELINE if to is Pool.SPECULATIVE else Pool.SPECULATIVE, now)
            old.terminating_at = now
            old.successor = self._new_pod(to, ready_at=math.inf)
        else:
            for pool, delta in ((Pool.SPECULATIVE, d_spec), (Pool.BASELINE, d_base)):
                for _ in range(max(0, delta)):
                    self._new_pod(pool, ready_at=now + self.startup)
                for _ in range(max(0, -delta)):
                    self._leaving(pool, now).terminating_at = now
        self.applied = split

    def _hot_swap(self, split: PoolSplit, now: float) -> Swap | None:
        """With HotSwap, the replica the operator's ``plan_swap`` picks (None: restart as usual)."""
        if self.swap_seconds is None:
            return None
        replicas = [
            ReplicaEngine(p.name, None if p.swapping_to else p.pool, p.ready(now))
            for p in self.pods
            if p.active
        ]
        return plan_swap(split, replicas)

    def swap(self, pod: SimPod, to_pool: Pool, now: float) -> None:
        """HotSwap: ``pod`` leaves the routing now and drains; once drained (or past the grace
        period, its leftovers aborted) its engine sleeps and the other wakes, ``swap_seconds``
        later it serves in ``to_pool``.  The pod and its GPUs stay."""
        pod.swapping_to = to_pool
        pod.swap_started = now
        pod.ready_at = math.inf

    def _finish_swaps(self, now: float) -> None:
        for p in self.pods:
            if p.swapping_to is None or p.free_at > now:
                continue
            if p.engine.has_work and now - p.swap_started < TERMINATION_GRACE_SECONDS:
                continue
            for r in [*p.engine.running, *p.engine.waiting]:
                p.engine.abort(r, now)
            p.pool, p.swapping_to = p.swapping_to, None
            p.engine = Engine(self.configs[p.pool])
            p.ready_at = now + (self.swap_seconds or 0.0)

    def retire(self, now: float) -> None:
        """Pods that finished draining leave; those past their grace period are killed."""
        self._finish_swaps(now)
        for p in self.pods:
            if p.terminating_at is None or p.gone_at is not None or p.free_at > now:
                continue
            if p.engine.has_work and now - p.terminating_at < TERMINATION_GRACE_SECONDS:
                continue
            for r in [*p.engine.running, *p.engine.waiting]:
                p.engine.abort(r, now)
            p.gone_at = now
            if p.successor is not None:
                p.successor.ready_at = now + self.startup

    def record_step(self, pod: SimPod, result: StepResult) -> None:
        rec = self.records[pod.pool]
        drafted = sum(p.drafted for p in result.progress)
        if drafted:
            rec.drafted.add(result.end, drafted)
            rec.accepted.add(result.end, sum(p.accepted for p in result.progress))
        for r in result.finished:
            rec.finished_times.append(result.end)
            rec.tpots.append(r.tpot if r.tpot is not None else 0.0)
            rec.ttfts.append(r.ttft if r.ttft is not None else 0.0)

    def scrape(self, now: float) -> None:
        for pool, rec in self.records.items():
            pods = [p for p in self.pods if p.pool is pool and p.gone_at is None and p.ready_at <= now]
            if not pods:
                continue
            rec.scrapes.append(
                (
                    now,
                    len(pods),
                    float(sum(len(p.engine.waiting) for p in pods)),
                    float(sum(len(p.engine.running) for p in pods)),
                )
            )

    def observe(self, now: float, window: float) -> Observation:
        """The operator's view at ``now``: data as of the last scrape, over the rate window."""
        last = math.floor(now / SCRAPE_SECONDS) * SCRAPE_SECONDS
        start = last - window
        return Observation(
            speculative=self.records[Pool.SPECULATIVE].metrics(start, last),
            baseline=self.records[Pool.BASELINE].metrics(start, last),
        )


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a status patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply_merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class SimController:
    """The operator's controller over a simulated fleet: it reads the resource and its
    Deployments, calls the same pure plans as ``specops.controller.reconciler`` and executes them
    (Deployment applies resize the fleet's pools, status patches go into the stored resource)."""

    def __init__(self, spec: SpeculativeInferenceSpec, fleet: Fleet, refresh_seconds: float = 60.0) -> None:
        self.fleet = fleet
        self.refresh = refresh_seconds
        self.body: dict[str, Any] = {
            "apiVersion": "specops.dev/v1alpha1",
            "kind": "SpeculativeInference",
            "metadata": {"name": "sim", "namespace": "sim", "uid": "sim-uid", "generation": 1,
                         "resourceVersion": "1"},
            "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        }  # fmt: skip
        self.deployments: dict[Pool, dict[str, Any] | None] = {Pool.SPECULATIVE: None, Pool.BASELINE: None}
        self.service: dict[str, Any] | None = None
        self.plans = 0
        self.events: list[tuple[float, str, str]] = []

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    @property
    def mode(self) -> ServingMode:
        return ServingMode(self.status.get("mode", ServingMode.SPECULATIVE))

    def _observed(self, now: float) -> Observed:
        for pool, live in self.deployments.items():
            if live is not None:
                pods = [p for p in self.fleet.pods if p.pool is pool and p.active]
                live["status"] = {"replicas": len(pods), "readyReplicas": len(self.fleet.live(pool, now))}
        return Observed(deployments=dict(self.deployments), service=self.service)

    def execute(self, plan: Plan, now: float) -> None:
        sizes = {}
        for apply in plan.applies:
            manifest = copy.deepcopy(apply.manifest)
            if apply.kind == "Deployment":
                pool = next(p for p in Pool if manifest["metadata"]["name"].endswith(p.suffix))
                self.deployments[pool] = manifest
                sizes[pool] = int(manifest["spec"]["replicas"])
            elif apply.kind == "Service":
                self.service = manifest
            if apply.event is not None:
                self.events.append((now, apply.event.reason, apply.event.message))
        for event in plan.events:
            self.events.append((now, event.reason, event.message))
        if sizes:
            split = PoolSplit(
                sizes.get(Pool.SPECULATIVE, self.fleet.applied.speculative),
                sizes.get(Pool.BASELINE, self.fleet.applied.baseline),
            )
            if split != self.fleet.applied:
                self.fleet.apply(split, now)
        self._patch_status(plan.status_patch)

    def _patch_status(self, patch: dict[str, Any]) -> None:
        if patch:
            self.body["status"] = apply_merge_patch(self.status, patch)
            meta = self.body["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def scale(self, replicas: int, now: float) -> Plan:
        """``spec.replicas`` written by someone else (an HPA): a new generation of the resource,
        and the reconcile its watch event starts."""
        self.body["spec"]["replicas"] = replicas
        meta = self.body["metadata"]
        meta["generation"] = int(meta["generation"]) + 1
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return self.reconcile(now)

    def reconcile(self, now: float) -> Plan:
        self.plans += 1
        plan = plan_reconcile(self.body, self._observed(now), rfc3339(now))
        self.execute(plan, now)
        return plan

    def evaluate(self, obs: Observation, now: float) -> tuple[str, Transition | None]:
        ev = plan_evaluation(self.body, obs, now, self.refresh)
        if ev is None:
            return "-", None
        if ev.switch_patch:
            self._patch_status(ev.switch_patch)
            self.body = plan_status_after_switch(self.body, ev, self.body["metadata"]["resourceVersion"])
        self.plans += 1
        plan = plan_reconcile(
            self.body,
            self._observed(now),
            rfc3339(now),
            status=ev.status,
            metrics_condition=ev.metrics_condition,
        )
        self.execute(plan, now)
        for event in ev.events:
            self.events.append((now, event.reason, event.message))
        return str(ev.decision.assessment.reason), ev.decision.transition


def _request(arrival: Arrival, i: int, rng: random.Random) -> Request:
    kind = PromptKind(arrival.prompt_kind)
    return Request(
        request_id=f"req-{i}",
        prompt_tokens=arrival.prompt_tokens,
        max_tokens=arrival.max_tokens,
        temperature=arrival.temperature,
        prompt_kind=kind,
        arrival=arrival.t,
        eos_after=sample_eos_after(rng, kind),
    )


def simulate(
    spec: SpeculativeInferenceSpec,
    arrivals: Sequence[Arrival],
    *,
    startup_seconds: float,
    seed: int,
    adaptive: bool,
    initial_mode: ServingMode | str = ServingMode.SPECULATIVE,
    spec_override: SpeculativeInferenceSpec | None = None,
    replica_changes: Sequence[tuple[float, int]] = (),
) -> Run:
    """Serve ``arrivals`` with ``spec``'s pools.  ``adaptive`` runs SpecOps' policy and rollout;
    otherwise the service stays in ``initial_mode``.  ``spec_override`` replaces the speculative
    pool's configuration (e.g. with vLLM's k-by-batch-size table).  ``replica_changes``: (time,
    replicas) writes to ``spec.replicas``, as an HPA makes them: SpecOps reconciles the new
    generation; a static configuration resizes its pool as its Deployment would."""
    policy: PolicySpec = spec.policy
    configs = {
        Pool.SPECULATIVE: engine_config(spec_override or spec, Pool.SPECULATIVE),
        Pool.BASELINE: engine_config(spec, Pool.BASELINE),
    }
    probe_replicas = policy.probe.replicas
    mode = ServingMode(initial_mode)
    fleet = Fleet(configs, split_for_mode(mode, spec.replicas, probe_replicas), startup_seconds, seed)
    if spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP:
        fleet.swap_seconds = swap_seconds(configs)
    controller = SimController(spec, fleet) if adaptive else None
    if controller is not None:
        controller.reconcile(0.0)  # the first deployment: the pods above are its pods
    ready_seen = -1
    last_reconcile = 0.0
    interval = parse_duration(policy.interval)
    window = parse_duration(policy.window)
    route_rng = random.Random(seed + 1)
    eos_rng = random.Random(seed + 2)
    requests = [_request(a, i, eos_rng) for i, a in enumerate(arrivals)]
    phase_of = {id(r): a for r, a in zip(requests, arrivals, strict=True)}
    pool_of: dict[int, Pool] = {}
    failed: list[Served] = []
    timeline: list[TimelinePoint] = []
    transitions: list[Transition] = []
    arrival_times = [a.t for a in arrivals]
    horizon = (arrivals[-1].t if arrivals else 0.0) + 1.0
    next_scrape, next_eval, next_tick = SCRAPE_SECONDS, interval, CONTROL_TICK
    changes = sorted(replica_changes)
    i = 0
    now = 0.0
    while True:
        busy = [p.free_at for p in fleet.pods if p.gone_at is None and (p.engine.has_work or p.free_at > now)]
        if i >= len(requests) and not busy and now >= horizon:
            break
        candidates = [next_scrape, next_eval, next_tick, *busy]
        if i < len(requests):
            candidates.append(requests[i].arrival)
        if changes:
            candidates.append(changes[0][0])
        now = max(now, min(candidates))
        while changes and changes[0][0] <= now:
            _, replicas = changes.pop(0)
            if controller is not None:
                controller.scale(replicas, now)
            else:
                fleet.apply(split_for_mode(mode, replicas, probe_replicas), now)
        # Arrivals: uniformly over the ready pods.
        while i < len(requests) and requests[i].arrival <= now:
            r = requests[i]
            i += 1
            ready = [p for p in fleet.pods if p.ready(r.arrival)]
            if not ready:
                a = phase_of[id(r)]
                failed.append(Served(r.arrival, a.phase, a.temperature, None, None, None, None, None))
                continue
            pod = route_rng.choice(ready)
            pod.engine.add(r)
            pool_of[id(r)] = pod.pool
        # Steps: every pod that is free and has work starts its next step now.
        for pod in fleet.pods:
            if pod.gone_at is None and pod.free_at <= now and pod.engine.has_work:
                result = pod.engine.step(pod.rng, now)
                pod.free_at = result.end
                fleet.record_step(pod, result)
        fleet.retire(now)
        if now >= next_scrape:
            fleet.scrape(now)
            next_scrape += SCRAPE_SECONDS
        if now >= next_tick:
            next_tick += CONTROL_TICK
            if controller is not None:
                # The operator reconciles on its Deployments' events (a pod turning ready) and on
                # its timer; between those nothing changes for it.
                n_ready = sum(len(fleet.live(p, now)) for p in Pool)
                if n_ready != ready_seen or now - last_reconcile >= RESYNC_SECONDS:
                    ready_seen, last_reconcile = n_ready, now
                    controller.reconcile(now)
        if now >= next_eval:
            next_eval += interval
            obs = fleet.observe(now, window)
            verdict = "-"
            if controller is not None:
                verdict, transition = controller.evaluate(obs, now)
                if transition is not None:
                    transitions.append(transition)
            lo = bisect.bisect_right(arrival_times, now - window)
            hi = bisect.bisect_right(arrival_times, now)
            timeline.append(
                TimelinePoint(
                    now,
                    controller.mode if controller is not None else mode,
                    fleet.applied,
                    (hi - lo) / window,
                    obs.speculative,
                    obs.baseline,
                    verdict,
                )
            )
    served = failed + [_served(r, phase_of[id(r)], pool_of[id(r)]) for r in requests if r.finished]
    served.sort(key=lambda s: s.arrival)
    return Run(served=served, timeline=timeline, transitions=transitions, end=now)


def _served(r: Request, a: Arrival, pool: Pool) -> Served:
    if r.finish_reason is FinishReason.ABORT:  # killed with its pod
        return Served(r.arrival, a.phase, a.temperature, pool, None, None, None, r.finish_time)
    return Served(
        arrival=r.arrival,
        phase=a.phase,
        temperature=a.temperature,
        pool=pool,
        ttft=r.ttft,
        tpot=r.tpot,
        e2e=r.e2e,
        finished_at=r.finish_time,
    )

"""Hindsight with switch costs: the best switching schedule found knowing the whole scenario in
advance, where every switch is executed the way the operator executes one and pays what it costs.

The free-switch oracle (``suite.ORACLE``) stitches the static runs together at phase boundaries,
as if a switch cost nothing.  This bound knows the future too, but a switch here is a real
rollout: ``rollout.rollout_step`` moves one replica at a time (the resource's ``maxSurge``), the
pod leaving drains for up to its grace period, its successor starts when the GPUs are free and
serves ``startupSeconds`` later, and the service serves with what is ready meanwhile.

The search, over decision points every ``decision_seconds``:

1. Both static configurations are served once (``ScheduledRun``, the simulator's event loop made
   resumable), keeping a copy of the whole service at every decision point.
2. From each copy, every useful switch (towards the configuration that is better within
   ``lookahead_seconds``) is served for real: from the decision until the pools have settled and
   the queue is back to the static run's (at most ``max_window_seconds``).  Its requests (those in
   flight at the decision and those arriving in the window) get the outcomes of that trial.
3. A schedule's cost is estimated by stitching: static outcomes between switches, trial outcomes
   around each.  P99 TPOT is not a sum over requests, but "P99 <= tau" is "at most 1% of requests
   above tau": for a sweep of thresholds ``tau``, dynamic programming over the decision points
   finds the schedule with the fewest requests above ``tau`` (a failed request counts as above
   any), and the stitched P99 of each such schedule is computed exactly.
4. The best schedules by stitched P99 are served again in full, from the start, and the best of
   those real runs and the two static runs is the hindsight.  So it is never worse than the better
   static configuration, and every figure reported is a real run, not the estimate.

What it is not: a proven optimum.  Stitching assumes that a trial's window ends with the service
back in the static run's state (checked by the queue length), and only switches at decision
points towards a configuration that wins soon are tried.  It is a bound found by search: a
controller that does better than it found a schedule the search missed.
"""

from __future__ import annotations

import bisect
import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from specops.api.v1alpha1 import ServingMode, SpeculativeInferenceSpec, parse_duration
from specops.plan.rollout import growing_pool, rollout_step, split_for_mode
from specops.policy.state import Reason, Transition
from specops.render.manifests import Pool
from specops_testkit.emulator.perf import FinishReason, PromptKind, Request, sample_eos_after
from specops_testkit.sim.fleet import CONTROL_TICK, SCRAPE_SECONDS, Fleet, Run, Served, engine_config
from specops_testkit.testbed.scenario import Arrival

SPECULATIVE, BASELINE = ServingMode.SPECULATIVE, ServingMode.BASELINE
MODES = (SPECULATIVE, BASELINE)
QUANTILE = 0.99


def _other(mode: ServingMode) -> ServingMode:
    return BASELINE if mode == SPECULATIVE else SPECULATIVE


@dataclass(frozen=True, slots=True)
class _Traffic:
    """What every copy of a run shares and never changes."""

    spec: SpeculativeInferenceSpec
    arrivals: tuple[Arrival, ...]
    times: tuple[float, ...]
    eos_after: tuple[int, ...]
    probe_replicas: int
    surge: int
    interval: float
    horizon: float


class ScheduledRun:
    """The simulator's static run (``fleet.simulate`` with ``adaptive=False``), resumable and
    copyable, with mode switches at scheduled times executed by the operator's rollout rule.

    Without a switch it serves exactly what ``simulate`` serves (a test holds the two equal):
    the same event times, routing, start-up and drain.  A switch sets the target mode; every
    control tick the next ``rollout_step`` towards it is applied, as the operator's reconcile does
    when a pod turns ready.
    """

    def __init__(
        self,
        spec: SpeculativeInferenceSpec,
        arrivals: Sequence[Arrival],
        *,
        startup_seconds: float,
        seed: int,
        initial_mode: ServingMode,
        replica_changes: Sequence[tuple[float, int]] = (),
    ) -> None:
        eos_rng = random.Random(seed + 2)
        self.traffic = _Traffic(
            spec=spec,
            arrivals=tuple(arrivals),
            times=tuple(a.t for a in arrivals),
            eos_after=tuple(sample_eos_after(eos_rng, PromptKind(a.prompt_kind)) for a in arrivals),
            probe_replicas=spec.policy.probe.replicas,
            surge=spec.rollout.max_surge,
            interval=parse_duration(spec.policy.interval),
            horizon=(arrivals[-1].t if arrivals else 0.0) + 1.0,
        )
        configs = {
            Pool.SPECULATIVE: engine_config(spec, Pool.SPECULATIVE),
            Pool.BASELINE: engine_config(spec, Pool.BASELINE),
        }
        self.mode = initial_mode
        self.replicas = spec.replicas
        split = split_for_mode(initial_mode, spec.replicas, self.traffic.probe_replicas)
        self.fleet = Fleet(configs, split, startup_seconds, seed)
        self.route_rng = random.Random(seed + 1)
        self.changes = sorted(replica_changes)
        self.schedule: list[tuple[float, ServingMode]] = []
        self.transitions: list[Transition] = []
        self.inflight: dict[int, tuple[Request, Pool]] = {}
        self.outcomes: list[Served | None] = [None] * len(arrivals)
        self.i = 0
        self.now = 0.0
        self.next_scrape, self.next_eval, self.next_tick = SCRAPE_SECONDS, self.traffic.interval, CONTROL_TICK
        self.done = False

    # -- copies and schedule ---------------------------------------------------------------

    def copy(self) -> ScheduledRun:
        """An independent copy of the service as it is now (the traffic is shared)."""
        memo: dict[int, object] = {id(self.traffic): self.traffic}
        for config in self.fleet.configs.values():
            memo[id(config)] = config
        new = copy.copy(self)
        new.fleet = copy.deepcopy(self.fleet, memo)
        new.inflight = {i: (copy.deepcopy(r, memo), pool) for i, (r, pool) in self.inflight.items()}
        new.route_rng = copy.deepcopy(self.route_rng)
        new.changes = list(self.changes)
        new.schedule = list(self.schedule)
        new.transitions = list(self.transitions)
        new.outcomes = list(self.outcomes)
        return new

    def switch_at(self, t: float, mode: ServingMode) -> None:
        """Make ``mode`` the target at ``t`` (not before the run's present)."""
        self.schedule.append((max(t, self.now), mode))
        self.schedule.sort(key=lambda s: s[0])

    # -- state ------------------------------------------------------------------------------

    @property
    def target(self) -> tuple[int, int]:
        split = split_for_mode(self.mode, self.replicas, self.traffic.probe_replicas)
        return split.speculative, split.baseline

    def settled(self) -> bool:
        """The pools are the target mode's, every pod ready, none leaving."""
        split = split_for_mode(self.mode, self.replicas, self.traffic.probe_replicas)
        if self.fleet.applied != split:
            return False
        pods = [p for p in self.fleet.pods if p.gone_at is None]
        return all(p.ready(self.now) for p in pods) and len(pods) == split.total

    def backlog(self) -> int:
        """Requests in the service: running or waiting."""
        return len(self.inflight)

    def first_unfinished(self) -> int:
        """Index of the earliest arrival not finished yet (the next arrival if none is in flight);
        ``inflight`` is in arrival order, as requests are added."""
        return next(iter(self.inflight), self.i)

    def finished_before(self, index: int) -> bool:
        """Every request arriving before ``index`` has its outcome."""
        return self.i >= index and self.first_unfinished() >= index

    # -- the event loop (fleet.simulate's, step by step) ---------------------------------------

    def run_until(self, t: float) -> None:
        """Serve every event before ``t``."""
        while not self.done and self._step(stop=t):
            pass

    def run_while(self, keep_going: Callable[[ScheduledRun], bool]) -> None:
        while not self.done and keep_going(self) and self._step(stop=math.inf):
            pass

    def finish(self) -> Run:
        self.run_until(math.inf)
        served = [s for s in self.outcomes if s is not None]
        return Run(served=served, timeline=[], transitions=list(self.transitions), end=self.now)

    def _step(self, stop: float) -> bool:
        """One iteration of the loop; False once the run is over or the next event is at ``stop``
        or later."""
        tr = self.traffic
        fleet = self.fleet
        n = len(tr.arrivals)
        busy = [
            p.free_at for p in fleet.pods if p.gone_at is None and (p.engine.has_work or p.free_at > self.now)
        ]
        if self.i >= n and not busy and self.now >= tr.horizon:
            self.done = True
            return False
        candidates = [self.next_scrape, self.next_eval, self.next_tick, *busy]
        if self.i < n:
            candidates.append(tr.times[self.i])
        if self.changes:
            candidates.append(self.changes[0][0])
        if self.schedule:
            candidates.append(self.schedule[0][0])
        nxt = max(self.now, min(candidates))
        if nxt >= stop:
            return False
        now = self.now = nxt
        while self.changes and self.changes[0][0] <= now:
            _, replicas = self.changes.pop(0)
            steady = fleet.applied == split_for_mode(self.mode, self.replicas, tr.probe_replicas)
            self.replicas = replicas
            if steady:  # as a static configuration's Deployment resizes
                fleet.apply(split_for_mode(self.mode, replicas, tr.probe_replicas), now)
        while self.schedule and self.schedule[0][0] <= now:
            _, mode = self.schedule.pop(0)
            if mode != self.mode:
                self.transitions.append(
                    Transition(
                        now, self.mode, mode, Reason.MANUAL_OVERRIDE, "hindsight: switch scheduled here"
                    )
                )
                self.mode = mode
                self._roll(now)
        while self.i < n and tr.times[self.i] <= now:
            self._arrive(self.i)
            self.i += 1
        for pod in fleet.pods:
            if pod.gone_at is None and pod.free_at <= now and pod.engine.has_work:
                result = pod.engine.step(pod.rng, now)
                pod.free_at = result.end
                for r in result.finished:
                    self._finished(r)
        gone = sum(1 for p in fleet.pods if p.gone_at is not None)
        fleet.retire(now)
        if sum(1 for p in fleet.pods if p.gone_at is not None) != gone:
            for index, (r, _) in list(self.inflight.items()):
                if r.finished:
                    self._finished(r, index)
        if now >= self.next_scrape:
            self.next_scrape += SCRAPE_SECONDS
        if now >= self.next_tick:
            self.next_tick += CONTROL_TICK
            self._roll(now)
        if now >= self.next_eval:
            self.next_eval += tr.interval
        return True

    def _roll(self, now: float) -> None:
        """The operator's rollout step towards the target mode, if one is due."""
        tr = self.traffic
        target = split_for_mode(self.mode, self.replicas, tr.probe_replicas)
        applied = self.fleet.applied
        if applied == target:
            return
        ready = len(self.fleet.live(growing_pool(target, applied), now))
        step = rollout_step(target, applied, ready, surge=tr.surge)
        if step != applied:
            self.fleet.apply(step, now)

    def _arrive(self, index: int) -> None:
        a = self.traffic.arrivals[index]
        ready = [p for p in self.fleet.pods if p.ready(a.t)]
        if not ready:
            self.outcomes[index] = Served(a.t, a.phase, a.temperature, None, None, None, None, None)
            return
        r = Request(
            request_id=f"req-{index}",
            prompt_tokens=a.prompt_tokens,
            max_tokens=a.max_tokens,
            temperature=a.temperature,
            prompt_kind=PromptKind(a.prompt_kind),
            arrival=a.t,
            eos_after=self.traffic.eos_after[index],
        )
        pod = self.route_rng.choice(ready)
        pod.engine.add(r)
        self.inflight[index] = (r, pod.pool)

    def _finished(self, r: Request, index: int | None = None) -> None:
        index = int(r.request_id.removeprefix("req-")) if index is None else index
        _, pool = self.inflight.pop(index)
        a = self.traffic.arrivals[index]
        if r.finish_reason is FinishReason.ABORT:  # killed with its pod
            self.outcomes[index] = Served(a.t, a.phase, a.temperature, pool, None, None, None, r.finish_time)
        else:
            self.outcomes[index] = Served(
                a.t, a.phase, a.temperature, pool, r.ttft, r.tpot, r.e2e, r.finish_time
            )


# ------------------------------------------------------------------------------------ search


def tail(outcomes: Sequence[Served | None], q: float = QUANTILE) -> float:
    """The ``q`` quantile of TPOT with failed requests counted as infinitely slow."""
    values = sorted(math.inf if s is None or s.tpot is None else s.tpot for s in outcomes)
    if not values:
        return math.inf
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


@dataclass(frozen=True, slots=True)
class Trial:
    """One switch served for real: at decision point ``at`` (grid index) from ``from_mode``; its
    outcomes cover arrivals ``lo`` to ``hi`` (exclusive), and the path resumes at grid index
    ``resume`` in the other mode."""

    at: int
    from_mode: ServingMode
    lo: int
    hi: int
    resume: int
    outcomes: tuple[Served | None, ...]

    @property
    def to_mode(self) -> ServingMode:
        return _other(self.from_mode)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A path over the decision points: the mode served first and the switches (grid index, mode)."""

    initial: ServingMode
    switches: tuple[tuple[int, ServingMode], ...] = ()


@dataclass(slots=True)
class SearchInputs:
    """Everything the path search needs: the grid, both static runs' outcomes, the trials."""

    grid: list[float]  # decision times, grid[0] = 0
    index: list[int]  # first arrival index at or after each grid time, plus len(arrivals)
    static: dict[ServingMode, list[Served | None]]
    trials: dict[tuple[int, ServingMode], Trial] = field(default_factory=dict)


def best_path(inputs: SearchInputs, tau: float) -> tuple[int, Schedule]:
    """The schedule with the fewest requests above ``tau`` (failed ones count), fewer switches on
    a tie, and that count.  Dynamic programming over (decision point, mode, decision point where
    the current stretch began): a switch's trial replaces the static outcomes of the requests in
    flight at its decision, so those must lie in the current stretch, not in an earlier trial."""
    m = len(inputs.grid)
    index = inputs.index

    def bad_prefix(outcomes: Sequence[Served | None]) -> list[int]:
        out = [0]
        for s in outcomes:
            out.append(out[-1] + (s is None or s.tpot is None or s.tpot > tau))
        return out

    prefix = {mode: bad_prefix(inputs.static[mode]) for mode in MODES}
    trial_cost = {
        key: bad_prefix(t.outcomes)[-1] - (prefix[t.from_mode][index[t.at]] - prefix[t.from_mode][t.lo])
        for key, t in inputs.trials.items()
    }
    # states[j][(mode, start)] = (count, switches, schedule)
    states: list[dict[tuple[ServingMode, int], tuple[int, int, Schedule]]] = [{} for _ in range(m + 1)]

    def relax(j: int, key: tuple[ServingMode, int], value: tuple[int, int, Schedule]) -> None:
        old = states[j].get(key)
        if old is None or value[:2] < old[:2]:
            states[j][key] = value

    for mode in MODES:
        states[0][(mode, 0)] = (0, 0, Schedule(mode))
    for j in range(m):
        for (mode, start), (count, switches, schedule) in states[j].items():
            stay = prefix[mode][index[j + 1]] - prefix[mode][index[j]]
            relax(j + 1, (mode, start), (count + stay, switches, schedule))
            trial = inputs.trials.get((j, mode))
            if trial is not None and trial.lo >= index[start]:
                path = Schedule(schedule.initial, (*schedule.switches, (j, trial.to_mode)))
                relax(
                    trial.resume,
                    (trial.to_mode, trial.resume),
                    (count + trial_cost[(j, mode)], switches + 1, path),
                )
    count, _, schedule = min(states[m].values(), key=lambda v: v[:2])
    return count, schedule


def stitch(inputs: SearchInputs, schedule: Schedule) -> list[Served | None]:
    """A schedule's outcomes as the search estimates them: the static run of the mode in force,
    and each switch's trial over its window."""
    out = list(inputs.static[schedule.initial])
    for j, mode in schedule.switches:
        trial = inputs.trials[(j, _other(mode))]
        start = inputs.index[j]
        out[start:] = inputs.static[mode][start:]
        out[trial.lo : trial.hi] = trial.outcomes
    return out


# ------------------------------------------------------------------------------------- driver

LOOKAHEAD_SECONDS = 600.0  # a switch is tried only towards a configuration that wins this soon
MAX_WINDOW_SECONDS = 900.0  # a trial ends at the latest this long after its decision
THRESHOLDS = 40  # thresholds swept between the floor and the worse static tail
FULL_RUNS = 2  # schedules served again in full, best estimates first


def default_decision_seconds(seconds: float) -> float:
    """Decision points every minute on scenarios of 20 minutes or more, down to every 15 s on a
    short (scaled) one: about 20 or more per scenario."""
    return min(60.0, max(15.0, seconds / 20))


@dataclass(frozen=True, slots=True)
class Candidate:
    schedule: Schedule
    estimated_tail: float  # stitched P99 TPOT (failed requests as infinitely slow)
    real_tail: float | None = None  # the same over a full run of the schedule; None: not run


@dataclass(frozen=True, slots=True)
class HindsightResult:
    run: Run  # the chosen schedule served in full
    schedule: Schedule
    grid: tuple[float, ...]
    candidates: tuple[Candidate, ...]  # best estimates first
    trials: int  # switches served to price them

    @property
    def switch_times(self) -> list[tuple[float, ServingMode]]:
        return [(self.grid[j], mode) for j, mode in self.schedule.switches]

    def describe(self) -> str:
        """One line: the schedule, the search's size and its estimate of the chosen schedule."""
        steps = [str(self.schedule.initial)] + [f"{mode} at {t:.0f} s" for t, mode in self.switch_times]
        every = self.grid[1] - self.grid[0] if len(self.grid) > 1 else 0.0
        chosen = next((c for c in self.candidates if c.schedule == self.schedule), None)
        estimate = "" if chosen is None else f", stitched estimate {chosen.estimated_tail * 1000:.1f} ms"
        search = f"decision points every {every:.0f} s, {self.trials} switches tried{estimate}"
        return f"{', then '.join(steps)} ({search})"


def hindsight(
    spec: SpeculativeInferenceSpec,
    arrivals: Sequence[Arrival],
    *,
    startup_seconds: float,
    seed: int,
    replica_changes: Sequence[tuple[float, int]] = (),
    decision_seconds: float | None = None,
    lookahead_seconds: float = LOOKAHEAD_SECONDS,
    max_window_seconds: float = MAX_WINDOW_SECONDS,
    full_runs: int = FULL_RUNS,
) -> HindsightResult:
    """Search the switching schedules of ``spec`` serving ``arrivals`` (module docstring) and
    return the best one served in full."""
    if not arrivals:
        raise ValueError("hindsight needs traffic: the scenario has no arrivals")
    end = arrivals[-1].t
    step = decision_seconds or default_decision_seconds(end)
    grid = [j * step for j in range(max(1, math.ceil(end / step)))]
    times = [a.t for a in arrivals]
    index = [bisect.bisect_left(times, t) for t in grid] + [len(arrivals)]

    def fresh(mode: ServingMode) -> ScheduledRun:
        return ScheduledRun(
            spec, arrivals, startup_seconds=startup_seconds, seed=seed, initial_mode=mode,
            replica_changes=replica_changes,
        )  # fmt: skip

    snapshots: dict[ServingMode, list[ScheduledRun]] = {}
    backlog: dict[ServingMode, list[int]] = {}
    static_runs: dict[ServingMode, Run] = {}
    static: dict[ServingMode, list[Served | None]] = {}
    for mode in MODES:
        run = fresh(mode)
        snapshots[mode], backlog[mode] = [], []
        for t in grid:
            run.run_until(t)
            snapshots[mode].append(run.copy())
            backlog[mode].append(run.backlog())
        static_runs[mode] = run.finish()
        static[mode] = run.outcomes
    inputs = SearchInputs(grid, index, static)
    # A switch can only lower the P99 by changing requests near it: the tail of the free switcher
    # over the same decision points (each segment served by the better static run) bounds it from
    # below, give or take what a trial changes, so requests below 0.9 of it do not count.
    free = [
        min(MODES, key=lambda mode: tail(static[mode][index[j] : index[j + 1]])) for j in range(len(grid))
    ]
    floor = 0.9 * tail([s for j, mode in enumerate(free) for s in static[mode][index[j] : index[j + 1]]])
    over = {
        mode: [
            sum(
                1
                for s in static[mode][index[j] : index[j + 1]]
                if s is None or s.tpot is None or s.tpot > floor
            )
            for j in range(len(grid))
        ]
        for mode in MODES
    }
    ahead = max(1, math.ceil(lookahead_seconds / step))
    for j in range(1, len(grid)):
        for mode in MODES:
            other = _other(mode)
            window = range(j, min(len(grid), j + ahead))
            if not any(over[other][s] < over[mode][s] for s in window):
                continue
            inputs.trials[(j, mode)] = _trial(
                snapshots[mode][j], j, mode, grid, index, backlog[other], max_window_seconds
            )
    # The thresholds swept: from the floor to the worse static tail, geometrically, and both
    # static tails.
    top = max(tail(static[mode]) for mode in MODES)
    taus = {tail(static[mode]) for mode in MODES}
    if math.isfinite(top) and floor > 0:
        taus |= {floor * (top / floor) ** (i / (THRESHOLDS - 1)) for i in range(THRESHOLDS)}
    estimates: dict[Schedule, float] = {}
    for tau in sorted(t for t in taus if math.isfinite(t)):
        _, schedule = best_path(inputs, tau)
        if schedule not in estimates:
            estimates[schedule] = tail(stitch(inputs, schedule))
    for mode in MODES:
        estimates.setdefault(Schedule(mode), tail(inputs.static[mode]))
    ranked = sorted(estimates.items(), key=lambda e: (e[1], len(e[0].switches)))
    candidates: list[Candidate] = []
    runs: dict[Schedule, Run] = {Schedule(mode): static_runs[mode] for mode in MODES}
    served_in_full = 0
    for schedule, estimate in ranked:
        if schedule.switches and served_in_full < full_runs:
            run = fresh(schedule.initial)
            for j, mode in schedule.switches:
                run.switch_at(grid[j], mode)
            runs[schedule] = run.finish()
            served_in_full += 1
        real = runs.get(schedule)
        candidates.append(Candidate(schedule, estimate, None if real is None else tail(real.served)))
    real_ones = [c for c in candidates if c.real_tail is not None]
    chosen = min(real_ones, key=lambda c: (c.real_tail, len(c.schedule.switches)))
    return HindsightResult(
        run=runs[chosen.schedule],
        schedule=chosen.schedule,
        grid=tuple(grid),
        candidates=tuple(candidates),
        trials=len(inputs.trials),
    )


def _trial(
    start: ScheduledRun,
    j: int,
    mode: ServingMode,
    grid: Sequence[float],
    index: Sequence[int],
    other_backlog: Sequence[int],
    max_window: float,
) -> Trial:
    """Serve the switch from ``mode`` at decision point ``j`` until the pools have settled and the
    queue is back to the static run's (or ``max_window`` has passed), then until every request
    that arrived meanwhile has finished."""
    run = start
    t0 = grid[j]
    run.switch_at(t0, _other(mode))
    lo = run.first_unfinished()
    run.run_while(lambda r: r.now < t0 or (not r.settled() and r.now < t0 + max_window))
    k = j + 1
    while k < len(grid):
        run.run_until(grid[k])
        caught_up = run.backlog() <= 1.1 * other_backlog[k] + 2
        if (run.settled() and caught_up) or grid[k] - t0 >= max_window:
            break
        k += 1
    hi = index[k]
    run.run_while(lambda r: not r.finished_before(hi))
    return Trial(j, mode, lo, hi, k, tuple(run.outcomes[lo:hi]))

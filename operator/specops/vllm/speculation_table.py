"""vLLM's k-by-batch-size table, derived from per-position acceptance and the step-cost model (pure).

vLLM's V1 engine takes ``num_speculative_tokens_per_batch_size``, rows ``[start_bs, end_bs, k]``
fixed at start-up: at every step it drafts the ``k`` of the row holding the running batch size
(``k = 0``: no drafting).  Which ``k`` pays follows from two things:

* acceptance per draft position.  SpecOps works with **conditional** acceptance ``a_i``, the chance
  that position ``i`` is accepted given that positions before it were (``status.observed``'s
  ``acceptancePerPosition``; vLLM's ``..._per_pos_total{position=i}`` counter over drafts gives the
  **cumulative** ``c_i = a_1 x ... x a_i``, and ``conditional_from_cumulative`` converts).  A step
  drafting ``k`` emits ``E(k) = 1 + c_1 + ... + c_k`` tokens per sequence on average.
* what a step costs at batch ``b`` with ``k`` drafts against a plain step (``step_cost``).

For each batch size the table takes the ``k`` that maximises tokens per second,
``E(k) / T(b, k)``, over ``0..numSpeculativeTokens``; 0 where no ``k`` beats a plain step.  The
expected speedup of a row is ``E(k) T(b, 0) / T(b, k)``.  Consecutive batch sizes with the same
``k`` merge into one row, so a table has at most ``numSpeculativeTokens + 1`` rows.
docs/speculation-table.md has the reasoning, the check against published break-even figures and
the re-render rule (``table_changed_materially``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from specops.api.catalog import DEFAULT_ACCEPTANCE_RATE
from specops.api.v1alpha1 import (
    DerivedSpeculationTable,
    SpeculationTableRow,
    SpeculativeInference,
    SpeculativeInferenceSpec,
)
from specops.vllm.step_cost import DEFAULT_CONTEXT_TOKENS, StepCostModel, step_cost_model

# The --speculative-config key (vLLM >= 0.24; its gate is in vllm/dialect.py).
VLLM_TABLE_KEY = "num_speculative_tokens_per_batch_size"
# Largest running batch the table covers; vLLM gives larger batches the last row's k.
DEFAULT_MAX_BATCH_SIZE = 1024


class AcceptanceSource(StrEnum):
    LIVE = "Live"  # the speculative pool's per-position counters
    DEFAULT = "Default"  # the catalog's prior for the method


class StepCost(Protocol):
    def step_seconds(self, batch: int, k: int) -> float: ...


# ---------------------------------------------------------------------------------- acceptance


def _check_fractions(values: Sequence[float], what: str) -> None:
    for i, v in enumerate(values):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{what}[{i}] = {v!r}: an acceptance is a fraction in [0, 1]")


def cumulative_from_conditional(conditional: Sequence[float]) -> tuple[float, ...]:
    """``c_i = a_1 x ... x a_i``: the chance that the first ``i`` draft tokens are all accepted."""
    _check_fractions(conditional, "conditional acceptance")
    return tuple(itertools.accumulate(conditional, lambda acc, a: acc * a))


def conditional_from_cumulative(cumulative: Sequence[float]) -> tuple[float, ...]:
    """``a_i = c_i / c_(i-1)``: from vLLM's per-position counters over drafts.  Positions after one
    that was never accepted get 0 (nothing is known of them, and nothing reaches them)."""
    _check_fractions(cumulative, "cumulative acceptance")
    out = []
    prev = 1.0
    for c in cumulative:
        out.append(min(1.0, c / prev) if prev > 0 else 0.0)
        prev = c
    return tuple(out)


def expected_tokens(conditional: Sequence[float], k: int) -> float:
    """``E(k) = 1 + c_1 + ... + c_k``, tokens one sequence gains from a step drafting ``k``.

    Positions beyond the profile repeat its last value (vLLM reports only the positions it drafted).
    """
    if k <= 0 or not conditional:
        return 1.0
    profile = list(conditional[:k]) + [conditional[-1]] * max(0, k - len(conditional))
    return 1.0 + sum(cumulative_from_conditional(profile))


def flat_profile(rate: float, k: int) -> tuple[float, ...]:
    """The constant conditional acceptance ``a`` whose counter acceptance at ``k`` is ``rate``.

    vLLM's counter acceptance (accepted / proposed) is ``(E(k) - 1) / k``, below ``a`` whenever
    k > 1 (it counts the accepted prefix): a rate of 0.7 at k = 5 is ``a`` of about 0.89.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"acceptance rate {rate!r} is a fraction in [0, 1]")
    if k < 1:
        raise ValueError("k must be at least 1")
    lo, hi = 0.0, 1.0
    for _ in range(60):  # the counter rate rises monotonically with a
        mid = (lo + hi) / 2
        if (expected_tokens((mid,) * k, k) - 1.0) / k < rate:
            lo = mid
        else:
            hi = mid
    return (round((lo + hi) / 2, 6),) * k


# --------------------------------------------------------------------------------------- table


@dataclass(frozen=True, slots=True)
class TableRow:
    min_batch_size: int
    max_batch_size: int
    num_speculative_tokens: int
    speedup_min: float  # expected decode speedup against k = 0 at the same batch, lowest in range
    speedup_max: float


@dataclass(frozen=True, slots=True)
class SpeculationTable:
    """A derived table, the acceptance it came from, and the speedup it expects at every batch."""

    rows: tuple[TableRow, ...]
    acceptance: tuple[float, ...]  # conditional, per position
    speedups: tuple[float, ...]  # speedups[b - 1]: at batch b, with the table's k

    def k_at(self, batch: int) -> int:
        """The k vLLM drafts at ``batch`` running sequences (past the last row: the last row's k)."""
        for row in self.rows:
            if batch <= row.max_batch_size:
                return row.num_speculative_tokens
        return self.rows[-1].num_speculative_tokens

    def speedup_at(self, batch: int) -> float:
        return self.speedups[min(batch, len(self.speedups)) - 1]

    def vllm_rows(self) -> list[list[int]]:
        """The ``num_speculative_tokens_per_batch_size`` value: ``[start_bs, end_bs, k]`` rows."""
        return [[r.min_batch_size, r.max_batch_size, r.num_speculative_tokens] for r in self.rows]

    @property
    def drafts(self) -> bool:
        return any(r.num_speculative_tokens > 0 for r in self.rows)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]]) -> SpeculationTable:
        """A table read back from ``[start_bs, end_bs, k]`` rows (no acceptance or speedups)."""
        return cls(tuple(TableRow(lo, hi, k, 1.0, 1.0) for lo, hi, k in rows), (), ())


# Drafting must beat a plain step by this much to be switched on: the step model's error and the
# costs it leaves out (scheduling, rejection sampling) are of this order.
MIN_GAIN = 0.02


def best_k(
    conditional: Sequence[float], cost: StepCost, batch: int, max_k: int, min_gain: float = MIN_GAIN
) -> tuple[int, float]:
    """The k in ``0..max_k`` with the most tokens per second at ``batch``, and its speedup over k = 0
    (0 unless that beats a plain step by more than ``min_gain``).  Ties go to the smaller k."""
    plain = cost.step_seconds(batch, 0)
    best, best_speedup = 0, 1.0
    for k in range(1, max_k + 1):
        speedup = expected_tokens(conditional, k) * plain / cost.step_seconds(batch, k)
        if speedup > best_speedup * (1.0 + 1e-12) and speedup > 1.0 + min_gain:
            best, best_speedup = k, speedup
    return best, best_speedup


def derive_table(
    conditional: Sequence[float],
    cost: StepCost,
    *,
    max_k: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> SpeculationTable:
    """The table for batch sizes 1..``max_batch_size``, rows merged where k is the same.

    k never rises with the batch: should the cost model's kinks make a larger batch prefer a larger
    k than a smaller one, the smaller k is kept (a table that drafts more under more load is one
    nobody would trust, and the two differ by less than the model's error).
    """
    if max_k < 1:
        raise ValueError("max_k must be at least 1")
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    _check_fractions(conditional, "conditional acceptance")
    ks: list[int] = []
    speedups: list[float] = []
    ceiling = max_k
    for b in range(1, max_batch_size + 1):
        k, speedup = best_k(conditional, cost, b, ceiling)
        ks.append(k)
        speedups.append(speedup)
        ceiling = k
    rows = []
    start = 1
    for k, group in itertools.groupby(
        zip(range(1, max_batch_size + 1), ks, speedups, strict=True), lambda t: t[1]
    ):
        members = list(group)
        end = members[-1][0]
        values = [s for _, _, s in members]
        rows.append(TableRow(start, end, k, round(min(values), 4), round(max(values), 4)))
        start = end + 1
    return SpeculationTable(tuple(rows), tuple(conditional), tuple(round(s, 4) for s in speedups))


def break_even_acceptance(cost: StepCost, batch: int, k: int) -> float:
    """The counter acceptance ``r`` (accepted / proposed) at which drafting ``k`` at ``batch`` just
    pays: a step then emits ``1 + r k`` tokens for ``T(b, k) / T(b, 0)`` times a plain step's time.
    Above 1, no acceptance pays."""
    return (cost.step_seconds(batch, k) / cost.step_seconds(batch, 0) - 1.0) / k


# ----------------------------------------------------------------------------- for a resource


def default_acceptance(spec: SpeculativeInferenceSpec) -> tuple[float, ...]:
    """The catalog's prior for the method, as a flat conditional profile at the resource's k."""
    s = spec.speculation
    return flat_profile(DEFAULT_ACCEPTANCE_RATE[s.method.value], s.num_speculative_tokens)


@functools.lru_cache(maxsize=256)
def _derive_cached(
    cost: StepCostModel, acceptance: tuple[float, ...], max_k: int, max_batch_size: int
) -> SpeculationTable:
    return derive_table(acceptance, cost, max_k=max_k, max_batch_size=max_batch_size)


def derive_for_spec(
    spec: SpeculativeInferenceSpec,
    acceptance: Sequence[float] | None = None,
    *,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> SpeculationTable | None:
    """The table for ``spec``'s speculative pod from ``acceptance`` (conditional per position;
    default: the catalog's prior).  None when a model's size or shape is unknown (the budget
    reports that as its own finding).  Memoised: the renderer asks on every reconcile."""
    cost = step_cost_model(spec, context_tokens)
    if cost is None:
        return None
    profile = tuple(acceptance) if acceptance else default_acceptance(spec)
    return _derive_cached(cost, profile, spec.speculation.num_speculative_tokens, max_batch_size)


def live_acceptance(si: SpeculativeInference) -> tuple[float, ...] | None:
    """The speculative pool's conditional per-position acceptance from the resource's status, if
    the operator has observed one."""
    observed = si.status.observed if si.status else None
    if observed is None or not observed.acceptance_per_position:
        return None
    return tuple(min(1.0, max(0.0, a)) for a in observed.acceptance_per_position)


def derive_for_resource(si: SpeculativeInference) -> tuple[SpeculationTable, AcceptanceSource] | None:
    """The table from the live pool's acceptance when status has it, else from the catalog's prior."""
    live = live_acceptance(si)
    table = derive_for_spec(si.spec, live)
    if table is None:
        return None
    return table, AcceptanceSource.LIVE if live else AcceptanceSource.DEFAULT


def speedups_by_batch_size(table: SpeculationTable) -> dict[int, float]:
    """Expected decode speedup at 1, 2, 4, ... running sequences, up to the table's last batch."""
    out = {}
    b = 1
    while b <= len(table.speedups):
        out[b] = table.speedup_at(b)
        b *= 2
    return out


def derived_table_status(
    table: SpeculationTable,
    source: AcceptanceSource,
    derived_at: str | None = None,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
) -> DerivedSpeculationTable:
    """``status.derivedSpeculationTable`` for ``table`` (``status_table`` derives and builds it)."""
    return DerivedSpeculationTable(
        rows=[
            SpeculationTableRow(
                min_batch_size=r.min_batch_size,
                max_batch_size=r.max_batch_size,
                num_speculative_tokens=r.num_speculative_tokens,
                expected_speedup_min=r.speedup_min,
                expected_speedup_max=r.speedup_max,
            )
            for r in table.rows
        ],
        acceptance_per_position=[round(a, 4) for a in table.acceptance],
        acceptance_source=source.value,
        context_tokens=context_tokens,
        derived_at=derived_at,
    )


# ------------------------------------------------------------------------------- re-rendering

# A new table is worth a pod restart only if it differs this much (docs/speculation-table.md).
MATERIAL_K_DIFFERENCE = 2
MATERIAL_CUTOFF_SHIFT = 0.25


def drafting_cutoff(table: SpeculationTable) -> int:
    """The largest batch size at which ``table`` still drafts (0: it never does)."""
    return max((r.max_batch_size for r in table.rows if r.num_speculative_tokens > 0), default=0)


def _near(table: SpeculationTable, batch: int) -> set[int]:
    """The k ``table`` drafts at batch sizes within the material shift of ``batch``."""
    lo = max(1, int(batch / (1 + MATERIAL_CUTOFF_SHIFT)))
    hi = int(batch * (1 + MATERIAL_CUTOFF_SHIFT))
    edges = [lo, hi, *(r.min_batch_size for r in table.rows if lo <= r.min_batch_size <= hi)]
    return {table.k_at(e) for e in edges}


def table_changed_materially(old: SpeculationTable | None, new: SpeculationTable) -> bool:
    """Is ``new`` different enough from the running ``old`` to render at the next free moment?

    Material: there was no table; drafting turns on or off altogether; the largest batch that
    drafts moves by more than 25% (either way); or at some batch size one table's k is 2 or more
    away from every k the other drafts within 25% of that batch size.  A k that moves by one, or a
    boundary that moves a little, is within the noise of the acceptance estimate and of the step
    model, and not worth even a free restart's cold caches.
    """
    if old is None:
        return True
    if old.drafts != new.drafts:
        return True
    a, b = drafting_cutoff(old), drafting_cutoff(new)
    if a and b and abs(a - b) > MATERIAL_CUTOFF_SHIFT * min(a, b):
        return True
    top = max(old.rows[-1].max_batch_size, new.rows[-1].max_batch_size)
    grid = sorted({1, top, *(r.min_batch_size for r in (*old.rows, *new.rows))})
    grid += [g - 1 for g in grid if g > 1]
    step = 1.0
    while step < top:  # and between the edges, every 10%
        grid.append(int(step))
        step *= 1.1
    for batch in grid:
        for this, other in ((old, new), (new, old)):
            k = this.k_at(batch)
            if all(abs(k - near) >= MATERIAL_K_DIFFERENCE for near in _near(other, batch)):
                return True
    return False


def status_table(
    spec: SpeculativeInferenceSpec, acceptance_per_position: Sequence[float], derived_at: str
) -> DerivedSpeculationTable | None:
    """``status.derivedSpeculationTable`` for an evaluation that observed the speculative pool's
    conditional ``acceptance_per_position`` (empty: none yet, so the catalog's prior); None when
    the resource's models are outside the catalog and carry no shape."""
    live = tuple(min(1.0, max(0.0, a)) for a in acceptance_per_position)
    table = derive_for_spec(spec, live or None)
    if table is None:
        return None
    source = AcceptanceSource.LIVE if live else AcceptanceSource.DEFAULT
    return derived_table_status(table, source, derived_at)


def table_to_render(
    running: Sequence[Sequence[int]] | None, derived: SpeculationTable, speculative_pods: int
) -> list[list[int]]:
    """The rows the speculative Deployment should carry with ``tokensPerBatchSizeMode: Auto``.

    Changing them changes the pod template, which restarts every speculative pod: so the running
    rows stay while any speculative pod exists, and ``derived`` replaces them only when none does
    (Baseline mode, or the moment a switch or probe starts the pool from zero: the pods start
    anyway) and it differs materially.  ``running``: the rows the live Deployment carries
    (``render.manifests.speculation_rows_in``; None when there is none yet).
    """
    if running and (
        speculative_pods > 0 or not table_changed_materially(SpeculationTable.from_rows(running), derived)
    ):
        return [list(row) for row in running]
    return derived.vllm_rows()

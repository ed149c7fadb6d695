"""Turn the batched query answers into one Observation per resource (pure).

A NaN or infinite value is no value: it is dropped with its row, as if the series did not exist
(``histogram_quantile`` answers NaN for a window without requests; a Prometheus or proxy that
answers garbage numbers must never trip a rule, nor reach the status, where JSON has no NaN).
A resource whose rows are all dropped has no Observation pools at all: NoSeries, not a figure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from specops.metrics.promql import GROUP_LABELS, Sample, Signal
from specops.policy.decide import Observation, PoolMetrics
from specops.render.manifests import Pool

Key = tuple[str, str]  # (namespace, resource name)


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else x


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return num / den


def conditional_acceptance(per_position: Sequence[float], drafts: float | None) -> tuple[float, ...]:
    """P(accept position i | positions < i accepted) from cumulative per-position counts."""
    out = []
    prev = drafts
    for count in per_position:
        r = _ratio(count, prev)
        if r is None:
            break
        out.append(round(min(1.0, r), 4))
        prev = count
    return tuple(out)


def build_observations(results: Mapping[Signal, Sequence[Sample]]) -> dict[Key, Observation]:
    """Rows grouped by (namespace, specops_name, specops_pool) -> an Observation per resource."""
    values: dict[tuple[str, ...], dict[Signal, float]] = defaultdict(dict)
    positions: dict[tuple[str, ...], dict[int, float]] = defaultdict(dict)
    for signal, samples in results.items():
        for s in samples:
            key = tuple(s.labels.get(label, "") for label in GROUP_LABELS)
            if not key[1] or not math.isfinite(s.value):
                continue
            if signal is Signal.ACCEPTED_PER_POSITION:
                try:
                    positions[key][int(s.labels.get("position", ""))] = s.value
                except ValueError:
                    continue
            else:
                values[key][signal] = s.value

    pools: dict[Key, dict[str, PoolMetrics]] = defaultdict(dict)
    for (ns, name, pool), v in values.items():  # GROUP_LABELS order
        accepted, drafted, drafts = v.get(Signal.ACCEPTED), v.get(Signal.DRAFTED), v.get(Signal.DRAFTS)
        # A V0 pod's gauge wins: its counters hold running totals re-added, not increments.
        acceptance = _finite(v.get(Signal.LEGACY_ACCEPTANCE))
        if acceptance is None:
            acceptance = _ratio(accepted, drafted)
        # Without per-request TPOT (vLLM < 0.11) both pools are compared on e2e latency.
        p50, p99 = _finite(v.get(Signal.TPOT_P50)), _finite(v.get(Signal.TPOT_P99))
        if p50 is None and p99 is None:
            p50, p99 = _finite(v.get(Signal.E2E_P50)), _finite(v.get(Signal.E2E_P99))
        mal = _ratio(accepted, drafts)
        per_pos = positions.get((ns, name, pool), {})
        replicas = int(_finite(v.get(Signal.REPLICAS)) or 0)
        pools[(ns, name)][pool] = PoolMetrics(
            replicas=replicas,
            request_rate=_finite(v.get(Signal.REQUEST_RATE)),
            acceptance=acceptance,
            mean_acceptance_length=None if mal is None else mal + 1,
            per_position=conditional_acceptance([per_pos[i] for i in sorted(per_pos)], drafts),
            tpot_p50=p50,
            tpot_p99=p99,
            e2e_p50=_finite(v.get(Signal.E2E_P50)),
            e2e_p99=_finite(v.get(Signal.E2E_P99)),
            ttft_p99=_finite(v.get(Signal.TTFT_P99)),
            running=_finite(v.get(Signal.RUNNING)),
            waiting=_finite(v.get(Signal.WAITING)),
            kv_usage=_finite(v.get(Signal.KV_USAGE)),
        )
    return {
        key: Observation(speculative=p.get(Pool.SPECULATIVE.value), baseline=p.get(Pool.BASELINE.value))
        for key, p in pools.items()
    }

"""Acceptance as a distribution (pure): a share of the traffic that accepts far less than the mean.

vLLM's counters give one acceptance for the whole pool, and a 60/40 mix of requests that accept
0.8 and 0.35 of the drafts averages near 0.6: the break-even band, where the mean says little.  The
per-position counters say more.  Position ``i``'s cumulative acceptance ``c_i`` (the chance that the
first ``i`` drafts are all accepted) is, for requests whose positions are each accepted with
probability ``a``, ``a^i``: a geometric curve, flat in its conditional form (``c_i / c_(i-1) = a``).
A mixture of two such populations, ``c_i = w a^i + (1 - w) b^i``, rises in its conditional form
instead: the longer prefixes come from the high-acceptance requests alone.  So a pool whose
profile is fitted much better by two populations than by one serves a real share of requests at
the lower acceptance, ``b``, however good the mean.

``acceptance_spread`` fits both (a grid over ``a > b`` with the share in closed form) and reports
the lower population when the two-population fit is clearly better, the populations are clearly
apart, and the lower one is a real share of the traffic.  Conditional profiles that fall with the
position (drafts that degrade with depth, common with real draft models) fit one population at
least as well, and nothing is reported.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

# The two-population fit must leave at most this share of the one-population fit's squared error.
MIXTURE_FIT_GAIN = 0.25
# ... its populations' per-position acceptances must be at least this far apart ...
MIN_SEPARATION = 0.2
# ... and the lower one must be at least this share of the traffic (and at most 1 - it).
MIN_SHARE = 0.1
# The conditional profile must rise by this much from the first position to the last: the mark of
# a mixture (one population's is flat; real drafts that degrade with depth make it fall).
MIN_RISE = 0.05
# Grid step of the per-position acceptances searched.
GRID = 0.02


@dataclass(frozen=True, slots=True)
class Spread:
    """The lower-acceptance share of a pool's traffic: its share of the requests, its conditional
    acceptance per position, and the counter acceptance (accepted / drafted) it alone would show."""

    share: float
    per_position: float
    acceptance: float


def counter_acceptance(a: float, k: int) -> float:
    """vLLM's acceptance (accepted / drafted) for requests accepting each position with ``a``."""
    return sum(a**i for i in range(1, k + 1)) / k


def cumulative(conditional: Sequence[float]) -> list[float]:
    out, c = [], 1.0
    for a in conditional:
        c *= min(1.0, max(0.0, a))
        out.append(c)
    return out


def acceptance_spread(conditional: Sequence[float]) -> Spread | None:
    """The lower-acceptance population of a pool's traffic, from its conditional per-position
    acceptance (``status.observed.acceptancePerPosition``), when the profile shows one; else None
    (no profile, fewer than three positions, a profile that does not rise, or one population fits
    as well).  Profiles are rounded to 0.005 and their fits remembered: a fleet's pools repeat."""
    if len(conditional) < 3 or conditional[-1] - conditional[0] < MIN_RISE:
        return None
    return _spread(tuple(round(min(1.0, max(0.0, a)) * 200) / 200 for a in conditional))


@functools.lru_cache(maxsize=1024)
def _spread(conditional: tuple[float, ...]) -> Spread | None:
    k = len(conditional)
    c = cumulative(conditional)
    steps = round(1 / GRID)
    powers = [[(g * GRID) ** (i + 1) for i in range(k)] for g in range(1, steps)]
    single = min(sum((ci - p) ** 2 for ci, p in zip(c, pa, strict=True)) for pa in powers)
    best: tuple[float, int, int, float] | None = None
    apart = round(MIN_SEPARATION / GRID)
    for ia, pa in enumerate(powers):
        for ib in range(ia - apart + 1):
            pb = powers[ib]
            diff = [x - y for x, y in zip(pa, pb, strict=True)]
            den = sum(d * d for d in diff)
            if den <= 0:
                continue
            w = sum((ci - y) * d for ci, y, d in zip(c, pb, diff, strict=True)) / den
            w = min(1.0, max(0.0, w))
            err = sum((ci - y - w * d) ** 2 for ci, y, d in zip(c, pb, diff, strict=True))
            if best is None or err < best[0]:
                best = (err, ia, ib, w)
    if best is None:
        return None
    err, _, ib, w = best
    if err > MIXTURE_FIT_GAIN * single or not MIN_SHARE <= 1 - w <= 1 - MIN_SHARE:
        return None
    b = (ib + 1) * GRID
    return Spread(share=1 - w, per_position=b, acceptance=counter_acceptance(b, k))

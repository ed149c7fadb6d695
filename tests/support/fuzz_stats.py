"""The fuzz test's figures (examples by outcome, time), printed after the run by
tests/reliability/conftest.py: shared here so that no module imports a test module."""

from __future__ import annotations

from collections import Counter

STATS: Counter[str] = Counter()
_TIMES: list[float] = []  # the first and the latest example's start


def summary() -> str:
    """Examples run (shrinking included), by outcome, and the time from the first to the last (the
    module loads with the whole session, so its load time would count the other tests too)."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(STATS.items()))
    spent = _TIMES[-1] - _TIMES[0] if _TIMES else 0.0
    return f"fuzz: {sum(STATS.values())} examples in {spent:.0f} s: {counts}"

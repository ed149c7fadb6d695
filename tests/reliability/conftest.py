"""Prints the fuzz figures (examples, accepted and refused counts, time) after the run."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.support.fuzz_stats import STATS, summary

    if STATS:
        terminalreporter.write_line(summary())

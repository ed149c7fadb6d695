"""The handlers' Coalescer: events for a resource whose reconcile is running are served by one
further reconcile after it, and their handlers return at once (they do not queue with their
bodies, which held most of the operator's memory in a creation burst)."""

from __future__ import annotations

import asyncio

import pytest

from specops.controller.handlers import Coalescer


class Runs:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def __call__(self, namespace: str, name: str) -> None:
        self.started.append((namespace, name))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("boom")


def test_events_during_a_run_are_one_more_run_and_return_at_once() -> None:
    async def scenario() -> list[tuple[str, str]]:
        runs = Runs()
        queue = Coalescer(runs)
        first = asyncio.create_task(queue.request("ns", "a"))
        await asyncio.sleep(0)
        others = [asyncio.create_task(queue.request("ns", "a")) for _ in range(10)]
        await asyncio.sleep(0)
        assert all(t.done() for t in others), "a handler whose event is owed returns at once"
        other_key = asyncio.create_task(queue.request("ns", "b"))
        await asyncio.sleep(0)
        assert runs.started == [("ns", "a"), ("ns", "b")], "another resource runs beside it"
        runs.gate.set()
        await asyncio.gather(first, other_key)
        return runs.started

    started = asyncio.run(scenario())
    assert started.count(("ns", "a")) == 2, "ten events during the run: one more run, not ten"


def test_a_request_after_a_run_runs_again() -> None:
    async def scenario() -> int:
        runs = Runs()
        runs.gate.set()
        queue = Coalescer(runs)
        await queue.request("ns", "a")
        await queue.request("ns", "a")
        return len(runs.started)

    assert asyncio.run(scenario()) == 2


def test_a_failed_run_leaves_nothing_behind() -> None:
    async def scenario() -> int:
        runs = Runs()
        runs.gate.set()
        runs.fail = True
        queue = Coalescer(runs)
        with pytest.raises(RuntimeError):
            await queue.request("ns", "a")
        runs.fail = False
        await queue.request("ns", "a")
        return len(runs.started)

    assert asyncio.run(scenario()) == 2

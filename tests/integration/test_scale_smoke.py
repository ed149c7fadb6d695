"""The scale benchmark's structural properties at small N (benchmarks/scale.py runs 10/100/1000):
the operator, its own process, sends as many Prometheus queries per evaluation cycle at 12
resources as at 3, and a steady period in which nothing changes costs no API writes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from specops_testkit.testbed.scale import ScaleRun, Settings, World
from specops_testkit.testbed.stack import Testbed
from tests.support.live_cluster import local_only

pytestmark = pytest.mark.integration


@local_only
def test_queries_flat_and_no_writes_in_steady_state(testbed: Testbed, tmp_path: Path) -> None:
    assert testbed.state is not None
    world = World.from_state(testbed.state, testbed.prometheus_url)
    settings = Settings(
        namespaces=2,
        namespace_prefix=f"t-scale-{uuid.uuid4().hex[:6]}",
        replicas=0,  # the session's pod runner would run emulators for pods
        window="3s",  # the policy settles for window + 2 intervals after creation
        resync_seconds=2.0,
        steady_cycles=3,
        namespaced_operator=True,  # other tests' leftovers are not ours to count
    )
    with ScaleRun(world, tmp_path, settings, progress=lambda _: None) as run:
        try:
            small, large = run.measure(3), run.measure(12)
        finally:
            run.delete_namespaces()

    for m in (small, large):
        assert m.steady.resources_per_cycle == m.resources, m  # every cycle covers every resource
        assert m.steady_writes == 0, m.write_samples
        assert m.steady.operator_writes == 0, m
        assert m.rss_mib > 0 and m.hwm_mib >= m.rss_mib
    assert small.steady.queries_per_cycle > 0
    assert large.steady.queries_per_cycle == small.steady.queries_per_cycle
    assert large.steady.prometheus_queries_per_cycle == small.steady.prometheus_queries_per_cycle

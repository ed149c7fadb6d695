"""Leader election on a Lease, against an in-memory Lease with the API server's optimistic locking
and a fake monotonic clock: never two leaders, a leader that cannot renew stops before anyone else
may start, and a graceful stop hands over at once.  The real API server: tests/integration/
test_failover.py."""

from __future__ import annotations

import contextlib
import copy
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from specops.controller.kube import Kube, NotLeaderError
from specops.controller.leader import LeaderElector, LeaseSettings

DURATION, DEADLINE, RETRY = 15.0, 10.0, 2.0


class LeaseStore:
    """One Lease as the API server keeps it: a resourceVersion bumped at every write, and a write
    carrying a stale one refused with 409."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.version = 0
        self.writes: list[str] = []  # holder written, in order

    def read(self) -> Any:
        if self.spec is None:
            raise ApiException(status=404, reason="Not Found")
        s = self.spec
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=str(self.version)),
            spec=SimpleNamespace(
                holder_identity=s.get("holderIdentity"),
                renew_time=datetime.fromisoformat(s["renewTime"].replace("Z", "+00:00")),
                acquire_time=datetime.fromisoformat(s["acquireTime"].replace("Z", "+00:00"))
                if s.get("acquireTime")
                else None,
                lease_duration_seconds=s.get("leaseDurationSeconds"),
                lease_transitions=s.get("leaseTransitions"),
            ),
        )

    def write(self, body: dict[str, Any], create: bool) -> None:
        if create and self.spec is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        if not create and body["metadata"].get("resourceVersion") != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self.spec = copy.deepcopy(body["spec"])
        self.version += 1
        self.writes.append(str(self.spec.get("holderIdentity")))


class FakeCoordination:
    """What LeaderElector asks of CoordinationV1Api; ``down``: this replica is cut off."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("partitioned")

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        self._check()
        return self.store.read()

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self._check()
        self.store.write(body, create=True)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self._check()
        self.store.write(body, create=False)


class Replica:
    def __init__(self, name: str, store: LeaseStore, clock: list[float]) -> None:
        settings = LeaseSettings(
            identity=name, lease_duration=DURATION, renew_deadline=DEADLINE, retry_period=RETRY
        )
        self.elector = LeaderElector(None, settings, clock=lambda: clock[0])  # type: ignore[arg-type]
        self.api = FakeCoordination(store)
        self.elector.coordination = self.api  # type: ignore[assignment]

    def attempt(self) -> None:
        with contextlib.suppress(ConnectionError):  # cut off: the attempt fails
            self.elector.try_acquire_or_renew()


def run(
    replicas: list[Replica], clock: list[float], seconds: float, step: float = 0.5
) -> list[tuple[float, list[str]]]:
    """Every replica attempts every RETRY seconds (staggered); the leaders at every ``step``."""
    seen = []
    end = clock[0] + seconds
    while clock[0] < end:
        for i, r in enumerate(replicas):
            if round(clock[0] / step) % round(RETRY / step) == i % round(RETRY / step):
                r.attempt()
        leaders = [r.elector.settings.identity for r in replicas if r.elector.is_leader()]
        assert len(leaders) <= 1, (clock[0], leaders)  # never two
        seen.append((clock[0], leaders))
        clock[0] += step
    return seen


def test_one_leader_and_a_takeover_after_a_crash() -> None:
    clock, store = [1000.0], LeaseStore()
    a, b = Replica("a", store, clock), Replica("b", store, clock)
    seen = run([a, b], clock, 30)
    assert {tuple(leaders) for _, leaders in seen[1:]} == {("a",)}  # a first, and only a
    # a dies (no more attempts): b waits for the record to stand still DURATION from when it saw
    # a's last renewal (one of its attempts later), then takes over.
    renewed = a.elector._renewed_at
    assert renewed is not None
    seen = run([b], clock, 30)
    took = next(t for t, leaders in seen if leaders == ["b"])
    assert DURATION <= took - renewed <= DURATION + 2 * RETRY, took - renewed
    assert store.spec is not None and store.spec["leaseTransitions"] == 1


def test_a_partitioned_leader_stops_before_the_other_starts() -> None:
    clock, store = [1000.0], LeaseStore()
    a, b = Replica("a", store, clock), Replica("b", store, clock)
    run([a, b], clock, 10)
    assert a.elector.is_leader()
    a.api.down = True  # a keeps running, but cannot reach the API server
    cut = clock[0]
    seen = run([a, b], clock, 40)
    a_last = max(t for t, leaders in seen if leaders == ["a"])
    b_first = min(t for t, leaders in seen if leaders == ["b"])
    assert a_last - cut <= DEADLINE  # a stopped acting by itself, within the renew deadline
    assert b_first - a_last >= DURATION - DEADLINE - RETRY  # a gap in which nobody acts
    a.api.down = False  # healed: a sees b's Lease and stays a follower
    seen = run([a, b], clock, 30)
    assert {tuple(leaders) for _, leaders in seen} == {("b",)}


def test_racing_replicas_cannot_both_win() -> None:
    """Both read the expired Lease, both write it: the second write carries a stale
    resourceVersion and is refused."""
    clock, store = [1000.0], LeaseStore()
    old = Replica("old", store, clock)
    old.attempt()
    clock[0] += DURATION + 1
    a, b = Replica("a", store, clock), Replica("b", store, clock)
    for r in (a, b):  # each has seen the record before (it stood still for DURATION since)
        r.elector._observed = ("old", str(store.read().spec.renew_time))
        r.elector._observed_at = 1000.0
    real_read = store.read
    snapshot = real_read()
    store.read = lambda: snapshot  # type: ignore[method-assign]  # both read the same version
    a.attempt()
    b.attempt()
    store.read = real_read  # type: ignore[method-assign]
    assert [a.elector.is_leader(), b.elector.is_leader()] == [True, False]
    assert store.writes == ["old", "a"]


def test_a_graceful_stop_hands_over_at_once() -> None:
    clock, store = [1000.0], LeaseStore()
    a, b = Replica("a", store, clock), Replica("b", store, clock)
    run([a, b], clock, 6)
    a.elector.release()
    assert not a.elector.is_leader() and store.spec is not None and store.spec["holderIdentity"] is None
    seen = run([b], clock, RETRY + 1)
    assert seen[-1][1] == ["b"]


def test_settings_name_the_flags() -> None:
    assert LeaseSettings(identity="x").problems() == []
    problems = LeaseSettings(identity="", lease_duration=10, renew_deadline=10, retry_period=12).problems()
    assert any("--lease-retry-period" in p for p in problems)
    assert any("--lease-renew-deadline must be below --lease-duration" in p for p in problems)
    assert any("--leader-identity" in p for p in problems)


def test_the_write_fence_refuses_every_write_once_leadership_is_lost() -> None:
    kube = Kube.__new__(Kube)  # no API client: a refused write must not reach one
    kube.may_write = lambda: False
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "ns"}}
    with pytest.raises(NotLeaderError, match="not the leader: Service x not written"):
        kube.apply(body)
    with pytest.raises(NotLeaderError, match="status of ns/x"):
        kube.patch_status("ns", "x", {"mode": "Baseline"})
    with pytest.raises(NotLeaderError, match="event Deployed on ns/x"):
        kube.post_event(body, "Normal", "Deployed", "m")

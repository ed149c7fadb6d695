"""Leader election on a coordination.k8s.io/v1 Lease: exactly one replica evaluates and reconciles.

Every replica watches, tracks resources and serves the admission webhook; only the holder of the
Lease acts (reconciles, evaluates, writes).  The algorithm is client-go's:

- The holder renews the Lease every ``retry_period``.  It counts as leader only until
  ``renew_deadline`` after the *sending* of its last successful renewal, so a leader cut off from
  the API server stops acting by itself, before anyone else may start.
- Another replica takes the Lease over when the record (holder, renew time) has not changed for
  ``lease_duration`` as seen on its own monotonic clock (no trust in clocks agreeing across
  machines).  ``renew_deadline < lease_duration`` leaves a gap of at least their difference in
  which nobody acts.
- Every write to the Lease carries its resourceVersion, so two replicas racing for it cannot both
  win: the API server answers the loser 409.
- A replica that stops gracefully gives the Lease up (empty holder), so the next one starts at once.

The write fence (``Kube(may_write=...)``) checks ``is_leader()`` before every write the reconciler
makes, so a reconcile that was running when leadership was lost writes nothing more.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from specops.controller import metrics

log = logging.getLogger("specops.leader")


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    name: str = "specops"
    namespace: str = "default"
    identity: str = ""
    lease_duration: float = 15.0  # a follower takes over after the record stood still this long
    renew_deadline: float = 10.0  # a leader stops acting this long after its last renewal was sent
    retry_period: float = 2.0  # between attempts to renew or acquire

    def problems(self) -> list[str]:
        """What is wrong with the durations, naming the flags."""
        out = []
        if not 0 < self.retry_period < self.renew_deadline:
            out.append("--lease-retry-period must be above 0 and below --lease-renew-deadline")
        if not self.renew_deadline < self.lease_duration:
            out.append(
                "--lease-renew-deadline must be below --lease-duration (the gap between them is when "
                "neither the old leader nor the new one acts)"
            )
        if not self.identity:
            out.append("--leader-identity must not be empty")
        return out


def default_identity() -> str:
    """The pod's name where the chart sets POD_NAME, else the host name; plus a random suffix so
    that a restarted process never mistakes its predecessor's Lease for its own."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """The namespace the operator runs in (in a pod), else ``default``."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _micro_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Keeps trying to hold the Lease; ``is_leader()`` says whether this replica may act now."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaseSettings,
        on_started_leading: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.settings = settings
        self.on_started_leading = on_started_leading
        self.clock = clock
        self.terms = 0  # times this replica became leader
        self._renewed_at: float | None = None  # when the last successful renewal was sent
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._was_leader = False
        self._lock = threading.Lock()
        # A request must end well within the renew deadline, or a hung one would outlast it.
        timeout = max(0.5, min(settings.retry_period, settings.renew_deadline / 3))
        self._request_timeout = (timeout, timeout)

    # ---------------------------------------------------------------------------------- state

    def is_leader(self) -> bool:
        with self._lock:
            return (
                self._renewed_at is not None
                and self.clock() < self._renewed_at + self.settings.renew_deadline
            )

    def _note(self) -> None:
        """Log and count a change of leadership, and start the new term's work."""
        leading = self.is_leader()
        if leading == self._was_leader:
            return
        self._was_leader = leading
        metrics.LEADER.set(float(leading))
        s = self.settings
        if leading:
            self.terms += 1
            log.info("%s leads (Lease %s/%s, term %d)", s.identity, s.namespace, s.name, self.terms)
            if self.on_started_leading is not None:
                self.on_started_leading()
        else:
            log.warning("%s stopped leading: Lease %s/%s not renewed for %g s", s.identity, s.namespace,
                        s.name, s.renew_deadline)  # fmt: skip

    # ------------------------------------------------------------------------------ the lease

    def _spec(self, transitions: int, acquired: str | None, now: datetime) -> dict[str, Any]:
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration)),
            "acquireTime": acquired or _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        s = self.settings
        sent = self.clock()
        now = datetime.now(UTC)
        try:
            lease = self.coordination.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=self._request_timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"metadata": {"name": s.name, "namespace": s.namespace}, "spec": self._spec(0, None, now)}
            try:
                self.coordination.create_namespaced_lease(
                    s.namespace, body, _request_timeout=self._request_timeout
                )
            except ApiException as exc2:
                if exc2.status == 409:  # another replica created it first
                    return False
                raise
            self._renewed(sent)
            return True
        spec = lease.spec
        holder = spec.holder_identity or ""
        renew = str(spec.renew_time or "")
        if self._observed != (holder, renew):
            self._observed, self._observed_at = (holder, renew), self.clock()
        mine = holder == s.identity
        duration = float(spec.lease_duration_seconds or s.lease_duration)
        if not mine and holder and self.clock() < self._observed_at + duration:
            return False  # held, and renewed within its duration as far as we have seen
        transitions = int(spec.lease_transitions or 0) + (0 if mine else 1)
        acquired = (
            _micro_time(spec.acquire_time) if mine and isinstance(spec.acquire_time, datetime) else None
        )
        body = {
            "metadata": {"name": s.name, "namespace": s.namespace,
                         "resourceVersion": lease.metadata.resource_version},
            "spec": self._spec(transitions, acquired, now),
        }  # fmt: skip
        try:
            self.coordination.replace_namespaced_lease(
                s.name, s.namespace, body, _request_timeout=self._request_timeout
            )
        except ApiException as exc:
            if exc.status == 409:  # someone wrote it since our read: not ours this round
                return False
            raise
        if not mine:
            log.info("%s took Lease %s/%s over from %r", s.identity, s.namespace, s.name, holder or None)
        self._renewed(sent)
        return True

    def _renewed(self, sent: float) -> None:
        with self._lock:
            self._renewed_at = sent

    def release(self) -> None:
        """Give the Lease up (a graceful stop), if this replica holds it: the next starts at once."""
        if not self.is_leader():
            return
        s = self.settings
        with self._lock:
            self._renewed_at = None
        try:
            lease = self.coordination.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=self._request_timeout
            )
            if lease.spec.holder_identity != s.identity:
                return
            body = {
                "metadata": {"name": s.name, "namespace": s.namespace,
                             "resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1,
                         "renewTime": _micro_time(datetime.now(UTC)),
                         "leaseTransitions": lease.spec.lease_transitions or 0},
            }  # fmt: skip
            self.coordination.replace_namespaced_lease(
                s.name, s.namespace, body, _request_timeout=self._request_timeout
            )
            log.info("%s released Lease %s/%s", s.identity, s.namespace, s.name)
        except Exception as exc:  # the Lease then simply expires
            log.warning("could not release Lease %s/%s: %s", s.namespace, s.name, exc)
        finally:
            self._note()

    # ----------------------------------------------------------------------------- the loop

    def run(self, stop: threading.Event) -> None:
        """Acquire or renew every retry period until ``stop``; then release."""
        while not stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as exc:  # the API server unreachable, a timeout: try again
                log.debug("Lease %s/%s attempt failed: %s", self.settings.namespace, self.settings.name, exc)
            self._note()
            # Wake up in time to notice the renew deadline passing, not only at the next attempt.
            stop.wait(self.settings.retry_period)
            self._note()
        self.release()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="specops-leader", daemon=True)
        thread.start()
        return thread

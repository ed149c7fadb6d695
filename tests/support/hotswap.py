"""Test doubles of the HotSwap strategy: hot-swap pods as the API server returns them, and an
in-memory ``AdminClient`` whose engines sleep and wake (and fail) as the test says."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from specops.controller.hotswap import AdminError
from specops.plan.hotswap_reconcile import AWAKE_ANNOTATION, FALLBACK_ANNOTATION
from specops.render.hotswap import swap_labels
from specops.render.manifests import Pool

NAMESPACE = "serving"
NAME = "demo"


def swap_pod(
    name: str,
    ip: str | None,
    awake: str | None = None,
    *,
    ready: bool = True,
    fallback: str | None = None,
) -> dict[str, Any]:
    annotations = {}
    if awake is not None:
        annotations[AWAKE_ANNOTATION] = awake
    if fallback is not None:
        annotations[FALLBACK_ANNOTATION] = fallback
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip is not None:
        status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": swap_labels(NAME),
            "annotations": annotations,
        },
        "spec": {"nodeName": "node-1"},
        "status": status,
    }


@dataclass
class FakeEngines:
    """The engines of every pod, by IP: which sleep, how many requests run; ``fail_wake``: (ip, pool)
    whose wake fails; ``calls``: every call in order, as "verb ip pool"."""

    asleep: dict[str, dict[Pool, bool]] = field(default_factory=dict)
    running: dict[tuple[str, Pool], list[float]] = field(default_factory=dict)
    fail_wake: set[tuple[str, Pool]] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def pod(self, ip: str, awake: Pool | None) -> None:
        self.asleep[ip] = {p: p is not awake for p in Pool}

    def client(self, token: str) -> FakeAdmin:
        self.tokens.append(token)
        return FakeAdmin(self)


class FakeAdmin:
    def __init__(self, engines: FakeEngines) -> None:
        self.e = engines

    def _check(self, verb: str, ip: str, pool: Pool) -> None:
        self.e.calls.append(f"{verb} {ip} {pool.value}")
        if ip in self.e.unreachable:
            raise AdminError(f"{ip} unreachable")

    def is_sleeping(self, ip: str, pool: Pool) -> bool:
        self._check("is_sleeping", ip, pool)
        return self.e.asleep[ip][pool]

    def sleep(self, ip: str, pool: Pool) -> None:
        self._check("sleep", ip, pool)
        self.e.asleep[ip][pool] = True

    def wake_up(self, ip: str, pool: Pool) -> None:
        self._check("wake_up", ip, pool)
        if (ip, pool) in self.e.fail_wake:
            raise AdminError("HTTP 500")
        self.e.asleep[ip][pool] = False

    def running_requests(self, ip: str, pool: Pool) -> float:
        self._check("running", ip, pool)
        queue = self.e.running.get((ip, pool)) or [0.0]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def http_status(url: str, method: str = "GET", token: str | None = None) -> int:
    """The HTTP status a request gets (a POST sends ``{}``), with a bearer token if given."""
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code

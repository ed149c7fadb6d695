"""Two operator replicas with leader election (a coordination.k8s.io/v1 Lease) on the real control
plane, at the default Lease timings (15 s duration, 10 s renew deadline, 2 s retry period):

- the leader SIGKILLed in the middle of a mode switch: the other replica takes the Lease over and
  finishes the switch, once, within 30 s; one transition recorded, nothing of status lost, and the
  follower wrote nothing while the leader lived;
- the leader cut off from the API server by a TCP proxy that drops everything (a network
  partition): it stops acting before the other replica starts (their logs), the other takes over
  within 30 s and keeps correcting drift, and once the partition heals the old leader stays a
  follower and writes nothing;
- both replicas answer admission reviews; a graceful stop hands the Lease over at once and leaves
  the webhooks registered.

Each replica's requests carry its identity in their User-Agent, so the audit log says which one
wrote what.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import ssl
import threading
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from specops.controller.certs import make_self_signed
from specops_testkit.testbed.audit import entry_time
from specops_testkit.testbed.partition import PartitionProxy
from specops_testkit.testbed.stack import Testbed
from tests.support.closed_loop import NAME
from tests.support.live_cluster import (
    condition,
    create_si,
    get_si,
    local_only,
    operator_writes,
    patch_si,
    wait_for,
)
from tests.support.resources import example_doc
from tests.support.switching import (
    REPLICAS,
    OperatorProcess,
    assert_one_way_within_budget,
    assert_switched_once,
    hot_switch,
    pools,
)

pytestmark = [pytest.mark.integration, local_only]
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0  # the defaults
TAKEOVER_BUDGET = 30.0


def holder(api: client.ApiClient, ns: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease("specops", ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity  # type: ignore[no-any-return]


def replica(testbed: Testbed, ns: str, identity: str, log: Path, **kw: Any) -> OperatorProcess:
    args = [
        "--leader-election",
        f"--lease-namespace={ns}",
        f"--leader-identity={identity}",
        *kw.pop("args", []),
    ]
    return OperatorProcess(testbed, ns, log, args, **kw)


def acting_writes(testbed: Testbed, since: float, identity: str, ns: str) -> list[float]:
    """When ``identity`` wrote anything in ``ns`` but its Lease (audit log times, oldest first)."""
    return [
        entry_time(w)
        for w in operator_writes(testbed, since, ns)
        if f"({identity})" in w.get("userAgent", "") and w["objectRef"].get("resource") != "leases"
    ]


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def logged_at(log: Path, needle: str) -> list[float]:
    """Times of the log lines holding ``needle`` (Kopf's "[YYYY-mm-dd HH:MM:SS,mmm]" local time)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if m and needle in line:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


# ------------------------------------------------------------------------------------- tests


def test_leader_killed_mid_switch_the_other_finishes_it_once(
    api: client.ApiClient, testbed: Testbed, namespace: str, operator_processes: list[OperatorProcess],
    tmp_path: Path,
) -> None:  # fmt: skip
    ns = namespace
    a = replica(testbed, ns, "a", tmp_path / "a.log")
    operator_processes.append(a)
    wait_for(lambda: holder(api, ns) == "a", 30, "replica a holding the Lease")
    b = replica(testbed, ns, "b", tmp_path / "b.log")
    operator_processes.append(b)
    since = time.time()
    load, watcher = hot_switch(api, ns)
    a.kill()
    killed = time.time()
    at_kill = pools(api, ns)
    assert at_kill is not None and sum(at_kill) == REPLICAS and 0 < at_kill[1] < REPLICAS, (
        f"not killed mid-switch: {at_kill}\n{a.tail()}"
    )
    before = get_si(api, ns, NAME)["status"]
    recorded = before["decisions"]
    assert before["mode"] == "Baseline" and [d["reason"] for d in recorded] == ["AcceptanceBelowThreshold"]
    assert holder(api, ns) == "a"
    try:
        wait_for(
            lambda: holder(api, ns) == "b", TAKEOVER_BUDGET, "replica b taking the Lease over", every=0.25
        )
        took_lease = time.time() - killed
        assert_switched_once(api, ns, recorded)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- replica b:\n{b.tail()}") from None
    samples = watcher.stop()
    assert_one_way_within_budget(samples)
    b_writes = acting_writes(testbed, since, "b", ns)
    a_writes = acting_writes(testbed, since, "a", ns)
    assert a_writes and max(a_writes) < killed  # the control: a did the first step
    assert b_writes and min(b_writes) > killed, "replica b wrote while a was the leader"
    first_move = min(b_writes) - killed
    print(f"\nkilled at pools {at_kill}; b held the Lease {took_lease:.1f} s and wrote {first_move:.1f} s "
          f"after the kill; pools seen: {samples}")  # fmt: skip
    assert first_move <= TAKEOVER_BUDGET, first_move
    # Nothing of status lost: every field and condition is still there, the history unchanged.
    after = get_si(api, ns, NAME)["status"]
    assert set(before) <= set(after), set(before) - set(after)
    assert {c["type"] for c in before["conditions"]} <= {c["type"] for c in after["conditions"]}
    assert after["decisions"] == recorded and after["modeSince"] == before["modeSince"]
    assert b.alive(), b.tail()
    load.join()


def test_partitioned_leader_stops_before_the_other_starts(
    api: client.ApiClient, testbed: Testbed, namespace: str, operator_processes: list[OperatorProcess],
    tmp_path: Path,
) -> None:  # fmt: skip
    ns = namespace
    assert testbed.state is not None
    kubeconfig = yaml.safe_load(testbed.state.operator_kubeconfig.read_text())
    with PartitionProxy("127.0.0.1", testbed.state.api_port) as proxy:
        kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        (tmp_path / "a.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        a = replica(testbed, ns, "a", tmp_path / "a.log", kubeconfig=tmp_path / "a.kubeconfig",
                    args=["--resync-seconds=1"])  # fmt: skip
        operator_processes.append(a)
        wait_for(lambda: holder(api, ns) == "a", 30, "replica a holding the Lease")
        b = replica(testbed, ns, "b", tmp_path / "b.log", args=["--resync-seconds=1"])
        operator_processes.append(b)
        doc = example_doc()
        doc["spec"]["replicas"] = 1
        create_si(api, ns, doc)
        name = doc["metadata"]["name"]
        wait_for(lambda: condition(get_si(api, ns, name), "Ready").get("status") == "True", 90, "Ready")

        # Drift every half second (another client scales the pool): whoever leads corrects it.
        apps = client.AppsV1Api(api)
        stop = threading.Event()

        def drift() -> None:
            while not stop.wait(0.5):
                with contextlib.suppress(ApiException):
                    apps.patch_namespaced_deployment(f"{name}-spec", ns, {"spec": {"replicas": 2}})

        since = time.time()
        drifter = threading.Thread(target=drift, daemon=True)
        drifter.start()
        try:
            time.sleep(4)
            proxy.cut()
            cut = time.time()
            wait_for(
                lambda: holder(api, ns) == "b", TAKEOVER_BUDGET, "replica b taking the Lease over", every=0.25
            )
            time.sleep(6)
            proxy.heal()
            healed = time.time()
            time.sleep(12)
        finally:
            stop.set()
            drifter.join(5)
        time.sleep(2)  # corrections in flight land
    a_writes = acting_writes(testbed, since, "a", ns)
    b_writes = acting_writes(testbed, since, "b", ns)
    print(f"\ncut at +{cut - since:.1f} s, healed at +{healed - since:.1f} s; writes by a at "
          f"{[round(t - since, 1) for t in a_writes]}, by b at {[round(t - since, 1) for t in b_writes]}")  # fmt: skip
    assert a_writes and max(a_writes) < cut + 0.5, "the partitioned leader's writes landed after the cut"
    assert not [t for t in a_writes if t >= healed], "the old leader wrote after the partition healed"
    assert b_writes and min(b_writes) > cut, "replica b wrote while a was the leader"
    # b waited for the Lease to expire (a renewed at most a retry period before the cut, and b saw
    # that renewal at most a retry period later), and took over within the budget.
    assert LEASE_DURATION - RETRY_PERIOD - 1 <= min(b_writes) - cut <= TAKEOVER_BUDGET, min(b_writes) - cut
    assert [t for t in b_writes if t > healed], "replica b stopped correcting drift after the heal"
    # a stopped acting (its own log) before b started (b's log): nobody led twice.
    a_stopped = logged_at(tmp_path / "a.log", "a stopped leading")
    b_started = logged_at(tmp_path / "b.log", "b leads")
    assert a_stopped and b_started, (a.tail(), b.tail())
    assert a_stopped[0] < b_started[0], (a_stopped, b_started)
    assert a_stopped[0] - cut <= RENEW_DEADLINE + RETRY_PERIOD + 1, a_stopped[0] - cut
    assert len(logged_at(tmp_path / "a.log", "a leads")) == 1  # never again after the heal
    assert holder(api, ns) == "b"
    assert a.alive() and b.alive(), (a.tail(), b.tail())


def _review(doc: dict[str, Any]) -> bytes:
    request = {"uid": "1", "operation": "CREATE", "object": doc, "oldObject": None,
               "kind": {"group": "specops.dev", "version": "v1alpha1", "kind": "SpeculativeInference"},
               "resource": {"group": "specops.dev", "version": "v1alpha1", "resource": "speculativeinferences"},
               "userInfo": {"username": "test"}, "dryRun": False}  # fmt: skip
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def test_both_replicas_serve_the_webhook_and_a_graceful_stop_hands_over(
    api: client.ApiClient, testbed: Testbed, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    ns = namespace
    ca, cert, key = make_self_signed(tmp_path, ["127.0.0.1", "localhost"])  # shared, as the chart's
    common = {"leader_election": True, "lease_namespace": ns, "webhook_cert": str(cert),
              "webhook_key": str(key), "webhook_ca": str(ca), "resync_seconds": 2.0}  # fmt: skip
    a = start_operator(leader_identity="a", **common)
    wait_for(lambda: holder(api, ns) == "a", 30, "replica a holding the Lease")
    b = start_operator(leader_identity="b", **common)
    ctx = ssl.create_default_context(cafile=str(ca))
    bad = example_doc("invalid-bf16-on-h100.yaml", namespace=ns)
    cfg = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration("specops.dev")
    paths = sorted({urllib.parse.urlsplit(w.client_config.url).path for w in cfg.webhooks or []})
    assert paths, "no webhook registered"
    main_path = next(p for p in paths if "scale" not in p)
    for op in (a, b):  # the follower answers as the leader does
        conn = http.client.HTTPSConnection("127.0.0.1", op.opts.webhook_port, timeout=10, context=ctx)
        conn.request("POST", main_path, _review(bad), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())["response"]
        conn.close()
        assert resp.status == 200 and answer["allowed"] is False, (op.opts.leader_identity, answer)
        assert "spec.resources" in answer["status"]["message"], answer
    # Only the leader acts.
    since = time.time()
    doc = example_doc(namespace=ns)
    doc["spec"]["replicas"] = 1
    create_si(api, ns, doc)
    name = doc["metadata"]["name"]
    wait_for(lambda: condition(get_si(api, ns, name), "Ready").get("status") == "True", 90, "Ready")
    assert acting_writes(testbed, since, "a", ns) and not acting_writes(testbed, since, "b", ns)
    # A graceful stop gives the Lease up: b acts within seconds, not after the Lease's 15 s.
    a.stop()
    stopped = time.time()
    wait_for(lambda: holder(api, ns) == "b", 10, "replica b taking the released Lease")
    patch_si(api, ns, name, {"spec": {"replicas": 2}})
    wait_for(lambda: acting_writes(testbed, stopped, "b", ns), 10, "replica b acting")
    took = min(acting_writes(testbed, stopped, "b", ns)) - stopped
    print(f"\nafter a graceful stop, b wrote {took:.1f} s later")
    assert took < LEASE_DURATION
    # The stopped replica left the webhooks registered for the one still serving.
    adm = client.AdmissionregistrationV1Api(api)
    cfg = adm.read_validating_webhook_configuration("specops.dev")
    assert cfg.webhooks, "the stopping replica removed the webhooks"
    assert base64.b64decode(cfg.webhooks[0].client_config.ca_bundle) == ca.read_bytes()
    b.stop()
    # Persistent webhooks outlive the last replica too (failurePolicy Ignore: writes pass); the
    # next test's operator registers its own.
    assert adm.read_validating_webhook_configuration("specops.dev").webhooks
    adm.delete_validating_webhook_configuration("specops.dev")

"""Processes the test kit starts do not outlive it: a tree started through ``start_process`` goes
when its root is SIGKILLed (no handler, no ``finally`` runs then), and SIGTERM and SIGHUP run the
same cleanup as Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from specops_testkit.testbed import processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

# The kit's way of starting processes, two levels deep: root -> child -> grandchild (a sleep).
CHILD = """
import sys, time
from pathlib import Path
from specops_testkit.testbed.processes import start_process
d = Path(sys.argv[1])
grandchild = start_process(["sleep", "300"], d / "grandchild.log")
(d / "grandchild.pid").write_text(str(grandchild.pid))
time.sleep(300)
"""
ROOT = """
import sys, time
from pathlib import Path
from specops_testkit.testbed.processes import start_process
d = Path(sys.argv[1])
child = start_process([sys.executable, "-c", sys.argv[2], str(d)], d / "child.log")
(d / "child.pid").write_text(str(child.pid))
time.sleep(300)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper this test does not control)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_for(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ValueError, FileNotFoundError):
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path.name} not written within {timeout:.0f} s")


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids to kill (as process groups) at the end whatever happened, so a failure leaks nothing."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def test_sigkill_of_the_root_takes_children_and_grandchildren(tmp_path: Path, leftovers: list[int]) -> None:
    root = subprocess.Popen(
        [sys.executable, "-c", ROOT, str(tmp_path), CHILD], start_new_session=True, stderr=subprocess.PIPE
    )
    leftovers.append(root.pid)
    try:
        child = wait_for(tmp_path / "child.pid")
        leftovers.append(child)
        grandchild = wait_for(tmp_path / "grandchild.pid")
        leftovers.append(grandchild)
    except AssertionError:
        root.kill()
        raise AssertionError(root.communicate()[1].decode()) from None
    assert running(child) and running(grandchild)

    root.send_signal(signal.SIGKILL)
    root.wait(timeout=10)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (running(child) or running(grandchild)):
        time.sleep(0.05)
    assert not running(child), "the child outlived its parent"
    assert not running(grandchild), "the grandchild outlived its parent"


def test_a_child_started_after_its_parent_died_does_not_run(tmp_path: Path) -> None:
    """The race between fork and prctl: the tie refuses to run when the parent is already gone."""
    tie = processes._die_with(parent=os.getpid() + 10_000_000)  # no such parent
    assert tie is not None
    done = subprocess.run(["true"], preexec_fn=tie, check=False, timeout=10)
    assert done.returncode == 1


def test_stop_process_stops_the_group(tmp_path: Path, leftovers: list[int]) -> None:
    proc = processes.start_process(["sh", "-c", "sleep 300 & sleep 300"], tmp_path / "log")
    leftovers.append(proc.pid)
    time.sleep(0.3)
    processes.stop_process(proc.pid, timeout=5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


# A command the way the demo runs: a process started, then wait; cleanup in `finally`.
STOPPABLE = """
import signal, sys, time
from pathlib import Path
from specops_testkit.testbed.processes import start_process, stop_on_signals, stop_process
d = Path(sys.argv[1])
with stop_on_signals():
    proc = start_process(["sleep", "300"], d / "sleep.log")
    try:
        (d / "sleep.pid").write_text(str(proc.pid))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt as exc:
        (d / "stopped-by").write_text(type(exc).__name__ + " " + str(exc))
        raise
    finally:
        stop_process(proc.pid)
        (d / "cleaned").write_text("yes")
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_and_sighup_clean_up_like_ctrl_c(
    sig: signal.Signals, tmp_path: Path, leftovers: list[int]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPABLE, str(tmp_path)], start_new_session=True, stderr=subprocess.PIPE
    )
    leftovers.append(proc.pid)
    sleeper = wait_for(tmp_path / "sleep.pid")
    leftovers.append(sleeper)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert (tmp_path / "cleaned").read_text() == "yes", err.decode()
    stopped_by = (tmp_path / "stopped-by").read_text()
    if sig is signal.SIGINT:
        assert stopped_by == "KeyboardInterrupt "
    else:
        assert stopped_by == f"StopSignal {sig.name}"
    assert proc.returncode != 0
    assert not running(sleeper)


def test_handlers_are_restored_after_the_block() -> None:
    before = {sig: signal.getsignal(sig) for sig in processes.STOP_SIGNALS}
    with processes.stop_on_signals():
        assert all(signal.getsignal(sig) is not before[sig] for sig in processes.STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in processes.STOP_SIGNALS} == before


# The test world's own start paths: Prometheus, then etcd, kube-apiserver, kube-controller-manager.
WORLD = """
import json, sys, time
from pathlib import Path
from specops_testkit.testbed.controlplane import LocalControlPlane
from specops_testkit.testbed.prometheus import LocalPrometheus
d = Path(sys.argv[1])
(d / "prometheus").mkdir()
prometheus = LocalPrometheus(d / "prometheus")
prometheus.start()
state = LocalControlPlane(d / "cluster").start()
(d / "pids.json").write_text(json.dumps({**state.pids, "prometheus": prometheus.pid}))
time.sleep(300)
"""


@pytest.mark.integration
def test_sigkill_of_the_kit_takes_the_test_world(tmp_path: Path, leftovers: list[int]) -> None:
    root = subprocess.Popen(
        [sys.executable, "-c", WORLD, str(tmp_path)], start_new_session=True, stderr=subprocess.PIPE
    )
    leftovers.append(root.pid)
    deadline = time.monotonic() + 120
    while not (tmp_path / "pids.json").exists():
        if root.poll() is not None or time.monotonic() > deadline:
            root.kill()
            raise AssertionError(root.communicate()[1].decode())
        time.sleep(0.1)
    pids: dict[str, int] = json.loads((tmp_path / "pids.json").read_text())
    leftovers.extend(pids.values())
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "prometheus"}
    assert all(running(pid) for pid in pids.values())

    root.send_signal(signal.SIGKILL)
    root.wait(timeout=10)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(running(pid) for pid in pids.values()):
        time.sleep(0.05)
    assert [name for name, pid in pids.items() if running(pid)] == []

"""Every process the test kit starts (etcd, kube-apiserver, kube-controller-manager, Prometheus, the
vLLM emulators) is started here, tied to the lifetime of the process that started it.

Two mechanisms, because either alone leaves something behind:

* **A session of its own** (``start_new_session``): ``stop_process`` signals the whole process
  group, and a Ctrl-C in the terminal reaches only the kit, which then stops its children in order.
* **The parent-death signal** (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set in the child between
  fork and exec): when the parent dies, however it dies (SIGKILL included, where no handler and no
  ``finally`` runs), the kernel kills the child.  Every kit process that starts a process does so
  through ``start_process``, so a whole tree goes: the kit's process, its children, theirs.

Linux sends the parent-death signal when the *thread* that started the child ends, not only the
process: start long-lived processes from the main thread or from a thread that lives as long as
they should (the pod runner's watch and supervision threads do).  On other systems only the process
group applies.  ``stop_on_signals`` makes SIGTERM and SIGHUP stop a command the way Ctrl-C does, so
its ``finally`` blocks run and stop everything in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Nobody waits for an orderly stop once the parent is gone; etcd's data is thrown away anyway.
PARENT_DEATH_SIGNAL = signal.SIGKILL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved once, in the parent: between fork and exec the child should do as little as it can.
_PRCTL = _load_prctl()


def _die_with(parent: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that ties the child to ``parent``; None where the system has no prctl."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def tie() -> None:
        if prctl(PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0) != 0:
            # Popen raises SubprocessError in the parent: the child never runs untied.
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork and prctl; the signal would then never come.
        if os.getppid() != parent:
            os._exit(1)

    return tie


def start_process(
    cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr appended to ``log``, in a session of its own, killed by
    the kernel if this process (the starting thread, see above) dies first."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            start_new_session=True,
            # prctl must run in the child; the function touches nothing a fork could leave locked.
            preexec_fn=_die_with(os.getpid()),
        )


def stop_process(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect our own exited child, else its zombie keeps the process group alive."""
    with contextlib.suppress(ChildProcessError):  # not our child: stopped from a state file
        os.waitpid(pid, os.WNOHANG)


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be: the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``StopSignal`` in the main thread like SIGINT
    raises KeyboardInterrupt; once one has, further ones are ignored so the cleanup can finish
    (Ctrl-C still interrupts it, and the parent-death signal still takes the children)."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise StopSignal(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

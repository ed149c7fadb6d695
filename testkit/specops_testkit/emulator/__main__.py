"""``python -m specops_testkit.emulator <vllm args>``: a vLLM pod without a GPU.

Exit codes follow vLLM's: 2 for a command line the emulated release rejects, 1 for a configuration
that cannot start (weights do not fit, unknown model), 0 after SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from specops_testkit.emulator.args import ArgsError, ServingConfig, StartupError, load
from specops_testkit.emulator.server import ServerSettings, log, serve
from specops_testkit.emulator.sleep import GpuLedger, claim_at_start, engine_key


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load(args, os.environ)
        settings = ServerSettings.from_env(os.environ, default_seed=config.args.seed)
        if settings.gpu_ledger:  # engines sharing GPUs: refused at start as vLLM would refuse it
            claim_at_start(config, GpuLedger(settings.gpu_ledger, engine_key(config)))
    except ArgsError as exc:
        print(f"vllm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StartupError as exc:
        print(f"vllm: engine failed to start: {exc}", file=sys.stderr)
        return exc.exit_code
    log.info(
        "%s time_scale=%g load_seconds=%g seed=%d",
        config.describe(),
        settings.time_scale,
        settings.load_seconds,
        settings.seed,
    )
    for warning in config.warnings:
        log.warning("%s", warning)
    asyncio.run(_run(config, settings))
    return 0


# The pod runner sets this to its own pid: an emulator whose runner died (a test process killed
# hard) stops on its own instead of holding its address for the next test world.
ENV_PARENT_PID = "SPECOPS_EMULATOR_PARENT_PID"


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != pid:
            log.warning("the pod runner (pid %d) is gone: stopping", pid)
            stop.set()
            return
        await asyncio.sleep(1.0)


async def _run(config: ServingConfig, settings: ServerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.environ.get(ENV_PARENT_PID, "")
    watcher = asyncio.create_task(_watch_parent(int(parent), stop)) if parent.isdigit() else None
    try:
        await serve(config, settings, stop)
    finally:
        if settings.gpu_ledger:
            GpuLedger(settings.gpu_ledger, engine_key(config)).release()
    if watcher is not None:
        watcher.cancel()


if __name__ == "__main__":
    sys.exit(main())

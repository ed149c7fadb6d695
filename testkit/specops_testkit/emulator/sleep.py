"""vLLM's sleep mode, as the released servers have it (docs/emulator.md, "Sleep mode").

* The endpoints exist only with ``VLLM_SERVER_DEV_MODE=1`` (read as vLLM reads it: an integer):
  ``POST /sleep`` and ``POST /wake_up`` from 0.7.3, ``GET /is_sleeping`` from 0.8.0; ``/wake_up``
  takes ``tags`` and ``/sleep`` a ``mode`` in the releases the dialect table names.  0.32 checks
  ``level`` (0-2) and ``mode`` (422 otherwise) and answers JSON; older releases answer an empty 200.
* They do anything only with ``--enable-sleep-mode``.  Level 1 keeps the weights in host RAM and
  frees the KV cache; level 2 frees both (the weights come back as garbage until reloaded); level
  0 (0.32) pauses scheduling and frees nothing.  A sleeping engine still holds its CUDA context
  and CUDA graphs on every GPU.
* Durations: vLLM's published level-1 wakes, 2.9 s for a 30B model on one GPU (57 GiB of BF16)
  and 5.3-5.7 s for Qwen3-235B-A22B-FP8 on 4 GPUs (219 GiB), on a line in the weights moved;
  sleeping takes about as long.  A level-2 wake moves no weights: the line's intercept.
* Memory on a shared GPU: with ``SPECOPS_EMULATOR_GPU_LEDGER`` (a file the engines of one pod share)
  an engine is refused at start, as vLLM refuses it, when the free memory is below its share
  (``total x --gpu-memory-utilization``); a wake that does not fit fails with CUDA's out-of-memory
  error and leaves the engine asleep.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from specops.vllm.dialect import (
    SERVER_DEV_MODE_ENV,
    SLEEP_MODE_SINCE,
    SLEEP_PAUSE_MODE_SINCE,
    SLEEP_WAKE_TAGS_SINCE,
    V,
    Version,
)
from specops_testkit.emulator.args import ServingConfig, StartupError

ENV_GPU_LEDGER = "SPECOPS_EMULATOR_GPU_LEDGER"
SLEEP_WAKE_SINCE: Version = V("0.7.3")  # /sleep and /wake_up; /is_sleeping from SLEEP_MODE_SINCE
IS_SLEEPING_SINCE: Version = SLEEP_MODE_SINCE
# 0.32 validates level and mode (FastAPI Query, 422), knows level 0 and answers JSON; 0.20 did not.
SLEEP_API_V2_SINCE: Version = V("0.32.0")
PAUSE_MODES = ("abort", "wait", "keep")
TAGS = ("weights", "kv_cache")

# Level-1 wake (and sleep) time in seconds for the weights moved, through the two published points.
_POINTS = ((57.0, 2.9), (219.0, 5.5))
WAKE_SECONDS_PER_GIB = (_POINTS[1][1] - _POINTS[0][1]) / (_POINTS[1][0] - _POINTS[0][0])
WAKE_BASE_SECONDS = _POINTS[0][1] - WAKE_SECONDS_PER_GIB * _POINTS[0][0]
# The sleeping residual's CUDA-graph part per GPU, through the reported figures (about 1.2 GiB for
# a 3B model on one GPU, several GiB per GPU for very large models) less the CUDA context.
GRAPH_GIB_BASE = 0.72
GRAPH_GIB_PER_WEIGHT_GIB = 0.057


def dev_mode(env: Mapping[str, str]) -> bool:
    """``VLLM_SERVER_DEV_MODE`` as vLLM reads it, ``bool(int(...))``: 'true' stops the server."""
    raw = env.get(SERVER_DEV_MODE_ENV, "0")
    try:
        return bool(int(raw))
    except ValueError:
        raise StartupError(
            f"{SERVER_DEV_MODE_ENV}: invalid literal for int() with base 10: {raw!r}"
        ) from None


def switch_seconds(weights_gib: float, level: int) -> float:
    """Seconds to put to sleep or wake an engine with ``weights_gib`` over all its GPUs."""
    if level == 0:
        return 0.0
    if level == 2:
        return WAKE_BASE_SECONDS
    return WAKE_BASE_SECONDS + WAKE_SECONDS_PER_GIB * weights_gib


def weights_gib_total(config: ServingConfig) -> float:
    m = config.memory
    return (m.target_weights_gib + m.proposer_weights_gib) * config.args.tensor_parallel_size


def awake_gib(config: ServingConfig) -> float:
    """Per GPU, what an awake engine holds: vLLM's requested memory, which its KV cache fills."""
    return config.memory.inputs.gpu_memory_gib * config.args.gpu_memory_utilization


def asleep_gib(config: ServingConfig) -> float:
    """Per GPU, what a sleeping engine still holds: its CUDA context (memory outside PyTorch) and
    CUDA graphs (none with --enforce-eager)."""
    m = config.memory
    graphs = 0.0 if config.args.enforce_eager else GRAPH_GIB_BASE + GRAPH_GIB_PER_WEIGHT_GIB * m.weights_gib
    return m.non_torch_gib + graphs


def engine_key(config: ServingConfig) -> str:
    """This engine's entry in the ledger: its process and port."""
    return f"{os.getpid()}:{config.args.port}"


class GpuLedger:
    """GPU memory per GPU held by each engine of a pod, in a JSON file they share (flock)."""

    def __init__(self, path: str | Path, engine: str) -> None:
        self.path = Path(path)
        self.engine = engine

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, float]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                held: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}
                before = dict(held)
                yield held
                if held != before:
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(held, sort_keys=True))
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def others(self) -> float:
        with self._locked() as held:
            return sum(v for k, v in held.items() if k != self.engine)

    def claim(self, total: float, gib: float, failure: str) -> None:
        """Hold ``gib`` (replacing this engine's entry) if the others leave room, else raise."""
        with self._locked() as held:
            free = total - sum(v for k, v in held.items() if k != self.engine)
            if gib > free + 1e-9:
                raise MemoryError(failure.format(free=free, total=total, need=gib))
            held[self.engine] = gib

    def release(self) -> None:
        with self._locked() as held:
            held.pop(self.engine, None)


def claim_at_start(config: ServingConfig, ledger: GpuLedger) -> None:
    """vLLM's start-up check: the GPU's free memory must cover the engine's share."""
    total = config.memory.inputs.gpu_memory_gib
    util = config.args.gpu_memory_utilization
    try:
        ledger.claim(
            total,
            awake_gib(config),
            "Free memory on device cuda:0 ({free:.2f}/{total:.2f} GiB) on startup is less than "
            f"desired GPU memory utilization ({util:g}, {{need:.2f}} GiB). Decrease GPU memory "
            "utilization or reduce GPU memory used by other processes.",
        )
    except MemoryError as exc:
        raise StartupError(str(exc)) from None


@dataclass(slots=True)
class SleepState:
    """Which tags are asleep (empty: awake), at which level, and whether the scheduler is paused."""

    level: int | None = None
    asleep_tags: set[str] = field(default_factory=set)
    holding: bool = False  # new requests wait outside the engine
    paused: bool = False  # the engine steps nothing
    weights_discarded: bool = False  # after a level-2 sleep, until weights are reloaded

    @property
    def sleeping(self) -> bool:
        """What /is_sleeping answers: any tag asleep, or scheduling paused (0.32 counts both)."""
        return bool(self.asleep_tags) or self.holding or self.paused


def sleep_routes(version: Version, dev: bool) -> tuple[str, ...]:
    """The sleep-mode paths this release registers."""
    if not dev or version < SLEEP_WAKE_SINCE:
        return ()
    paths = ("/sleep", "/wake_up")
    return (*paths, "/is_sleeping") if version >= IS_SLEEPING_SINCE else paths


def has_pause_mode(version: Version) -> bool:
    return version >= SLEEP_PAUSE_MODE_SINCE


def has_wake_tags(version: Version) -> bool:
    return version >= SLEEP_WAKE_TAGS_SINCE

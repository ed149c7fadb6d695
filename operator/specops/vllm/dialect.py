"""What a given vLLM version accepts on its command line, for speculative decoding.

Two dialects exist:

* ``current`` (0.8.3 and later): one ``--speculative-config '<json>'`` flag.  0.8.3 removed the
  legacy flags (vLLM PR #15466), so they are never rendered for it.  (0.8.2 had both, but parsed
  the JSON with ``ast.literal_eval``; SpecOps gives it the legacy flags.)
* ``legacy`` (0.6.0 up to 0.8.2): ``--speculative-model`` (``[ngram]`` for n-gram, or the path of
  an EAGLE/Medusa head, recognised by its config), ``--num-speculative-tokens``,
  ``--speculative-draft-tensor-parallel-size``, ``--ngram-prompt-lookup-min/max``,
  ``--speculative-model-quantization``.  0.6.0-0.6.2 also need ``--use-v2-block-manager``.

The tables below are the single place these facts live; the renderer, the validation and the vLLM
emulator all read them, so the emulator rejects exactly what the renderer must never emit.  They
were read off the released wheels' sources (``engine/arg_utils.py``, ``config/speculative.py``)
release by release; each range is [first release with it, first release without it).  Notable:

* the V1 engine could not run a separate draft model from 0.10.0 until 0.15.0
  ("Draft model speculative decoding is not supported yet"), and from 0.15.0 it requires the
  draft's tensor parallel size to equal the target's;
* 0.16.0+ refuses unknown keys in --speculative-config, so a key is only rendered inside its range;
* ``num_speculative_tokens_per_batch_size`` ([start, end, k] rows) exists from 0.24.0;
* bitsandbytes needed ``--load-format bitsandbytes`` until 0.8.2 and was removed in 0.28.0;
* Medusa was removed in 0.33.0; MTP was ``deepseek_mtp`` from 0.9.0 and ``mtp`` from 0.11.0;
* the pod's command is rendered, not left to the image (whose entry point changed over time):
  ``vllm serve MODEL`` from ``SERVE_ENTRYPOINT_SINCE``, the api_server module before it.

hack/vllm-compat.sh checks these tables against real releases (docs/vllm-compat.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from specops.api.v1alpha1 import Method

Version = tuple[int, int, int]

MIN_SUPPORTED: Version = (0, 6, 0)
CURRENT_DIALECT_SINCE: Version = (0, 8, 3)


class Dialect(StrEnum):
    LEGACY = "legacy"
    CURRENT = "current"


def parse_version(text: str) -> Version:
    """'v0.11.0', '0.8', '0.10.1.post1', '0.9.0rc2' -> (major, minor, patch)."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a vLLM version such as '0.11.0'")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def format_version(v: Version) -> str:
    return ".".join(map(str, v))


def dialect_for(version: Version) -> Dialect:
    return Dialect.CURRENT if version >= CURRENT_DIALECT_SINCE else Dialect.LEGACY


@dataclass(frozen=True, slots=True)
class Gate:
    """Releases that have a feature: a union of [since, until) ranges (until None = still there)."""

    ranges: tuple[tuple[Version, Version | None], ...]

    def allows(self, v: Version) -> bool:
        return any(v >= lo and (hi is None or v < hi) for lo, hi in self.ranges)

    def describe(self) -> str:
        parts = []
        for lo, hi in self.ranges:
            if hi is None:
                parts.append(f">= {format_version(lo)}")
            else:
                parts.append(f"{format_version(lo)} to {format_version(hi)} (exclusive)")
        return "vLLM " + " or ".join(parts)


def since(v: Version, until: Version | None = None) -> Gate:
    return Gate(((v, until),))


V = parse_version

# Where each method can run, per dialect.  draft_model: see DRAFT_METHOD_NAME_SINCE.
METHOD_GATES: dict[Dialect, dict[Method, Gate]] = {
    Dialect.CURRENT: {
        # V0 ran draft models; V1 (0.10.0 on) raised NotImplementedError until 0.15.0.
        Method.DRAFT_MODEL: Gate(((V("0.8.3"), V("0.10.0")), (V("0.15.0"), None))),
        Method.NGRAM: since(V("0.8.3")),
        # 0.8.3/0.8.4 overwrote an explicit eagle method by name detection.
        Method.EAGLE: since(V("0.8.5")),
        Method.EAGLE3: since(V("0.8.5")),
        Method.MEDUSA: since(V("0.8.5"), V("0.33.0")),
        Method.MTP: since(V("0.9.0")),
        Method.SUFFIX: since(V("0.11.1")),
    },
    Dialect.LEGACY: {
        Method.DRAFT_MODEL: since(MIN_SUPPORTED),
        Method.NGRAM: since(MIN_SUPPORTED),
        Method.EAGLE: since(MIN_SUPPORTED),
        Method.MEDUSA: since(MIN_SUPPORTED),
    },
}

# MTP's method string was "deepseek_mtp" before 0.11.0.
MTP_NAME_SINCE: Version = V("0.11.0")
# A draft model must be named "method": "draft_model" from here: 0.15.1's SpeculativeConfig
# refuses a "model" without a method ("Unsupported speculative method: 'None'"), where 0.10.2
# still inferred draft_model from it (docs/vllm-compat.md; 0.15.0 itself was not checked).
DRAFT_METHOD_NAME_SINCE: Version = V("0.15.0")
# V1 runs a draft model only with the target's tensor parallel size (V0, before 0.10.0, allowed 1).
DRAFT_TP_MUST_MATCH_SINCE: Version = V("0.10.0")

# Keys of --speculative-config per release (only those SpecOps renders).
CONFIG_KEY_GATES: dict[str, Gate] = {
    "method": since(V("0.8.3")),
    "model": since(V("0.8.3")),
    "num_speculative_tokens": since(V("0.8.3")),
    "draft_tensor_parallel_size": since(V("0.8.3")),
    "quantization": since(V("0.8.3")),
    "max_model_len": since(V("0.8.3")),
    "revision": since(V("0.8.3")),
    "prompt_lookup_min": since(V("0.8.3")),
    "prompt_lookup_max": since(V("0.8.3")),
    "disable_by_batch_size": since(V("0.8.3"), V("0.17.0")),
    "num_speculative_tokens_per_batch_size": since(V("0.24.0")),
    # Greedy or probabilistic drafting (vLLM PR 40651): present in 0.32.0 and absent in 0.15.1;
    # the first release in between is not verified here, so it is rendered from 0.32.0 only.
    "draft_sample_method": since(V("0.32.0")),
}

# Legacy flags, all removed in 0.8.3.
LEGACY_FLAG_GATES: dict[str, Gate] = {
    flag: since(MIN_SUPPORTED, CURRENT_DIALECT_SINCE)
    for flag in (
        "--speculative-model",
        "--num-speculative-tokens",
        "--speculative-draft-tensor-parallel-size",
        "--speculative-model-quantization",
        "--speculative-max-model-len",
        "--speculative-disable-by-batch-size",
        "--ngram-prompt-lookup-min",
        "--ngram-prompt-lookup-max",
        "--spec-decoding-acceptance-method",
        "--typical-acceptance-sampler-posterior-threshold",
        "--typical-acceptance-sampler-posterior-alpha",
        "--speculative-disable-mqa-scorer",
        "--disable-logprobs-during-spec-decoding",
    )
}

# Needed for speculative decoding up to 0.6.2 (default from 0.6.3, removed in 0.10.0).
V2_BLOCK_MANAGER_NEEDED_UNTIL: Version = V("0.6.3")
BITSANDBYTES_LOAD_FORMAT_UNTIL: Version = V("0.8.2")
BITSANDBYTES_REMOVED: Version = V("0.28.0")

# Sleep mode, for the HotSwap rollout strategy, read off released wheels (docs/domain.md#switching).
# --enable-sleep-mode is in 0.7.2 (the oldest checked); POST /sleep and /wake_up first in 0.7.3;
# GET /is_sleeping first in 0.8.0; all three registered only with VLLM_SERVER_DEV_MODE=1.  HotSwap
# needs all three.  /wake_up's tags and /sleep's mode are in the releases named, which are the first
# checked that have them (absent in 0.8.0 and 0.10.2 respectively; releases between not checked).
SLEEP_MODE_SINCE: Version = V("0.8.0")
SLEEP_WAKE_TAGS_SINCE: Version = V("0.8.5")
SLEEP_PAUSE_MODE_SINCE: Version = V("0.20.0")
# Sleep levels /sleep accepts: 1 and 2; 0 (pause scheduling only) too from the release with mode.
SLEEP_LEVEL_ZERO_SINCE: Version = SLEEP_PAUSE_MODE_SINCE
# The environment variable that registers the development endpoints, /sleep among them.
SERVER_DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"


def sleep_mode_gate() -> Gate:
    return since(SLEEP_MODE_SINCE)


class Entrypoint(StrEnum):
    """How the container starts vLLM (rendered as the container's command, not left to the image)."""

    # The console script with the model as its positional argument: `vllm serve MODEL --flags`.
    SERVE = "serve"
    # The OpenAI server module with --model: what the vllm-openai images ran before `vllm serve`.
    API_SERVER = "api_server"

    @property
    def command(self) -> tuple[str, ...]:
        if self is Entrypoint.SERVE:
            return ("vllm", "serve")
        return ("python3", "-m", "vllm.entrypoints.openai.api_server")


# `vllm serve MODEL` from this release on (checked against real releases: docs/vllm-compat.md).
SERVE_ENTRYPOINT_SINCE: Version = MIN_SUPPORTED


def entrypoint_for(version: Version) -> Entrypoint:
    return Entrypoint.SERVE if version >= SERVE_ENTRYPOINT_SINCE else Entrypoint.API_SERVER


# Every other flag SpecOps renders, with the releases that accept it.
COMMON_FLAG_GATES: dict[str, Gate] = {
    "--model": since(MIN_SUPPORTED),
    "--served-model-name": since(MIN_SUPPORTED),
    "--revision": since(MIN_SUPPORTED),
    "--host": since(MIN_SUPPORTED),
    "--port": since(MIN_SUPPORTED),
    "--tensor-parallel-size": since(MIN_SUPPORTED),
    "--max-model-len": since(MIN_SUPPORTED),
    "--gpu-memory-utilization": since(MIN_SUPPORTED),
    "--dtype": since(MIN_SUPPORTED),
    "--kv-cache-dtype": since(MIN_SUPPORTED),
    "--quantization": since(MIN_SUPPORTED),
    "--load-format": since(MIN_SUPPORTED),
    "--use-v2-block-manager": since(MIN_SUPPORTED, V("0.10.0")),
    "--speculative-config": since(V("0.8.2")),
    "--enable-sleep-mode": since(V("0.7.2")),
}

# Flags whose value SpecOps owns; extraArgs may not set them (the field to use is named).
MANAGED_FLAGS: dict[str, str] = {
    "--model": "spec.target.model",
    "--served-model-name": "spec.vllm.servedModelName",
    "--revision": "spec.target.revision",
    "--host": "(managed by SpecOps)",
    "--port": "spec.vllm.port",
    "--tensor-parallel-size": "spec.target.tensorParallelSize",
    "-tp": "spec.target.tensorParallelSize",
    "--max-model-len": "spec.target.maxModelLen",
    "--gpu-memory-utilization": "spec.resources.gpuMemoryUtilization",
    "--dtype": "spec.target.dtype",
    "--kv-cache-dtype": "spec.target.kvCacheDtype",
    "--quantization": "spec.target.quantization",
    "-q": "spec.target.quantization",
    "--speculative-config": "spec.speculation",
    "--enable-sleep-mode": "spec.rollout.strategy",
    **dict.fromkeys(LEGACY_FLAG_GATES, "spec.speculation"),
}


def speculative_config_keys(version: Version) -> frozenset[str]:
    return frozenset(k for k, gate in CONFIG_KEY_GATES.items() if gate.allows(version))


def method_gate(version: Version, method: Method) -> Gate | None:
    """The gate of ``method`` in this version's dialect, or None when the dialect never had it."""
    return METHOD_GATES[dialect_for(version)].get(method)


def vllm_method_name(version: Version, method: Method) -> str | None:
    """The string vLLM expects for ``method``; None where a draft model is implied by "model"."""
    if method is Method.DRAFT_MODEL:
        return "draft_model" if version >= DRAFT_METHOD_NAME_SINCE else None
    if method is Method.MTP and version < MTP_NAME_SINCE:
        return "deepseek_mtp"
    return method.value


def flag_allowed(version: Version, flag: str) -> bool:
    """Would vLLM ``version`` accept ``flag``?  Flags outside these tables are not judged."""
    gate = COMMON_FLAG_GATES.get(flag) or LEGACY_FLAG_GATES.get(flag)
    return gate is None or gate.allows(version)


def known_flag(flag: str) -> bool:
    return flag in COMMON_FLAG_GATES or flag in LEGACY_FLAG_GATES

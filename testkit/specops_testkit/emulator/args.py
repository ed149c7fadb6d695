"""vLLM's command line, as the emulated release reads it, and the serving configuration it implies.

The emulator must refuse exactly what the real release refuses, or a test world could pass with
arguments that crash a real pod.  Which flags, ``--speculative-config`` keys and methods a release
has comes from ``specops.vllm.dialect`` (the table the renderer obeys) and model figures from
``specops.api.catalog``.  Memory and concurrency come from the emulator's own ``memory`` module,
written from vLLM's behaviour, never from the operator's budget (which the emulator tests).

Two kinds of failure, as with real vLLM:

* ``ArgsError``: the command line itself is wrong for this release (unknown flag, flag the release
  lacks or has dropped, unknown key or method in ``--speculative-config``).  Exit code 2.
* ``StartupError``: the arguments parse but the engine cannot start (weights or the KV cache for
  one ``max_model_len`` sequence do not fit, model unknown, vocabularies differ), with vLLM's own
  wording where it has one.  Exit code 1, as when vLLM dies loading the model.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from specops.api.catalog import ModelInfo, lookup_model
from specops.api.v1alpha1 import DType, KVCacheDType, Method, Quantization, VLLMSpec
from specops.vllm.dialect import (
    BITSANDBYTES_LOAD_FORMAT_UNTIL,
    BITSANDBYTES_REMOVED,
    CURRENT_DIALECT_SINCE,
    DRAFT_METHOD_NAME_SINCE,
    DRAFT_TP_MUST_MATCH_SINCE,
    LEGACY_FLAG_GATES,
    MIN_SUPPORTED,
    MTP_NAME_SINCE,
    V2_BLOCK_MANAGER_NEEDED_UNTIL,
    Dialect,
    Entrypoint,
    Version,
    flag_allowed,
    format_version,
    known_flag,
    method_gate,
    parse_version,
    speculative_config_keys,
)
from specops_testkit.emulator.memory import (
    CUDA_GRAPHS_COUNTED_SINCE,
    MemoryInputs,
    MemoryPlan,
    ModelShape,
    Proposer,
    kv_bytes_per_element,
    plan_memory,
    startup_failure,
    weight_bytes_per_parameter,
)
from specops_testkit.emulator.perf import EngineConfig, ModelFigures, Pairing, ProposerConfig, constants_for

ENV_VERSION = "SPECOPS_EMULATOR_VLLM_VERSION"
ENV_GPU_MEMORY_GIB = "SPECOPS_EMULATOR_GPU_MEMORY_GIB"
# What the checkpoint's own config declares when --quantization is absent (vLLM reads int8/W8A8 and
# most FP8 checkpoints' scheme from config.json, so the rendered command line does not say it).
ENV_CHECKPOINT_QUANTIZATION = "SPECOPS_EMULATOR_QUANTIZATION"
DEFAULT_GPU_MEMORY_GIB = 80.0
# Far beyond any GPU: a typo, not hardware.
MAX_GPU_MEMORY_GIB = 4096.0
# vLLM defaults --max-model-len to the model's context; the catalog has none, so 8192.
DEFAULT_MAX_MODEL_LEN = 8192

# From this release on --speculative-config refuses keys it does not know (dialect.py's notes);
# before it, unknown keys were dropped without a word.
STRICT_SPECULATIVE_CONFIG_SINCE: Version = parse_version("0.16.0")
# vLLM's V1 engine became the default in 0.8.0; speculative methods came to it one by one and
# anything V1 could not run fell back to the V0 engine (V0 was removed in 0.10.0).  Which engine
# serves decides which metrics a pod exports.
V1_DEFAULT_SINCE: Version = parse_version("0.8.0")
V1_METHOD_SINCE: dict[Method, Version] = {
    Method.NGRAM: parse_version("0.8.3"),
    Method.EAGLE: parse_version("0.8.3"),
    Method.EAGLE3: parse_version("0.8.5"),
    Method.MEDUSA: parse_version("0.9.0"),
    Method.MTP: parse_version("0.9.0"),
    Method.SUFFIX: parse_version("0.11.1"),
    Method.DRAFT_MODEL: parse_version("0.10.0"),
}
# Larger scheduler defaults for >= 70 GiB GPUs (vLLM's H100/H200 rule) from this release.
LARGE_GPU_DEFAULTS_SINCE: Version = parse_version("0.9.2")

# Flags the emulator accepts beyond the dialect table (common extraArgs); not version-gated.
_EXTRA_VALUE_FLAGS = {
    "--max-num-seqs": int,
    "--max-num-batched-tokens": int,
    "--seed": int,
    "--swap-space": float,
    "--block-size": int,
    "--uvicorn-log-level": str,
    "--chat-template": str,
    "--tokenizer": str,
    "--download-dir": str,
}
_EXTRA_SWITCHES = (
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--disable-log-requests",
    "--disable-log-stats",
    "--trust-remote-code",
    "--enforce-eager",
)

_QUANTIZATION_FLAG: dict[str, Quantization] = {
    "fp8": Quantization.FP8,
    "fbgemm_fp8": Quantization.FP8,
    "awq": Quantization.AWQ,
    "awq_marlin": Quantization.AWQ,
    "gptq": Quantization.GPTQ,
    "gptq_marlin": Quantization.GPTQ,
    "marlin": Quantization.GPTQ,
    "bitsandbytes": Quantization.BITSANDBYTES,
    "compressed-tensors": Quantization.INT8,
    "experts_int8": Quantization.INT8,
}
_DRAFT_QUANTIZATION: dict[str, Quantization] = {
    "fp8": Quantization.FP8,
    "awq": Quantization.AWQ,
    "awq_marlin": Quantization.AWQ,
    "gptq": Quantization.GPTQ,
    "gptq_marlin": Quantization.GPTQ,
}
_DTYPES: dict[str, DType] = {
    "auto": DType.AUTO,
    "bfloat16": DType.BFLOAT16,
    "half": DType.FLOAT16,
    "float16": DType.FLOAT16,
    "float": DType.FLOAT32,
    "float32": DType.FLOAT32,
}
_KV_DTYPES: dict[str, KVCacheDType] = {
    "auto": KVCacheDType.AUTO,
    "fp8": KVCacheDType.FP8,
    "fp8_e4m3": KVCacheDType.FP8,
    "fp8_e5m2": KVCacheDType.FP8,
}
# Checkpoint name suffixes that declare a quantization (Org/Model-AWQ, ...-FP8-dynamic, ...-W8A8).
_NAME_QUANTIZATION: tuple[tuple[str, Quantization], ...] = (
    ("awq", Quantization.AWQ),
    ("gptq", Quantization.GPTQ),
    ("int4", Quantization.AWQ),
    ("w4a16", Quantization.AWQ),
    ("fp8", Quantization.FP8),
    ("int8", Quantization.INT8),
    ("w8a8", Quantization.INT8),
    ("w8a16", Quantization.INT8),
)


class ArgsError(ValueError):
    """The command line is wrong for this vLLM release (vLLM exits 2, as argparse does)."""

    exit_code = 2


class StartupError(RuntimeError):
    """The engine cannot start with this configuration (vLLM dies with exit code 1)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class SpeculativeArgs:
    """Speculation as the command line gives it, from either dialect."""

    method: Method
    num_speculative_tokens: int
    model: str | None = None
    draft_tensor_parallel_size: int | None = None
    quantization: str | None = None
    prompt_lookup_min: int | None = None
    prompt_lookup_max: int | None = None
    k_by_batch_size: tuple[tuple[int, int, int], ...] = ()
    disable_by_batch_size: int | None = None
    dialect: Dialect = Dialect.CURRENT


@dataclass(frozen=True, slots=True)
class VLLMArgs:
    """The parsed command line."""

    model: str
    served_model_names: tuple[str, ...]
    port: int = 8000
    host: str | None = None
    revision: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: DType = DType.AUTO
    kv_cache_dtype: KVCacheDType = KVCacheDType.AUTO
    quantization: str | None = None
    load_format: str = "auto"
    use_v2_block_manager: bool = False
    speculative: SpeculativeArgs | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    seed: int | None = None
    enable_prefix_caching: bool | None = None
    ignored_config_keys: tuple[str, ...] = ()
    enforce_eager: bool = False  # no CUDA graphs: nothing reserved for them
    enable_sleep_mode: bool = False  # /sleep and /wake_up work (with VLLM_SERVER_DEV_MODE=1)

    @property
    def served_model_name(self) -> str:
        return self.served_model_names[0] if self.served_model_names else self.model


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Everything the server needs: what to call itself, how to behave, what to export."""

    version: Version
    args: VLLMArgs
    engine: EngineConfig
    memory: MemoryPlan
    v0_engine: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def served_model_name(self) -> str:
        return self.args.served_model_name

    @property
    def method(self) -> Method | None:
        return self.args.speculative.method if self.args.speculative else None

    @property
    def num_speculative_tokens(self) -> int:
        return self.args.speculative.num_speculative_tokens if self.args.speculative else 0

    def describe(self) -> str:
        """One log line with the derived configuration."""
        e, m = self.engine, self.memory
        spec = "none"
        if self.args.speculative is not None:
            s = self.args.speculative
            spec = f"{s.method.value} k={s.num_speculative_tokens}"
            if s.model:
                spec += f" draft={s.model}"
        return (
            f"vLLM {format_version(self.version)} ({'V0' if self.v0_engine else 'V1'} engine) "
            f"model={self.args.model} served={self.served_model_name} "
            f"tp={self.args.tensor_parallel_size} speculation={spec} "
            f"per_gpu(weights={m.weights_gib:.2f}GiB reserve={m.reserve_gib:.2f}GiB "
            f"kv_cache={m.kv_cache_gib:.2f}GiB) kv_tokens={e.kv_capacity_tokens} "
            f"max_concurrency={m.max_concurrency:.2f}x max_num_seqs={e.max_num_seqs} "
            f"max_num_batched_tokens={e.max_num_batched_tokens} max_model_len={e.max_model_len}"
        )


# ------------------------------------------------------------------------------------ parsing


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so callers (and tests) decide what to do."""

    def error(self, message: str) -> NoReturn:
        raise ArgsError(message)


def _normalise(token: str) -> str:
    """vLLM's parser accepts --max_model_len for --max-model-len; so does the emulator."""
    if not token.startswith("--"):
        return token
    flag, eq, value = token.partition("=")
    return flag.replace("_", "-") + eq + value


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not token[1].isdigit()


def _check_flags(argv: Sequence[str], version: Version) -> None:
    vtext = format_version(version)
    for token in argv:
        if not _is_flag(token):
            continue
        flag = token.split("=", 1)[0]
        if known_flag(flag) and not flag_allowed(version, flag):
            raise ArgsError(f"unrecognized arguments: {flag} (vLLM {vtext} does not have this flag)")


def _build_parser() -> _Parser:
    p = _Parser(prog="vllm", add_help=False, allow_abbrev=False)
    p.add_argument("model_tag", nargs="?")  # `vllm serve MODEL`
    p.add_argument("--model")
    p.add_argument("--served-model-name", nargs="+", default=[])
    p.add_argument("--revision")
    p.add_argument("--host")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="auto")
    p.add_argument("--kv-cache-dtype", choices=sorted(_KV_DTYPES), default="auto")
    p.add_argument("--quantization", "-q", choices=sorted(_QUANTIZATION_FLAG))
    p.add_argument("--load-format", default="auto")
    p.add_argument("--use-v2-block-manager", action="store_true")
    p.add_argument("--enable-sleep-mode", action="store_true")  # gated by the dialect table
    p.add_argument("--speculative-config")
    # Legacy dialect (gated by the dialect table before parsing).
    p.add_argument("--speculative-model")
    p.add_argument("--num-speculative-tokens", type=int)
    p.add_argument("--speculative-draft-tensor-parallel-size", type=int)
    p.add_argument("--speculative-model-quantization")
    p.add_argument("--speculative-max-model-len", type=int)
    p.add_argument("--speculative-disable-by-batch-size", type=int)
    p.add_argument("--ngram-prompt-lookup-min", type=int)
    p.add_argument("--ngram-prompt-lookup-max", type=int)
    p.add_argument("--spec-decoding-acceptance-method")
    p.add_argument("--typical-acceptance-sampler-posterior-threshold", type=float)
    p.add_argument("--typical-acceptance-sampler-posterior-alpha", type=float)
    p.add_argument("--speculative-disable-mqa-scorer", action="store_true")
    p.add_argument("--disable-logprobs-during-spec-decoding", action="store_true")
    for flag, kind in _EXTRA_VALUE_FLAGS.items():
        p.add_argument(flag, type=kind)
    for flag in _EXTRA_SWITCHES:
        p.add_argument(flag, action="store_true")
    missing = [f for f in LEGACY_FLAG_GATES if f.lstrip("-").replace("-", "_") not in _dests(p)]
    assert not missing, f"legacy flags without a parser entry: {missing}"
    return p


def _dests(p: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in p._actions}


def _method_from_name(name: str, version: Version) -> Method:
    """The method of a --speculative-config "method" string, as this release spells it."""
    vtext = format_version(version)
    if name == "deepseek_mtp":
        return Method.MTP
    if name == "[ngram]":
        return Method.NGRAM
    try:
        method = Method(name)
    except ValueError:
        known = ", ".join(sorted(m.value for m in Method))
        raise ArgsError(
            f"argument --speculative-config: unknown method {name!r}; vLLM {vtext} knows {known}"
        ) from None
    if method is Method.MTP and version < MTP_NAME_SINCE:
        raise ArgsError(
            f'argument --speculative-config: method "mtp" is spelled "deepseek_mtp" in vLLM {vtext} '
            f"(renamed in {format_version(MTP_NAME_SINCE)})"
        )
    return method


def _implied_method(model: str) -> Method:
    """What a release makes of a proposer named without a method: n-gram, an EAGLE head or a draft."""
    lowered = model.lower()
    if lowered in ("[ngram]", "ngram"):
        return Method.NGRAM
    if "eagle3" in lowered:
        return Method.EAGLE3
    if "eagle" in lowered:
        return Method.EAGLE
    if "medusa" in lowered:
        return Method.MEDUSA
    return Method.DRAFT_MODEL


def _int(cfg: Mapping[str, Any], key: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgsError(f"argument --speculative-config: {key} must be an integer, got {value!r}")
    return value


def _k_table(value: Any) -> tuple[tuple[int, int, int], ...]:
    if value is None:
        return ()
    ok = isinstance(value, list) and all(
        isinstance(row, list) and len(row) == 3 and all(isinstance(x, int) for x in row) for row in value
    )
    if not ok:
        raise ArgsError(
            "argument --speculative-config: num_speculative_tokens_per_batch_size must be a list of "
            "[min_batch_size, max_batch_size, k] rows"
        )
    # vLLM's own checks on the table (vllm/v1/spec_decode/dynamic/utils.py).
    rows = sorted((row[0], row[1], row[2]) for row in value)
    bad = (
        not rows
        or any(lo < 1 or lo > hi or k < 0 for lo, hi, k in rows)
        or any(rows[i + 1][0] <= rows[i][1] for i in range(len(rows) - 1))
        or rows[0][0] != 1
    )
    if bad:
        raise ArgsError(
            "argument --speculative-config: num_speculative_tokens_per_batch_size needs non-empty, "
            "non-overlapping [start, end, k] rows with 1 <= start <= end and k >= 0, the first "
            "starting at 1"
        )
    return tuple(rows)


def _parse_speculative_config(text: str, version: Version) -> tuple[SpeculativeArgs, tuple[str, ...]]:
    vtext = format_version(version)
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArgsError(f"argument --speculative-config: not valid JSON ({exc.msg})") from None
    if not isinstance(cfg, dict):
        raise ArgsError("argument --speculative-config: expected a JSON object")
    # 0.8.2 took --speculative-config too (with the 0.8.3 keys); the dialect table starts at 0.8.3.
    allowed = speculative_config_keys(max(version, CURRENT_DIALECT_SINCE))
    unknown = sorted(k for k in cfg if k not in allowed)
    if unknown and version >= STRICT_SPECULATIVE_CONFIG_SINCE:
        raise ArgsError(
            f"argument --speculative-config: unknown key(s) {', '.join(unknown)} for vLLM {vtext} "
            f"(it accepts {', '.join(sorted(allowed))})"
        )
    cfg = {k: v for k, v in cfg.items() if k in allowed}
    model = cfg.get("model")
    if model is not None and not isinstance(model, str):
        raise ArgsError("argument --speculative-config: model must be a string")
    method_name = cfg.get("method")
    if method_name is not None:
        if not isinstance(method_name, str):
            raise ArgsError("argument --speculative-config: method must be a string")
        method = _method_from_name(method_name, version)
    elif model is not None:
        method = _implied_method(model)
        if method is Method.DRAFT_MODEL and version >= DRAFT_METHOD_NAME_SINCE:
            raise ArgsError(
                f"argument --speculative-config: Unsupported speculative method: 'None' (vLLM {vtext} "
                'needs "method": "draft_model" for a draft model)'
            )
    else:
        raise ArgsError('argument --speculative-config: set "method" or "model"')
    if method in (Method.NGRAM, Method.SUFFIX, Method.MTP):
        model = None if method is not Method.MTP else model
    elif model is None:
        raise ArgsError(f'argument --speculative-config: method {method.value} needs "model"')
    k = _int(cfg, "num_speculative_tokens")
    if k is None:
        if method is not Method.MTP:
            raise ArgsError("argument --speculative-config: num_speculative_tokens is required")
        k = 1
    if k < 1:
        raise ArgsError("argument --speculative-config: num_speculative_tokens must be at least 1")
    quantization = cfg.get("quantization")
    spec = SpeculativeArgs(
        method=method,
        num_speculative_tokens=k,
        model=model,
        draft_tensor_parallel_size=_int(cfg, "draft_tensor_parallel_size"),
        quantization=quantization if isinstance(quantization, str) else None,
        prompt_lookup_min=_int(cfg, "prompt_lookup_min"),
        prompt_lookup_max=_int(cfg, "prompt_lookup_max"),
        k_by_batch_size=_k_table(cfg.get("num_speculative_tokens_per_batch_size")),
        disable_by_batch_size=_int(cfg, "disable_by_batch_size"),
        dialect=Dialect.CURRENT,
    )
    return spec, tuple(unknown)


def _legacy_speculative(ns: argparse.Namespace) -> SpeculativeArgs | None:
    if ns.speculative_model is None:
        if ns.num_speculative_tokens is not None:
            raise ArgsError("--num-speculative-tokens needs --speculative-model")
        return None
    if ns.num_speculative_tokens is None:
        raise ArgsError("--speculative-model needs --num-speculative-tokens")
    method = _implied_method(ns.speculative_model)
    return SpeculativeArgs(
        method=method,
        num_speculative_tokens=ns.num_speculative_tokens,
        model=None if method is Method.NGRAM else ns.speculative_model,
        draft_tensor_parallel_size=ns.speculative_draft_tensor_parallel_size,
        quantization=ns.speculative_model_quantization,
        prompt_lookup_min=ns.ngram_prompt_lookup_min,
        prompt_lookup_max=ns.ngram_prompt_lookup_max,
        disable_by_batch_size=ns.speculative_disable_by_batch_size,
        dialect=Dialect.LEGACY,
    )


def _check_method(spec: SpeculativeArgs, version: Version) -> None:
    vtext = format_version(version)
    gate = method_gate(version, spec.method)
    if gate is None or not gate.allows(version):
        where = gate.describe() if gate is not None else "another vLLM release"
        raise ArgsError(
            f"speculative method {spec.method.value} is not available in vLLM {vtext}; it needs {where}"
        )


def split_entrypoint(argv: Sequence[str]) -> tuple[Entrypoint | None, list[str]]:
    """The entry point a command starts with (None: only args, the image's own entry point runs)."""
    for entrypoint in Entrypoint:
        n = len(entrypoint.command)
        if tuple(argv[:n]) == entrypoint.command:
            return entrypoint, list(argv[n:])
    return None, list(argv)


def _served_model(ns: argparse.Namespace, entrypoint: Entrypoint | None) -> str:
    if ns.model_tag is not None and entrypoint is Entrypoint.API_SERVER:
        raise ArgsError(
            f"unrecognized arguments: {ns.model_tag} "
            "(the api_server module takes --model, not a positional model)"
        )
    model = ns.model_tag or ns.model  # `vllm serve` prefers the positional model
    if not model:
        raise ArgsError("the model is missing: `vllm serve MODEL` or --model MODEL")
    assert isinstance(model, str)
    return model


def parse_args(argv: Sequence[str], version: Version) -> VLLMArgs:
    """Parse vLLM's command line as release ``version`` would; raise ArgsError where it would fail.

    ``argv`` may start with the entry point (``vllm serve`` or ``python3 -m
    vllm.entrypoints.openai.api_server``, as SpecOps renders the container command) or be the
    container args alone.
    """
    vtext = format_version(version)
    entrypoint, rest = split_entrypoint(argv)
    tokens = [_normalise(t) for t in rest]
    _check_flags(tokens, version)
    ns = _build_parser().parse_args(tokens)
    model = _served_model(ns, entrypoint)
    if ns.speculative_config is not None and ns.speculative_model is not None:
        raise ArgsError("use either --speculative-config or --speculative-model, not both")
    ignored: tuple[str, ...] = ()
    spec: SpeculativeArgs | None
    if ns.speculative_config is not None:
        spec, ignored = _parse_speculative_config(ns.speculative_config, version)
    else:
        spec = _legacy_speculative(ns)
    if spec is not None:
        _check_method(spec, version)
        if (
            spec.method is Method.DRAFT_MODEL
            and version >= DRAFT_TP_MUST_MATCH_SINCE
            and spec.draft_tensor_parallel_size not in (None, ns.tensor_parallel_size)
        ):
            raise ArgsError(
                f"vLLM {vtext} runs a draft model only at the target's tensor parallel size "
                f"({ns.tensor_parallel_size}), not {spec.draft_tensor_parallel_size}"
            )
        if version < V2_BLOCK_MANAGER_NEEDED_UNTIL and not ns.use_v2_block_manager:
            raise ArgsError(
                "Speculative decoding requires usage of the V2 block manager. "
                "Enable it with --use-v2-block-manager."
            )
    if ns.quantization == "bitsandbytes":
        if version >= BITSANDBYTES_REMOVED:
            raise ArgsError(f"argument --quantization: bitsandbytes is not available in vLLM {vtext}")
        if version < BITSANDBYTES_LOAD_FORMAT_UNTIL and ns.load_format != "bitsandbytes":
            raise ArgsError("bitsandbytes quantization needs --load-format bitsandbytes in this release")
    if not 0.0 < ns.gpu_memory_utilization <= 1.0:
        raise ArgsError("argument --gpu-memory-utilization: must be in (0, 1]")
    if ns.tensor_parallel_size < 1:
        raise ArgsError("argument --tensor-parallel-size: must be at least 1")
    prefix_caching: bool | None = None
    if ns.enable_prefix_caching or ns.no_enable_prefix_caching:
        prefix_caching = bool(ns.enable_prefix_caching)
    return VLLMArgs(
        model=model,
        served_model_names=tuple(ns.served_model_name),
        port=ns.port,
        host=ns.host,
        revision=ns.revision,
        tensor_parallel_size=ns.tensor_parallel_size,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        max_model_len=ns.max_model_len,
        dtype=_DTYPES[ns.dtype],
        kv_cache_dtype=_KV_DTYPES[ns.kv_cache_dtype],
        quantization=ns.quantization,
        load_format=ns.load_format,
        use_v2_block_manager=ns.use_v2_block_manager,
        speculative=spec,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        seed=ns.seed,
        enable_prefix_caching=prefix_caching,
        ignored_config_keys=ignored,
        enforce_eager=bool(ns.enforce_eager),
        enable_sleep_mode=ns.enable_sleep_mode,
    )


# ------------------------------------------------------------------------------- derivation


def uses_v0_engine(version: Version, method: Method | None) -> bool:
    """Would this release serve with the V0 engine (and export V0 metrics)?"""
    if version < V1_DEFAULT_SINCE:
        return True
    if method is None:
        return False
    return version < V1_METHOD_SINCE[method]


def checkpoint_quantization(model: str, declared: str | None) -> Quantization:
    """The target's quantization when --quantization is absent: the env override, else the name."""
    if declared:
        try:
            return Quantization(declared.strip().lower())
        except ValueError:
            known = ", ".join(q.value for q in Quantization)
            message = f"{ENV_CHECKPOINT_QUANTIZATION}={declared!r}: expected one of {known}"
            raise StartupError(message) from None
    parts = model.lower().replace("_", "-").rsplit("/", 1)[-1].split("-")
    for suffix, quantization in _NAME_QUANTIZATION:
        if suffix in parts or any(p.startswith(f"quantized.{suffix}") for p in parts):
            return quantization
    return Quantization.NONE


def _require_model(name: str, role: str) -> ModelInfo:
    info = lookup_model(name)
    if info is None:
        raise StartupError(
            f"{role} {name!r} is not in the emulator's model catalog (specops.api.catalog); the emulator "
            "needs its parameter count and layer shape to size weights and KV cache"
        )
    return info


@dataclass(frozen=True, slots=True)
class _Draft:
    """The proposer's figures: for memory, for the cost model and for acceptance."""

    memory: Proposer
    figures: ModelFigures
    pairing: Pairing


def _draft(
    args: VLLMArgs, version: Version, target_info: ModelInfo, bytes_per_parameter: float, kv_bytes: float
) -> _Draft | None:
    """The proposer's weights and KV cache, checked as vLLM checks them at start-up."""
    s = args.speculative
    if s is None or s.method in (Method.NGRAM, Method.SUFFIX):
        return None
    tp = args.tensor_parallel_size
    target_shape = ModelShape.of(target_info)
    if s.method is Method.MTP:
        if not target_info.has_mtp:
            raise StartupError(f"{args.model!r} has no multi-token-prediction layers for method mtp")
        # The checkpoint's own MTP module: about one more decoder layer, weights and KV cache.
        shape = target_shape.layer()
        return _Draft(
            memory=Proposer(shape, bytes_per_parameter, tp),
            figures=ModelFigures(
                parameters=shape.parameters,
                weight_bytes=shape.parameters * bytes_per_parameter,
                kv_bytes_per_token=shape.kv_elements_per_token(1) * kv_bytes,
                tensor_parallel_size=tp,
            ),
            pairing=Pairing(target_bytes_per_param=bytes_per_parameter),
        )
    assert s.model is not None  # the parser requires a model for the other methods
    info = _require_model(s.model, "speculative model")
    draft_tp = s.draft_tensor_parallel_size or tp
    if draft_tp not in (1, tp):
        raise StartupError(
            f"draft_tensor_parallel_size={draft_tp} cannot be other value than 1 or target model "
            f"tensor_parallel_size={tp}"
        )
    shares_vocabulary = info.tokenizer == target_info.tokenizer
    if s.method in (Method.DRAFT_MODEL, Method.EAGLE, Method.EAGLE3) and not shares_vocabulary:
        raise StartupError(
            f"the draft's vocabulary ({info.tokenizer} tokenizer) is not the target's "
            f"({target_info.tokenizer}): speculative decoding needs one tokenizer"
        )
    quantization = _DRAFT_QUANTIZATION.get(s.quantization or "", Quantization.NONE)
    draft_bpp = weight_bytes_per_parameter(quantization, args.dtype)
    shape = ModelShape.of(info)
    has_kv_cache = s.method is not Method.MEDUSA  # Medusa heads attend to nothing of their own
    head_family = info.head_for or info.family
    return _Draft(
        memory=Proposer(shape, draft_bpp, draft_tp, has_kv_cache),
        figures=ModelFigures(
            parameters=info.parameters,
            weight_bytes=info.parameters * draft_bpp,
            kv_bytes_per_token=shape.kv_elements_per_token(1) * kv_bytes if has_kv_cache else 0.0,
            tensor_parallel_size=draft_tp,
        ),
        pairing=Pairing(
            size_ratio=target_info.parameters / info.parameters if s.method is Method.DRAFT_MODEL else None,
            same_family=head_family == target_info.family,
            same_tokenizer=shares_vocabulary,
            target_bytes_per_param=bytes_per_parameter,
        ),
    )


def derive_config(
    args: VLLMArgs,
    version: Version,
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
    declared_quantization: str | None = None,
) -> ServingConfig:
    """Size the engine the way vLLM would at start-up; raise StartupError where it would die."""
    target_info = _require_model(args.model, "model")
    quantization = (
        _QUANTIZATION_FLAG[args.quantization]
        if args.quantization
        else checkpoint_quantization(args.model, declared_quantization)
    )
    if not 0 < gpu_memory_gib <= MAX_GPU_MEMORY_GIB:
        raise StartupError(f"{gpu_memory_gib:g} GiB is not the memory of one GPU")
    max_len = args.max_model_len or DEFAULT_MAX_MODEL_LEN
    if max_len < 1:
        raise StartupError(f"max_model_len must be positive, got {max_len}")
    s = args.speculative
    v0 = uses_v0_engine(version, s.method if s else None)
    large_gpu = gpu_memory_gib >= 70 and version >= LARGE_GPU_DEFAULTS_SINCE
    default_batched = 8192 if large_gpu else (max(2048, max_len) if v0 else 2048)
    max_num_batched_tokens = args.max_num_batched_tokens or default_batched
    bpp = weight_bytes_per_parameter(quantization, args.dtype)
    kv_bytes = kv_bytes_per_element(args.kv_cache_dtype, args.dtype)
    draft = _draft(args, version, target_info, bpp, kv_bytes)
    memory = plan_memory(
        MemoryInputs(
            gpu_memory_gib=gpu_memory_gib,
            gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size,
            target=ModelShape.of(target_info),
            bytes_per_parameter=bpp,
            kv_bytes_per_element=kv_bytes,
            max_model_len=max_len,
            max_num_batched_tokens=max_num_batched_tokens,
            proposer=draft.memory if draft is not None else None,
            cuda_graphs_counted=version >= CUDA_GRAPHS_COUNTED_SINCE and not args.enforce_eager,
        )
    )
    failure = startup_failure(memory, v1=not v0)
    if failure is not None:
        raise StartupError(failure)
    target = ModelFigures(
        parameters=target_info.parameters,
        weight_bytes=target_info.parameters * bpp,
        kv_bytes_per_token=ModelShape.of(target_info).kv_elements_per_token(1) * kv_bytes,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    proposer = None
    if s is not None:
        proposer = ProposerConfig(
            method=s.method,
            num_speculative_tokens=s.num_speculative_tokens,
            draft=draft.figures if draft is not None else None,
            pairing=draft.pairing if draft is not None else Pairing(target_bytes_per_param=bpp),
            k_by_batch_size=s.k_by_batch_size,
            disable_by_batch_size=s.disable_by_batch_size,
        )
    engine = EngineConfig(
        target=target,
        proposer=proposer,
        kv_capacity_tokens=memory.kv_tokens,
        max_num_seqs=args.max_num_seqs or (1024 if large_gpu else 256),
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_len,
        constants=constants_for(v0),
    )
    notes = []
    if args.ignored_config_keys:
        ignored = ", ".join(args.ignored_config_keys)
        notes.append(f"--speculative-config keys ignored by this release: {ignored}")
    return ServingConfig(
        version=version, args=args, engine=engine, memory=memory, v0_engine=v0, warnings=tuple(notes)
    )


def default_version() -> str:
    """The spec's default vLLM version (what a SpeculativeInference gets when it names none)."""
    default = VLLMSpec.model_fields["version"].default
    assert isinstance(default, str)
    return default


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ServingConfig:
    """Parse ``argv`` and the SPECOPS_EMULATOR_* environment into a serving configuration."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_VERSION) or default_version()
    try:
        version = parse_version(text)
    except ValueError as exc:
        raise StartupError(f"{ENV_VERSION}: {exc}") from None
    if version < MIN_SUPPORTED:
        raise StartupError(f"the emulator models vLLM {format_version(MIN_SUPPORTED)} and later, not {text}")
    try:
        gpu_memory = float(env.get(ENV_GPU_MEMORY_GIB) or DEFAULT_GPU_MEMORY_GIB)
    except ValueError:
        raise StartupError(f"{ENV_GPU_MEMORY_GIB} must be a number of GiB") from None
    args = parse_args(argv, version)
    return derive_config(args, version, gpu_memory, env.get(ENV_CHECKPOINT_QUANTIZATION))

"""Ask a real vLLM release what it makes of SpecOps' output (runs inside that release's environment).

Stdlib and vLLM only: SpecOps is not installed beside vLLM, so a release's pinned packages never
fight SpecOps' own.  ``python probe.py check --out FILE`` reads a plan (JSON, from ``tests.vllm_compat.plan``)
on stdin and writes what vLLM said to FILE (vLLM logs to stdout); ``python probe.py imports`` only proves that every
import the checks need works (``bootstrap.py`` loops on it).

Each rendered command is run through the release's own entry point (the ``vllm`` console script or
``python -m <module>``) with ``sys.argv`` set, up to the moment the server would start: the
coroutine handed to ``uvloop.run``/``asyncio.run`` is caught, closed, and its ``args`` kept.  So
what is checked is the release's parser, its own post-parse steps (``model_tag`` -> ``model``,
``validate_parsed_serve_args`` where the entry point calls it), then ``AsyncEngineArgs.from_cli_args``
and, with local model directories and the hub switched off, ``create_engine_config`` (where
``ModelConfig`` and ``SpeculativeConfig`` validate the models, tensor parallel sizes and lengths).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import importlib.metadata as md
import importlib.util
import io
import json
import os
import runpy
import sys
import traceback
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network: local model directories only


class Started(Exception):  # noqa: N818 (a signal, not an error)
    """The entry point got as far as starting the server: ``namespace`` is what it would serve with."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("server start intercepted")
        self.namespace = args


def _intercept(coro: Any, *_: Any, **__: Any) -> Any:
    frame = getattr(coro, "cr_frame", None)
    args = frame.f_locals.get("args") if frame is not None else None
    if hasattr(coro, "close"):
        coro.close()
    if not isinstance(args, argparse.Namespace):
        raise RuntimeError(f"the server was started with {coro!r}, not run_server(args)")
    raise Started(args)


@contextlib.contextmanager
def _patched_start() -> Iterator[None]:
    patched: list[tuple[Any, str, Any]] = []
    targets: list[Any] = [asyncio]
    with contextlib.suppress(ImportError):
        targets.append(importlib.import_module("uvloop"))
    for module in targets:
        patched.append((module, "run", module.run))
        module.run = _intercept
    try:
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


def _entry_point(script: str) -> Any:
    for ep in md.entry_points(group="console_scripts"):
        if ep.name == script and ep.value.startswith("vllm"):
            return ep.load()
    raise LookupError(f"this vLLM has no {script!r} console script")


def run_command(command: list[str]) -> argparse.Namespace:
    """Run ``command`` (``vllm serve ...`` or ``python3 -m module ...``) up to the server start.

    Returns the namespace the server would use; raises ``CommandFailedError`` with vLLM's message.
    """
    if command[:1] == ["vllm"]:
        argv, start = ["vllm", *command[1:]], _entry_point("vllm")
    elif len(command) > 2 and command[1] == "-m":
        module = command[2]
        argv = [module, *command[3:]]

        def start() -> None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)

    else:
        raise ValueError(f"not a vLLM server command: {command[:3]}")
    saved = sys.argv
    err = io.StringIO()
    sys.argv = argv
    try:
        with _patched_start(), contextlib.redirect_stderr(err):
            start()
    except Started as started:
        return started.namespace
    except SystemExit as exc:
        message = err.getvalue().strip().splitlines()
        raise CommandFailedError(f"exit {exc.code}: {message[-1] if message else ''}") from None
    except Exception as exc:
        raise CommandFailedError(f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.argv = saved
    raise CommandFailedError("the entry point returned without starting a server")


class CommandFailedError(Exception):
    pass


# ------------------------------------------------------------------------------ vLLM's classes


def _vllm_module(*candidates: str) -> Any:
    """The first of ``candidates`` this release has (a missing dependency is raised, not skipped)."""
    for where in candidates:
        try:
            return importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                continue
            raise
    raise ImportError(f"this vLLM has none of {candidates}")


def use_cpu_platform() -> None:
    """Run on vLLM's CPU platform, as a CPU build of the release would.

    0.7-0.13 find the CPU platform only when the installed wheel is a CPU build ("cpu" in its
    version), so the regular wheel sees no platform at all; set it before anything resolves it.
    (0.32 honours VLLM_TARGET_DEVICE=cpu; 0.6 resolves the platform on import and gets
    ``device="cpu"`` for the deep stage instead.)
    """
    platforms = _vllm_module("vllm.platforms")
    if getattr(platforms, "_current_platform", "eager") is not None:
        return  # already resolved, or resolved on import (0.6)
    if platforms.resolve_current_platform_cls_qualname().endswith("UnspecifiedPlatform"):
        platforms._current_platform = importlib.import_module("vllm.platforms.cpu").CpuPlatform()


CLI_ARGS = ("vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args")


def make_serve_parser() -> Any:
    """vLLM's own serve argument parser (make_arg_parser moved to launchers.cli_args in 0.32)."""
    make_arg_parser = _vllm_module(*CLI_ARGS).make_arg_parser
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef,attr-defined]
    return make_arg_parser(FlexibleArgumentParser())


def validate_parsed(ns: argparse.Namespace) -> None:
    validate = getattr(_vllm_module(*CLI_ARGS), "validate_parsed_serve_args", None)
    if validate is not None:  # older releases have no such step
        validate(ns)


def speculative_config_class() -> Any:
    return _vllm_module("vllm.config.speculative", "vllm.config").SpeculativeConfig


def speculative_config_fields() -> list[str] | None:
    """The keys --speculative-config takes (its dataclass fields); None before it was a dataclass."""
    cls = speculative_config_class()
    if dataclasses.is_dataclass(cls):
        return sorted(f.name for f in dataclasses.fields(cls) if f.init)
    return None


def _literal_strings(tp: Any) -> set[str]:
    if typing.get_origin(tp) is typing.Literal:
        return {a for a in typing.get_args(tp) if isinstance(a, str)}
    out: set[str] = set()
    for arg in typing.get_args(tp):
        out |= _literal_strings(arg)
    return out


def method_names() -> list[str] | None:
    """The method strings SpeculativeConfig's ``method`` field declares (None: not a Literal)."""
    cls = speculative_config_class()
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = getattr(cls, "__annotations__", {})
    if "method" not in hints:
        return None
    names = _literal_strings(hints["method"])
    return sorted(names) or None


# ------------------------------------------------------------------------------ model directories


def write_model_dirs(hf_home: Path, models: dict[str, dict[str, Any]]) -> None:
    """A hub cache holding config.json and tokenizer files (no weights) for each model id."""
    hub = hf_home / "hub"
    for repo_id, config in models.items():
        repo = hub / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
        (snapshot / "config.json").write_text(json.dumps(config, indent=1))
        _write_tokenizer(snapshot, int(config.get("vocab_size", 1000)))


def _write_tokenizer(directory: Path, vocab_size: int) -> None:
    """A word-level tokenizer with the model's vocabulary size (enough for vLLM to load one)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(["<unk>", "<s>", "</s>"])
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }  # fmt: skip
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "model_max_length": 1 << 20,
            }
        )
    )
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))


# ------------------------------------------------------------------------------ checks


QUANTIZATIONS = ("fp8", "awq", "gptq", "compressed-tensors", "bitsandbytes")
# Imports only a GPU machine satisfies: where model code needs them, the deep stage stops there.
GPU_MODULES = ("triton", "vllm._C", "flash_attn", "xformers")
# Modules of the architectures the covering resources use (Llama, Qwen2, DeepSeek-V3, heads).
MODEL_MODULES = ("llama", "qwen2", "deepseek_v2", "eagle", "llama_eagle", "llama_eagle3", "medusa")


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:400]


def check_case(case: dict[str, Any], deep: bool) -> dict[str, Any]:
    """The stages one rendered command gets through; the first failure ends the list."""
    out: dict[str, Any] = {"id": case["id"], "stages": {}}
    stages = out["stages"]
    try:
        ns = run_command(case["command"])
    except CommandFailedError as exc:
        stages["command"] = {"ok": False, "detail": str(exc)}
        return out
    if ns.model != case["model"]:
        detail = f"serves {ns.model!r}, not {case['model']!r}"
        stages["command"] = {"ok": False, "detail": detail}
        return out
    stages["command"] = {"ok": True, "detail": f"serves {ns.model}"}
    try:
        validate_parsed(ns)
        from vllm.engine.arg_utils import AsyncEngineArgs

        engine_args = AsyncEngineArgs.from_cli_args(ns)
    except Exception as exc:
        stages["engine_args"] = {"ok": False, "detail": _short(exc)}
        return out
    stages["engine_args"] = {"ok": True, "detail": ""}
    spec = getattr(engine_args, "speculative_config", None)
    if isinstance(spec, dict):
        fields = speculative_config_fields()
        if fields is not None:
            unknown = sorted(set(spec) - set(fields))
            stages["config_keys"] = {
                "ok": not unknown,
                "detail": f"unknown keys {unknown}" if unknown else "",
            }
    if deep:
        if getattr(engine_args, "device", None) == "auto":
            # Releases before 0.7 find the CPU platform only in their CPU builds: say it outright.
            engine_args.device = "cpu"
        try:
            config = engine_args.create_engine_config()
        except BaseException as exc:  # vLLM raises SystemExit on some refusals
            stages["engine_config"] = {
                "ok": False,
                "detail": _short(exc),
                "where": _where(exc),
                # A config class saying no, as opposed to this machine lacking something.
                "refusal": _is_refusal(exc),
            }
            return out
        spec_cfg = getattr(config, "speculative_config", None)
        detail = f"speculative_config: {spec_cfg!r}"[:300] if spec_cfg is not None else "no speculation"
        stages["engine_config"] = {"ok": True, "detail": detail}
        proposer = check_proposer(config)
        if proposer is not None:
            stages["proposer"] = proposer
    return out


def _is_refusal(exc: BaseException) -> bool:
    """A config class or engine-args step saying no (not a missing package or device)."""
    where = _where(exc)
    return isinstance(exc, (ValueError, NotImplementedError)) and ("config" in where or "arg_utils" in where)


def check_proposer(config: Any) -> dict[str, Any] | None:
    """The draft-model proposer's own checks, which run when the engine starts, not in the configs.

    With no GPU the proposer cannot be built, so its ``_raise_if_*`` checks are called on a
    stand-in holding the real configs.  A release with neither a V1 draft-model proposer nor V0's
    spec_decode package cannot run a draft model at all.
    """
    spec = getattr(config, "speculative_config", None)
    if spec is None or getattr(spec, "method", None) != "draft_model":
        return None
    try:
        module = importlib.import_module("vllm.v1.spec_decode.draft_model")
    except ModuleNotFoundError:
        if importlib.util.find_spec("vllm.spec_decode") is not None:
            return {"ok": True, "detail": "V0 spec_decode runs draft models"}
        return {
            "ok": False,
            "detail": "no draft-model proposer: neither vllm.v1.spec_decode.draft_model nor V0 vllm.spec_decode",
            "refusal": True,
        }
    cls = module.DraftModelProposer
    stand_in = types.SimpleNamespace(speculative_config=spec, vllm_config=config)
    names = sorted(n for n in vars(cls) if n.startswith("_raise_if"))
    for name in names:
        try:
            getattr(cls, name)(stand_in)
        except (ValueError, NotImplementedError) as exc:
            return {"ok": False, "detail": f"{name}: {_short(exc)}", "where": _where(exc), "refusal": True}
        except Exception as exc:  # needs more than the stand-in has: not a verdict
            return {"ok": True, "detail": f"{name} could not run here ({_short(exc)[:120]})"}
    return {"ok": True, "detail": f"DraftModelProposer {', '.join(names)} passed"}


def _where(exc: BaseException) -> str:
    """The vLLM function that raised (file:line), to tell a real refusal from a CPU limitation."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "site-packages/vllm/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename.split('site-packages/')[-1]}:{f.lineno} in {f.name}"


def check(plan: dict[str, Any]) -> dict[str, Any]:
    """Everything a plan asks; see tests.vllm_compat.plan for its shape."""
    # The hub stays switched off (huggingface_hub reads this when first imported: set it first).
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    deep = bool(plan.get("deep"))
    if plan.get("hf_home"):
        hf_home = Path(plan["hf_home"])
        write_model_dirs(hf_home, plan["models"])
        os.environ["HF_HOME"] = str(hf_home)
    use_cpu_platform()
    version = md.version("vllm")
    result: dict[str, Any] = {"vllm": version, "torch": md.version("torch")}
    parser = make_serve_parser()
    options = set(parser._option_string_actions)
    result["flags"] = {flag: flag in options for flag in plan["flags"]}
    fields = speculative_config_fields()
    result["config_fields"] = fields
    names = method_names()
    result["method_names"] = names
    result["entrypoints"] = [check_case(case, deep=False) for case in plan.get("entrypoints", [])]
    result["cases"] = [check_case(case, deep) for case in plan["cases"]]
    return result


def imports() -> None:
    """Import what ``check`` needs, and run one command to the server start."""
    use_cpu_platform()
    make_serve_parser()
    speculative_config_class()
    from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: F401

    # The deep stage reads checkpoints' quantization configs and inspects the model classes:
    # their modules must import too (anything but a missing package is the deep stage's to report).
    quantization = _vllm_module("vllm.model_executor.layers.quantization")
    for name in QUANTIZATIONS:
        try:
            quantization.get_quantization_config(name)
        except ImportError as exc:
            if getattr(exc, "name", None) not in GPU_MODULES:
                raise
        except Exception:
            continue  # not in this release: the checks will say so
    for module in MODEL_MODULES:
        try:
            _vllm_module(f"vllm.model_executor.models.{module}")
        except ImportError as exc:
            gpu_only = getattr(exc, "name", None) in GPU_MODULES
            if "none of" not in str(exc) and not gpu_only:  # absent in this release, or GPU-only: fine
                raise
        except Exception:
            continue

    for command in (
        ["vllm", "serve", "m", "--port", "8000"],
        ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"],
    ):
        try:
            run_command(command)
        except CommandFailedError as exc:
            if not str(exc).startswith("exit "):  # an argparse refusal is an answer, anything else is not
                raise ImportError(str(exc)) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("what", choices=["imports", "check"])
    parser.add_argument("--out", type=Path, help="where check writes its answer (vLLM logs to stdout)")
    ns = parser.parse_args()
    if ns.what == "imports":
        imports()
        return 0
    if ns.out is None:
        parser.error("check needs --out")
    plan = json.load(sys.stdin)
    result = check(plan)
    ns.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

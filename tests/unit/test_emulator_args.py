"""The emulator reads vLLM's command line as the declared release would, and sizes the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specops.api.v1alpha1 import Method, Quantization
from specops.render.manifests import Pool, vllm_args, vllm_command
from specops.vllm.dialect import Dialect, parse_version
from specops_testkit.emulator.args import (
    ENV_CHECKPOINT_QUANTIZATION,
    ENV_GPU_MEMORY_GIB,
    ENV_VERSION,
    ArgsError,
    StartupError,
    checkpoint_quantization,
    default_version,
    derive_config,
    load,
    parse_args,
    uses_v0_engine,
)
from tests.support.paths import EXAMPLES
from tests.support.resources import load_example

V = parse_version
BASE = ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000", "--max-model-len", "8192"]


def _spec_config(**cfg: object) -> list[str]:
    return [*BASE, "--speculative-config", json.dumps(cfg)]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("pool", list(Pool))
def test_rendered_args_of_every_example_parse(path: Path, pool: Pool) -> None:
    si = load_example(path.name)
    version = V(si.spec.vllm.version)
    args = parse_args(vllm_command(si.spec, pool), version)
    assert args == parse_args(vllm_args(si.spec, pool), version)  # with or without the entry point
    assert args.model == si.spec.target.model
    assert args.served_model_name == (si.spec.vllm.served_model_name or si.spec.target.model)
    assert args.tensor_parallel_size == si.spec.target.tensor_parallel_size
    if pool is Pool.BASELINE:
        assert args.speculative is None
    else:
        assert args.speculative is not None
        assert args.speculative.method is si.spec.speculation.method
        assert args.speculative.num_speculative_tokens == si.spec.speculation.num_speculative_tokens


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("invalid")),
    ids=lambda p: p.name,
)
@pytest.mark.parametrize("pool", list(Pool))
def test_valid_examples_start_with_their_memory_figures(path: Path, pool: Pool) -> None:
    si = load_example(path.name)
    spec = si.spec
    version = V(spec.vllm.version)
    memory = 48.0 if spec.resources.gpu_type == "L40S-48GB" else 80.0
    config = derive_config(
        parse_args(vllm_args(spec, pool), version), version, memory, spec.target.quantization.value
    )
    plan = config.memory
    assert plan.max_concurrent_sequences >= 1
    assert config.engine.kv_capacity_tokens == plan.kv_tokens
    assert (
        plan.kv_tokens % 16 == 0
        and plan.kv_tokens >= plan.max_concurrent_sequences * plan.inputs.max_model_len
    )
    assert config.engine.speculative == (pool is Pool.SPECULATIVE)
    assert config.v0_engine == (version < V("0.8.0"))
    assert config.served_model_name in config.describe()


API_SERVER = ["python3", "-m", "vllm.entrypoints.openai.api_server"]


@pytest.mark.parametrize(
    ("argv", "model"),
    [
        (["vllm", "serve", "M", "--port", "8000"], "M"),
        (["vllm", "serve", "--model", "M"], "M"),  # deprecated in `vllm serve`, still accepted
        (["vllm", "serve", "M", "--model", "other"], "M"),  # the positional model wins
        ([*API_SERVER, "--model", "M"], "M"),
        (["--model", "M"], "M"),  # container args alone: the image's own entry point runs
        (["M", "--port", "8000"], "M"),
    ],
)
def test_entrypoint_and_model_forms(argv: list[str], model: str) -> None:
    assert parse_args(argv, V("0.32.0")).model == model


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*API_SERVER, "M"], "takes --model, not a positional model"),
        (["vllm", "serve", "--port", "8000"], "the model is missing"),
        ([], "the model is missing"),
    ],
)
def test_entrypoint_refusals(argv: list[str], message: str) -> None:
    with pytest.raises(ArgsError, match=message):
        parse_args(argv, V("0.32.0"))


def test_legacy_dialect_is_read_from_legacy_flags() -> None:
    si = load_example("legacy-vllm-0.6.yaml")
    args = parse_args(vllm_args(si.spec, Pool.SPECULATIVE), V("0.6.6"))
    assert args.speculative is not None
    assert args.speculative.dialect is Dialect.LEGACY
    assert args.speculative.model == "Qwen/Qwen2.5-7B-Instruct"
    assert args.speculative.draft_tensor_parallel_size == 1


@pytest.mark.parametrize(
    ("version", "argv", "message"),
    [
        (
            "0.9.0",
            [*BASE, "--speculative-model", "[ngram]", "--num-speculative-tokens", "3"],
            "--speculative-model",
        ),
        ("0.7.3", _spec_config(method="ngram", num_speculative_tokens=3), "--speculative-config"),
        ("0.10.0", [*BASE, "--use-v2-block-manager"], "--use-v2-block-manager"),
        ("0.32.0", [*BASE, "--frobnicate"], "unrecognized arguments: --frobnicate"),
        ("0.32.0", [*BASE, "--dtype", "int3"], "--dtype"),
        ("0.16.0", _spec_config(method="ngram", num_speculative_tokens=3, foo=1), "unknown key"),
        (
            "0.17.0",
            _spec_config(method="ngram", num_speculative_tokens=3, disable_by_batch_size=4),
            "unknown key",
        ),
        (
            "0.23.0",
            _spec_config(
                method="ngram", num_speculative_tokens=3, num_speculative_tokens_per_batch_size=[[1, 4, 3]]
            ),
            "unknown key",
        ),
        ("0.32.0", _spec_config(method="warp_drive", num_speculative_tokens=3), "unknown method"),
        (
            "0.12.0",
            _spec_config(model="meta-llama/Llama-3.2-1B-Instruct", num_speculative_tokens=3),
            "draft_model",
        ),
        (
            "0.8.4",
            _spec_config(
                method="eagle3", model="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B", num_speculative_tokens=3
            ),
            "eagle3",
        ),
        ("0.10.0", _spec_config(method="mtp", num_speculative_tokens=1), "deepseek_mtp"),
        ("0.11.0", _spec_config(method="suffix", num_speculative_tokens=3), "suffix"),
        ("0.33.0", _spec_config(method="medusa", model="x/medusa-head", num_speculative_tokens=3), "medusa"),
        ("0.32.0", _spec_config(method="ngram"), "num_speculative_tokens is required"),
        ("0.32.0", [*BASE, "--speculative-config", "{not json"], "not valid JSON"),
        ("0.32.0", [*BASE, "--speculative-config", "[1, 2]"], "JSON object"),
        ("0.32.0", _spec_config(method="eagle", num_speculative_tokens=3), 'needs "model"'),
        # 0.15+ no longer reads a "model" without "method" as a draft model (checked on 0.15.1).
        (
            "0.32.0",
            _spec_config(model="meta-llama/Llama-3.2-1B-Instruct", num_speculative_tokens=3),
            "'None'",
        ),
        (
            "0.15.0",
            [
                *BASE,
                "--tensor-parallel-size",
                "2",
                "--speculative-config",
                json.dumps(
                    {
                        "method": "draft_model",
                        "model": "meta-llama/Llama-3.2-1B-Instruct",
                        "num_speculative_tokens": 3,
                        "draft_tensor_parallel_size": 1,
                    }
                ),
            ],
            "tensor parallel size",
        ),
        (
            "0.6.0",
            [*BASE, "--speculative-model", "[ngram]", "--num-speculative-tokens", "3"],
            "V2 block manager",
        ),
        ("0.6.6", [*BASE, "--speculative-model", "[ngram]"], "--num-speculative-tokens"),
        ("0.28.0", [*BASE, "--quantization", "bitsandbytes"], "bitsandbytes"),
        ("0.7.3", [*BASE, "--quantization", "bitsandbytes"], "--load-format bitsandbytes"),
    ],
)
def test_rejects_what_the_release_rejects(version: str, argv: list[str], message: str) -> None:
    with pytest.raises(ArgsError, match=message.replace("-", r"\-")) as info:
        parse_args(argv, V(version))
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("version", "argv", "method"),
    [
        ("0.15.0", _spec_config(method="ngram", num_speculative_tokens=3, foo=1), Method.NGRAM),
        (
            "0.9.0",
            _spec_config(method="ngram", num_speculative_tokens=3, disable_by_batch_size=4),
            Method.NGRAM,
        ),
        (
            "0.24.0",
            _spec_config(
                method="ngram", num_speculative_tokens=3, num_speculative_tokens_per_batch_size=[[1, 4, 3]]
            ),
            Method.NGRAM,
        ),
        ("0.10.0", _spec_config(method="deepseek_mtp", num_speculative_tokens=1), Method.MTP),
        ("0.11.1", _spec_config(method="suffix", num_speculative_tokens=3), Method.SUFFIX),
        (
            "0.8.5",
            _spec_config(model="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B", num_speculative_tokens=3),
            Method.EAGLE3,
        ),
        (
            "0.9.0",
            _spec_config(model="meta-llama/Llama-3.2-1B-Instruct", num_speculative_tokens=3),
            Method.DRAFT_MODEL,
        ),
        ("0.8.2", _spec_config(model="[ngram]", num_speculative_tokens=3), Method.NGRAM),
        (
            "0.6.0",
            [
                *BASE,
                "--use-v2-block-manager",
                "--speculative-model",
                "[ngram]",
                "--num-speculative-tokens",
                "3",
            ],
            Method.NGRAM,
        ),
        (
            "0.6.6",
            [*BASE, "--speculative_model", "yuhuili/EAGLE-LLaMA3-Instruct-70B", "--num_speculative_tokens=3"],
            Method.EAGLE,
        ),
    ],
)
def test_accepts_what_the_release_accepts(version: str, argv: list[str], method: Method) -> None:
    args = parse_args(argv, V(version))
    assert args.speculative is not None
    assert args.speculative.method is method


def test_older_releases_drop_unknown_keys_and_say_so() -> None:
    args = parse_args(_spec_config(method="ngram", num_speculative_tokens=3, foo=1), V("0.15.0"))
    assert args.ignored_config_keys == ("foo",)
    config = derive_config(args, V("0.15.0"))
    assert any("foo" in w for w in config.warnings)


@pytest.mark.parametrize(
    "table",
    [[], [[2, 8, 3]], [[1, 8, 3], [8, 16, 1]], [[1, 0, 3]], [[1, 8, -1]]],
    ids=["empty", "not-from-1", "overlap", "end-before-start", "negative-k"],
)
def test_speculation_table_refused_as_vllm_refuses_it(table: list[list[int]]) -> None:
    argv = _spec_config(method="ngram", num_speculative_tokens=3, num_speculative_tokens_per_batch_size=table)
    with pytest.raises(ArgsError, match="num_speculative_tokens_per_batch_size"):
        parse_args(argv, V("0.32.0"))


def test_a_table_keeps_the_draft_and_its_memory() -> None:
    # k = 0 at every batch size still loads the draft: the KV cache is the speculative pod's.
    draft = {
        "method": "draft_model",
        "model": "meta-llama/Llama-3.2-1B-Instruct",
        "num_speculative_tokens": 4,
    }
    with_table = derive_config(
        parse_args(_spec_config(**draft, num_speculative_tokens_per_batch_size=[[1, 4096, 0]]), V("0.32.0")),
        V("0.32.0"),
    ).engine
    speculative = derive_config(parse_args(_spec_config(**draft), V("0.32.0")), V("0.32.0")).engine
    plain = derive_config(parse_args(BASE, V("0.32.0")), V("0.32.0")).engine
    assert with_table.kv_capacity_tokens == speculative.kv_capacity_tokens < plain.kv_capacity_tokens
    assert with_table.proposer is not None and with_table.proposer.k_for_batch(1) == 0


def test_common_extra_args_are_accepted() -> None:
    argv = [
        *BASE,
        "--enable-prefix-caching",
        "--max-num-seqs",
        "32",
        "--host",
        "0.0.0.0",
        "--max_num_batched_tokens=4096",
    ]
    config = derive_config(parse_args(argv, V("0.32.0")), V("0.32.0"))
    assert config.args.enable_prefix_caching is True
    assert config.engine.max_num_seqs == 32
    assert config.engine.max_num_batched_tokens == 4096


@pytest.mark.parametrize(
    ("version", "method", "v0"),
    [
        ("0.7.3", None, True),
        ("0.8.0", None, False),
        ("0.8.2", Method.NGRAM, True),
        ("0.8.3", Method.NGRAM, False),
        ("0.8.5", Method.MEDUSA, True),
        ("0.9.0", Method.MEDUSA, False),
        ("0.9.2", Method.DRAFT_MODEL, True),
        ("0.15.0", Method.DRAFT_MODEL, False),
    ],
)
def test_engine_generation_follows_the_v1_fallback_rules(
    version: str, method: Method | None, v0: bool
) -> None:
    assert uses_v0_engine(V(version), method) is v0


@pytest.mark.parametrize(
    ("model", "declared", "expected"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", None, Quantization.NONE),
        ("meta-llama/Llama-3.1-70B-Instruct", "int8", Quantization.INT8),
        ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", None, Quantization.AWQ),
        ("neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8", None, Quantization.FP8),
        ("RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8", None, Quantization.INT8),
    ],
)
def test_checkpoint_quantization_comes_from_the_env_or_the_name(
    model: str, declared: str | None, expected: Quantization
) -> None:
    assert checkpoint_quantization(model, declared) is expected


def test_int8_checkpoint_must_be_declared_when_its_name_does_not_say_it() -> None:
    # vLLM reads int8 (W8A8) from the checkpoint, so the rendered command line omits it: without
    # the name or SPECOPS_EMULATOR_QUANTIZATION saying so, a 70B on 2 GPUs is sized as BF16 and
    # fails as vLLM would.
    draft = {
        "method": "draft_model",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "num_speculative_tokens": 5,
    }
    argv = [
        "--model", "meta-llama/Llama-3.1-70B-Instruct", "--tensor-parallel-size", "2",
        "--max-model-len", "8192", "--speculative-config", json.dumps(draft),
    ]  # fmt: skip
    with pytest.raises(StartupError, match="No available memory for the cache blocks"):
        load(argv, {ENV_VERSION: "0.32.0"})
    config = load(argv, {ENV_VERSION: "0.32.0", ENV_CHECKPOINT_QUANTIZATION: "int8"})
    # Per GPU: half of 70.6e9 one-byte parameters.
    assert config.memory.target_weights_gib == pytest.approx(65.75 / 2, abs=0.05)
    named = [*argv]
    named[1] = "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"
    assert load(named, {ENV_VERSION: "0.32.0"}).memory.target_weights_gib == pytest.approx(
        65.75 / 2, abs=0.05
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "acme/secret-model-13b"], "not in the emulator's model catalog"),
        (["--model", "meta-llama/Llama-3.1-70B-Instruct"], "CUDA out of memory loading the weights"),
        (
            ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "1048576"],
            r"max seq len \(1048576\).*larger than the available KV cache",
        ),
        (
            [
                "--model",
                "meta-llama/Llama-3.1-8B-Instruct",
                "--speculative-config",
                '{"method": "draft_model", "model": "Qwen/Qwen2.5-0.5B-Instruct", "num_speculative_tokens": 3}',
            ],
            "tokenizer",
        ),
    ],
)
def test_startup_failures(argv: list[str], message: str) -> None:
    with pytest.raises(StartupError, match=message) as info:
        load(argv, {})
    assert info.value.exit_code == 1


def test_environment_selects_version_and_gpu_memory() -> None:
    assert load(BASE, {}).version == V(default_version())
    small = load(BASE, {ENV_VERSION: "0.8.5", ENV_GPU_MEMORY_GIB: "40"})
    large = load(BASE, {ENV_VERSION: "0.8.5", ENV_GPU_MEMORY_GIB: "80"})
    assert small.version == V("0.8.5")
    assert small.engine.kv_capacity_tokens < large.engine.kv_capacity_tokens
    assert small.engine.max_num_seqs == 256
    assert load(BASE, {ENV_VERSION: "0.32.0"}).engine.max_num_seqs == 1024


def _run_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "specops_testkit.emulator", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exit_codes_match_vllm() -> None:
    rejected = _run_cli(
        [*BASE, "--speculative-model", "[ngram]", "--num-speculative-tokens", "3"], {ENV_VERSION: "0.9.0"}
    )
    assert rejected.returncode == 2
    assert "unrecognized arguments: --speculative-model" in rejected.stderr
    failed = _run_cli(["--model", "acme/unknown-7b"], {ENV_VERSION: "0.32.0"})
    assert failed.returncode == 1
    assert "catalog" in failed.stderr

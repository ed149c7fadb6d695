from __future__ import annotations

import json
from typing import Any

import pytest

from specops.api.v1alpha1 import SpeculativeInference
from specops.render.manifests import (
    LABEL_POOL,
    OwnerRef,
    Pool,
    PoolSplit,
    initial_split,
    render_all,
    render_pool_deployment,
    render_service,
    selector_string,
    speculative_config,
    vllm_args,
    vllm_command,
    vllm_entrypoint,
)
from specops.vllm import dialect
from specops.vllm.dialect import CONFIG_KEY_GATES, LEGACY_FLAG_GATES, parse_version
from tests.support.resources import load_example, make_si


def arg_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {},
            {
                "method": "draft_model",  # 0.15+ refuses a draft "model" without it
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "num_speculative_tokens": 5,
                "draft_tensor_parallel_size": 2,
            },
        ),
        (
            {"vllm": {"version": "0.9.2"}},  # before 0.15 vLLM infers the draft from "model"
            {
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "num_speculative_tokens": 5,
                "draft_tensor_parallel_size": 2,
            },
        ),
        (
            {
                "speculation": {
                    "method": "ngram",
                    "draft": None,
                    "numSpeculativeTokens": 4,
                    "ngram": {"promptLookupMin": 3, "promptLookupMax": 6},
                }
            },
            {
                "method": "ngram",
                "num_speculative_tokens": 4,
                "prompt_lookup_min": 3,
                "prompt_lookup_max": 6,
            },
        ),
        (
            {
                "speculation": {
                    "method": "eagle3",
                    "numSpeculativeTokens": 3,
                    "draft": {"model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"},
                }
            },
            {
                "method": "eagle3",
                "model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
                "num_speculative_tokens": 3,
                "draft_tensor_parallel_size": 2,
            },
        ),
        (
            {"speculation": {"draft": {"quantization": "fp8", "revision": "main", "tensorParallelSize": 1}}},
            {
                "method": "draft_model",
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "num_speculative_tokens": 5,
                "draft_tensor_parallel_size": 1,
                "quantization": "fp8",
                "revision": "main",
            },
        ),
    ],
)
def test_current_dialect_speculative_config(patch: dict[str, Any], expected: dict[str, Any]) -> None:
    si = make_si(**patch)
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    assert json.loads(arg_value(args, "--speculative-config") or "") == expected
    assert not set(args) & set(LEGACY_FLAG_GATES)


def test_mtp_method_name_follows_version() -> None:
    patch: dict[str, Any] = {
        "target": {
            "model": "deepseek-ai/DeepSeek-V3",
            "tensorParallelSize": 8,
            "quantization": "fp8",
        },
        "speculation": {"method": "mtp", "draft": None, "numSpeculativeTokens": 1},
        "resources": {"gpusPerReplica": 8, "gpuType": "H200-141GB"},
    }
    new = make_si(**patch, vllm={"version": "0.11.0"})
    old = make_si(**patch, vllm={"version": "0.9.0"})
    assert speculative_config(new.spec, parse_version("0.11.0"))["method"] == "mtp"
    assert speculative_config(new.spec, parse_version("0.10.2"))["method"] == "deepseek_mtp"
    assert speculative_config(old.spec, parse_version("0.9.0"))["method"] == "deepseek_mtp"


def test_legacy_dialect_flags() -> None:
    si = load_example("legacy-vllm-0.6.yaml")
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    assert "--speculative-config" not in args
    assert arg_value(args, "--speculative-model") == "Qwen/Qwen2.5-7B-Instruct"
    assert arg_value(args, "--num-speculative-tokens") == "4"
    assert arg_value(args, "--speculative-draft-tensor-parallel-size") == "1"
    assert arg_value(args, "--quantization") == "fp8"


def test_old_legacy_needs_v2_block_manager() -> None:
    si = make_si(vllm={"version": "0.6.2"}, speculation={"method": "ngram", "draft": None})
    assert "--use-v2-block-manager" in vllm_args(si.spec, Pool.SPECULATIVE)
    assert "--use-v2-block-manager" not in vllm_args(si.spec, Pool.BASELINE)
    newer = make_si(vllm={"version": "0.6.3"}, speculation={"method": "ngram", "draft": None})
    assert "--use-v2-block-manager" not in vllm_args(newer.spec, Pool.SPECULATIVE)


def test_legacy_ngram() -> None:
    si = make_si(vllm={"version": "0.7.3"}, speculation={"method": "ngram", "draft": None})
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    assert arg_value(args, "--speculative-model") == "[ngram]"
    assert arg_value(args, "--ngram-prompt-lookup-max") == "5"


def test_keys_gated_by_version_are_dropped() -> None:
    rows = [
        {"minBatchSize": 1, "maxBatchSize": 16, "numSpeculativeTokens": 5},
        {"minBatchSize": 17, "maxBatchSize": 1024, "numSpeculativeTokens": 0},
    ]
    si = make_si(speculation={"tokensPerBatchSize": rows})
    new = speculative_config(si.spec, parse_version("0.24.0"))
    assert new["num_speculative_tokens_per_batch_size"] == [[1, 16, 5], [17, 1024, 0]]
    old = speculative_config(si.spec, parse_version("0.23.0"))
    assert "num_speculative_tokens_per_batch_size" not in old
    for version in ("0.8.3", "0.9.2", "0.10.1", "0.11.0", "0.16.0", "0.24.0", "0.33.0"):
        cfg = speculative_config(si.spec, parse_version(version))
        assert all(CONFIG_KEY_GATES[k].allows(parse_version(version)) for k in cfg)


def test_baseline_pool_differs_only_by_speculation() -> None:
    si = make_si(vllm={"extraArgs": ["--enable-prefix-caching"]})
    spec_args = vllm_args(si.spec, Pool.SPECULATIVE)
    base_args = vllm_args(si.spec, Pool.BASELINE)
    i = spec_args.index("--speculative-config")
    assert spec_args[:i] + spec_args[i + 2 :] == base_args
    assert base_args[-1] == "--enable-prefix-caching"


def test_common_args() -> None:
    si = make_si(
        target={"dtype": "float16", "kvCacheDtype": "fp8", "revision": "abc123"},
        vllm={"servedModelName": "llama-70b", "port": 9000},
    )
    args = vllm_args(si.spec, Pool.BASELINE)
    assert args[0] == "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"  # `vllm serve MODEL`
    assert "--model" not in args
    assert arg_value(args, "--served-model-name") == "llama-70b"
    assert arg_value(args, "--revision") == "abc123"
    assert arg_value(args, "--tensor-parallel-size") == "2"
    assert arg_value(args, "--max-model-len") == "8192"
    assert arg_value(args, "--gpu-memory-utilization") == "0.9"
    assert arg_value(args, "--dtype") == "float16"
    assert arg_value(args, "--kv-cache-dtype") == "fp8"
    assert arg_value(args, "--port") == "9000"
    # An int8 checkpoint declares its own scheme: no --quantization flag.
    assert "--quantization" not in args


@pytest.mark.parametrize(
    ("version", "command", "model_args"),
    [
        ("0.32.0", ["vllm", "serve"], ["M"]),
        ("0.6.0", ["vllm", "serve"], ["M"]),
    ],
)
def test_entrypoint_is_rendered_per_version(version: str, command: list[str], model_args: list[str]) -> None:
    si = make_si(vllm={"version": version}, target={"model": "M", "quantization": "none"})
    dep = render_pool_deployment(si, Pool.BASELINE, 1)
    assert container(dep)["command"] == command == vllm_entrypoint(si.spec)
    assert container(dep)["args"][: len(model_args)] == model_args
    assert vllm_command(si.spec, Pool.BASELINE) == command + container(dep)["args"]


def test_api_server_entrypoint_takes_model_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were a release to need the module entry point, the model goes back to --model."""
    monkeypatch.setattr(dialect, "SERVE_ENTRYPOINT_SINCE", parse_version("0.7.0"))
    si = make_si(vllm={"version": "0.6.6"}, target={"model": "M", "quantization": "none"})
    assert vllm_entrypoint(si.spec) == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm_args(si.spec, Pool.BASELINE)[:2] == ["--model", "M"]


def test_bitsandbytes_load_format_only_for_old_versions() -> None:
    old = make_si(vllm={"version": "0.8.1"}, target={"quantization": "bitsandbytes"})
    new = make_si(vllm={"version": "0.11.0"}, target={"quantization": "bitsandbytes"})
    assert arg_value(vllm_args(old.spec, Pool.BASELINE), "--load-format") == "bitsandbytes"
    assert "--load-format" not in vllm_args(new.spec, Pool.BASELINE)


def test_deployment_shape() -> None:
    si = load_example("llama70b-int8-h100.yaml")
    owner = OwnerRef(name=si.metadata.name, uid="1234")
    dep = render_pool_deployment(si, Pool.SPECULATIVE, 3, owner)
    assert dep["metadata"]["name"] == "llama70b-chat-spec"
    assert dep["metadata"]["namespace"] == "serving"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[LABEL_POOL] == "speculative"
    assert labels["app.kubernetes.io/managed-by"] == "specops"
    assert dep["spec"]["selector"]["matchLabels"] == {
        k: labels[k] for k in dep["spec"]["selector"]["matchLabels"]
    }
    c = container(dep)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    # The token only ever travels as a secretKeyRef.
    hf = next(e for e in c["env"] if e["name"] == "HF_TOKEN")
    assert hf == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/dev/shm", "/root/.cache/huggingface"} <= mounts
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "model-cache"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    # Startup probe sized for 80.7 GiB of weights: 300 s + 15 s/GiB = 1511 s -> 152 x 10 s.
    assert c["startupProbe"]["failureThreshold"] == 152
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_startup_timeout_override() -> None:
    si = make_si(vllm={"startupTimeout": "45m"})
    c = container(render_pool_deployment(si, Pool.BASELINE, 1))
    assert c["startupProbe"]["failureThreshold"] == 270


def test_service_selects_both_pools() -> None:
    si = make_si()
    svc = render_service(si)
    assert svc["metadata"]["name"] == "demo"
    for pool in Pool:
        pod_labels = render_pool_deployment(si, pool, 1)["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert LABEL_POOL not in svc["spec"]["selector"]
    assert selector_string("demo") == (
        "app.kubernetes.io/name=vllm,app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=specops"
    )


def test_split_defaults_follow_mode() -> None:
    assert initial_split(make_si().spec) == PoolSplit(2, 0)
    assert initial_split(make_si(policy={"mode": "Baseline"}).spec) == PoolSplit(0, 2)
    docs = render_all(make_si(), PoolSplit(1, 1))
    assert [d["kind"] for d in docs] == ["Deployment", "Deployment", "Service"]
    assert [d["spec"].get("replicas") for d in docs[:2]] == [1, 1]


def test_pod_options_and_user_labels_cannot_override_selectors() -> None:
    si = make_si(
        podLabels={"team": "search"},
        podAnnotations={"example.com/owner": "search"},
        serviceAccountName="vllm",
        priorityClassName="gpu-high",
        imagePullSecrets=["regcred"],
        resources={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "cpu": "16",
            "memory": "128Gi",
        },
    )
    dep = render_pool_deployment(si, Pool.BASELINE, 1)
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "search"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "search"
    assert pod["spec"]["serviceAccountName"] == "vllm"
    assert pod["spec"]["priorityClassName"] == "gpu-high"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert container(dep)["resources"]["limits"]["memory"] == "128Gi"


def test_render_is_deterministic_and_unshared() -> None:
    si = make_si()
    a, b = render_all(si), render_all(si)
    assert a == b
    a[0]["metadata"]["labels"]["x"] = "y"
    assert "x" not in a[0]["spec"]["selector"]["matchLabels"]
    assert "x" not in a[0]["spec"]["template"]["metadata"]["labels"]


def test_examples_render(example: SpeculativeInference) -> None:
    docs = render_all(example)
    assert len(docs) == 3

"""What SpecOps' dialect table claims for one vLLM release, and how to compare it with vLLM's answers.

SpecOps side of the check (the probe runs in the vLLM environment and never imports SpecOps):

* ``build_plan(version)``: the table's flags and ``--speculative-config`` keys, the commands SpecOps
  renders for a covering set of resources (every example and scenario resource, one per method,
  each target and draft quantization, both pools), the methods the table refuses rendered anyway
  (so vLLM's own refusal is on record), and config.json figures for local model directories.
* ``observations(plan, result)``: the facts worth keeping from the probe's answer.
* ``disagreements(version, facts)``: every place the table and the recorded facts differ.  The fast
  test (tests/unit/test_vllm_compat_results.py) runs it on docs/vllm-compat-results.json.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from specops.api.catalog import lookup_model
from specops.api.v1alpha1 import Method, SpeculativeInference
from specops.checks.validation import check_resource
from specops.render.manifests import Pool, RenderError, vllm_command
from specops.vllm.dialect import (
    COMMON_FLAG_GATES,
    CONFIG_KEY_GATES,
    LEGACY_FLAG_GATES,
    METHOD_GATES,
    Dialect,
    Entrypoint,
    Version,
    dialect_for,
    entrypoint_for,
    flag_allowed,
    format_version,
    method_gate,
    parse_version,
    vllm_method_name,
)
from tests.support.resources import make_doc

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "vllm-compat-results.json"
RESOURCE_DIRS = (ROOT / "manifests" / "examples", ROOT / "scenarios" / "resources")

# Stages a rendered command goes through in the probe, in order.
STAGES = ("command", "engine_args", "config_keys", "engine_config", "proposer")


def resource_files() -> list[Path]:
    return sorted(p for d in RESOURCE_DIRS for p in d.glob("*.yaml"))


def load_resource(path: Path) -> SpeculativeInference:
    return SpeculativeInference.model_validate(yaml.safe_load(path.read_text()))


# Resources that between them cover each method, each target and draft quantization and the KV
# cache dtype; both pools of each are rendered, so the plain (baseline) command is covered too.
LLAMA_70B_W8A8 = "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
COVERING: dict[str, dict[str, Any]] = {
    "draft_model": {},
    "draft_model-fp8-draft": {"speculation": {"draft": {"quantization": "fp8"}}},
    "ngram": {
        "target": {"model": "Qwen/Qwen2.5-14B-Instruct", "quantization": "none", "tensorParallelSize": 1},
        "speculation": {
            "method": "ngram",
            "draft": None,
            "ngram": {"promptLookupMin": 2, "promptLookupMax": 4},
        },
        "resources": {"gpusPerReplica": 1},
    },
    "eagle": {
        "target": {"model": LLAMA_8B, "quantization": "none", "tensorParallelSize": 1},
        "speculation": {
            "method": "eagle",
            "numSpeculativeTokens": 3,
            "draft": {"model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"},
        },
        "resources": {"gpusPerReplica": 1},
    },
    "eagle3": {
        "target": {"model": LLAMA_8B, "quantization": "none", "tensorParallelSize": 1},
        "speculation": {
            "method": "eagle3",
            "numSpeculativeTokens": 3,
            "draft": {"model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"},
        },
        "resources": {"gpusPerReplica": 1},
    },
    "medusa": {
        "target": {"model": LLAMA_8B, "quantization": "none", "tensorParallelSize": 1},
        "speculation": {
            "method": "medusa",
            "numSpeculativeTokens": 3,
            "draft": {"model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"},
        },
        "resources": {"gpusPerReplica": 1},
    },
    "mtp": {
        "target": {
            "model": "deepseek-ai/DeepSeek-V3",
            "quantization": "fp8",
            "tensorParallelSize": 8,
            "maxModelLen": 8192,
        },
        "speculation": {"method": "mtp", "numSpeculativeTokens": 1, "draft": None},
        "resources": {"gpusPerReplica": 8, "gpuType": "H200-141GB"},
    },
    "suffix": {
        "target": {"model": "Qwen/Qwen2.5-14B-Instruct", "quantization": "none", "tensorParallelSize": 1},
        "speculation": {"method": "suffix", "numSpeculativeTokens": 8, "draft": None},
        "resources": {"gpusPerReplica": 1},
    },
    "target-fp8-kv-fp8": {
        "target": {"model": "Qwen/Qwen2.5-72B-Instruct", "quantization": "fp8", "kvCacheDtype": "fp8"},
        "speculation": {"draft": {"model": "Qwen/Qwen2.5-7B-Instruct"}},
    },
    "target-awq-draft-awq": {
        "target": {"model": "Qwen/Qwen2.5-72B-Instruct-AWQ", "quantization": "awq"},
        "speculation": {"draft": {"model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "quantization": "awq"}},
    },
    "target-gptq-draft-gptq": {
        "target": {"model": "Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4", "quantization": "gptq"},
        "speculation": {"draft": {"model": "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "quantization": "gptq"}},
    },
    "target-bitsandbytes": {
        "target": {"model": LLAMA_8B, "quantization": "bitsandbytes", "tensorParallelSize": 1},
        "speculation": {"method": "ngram", "draft": None},
        "resources": {"gpusPerReplica": 1},
    },
}


@dataclass(frozen=True, slots=True)
class Case:
    """One rendered command and what the dialect table expects vLLM to make of it."""

    id: str
    si: SpeculativeInference
    pool: Pool
    expect_ok: bool  # False: the table says this release cannot run it (rendered only to show that)

    def command(self) -> list[str]:
        return vllm_command(self.si.spec, self.pool)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command(),
            "model": self.si.spec.target.model,
            "expect_ok": self.expect_ok,
        }


def _at_version(si: SpeculativeInference, version: Version) -> SpeculativeInference:
    doc = si.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["spec"]["vllm"]["version"] = format_version(version)
    doc["spec"]["vllm"].pop("image", None)
    return SpeculativeInference.model_validate(doc)


def _renders(si: SpeculativeInference, pool: Pool) -> bool:
    try:
        vllm_command(si.spec, pool)
    except RenderError:
        return False
    return True


# Findings that say the release cannot run the resource, and whether they concern the plain pool too.
VERSION_FINDINGS: dict[str, bool] = {
    "UnsupportedVersion": True,
    "QuantizationUnsupportedByVersion": True,
    "MethodUnsupportedByVersion": False,
    "KeyUnsupportedByVersion": False,
    "DraftTensorParallelSize": False,
}


def refused_by_table(si: SpeculativeInference, pool: Pool) -> list[str]:
    """Why the dialect table says ``si``'s ``pool`` cannot run on its version (budget is not vLLM's)."""
    return [
        f.message
        for f in check_resource(si).errors
        if f.code in VERSION_FINDINGS and (pool is Pool.SPECULATIVE or VERSION_FINDINGS[f.code])
    ]


def cases_for(version: Version) -> tuple[list[Case], list[str]]:
    """The covering cases for ``version`` and the notes on what was not rendered, and why."""
    vtext = format_version(version)
    cases: list[Case] = []
    notes: list[str] = []
    sources: list[tuple[str, SpeculativeInference]] = []
    for path in resource_files():
        si = load_resource(path)
        name = path.relative_to(ROOT).as_posix()
        if not check_resource(si).ok:
            notes.append(f"{name}: SpecOps refuses it (deliberately invalid), so it is never rendered")
            continue
        if si.spec.vllm.version == vtext:
            sources.append((name, si))
        else:
            sources.append((f"{name}@{vtext}", _at_version(si, version)))
    for name, patch in COVERING.items():
        doc = make_doc(vllm={"version": vtext}, **copy.deepcopy(patch))
        sources.append((f"covering/{name}", SpeculativeInference.model_validate(doc)))
    for name, si in sources:
        for pool in Pool:
            refused = refused_by_table(si, pool)
            if not _renders(si, pool):
                notes.append(f"{name} ({pool.value}): no command in this dialect ({'; '.join(refused)})")
                continue
            cases.append(Case(f"{name}#{pool.value}", si, pool, expect_ok=not refused))
    return cases, notes


def entrypoint_cases(case: Case) -> list[dict[str, Any]]:
    """One plain command in each entry point form (the table picks one; both are tried)."""
    args = vllm_command(case.si.spec, Pool.BASELINE)[
        len(entrypoint_for(parse_version(case.si.spec.vllm.version)).command) :
    ]
    if args and not args[0].startswith("-"):
        args = ["--model", *args]  # back to the flag form; each form below places the model itself
    model_at = args.index("--model")
    model = args[model_at + 1]
    flags = args[:model_at] + args[model_at + 2 :]
    out = []
    for entry in Entrypoint:
        model_args = [model] if entry is Entrypoint.SERVE else ["--model", model]
        command = [*entry.command, *model_args, *flags]
        out.append({"id": f"entrypoint/{entry.value}", "command": command, "model": model, "expect_ok": True})
    return out


def flags_to_check() -> list[str]:
    return sorted({*COMMON_FLAG_GATES, *LEGACY_FLAG_GATES})


def build_plan(version: Version, hf_home: str | None = None, deep: bool = True) -> dict[str, Any]:
    """The plan for the probe; with ``hf_home``, local model directories (and, if ``deep``,
    ``create_engine_config`` on them)."""
    cases, notes = cases_for(version)
    flags = set(flags_to_check())
    for case in cases:
        flags |= {t.split("=", 1)[0] for t in case.command() if t.startswith("--")}
    plan: dict[str, Any] = {
        "version": format_version(version),
        "flags": sorted(flags),
        "cases": [c.to_json() for c in cases],
        "entrypoints": entrypoint_cases(cases[0]),
        "notes": notes,
        "deep": deep and hf_home is not None,
    }
    if hf_home is not None:
        plan["hf_home"] = hf_home
        plan["models"] = model_configs(cases)
    return plan


# ----------------------------------------------------------------------------- model directories

# config.json figures the catalog does not hold (hidden size, MLP width, attention heads, vocabulary,
# context), per architecture, from the models' published config.json files.  Layers, KV heads and
# head dim come from specops.api.catalog, so the directories describe the catalog's models.
_LLAMA31_ROPE = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
_ARCH: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32},
    "llama-3.1-70b": {"hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64},
    "qwen2.5-7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28},
    "qwen2.5-14b": {"hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40},
    "qwen2.5-72b": {"hidden_size": 8192, "intermediate_size": 29568, "num_attention_heads": 64},
}
_FAMILY: dict[str, dict[str, Any]] = {
    "llama3": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": _LLAMA31_ROPE,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 128000,
        "eos_token_id": 128009,
    },
    "qwen2.5": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "sliding_window": 131072,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
}
_DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_nextn_predict_layers": 1,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "n_group": 8,
    "topk_group": 4,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "max_position_embeddings": 163840,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "torch_dtype": "bfloat16",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "quantization_config": {
        "quant_method": "fp8",
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "weight_block_size": [128, 128],
    },
}
_QUANT_CONFIG: dict[str, dict[str, Any]] = {
    "w8a8": {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "channel",
                    "dynamic": False,
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "token",
                    "dynamic": True,
                },
            }
        },
        "ignore": ["lm_head"],
    },
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True},
}
# EAGLE heads: one decoder layer over the Llama-3.1-8B target (EAGLE-3 also maps a 32k draft vocabulary).
_HEADS: dict[str, dict[str, Any]] = {
    "yuhuili/EAGLE-LLaMA3.1-Instruct-8B": {"architectures": ["LlamaForCausalLM"]},
    "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B": {
        "architectures": ["LlamaForCausalLMEagle3"],
        "draft_vocab_size": 32000,
    },
}


def model_config(repo_id: str) -> dict[str, Any] | None:
    """A config.json for ``repo_id`` from the catalog's figures, or None when it has none."""
    info = lookup_model(repo_id)
    if info is None:
        return None
    if info.key in ("deepseek-v3", "deepseek-r1"):
        return dict(_DEEPSEEK_V3)
    base_key = "llama-3.1-8b" if info.head_for else info.key
    arch = _ARCH.get(base_key)
    family = _FAMILY.get(info.family if info.family != "qwen2.5" else "qwen2.5")
    if arch is None or family is None:
        return None
    config: dict[str, Any] = {
        **family,
        **arch,
        "num_hidden_layers": info.layers,
        "num_key_value_heads": info.kv_heads,
        "head_dim": info.head_dim,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
        **_HEADS.get(repo_id, {}),
    }
    lowered = repo_id.lower()
    for marker, quant in _QUANT_CONFIG.items():
        if marker in lowered:
            config["quantization_config"] = quant
            if marker in ("awq", "gptq"):
                config["torch_dtype"] = "float16"  # as the published 4-bit checkpoints declare
    if lowered.endswith("-fp8"):
        config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    return config


def model_configs(cases: Iterable[Case]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        spec = case.si.spec
        names = [spec.target.model]
        if spec.speculation.draft is not None:
            names.append(spec.speculation.draft.model)
        for name in names:
            config = model_config(name)
            if config is not None:
                out[name] = config
    return out


# ----------------------------------------------------------------------------- facts and claims


def observations(plan: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What to keep of one run: vLLM's facts, and per case the command and how far it got."""
    cases = {}
    for case, answer in zip(plan["cases"], result["cases"], strict=True):
        assert case["id"] == answer["id"]
        cases[case["id"]] = {
            "command": case["command"],
            "expect_ok": case["expect_ok"],
            "stages": answer["stages"],
        }
    return {
        "vllm": result["vllm"],
        "torch": result.get("torch"),
        "entrypoints": {e["id"].split("/", 1)[1]: e["stages"] for e in result.get("entrypoints", [])},
        "flags": result["flags"],
        "config_fields": result["config_fields"],
        "method_names": result["method_names"],
        "cases": cases,
        "notes": plan["notes"],
    }


def case_outcome(stages: dict[str, Any]) -> bool | None:
    """True: every stage that ran passed through ``engine_args`` (and the keys); False: vLLM refused
    the command; None: only the deep stage ran into a limit of this machine (see ``deep_outcome``)."""
    for name in ("command", "engine_args", "config_keys"):
        stage = stages.get(name)
        if stage is not None and not stage["ok"]:
            return False
    return "command" in stages and stages["command"]["ok"]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table: a claim of the table, and whether vLLM bore it out.

    ``unshown``: claims this machine could not settle (vLLM stopped, for both pools alike, at
    something only a GPU machine has); they are listed, not held against the table.
    """

    check: str
    passed: int
    failed: list[str]
    unshown: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


def compare(version: Version, facts: dict[str, Any]) -> list[Row]:
    """The dialect table's claims for ``version`` against the facts recorded for it."""
    rows: list[Row] = []
    flags: dict[str, bool] = facts["flags"]

    def row(check: str, results: list[tuple[str, bool]]) -> None:
        rows.append(Row(check, sum(ok for _, ok in results), [what for what, ok in results if not ok]))

    allowed = [f for f in flags_to_check() if flag_allowed(version, f)]
    refused = [f for f in flags_to_check() if not flag_allowed(version, f)]
    row("flags the table allows exist", [(f"{f} missing", flags.get(f) is True) for f in allowed])
    row("flags the table refuses are absent", [(f"{f} exists", flags.get(f) is False) for f in refused])
    fields = facts["config_fields"]
    if dialect_for(version) is Dialect.CURRENT and fields is not None:
        keys = [k for k, g in CONFIG_KEY_GATES.items() if g.allows(version)]
        gone = [k for k, g in CONFIG_KEY_GATES.items() if not g.allows(version)]
        row(
            "--speculative-config keys the table allows are fields",
            [(f"{k} not a field", k in fields) for k in keys],
        )
        row(
            "--speculative-config keys the table refuses are not fields",
            [(f"{k} is a field", k not in fields) for k in gone],
        )
    names = facts["method_names"]
    if dialect_for(version) is Dialect.CURRENT and names is not None:
        claims: list[tuple[str, bool]] = []
        for method, gate in METHOD_GATES[Dialect.CURRENT].items():
            name = vllm_method_name(version, method) or method.value
            if gate.allows(version) and method is not Method.DRAFT_MODEL:
                claims.append((f"{name} not among {names}", name in names))
        row("method names the table renders are vLLM's", claims)
    cases: dict[str, Any] = facts["cases"]
    entry = entrypoint_for(version)
    served: list[tuple[str, bool]] = []
    refusals: list[tuple[str, bool]] = []
    unshown: list[str] = []
    for case_id, case in sorted(cases.items()):
        outcome = case_outcome(case["stages"])
        if case["expect_ok"]:
            served.append((f"{case_id}: {_first_failure(case['stages'])}", outcome is True))
            continue
        refusal = _refusal(case_id, cases)
        if refusal is None:
            unshown.append(f"{case_id}: {_first_failure(case['stages'], deep=True)}")
        else:
            refusals.append((f"{case_id}: vLLM accepted it", refusal))
    forms = facts.get("entrypoints", {})
    if forms:
        row(
            f"the entry point the table picks ({' '.join(entry.command)}) serves the model",
            [
                (
                    f"{entry.value}: {_first_failure(forms.get(entry.value, {}))}",
                    case_outcome(forms.get(entry.value, {})) is True,
                )
            ],
        )
    row(f"rendered commands ({entry.value}) parse and build engine args", served)
    # A config class refusing a command the table allows, where the plain pool got further;
    # commands this machine could not take through create_engine_config are listed, not counted.
    accepted: list[tuple[str, bool]] = []
    not_reached: list[str] = []
    for cid, c in sorted(cases.items()):
        if not (c["expect_ok"] and cid.endswith("#speculative") and "engine_config" in c["stages"]):
            continue
        what = f"{cid}: {_first_failure(c['stages'], deep=True)[:200]}"
        verdict = _refusal(cid, cases)
        if verdict is None and not c["stages"]["engine_config"]["ok"]:
            not_reached.append(what)
        else:
            accepted.append((what, verdict is not True))
    if accepted or not_reached:
        rows.append(
            Row(
                "what the table allows, vLLM's config classes accept",
                sum(ok for _, ok in accepted),
                [what for what, ok in accepted if not ok],
                tuple(not_reached),
            )
        )
    if refusals or unshown:
        rows.append(
            Row(
                "what the table refuses, vLLM refuses",
                sum(ok for _, ok in refusals),
                [what for what, ok in refusals if not ok],
                tuple(unshown),
            )
        )
    deep_rows = [
        (
            f"{cid}: {_first_failure(c['stages'], deep=True)[:200]}",
            _first_failure(c["stages"], deep=True) == "ok",
        )
        for cid, c in sorted(cases.items())
        if c["expect_ok"] and "engine_config" in c["stages"]
    ]
    if deep_rows:
        row("engine config from local model directories (informational)", deep_rows)
    return rows


def _first_failure(stages: dict[str, Any], deep: bool = False) -> str:
    for name in STAGES if deep else STAGES[:3]:
        stage = stages.get(name)
        if stage is not None and not stage["ok"]:
            return f"{name}: {stage['detail']}"
    return "ok"


def _refusal(case_id: str, cases: dict[str, Any]) -> bool | None:
    """Did vLLM refuse this command the table refuses?  None: this machine cannot tell.

    A failed parse or engine-args step is a refusal.  A failed ``create_engine_config`` is one
    only where the same resource's plain pool got further or failed otherwise: the pools differ
    in speculation alone, so a failure both share is this machine's, not the method's.
    """
    stages = cases[case_id]["stages"]
    outcome = case_outcome(stages)
    if outcome is False:
        return True
    deep = stages.get("engine_config")
    if deep is None:
        return False if outcome else None
    if deep["ok"]:
        proposer = stages.get("proposer")
        return proposer is not None and not proposer["ok"] and bool(proposer.get("refusal"))
    if not deep.get("refusal"):
        return None  # a missing package or device: this machine's limit, not vLLM's answer
    plain_id = case_id.replace("#speculative", "#baseline")
    plain = cases.get(plain_id)
    if plain_id == case_id or plain is None or not plain["expect_ok"]:
        return True  # both pools are refused: the config class's own "no" is the answer
    plain_deep = plain["stages"].get("engine_config")
    if case_outcome(plain["stages"]) is not True or plain_deep is None:
        return None
    if plain_deep["ok"] or plain_deep["detail"] != deep["detail"]:
        return True
    return None  # the plain pool fails alike: not the speculation's doing


def disagreements(version: Version, facts: dict[str, Any]) -> list[str]:
    """Claims the recorded facts contradict (the deep, informational row excluded)."""
    out = []
    for r in compare(version, facts):
        if r.check.endswith("(informational)"):
            continue
        out += [f"{format_version(version)}: {r.check}: {f}" for f in r.failed]
    return out


def load_results(path: Path = RESULTS) -> dict[str, Any]:
    if not path.exists():
        return {"versions": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def version_key(text: str) -> Version:
    return parse_version(text)


def method_gate_text(version: Version, method: Method) -> str:
    gate = method_gate(version, method)
    return gate.describe() if gate else "never"

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from specops.cli import app
from tests.support.paths import CRD_SOURCE, EXAMPLES
from tests.support.resources import make_doc

runner = CliRunner()
CONTRACT_KEYS = {
    "fits",
    "errors",
    "warnings",
    "vram_gib",
    "target_weights_gib",
    "draft_weights_gib",
    "kv_cache_gib",
    "kv_cache_gib_without_draft",
    "draft_share_of_vram",
    "size_ratio",
    "max_concurrent_sequences",
    "max_concurrent_sequences_without_draft",
}


def write(tmp_path: Path, doc: object, name: str = "si.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_plan_json_contract() -> None:
    result = runner.invoke(app, ["plan", "-o", "json", str(EXAMPLES / "llama70b-int8-h100.yaml")])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan.keys() >= CONTRACT_KEYS
    assert plan["fits"] is True
    assert plan["errors"] == []
    assert {"code", "field", "message"} == set(plan["warnings"][0])
    assert plan["vram_gib"] == 160
    assert plan["max_concurrent_sequences"] == 18


def test_plan_ngram_has_null_ratio() -> None:
    result = runner.invoke(app, ["plan", "-o", "json", str(EXAMPLES / "ngram-summarization.yaml")])
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["size_ratio"] is None
    assert plan["draft_weights_gib"] == 0


def test_plan_table() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "llama70b-int8-h100.yaml")])
    assert result.exit_code == 0
    assert "KV cache (speculative pod)  63.29 GiB" in result.stdout
    assert "1:8.8" in result.stdout


def test_plan_shows_the_derived_speculation_table() -> None:
    result = runner.invoke(app, ["plan", "-o", "json", str(EXAMPLES / "llama70b-int8-h100.yaml")])
    table = json.loads(result.stdout)["speculation_table"]
    assert table["acceptance_source"] == "Default"
    rows = table["rows"]
    assert rows[0]["min_batch_size"] == 1 and rows[0]["num_speculative_tokens"] == 5
    assert rows[-1]["max_batch_size"] == 1024 and rows[-1]["num_speculative_tokens"] == 0
    speedups = table["expected_speedup_by_batch_size"]
    assert list(speedups)[:3] == ["1", "2", "4"] and speedups["1"] > 1.5 and speedups["1024"] == 1.0
    text = runner.invoke(app, ["plan", str(EXAMPLES / "llama70b-int8-h100.yaml")]).stdout
    assert "derived k by batch size     1-5: 5, " in text
    assert "0 (default acceptance)" in text
    assert "  speedup over k = 0        1: 1.8" in text


def test_plan_derives_the_table_from_observed_acceptance(tmp_path: Path) -> None:
    doc = make_doc()
    doc["status"] = {"observed": {"acceptancePerPosition": [0.5, 0.4, 0.3, 0.3, 0.3]}}
    result = runner.invoke(app, ["plan", "-o", "json", write(tmp_path, doc)])
    table = json.loads(result.stdout)["speculation_table"]
    assert table["acceptance_source"] == "Live"
    assert table["acceptance_per_position"] == [0.5, 0.4, 0.3, 0.3, 0.3]
    assert table["rows"][0]["num_speculative_tokens"] < 5


def test_invalid_example_gets_the_documented_messages() -> None:
    path = EXAMPLES / "invalid-bf16-on-h100.yaml"
    documented = [
        line.removeprefix("#").strip()
        for line in path.read_text().splitlines()
        if line.startswith("#   error:")
    ]
    assert documented
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == documented
    plan = runner.invoke(app, ["plan", "-o", "json", str(path)])
    assert plan.exit_code == 1
    assert {e["code"] for e in json.loads(plan.stdout)["errors"]} == {
        "TokenizerMismatch",
        "DoesNotFit",
    }


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("spec: [unclosed", "not valid YAML"),
        ("", "holds no document"),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "apiVersion/kind"),
        (make_doc(target={"tensorParallelSize": "two"}), "spec.target.tensorParallelSize"),
    ],
)
def test_unreadable_input_exits_2_naming_the_field(tmp_path: Path, content: object, fragment: str) -> None:
    for command in (["plan"], ["validate"], ["render"]):
        result = runner.invoke(app, [*command, write(tmp_path, content)])
        assert result.exit_code == 2, (command, result.output)
        assert fragment in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_render_split_and_refusal(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["render", str(EXAMPLES / "llama70b-int8-h100.yaml"), "--replicas-split", "spec=1,base=1"],
    )
    assert result.exit_code == 0
    docs = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "llama70b-chat-spec"),
        ("Deployment", "llama70b-chat-base"),
        ("Service", "llama70b-chat"),
    ]
    assert [d["spec"]["replicas"] for d in docs[:2]] == [1, 1]
    assert "&id" not in result.stdout
    refused = runner.invoke(app, ["render", str(EXAMPLES / "invalid-bf16-on-h100.yaml")])
    assert refused.exit_code == 1
    assert refused.stdout == ""
    bad_split = runner.invoke(
        app, ["render", str(EXAMPLES / "llama70b-int8-h100.yaml"), "--replicas-split", "spec=x"]
    )
    assert bad_split.exit_code == 2


def test_multi_document_files(tmp_path: Path) -> None:
    docs = [make_doc(), make_doc()]
    docs[1]["metadata"]["name"] = "second"
    path = write(tmp_path, "---\n".join(yaml.safe_dump(d) for d in docs))
    result = runner.invoke(app, ["render", path])
    assert result.exit_code == 0
    assert len(list(yaml.safe_load_all(result.stdout))) == 6
    plan = runner.invoke(app, ["plan", "-o", "json", path])
    assert [p["name"] for p in json.loads(plan.stdout)] == ["demo", "second"]


def test_crd_command_prints_the_checked_in_crd() -> None:
    result = runner.invoke(app, ["crd"])
    assert result.exit_code == 0
    assert result.stdout == CRD_SOURCE.read_text()


def test_console_script_is_installed() -> None:
    exe = shutil.which("specops", path=str(Path(sys.executable).parent))
    assert exe, "the specops console script is not installed next to this Python (pip install -e .)"
    out = subprocess.run(
        [exe, "validate", str(EXAMPLES / "eagle3-llama8b.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout


def test_demo_rollout_names_a_strategy_each() -> None:
    """`specops demo --rollout` maps its choices onto RolloutStrategy by member name."""
    from specops.api.v1alpha1 import RolloutStrategy
    from specops_testkit.commands import DemoRollout

    assert {RolloutStrategy[r.name] for r in DemoRollout} == set(RolloutStrategy)

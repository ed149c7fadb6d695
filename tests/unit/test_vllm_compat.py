"""Rendered commands against a real vLLM release: its parser, its checks, its engine arguments.

Needs a Python with vLLM installed: this interpreter, or the one SPECOPS_VLLM_PYTHON names (for
example an environment hack/vllm-compat.sh built: $SPECOPS_CACHE/vllm/0.32.0/bin/python).  CI has
neither (several GB), so these tests are skipped there; docs/vllm-compat.md has the recorded
results and tests/unit/test_vllm_compat_results.py keeps the dialect table in line with them.

Every resource under manifests/examples/ and scenarios/resources/ is rendered for the installed
release, both pools, and run through the release's own entry point up to the server start (its
parser, ``validate_parsed_serve_args``), then ``AsyncEngineArgs.from_cli_args``; every
``--speculative-config`` key SpecOps can render for the release must be a SpeculativeConfig field.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from specops.vllm.dialect import Dialect, dialect_for, flag_allowed, parse_version, speculative_config_keys
from tests.vllm_compat.plan import build_plan, case_outcome, resource_files

pytestmark = pytest.mark.vllm
PROBE = Path(__file__).resolve().parents[1] / "vllm_compat" / "probe.py"


def _vllm_python() -> str | None:
    named = os.environ.get("SPECOPS_VLLM_PYTHON")
    if named:
        return named
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


PYTHON = _vllm_python()
if PYTHON is None:
    pytest.skip("no vLLM here (install it, or set SPECOPS_VLLM_PYTHON)", allow_module_level=True)


def _installed_version() -> str:
    code = "import importlib.metadata as m; print(m.version('vllm'))"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip().split("+")[0]


VERSION = parse_version(_installed_version())
RESOURCES = {p.name for p in resource_files()}


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One probe run for every case (vLLM's imports take a while): the plan and vLLM's answer."""
    # Local model directories (config and tokenizer, no weights): some releases read the model's
    # config while validating the command line, and the hub stays off.
    tmp = tmp_path_factory.mktemp("vllm")
    plan = build_plan(VERSION, hf_home=str(tmp / "hf"))
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}
    out = tmp / "answer.json"
    done = subprocess.run(
        [PYTHON, str(PROBE), "check", "--out", str(out)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    result["plan"] = plan
    return result


def _resource_cases(answers: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairs = zip(answers["plan"]["cases"], answers["cases"], strict=True)
    return [(c, a) for c, a in pairs if not c["id"].startswith("covering/")]


def test_every_resource_and_pool_is_checked(answers: dict[str, Any]) -> None:
    ids = {c["id"] for c, _ in _resource_cases(answers)}
    notes = " ".join(answers["plan"]["notes"])
    for name in RESOURCES:
        checked = {i for i in ids if f"/{name}" in i}
        assert len(checked) == 2 or name in notes, (name, checked)  # both pools, or said why not


def test_vllm_accepts_every_rendered_resource(answers: dict[str, Any]) -> None:
    refused = [
        (case["id"], case["command"][:3], answer["stages"])
        for case, answer in _resource_cases(answers)
        if case["expect_ok"] and case_outcome(answer["stages"]) is not True
    ]
    assert not refused


def test_speculative_config_keys_are_fields(answers: dict[str, Any]) -> None:
    if dialect_for(VERSION) is Dialect.LEGACY:
        pytest.skip("legacy dialect: no --speculative-config")
    fields = answers["config_fields"]
    assert fields is not None
    assert speculative_config_keys(VERSION) <= set(fields), speculative_config_keys(VERSION) - set(fields)


def test_flags_the_table_allows_exist(answers: dict[str, Any]) -> None:
    wrong = {f: exists for f, exists in answers["flags"].items() if flag_allowed(VERSION, f) != exists}
    assert not wrong, wrong

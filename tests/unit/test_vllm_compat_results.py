"""The dialect table agrees with what real vLLM releases answered (docs/vllm-compat-results.json).

No vLLM needed: hack/vllm-compat.sh recorded each release's facts (its flags, SpeculativeConfig's
fields and method names, how far each rendered command got); these tests hold the table, and what
SpecOps renders today, to them.  When one fails after a change to dialect.py or to the renderer,
re-run hack/vllm-compat.sh for the versions it names (docs/vllm-compat.md).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from specops.api.v1alpha1 import VLLMSpec
from specops.vllm.dialect import (
    CONFIG_KEY_GATES,
    MIN_SUPPORTED,
    Dialect,
    dialect_for,
    entrypoint_for,
    parse_version,
)
from tests.vllm_compat.plan import RESULTS, cases_for, disagreements, load_results
from tests.vllm_compat.run import DOC, TABLE_END, TABLE_START, render_table

RECORDED: dict[str, Any] = load_results()["versions"]
VERSIONS = sorted(RECORDED, key=parse_version)


def test_results_cover_the_default_and_the_oldest_dialect() -> None:
    default = VLLMSpec.model_fields["version"].default
    assert default in RECORDED, (
        f"vLLM {default} (the default version) was never checked: hack/vllm-compat.sh {default}"
    )
    assert any(dialect_for(parse_version(v)) is Dialect.LEGACY for v in RECORDED), (
        "no legacy-dialect release checked"
    )
    assert all(parse_version(v) >= MIN_SUPPORTED for v in RECORDED)


@pytest.mark.parametrize("version", VERSIONS)
def test_dialect_table_agrees_with_recorded_vllm(version: str) -> None:
    assert disagreements(parse_version(version), RECORDED[version]) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_todays_commands_use_only_what_vllm_had(version: str) -> None:
    """Flags and keys SpecOps renders now for that release existed in it (else: re-run the check)."""
    v = parse_version(version)
    facts = RECORDED[version]
    flags: dict[str, bool] = facts["flags"]
    fields = set(facts["config_fields"] or [])
    entry = list(entrypoint_for(v).command)
    rerun = f"re-run hack/vllm-compat.sh {version}"
    cases, _ = cases_for(v)
    for case in cases:
        command = case.command()
        assert command[: len(entry)] == entry
        recorded = facts["cases"].get(case.id)
        assert recorded is not None, f"{case.id} was not checked against vLLM {version}: {rerun}"
        assert recorded["command"][: len(entry)] == entry, f"entry point changed since the check: {rerun}"
        for token in command:
            flag = token.split("=", 1)[0]
            if flag.startswith("--"):
                assert flags.get(flag) is True, (
                    f"{case.id}: vLLM {version} had no {flag} when checked: {rerun}"
                )
        if "--speculative-config" in command:
            rendered = json.loads(command[command.index("--speculative-config") + 1])
            was = recorded["command"]
            checked = (
                json.loads(was[was.index("--speculative-config") + 1])
                if "--speculative-config" in was
                else {}
            )
            assert rendered.get("method") == checked.get("method"), (
                f"{case.id}: method {rendered.get('method')!r} now, {checked.get('method')!r} when checked: {rerun}"
            )
            keys = set(rendered)
            assert keys <= fields, f"{case.id}: keys {sorted(keys - fields)} not fields of vLLM {version}"
            assert keys <= set(CONFIG_KEY_GATES)


def test_docs_table_is_the_recorded_results() -> None:
    text = DOC.read_text()
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == render_table(load_results(RESULTS))

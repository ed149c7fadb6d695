"""spec.speculation.tokensPerBatchSizeMode: Auto: validation, version gate, rendering, re-render rule."""

from __future__ import annotations

import json

import pytest

from specops.checks.validation import ResourceError, check_resource, load_resource
from specops.render.manifests import (
    Pool,
    render_all,
    speculation_rows_in,
    speculative_config,
    vllm_args,
)
from specops.vllm.dialect import parse_version
from specops.vllm.speculation_table import (
    VLLM_TABLE_KEY,
    SpeculationTable,
    TableRow,
    derive_for_spec,
    table_to_render,
)
from tests.support.resources import make_doc, make_si

AUTO = {"tokensPerBatchSizeMode": "Auto"}
MANUAL_ROWS = [{"minBatchSize": 1, "maxBatchSize": 1024, "numSpeculativeTokens": 3}]


def test_auto_and_a_manual_table_are_refused_together() -> None:
    doc = make_doc(speculation={**AUTO, "tokensPerBatchSize": MANUAL_ROWS})
    with pytest.raises(ResourceError) as info:
        load_resource(doc)
    messages = [f"{f.field}: {f.message}" for f in info.value.findings]
    assert any(
        "spec.speculation" in m and "tokensPerBatchSizeMode" in m and "tokensPerBatchSize" in m
        for m in messages
    ), messages


@pytest.mark.parametrize("version", ["0.23.0", "0.15.0", "0.7.3"])
def test_auto_needs_a_vllm_with_the_table(version: str) -> None:
    patch = {"method": "ngram", "draft": None} if version == "0.7.3" else {}
    report = check_resource(make_si(vllm={"version": version}, speculation={**AUTO, **patch}))
    found = [f for f in report.errors if f.code == "KeyUnsupportedByVersion"]
    assert found and found[0].field == "spec.speculation.tokensPerBatchSizeMode"
    assert "vLLM >= 0.24.0" in found[0].message and "Manual" in found[0].message


def test_auto_is_valid_from_the_version_that_introduced_the_key() -> None:
    report = check_resource(make_si(vllm={"version": "0.24.0"}, speculation=AUTO))
    assert report.ok, [str(f) for f in report.errors]
    assert not [f for f in report.findings if "tokensPerBatchSizeMode" in f.field]


def test_auto_without_a_model_shape_is_refused() -> None:
    si = make_si(
        speculation={**AUTO, "draft": {"model": "acme/tiny-draft", "parameters": "1B", "tokenizer": "llama3"}}
    )
    found = [f for f in check_resource(si).errors if f.code == "SpeculationTableUnderivable"]
    assert found and found[0].field == "spec.speculation.tokensPerBatchSizeMode"
    assert "architecture" in found[0].message


def test_auto_warns_when_drafting_never_pays_at_the_prior() -> None:
    # An 8B draft for an 8B target: each draft pass costs a whole target step.
    si = make_si(
        target={"model": "meta-llama/Llama-3.1-8B-Instruct", "quantization": "none", "tensorParallelSize": 2},
        speculation=AUTO,
    )
    assert [f.code for f in check_resource(si).warnings if f.field.endswith("tokensPerBatchSizeMode")] == [
        "SpeculationNeverPays"
    ]


def test_auto_renders_the_derived_table_into_the_speculative_pool_only() -> None:
    si = make_si(speculation=AUTO)
    derived = derive_for_spec(si.spec)
    assert derived is not None
    spec_args = vllm_args(si.spec, Pool.SPECULATIVE)
    cfg = json.loads(spec_args[spec_args.index("--speculative-config") + 1])
    assert cfg[VLLM_TABLE_KEY] == derived.vllm_rows()
    assert cfg[VLLM_TABLE_KEY][0][:1] == [1] and cfg["num_speculative_tokens"] == 5
    assert speculation_rows_in(spec_args) == derived.vllm_rows()
    assert speculation_rows_in(vllm_args(si.spec, Pool.BASELINE)) is None
    # Manual without rows renders no table at all.
    assert speculation_rows_in(vllm_args(make_si().spec, Pool.SPECULATIVE)) is None


def test_auto_renders_the_table_the_operator_passes() -> None:
    si = make_si(speculation=AUTO)
    live = [[1, 8, 3], [9, 1024, 0]]
    spec_dep, base_dep, _ = render_all(si, derived=live)
    args = spec_dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert speculation_rows_in(args) == live
    assert speculation_rows_in(base_dep["spec"]["template"]["spec"]["containers"][0]["args"]) is None
    assert render_all(si) == render_all(si)  # the default table is deterministic


def test_auto_table_is_dropped_for_versions_without_the_key() -> None:
    si = make_si(speculation=AUTO)
    assert VLLM_TABLE_KEY not in speculative_config(si.spec, parse_version("0.23.0"))
    assert VLLM_TABLE_KEY in speculative_config(si.spec, parse_version("0.24.0"))


def test_a_manual_table_wins_over_a_passed_one() -> None:
    si = make_si(speculation={"tokensPerBatchSize": MANUAL_ROWS})
    assert speculation_rows_in(vllm_args(si.spec, Pool.SPECULATIVE, [[1, 8, 1]])) == [[1, 1024, 3]]


def _table(*rows: tuple[int, int, int]) -> SpeculationTable:
    return SpeculationTable(tuple(TableRow(lo, hi, k, 1.0, 1.0) for lo, hi, k in rows), (), ())


RUNNING = [[1, 20, 5], [21, 100, 2], [101, 1024, 0]]


@pytest.mark.parametrize(
    ("running", "derived", "pods", "rendered"),
    [
        # Speculative pods serve: the running table stays, however different the new one is.
        (RUNNING, _table((1, 1024, 0)), 2, RUNNING),
        # No speculative pod (Baseline, or a switch or probe about to start them): a material change
        # is rendered, a small one is not (noise: the Deployment would churn for nothing).
        (RUNNING, _table((1, 1024, 0)), 0, [[1, 1024, 0]]),
        (RUNNING, _table((1, 20, 4), (21, 100, 2), (101, 1024, 0)), 0, RUNNING),
        # Nothing rendered yet: the derived table.
        (None, _table((1, 4, 3), (5, 1024, 0)), 2, [[1, 4, 3], [5, 1024, 0]]),
    ],
)
def test_table_to_render_changes_only_at_free_moments(
    running: list[list[int]] | None, derived: SpeculationTable, pods: int, rendered: list[list[int]]
) -> None:
    assert table_to_render(running, derived, pods) == rendered

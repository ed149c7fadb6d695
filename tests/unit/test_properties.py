"""Property tests: every resource the models accept renders valid manifests, and the
--speculative-config value is JSON holding only keys the declared vLLM version accepts."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from specops.api.v1alpha1 import SpeculativeInference
from specops.checks.validation import check_resource
from specops.render.manifests import Pool, PoolSplit, RenderError, render_all, vllm_args
from specops.vllm.dialect import (
    Dialect,
    dialect_for,
    flag_allowed,
    parse_version,
    speculative_config_keys,
)
from tests.support.k8s import K8S_VERSION
from tests.support.resources import make_si
from tests.support.strategies import resources


def _accept(doc: dict[str, Any]) -> SpeculativeInference:
    try:
        return SpeculativeInference.model_validate(doc)
    except ValidationError:
        assume(False)
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=resources(), spec_replicas=st.integers(0, 4), base_replicas=st.integers(0, 4))
def test_accepted_resources_render_valid_manifests(
    doc: dict[str, Any], spec_replicas: int, base_replicas: int
) -> None:
    si = _accept(doc)
    try:
        manifests = render_all(si, PoolSplit(spec_replicas, base_replicas))
    except RenderError:
        # Only resources that the checks refuse may be unrenderable.
        assert not check_resource(si).ok
        return
    for manifest in manifests:
        # Raises kubernetes_validate.ValidationError (naming the path) on any schema violation.
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@settings(max_examples=300, deadline=None)
@given(doc=resources())
def test_rendered_flags_and_keys_are_accepted_by_the_declared_version(doc: dict[str, Any]) -> None:
    si = _accept(doc)
    report = check_resource(si)
    if not report.ok:
        # Refused resources are never rendered by the operator; each refusal names a field.
        assert all(f.field.startswith(("spec.", "metadata.")) and f.message for f in report.errors)
        return
    version = parse_version(si.spec.vllm.version)
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    rendered = [a for a in args if a.startswith("--") and a not in si.spec.vllm.extra_args]
    assert all(flag_allowed(version, f) for f in rendered), rendered
    if dialect_for(version) is Dialect.CURRENT:
        cfg = json.loads(args[args.index("--speculative-config") + 1])
        assert isinstance(cfg, dict)
        assert set(cfg) <= speculative_config_keys(version)
        assert cfg["num_speculative_tokens"] == si.spec.speculation.num_speculative_tokens
    else:
        assert "--speculative-config" not in args


@pytest.mark.parametrize("hostile", ['a"b', "x\\ny", "{{.}}", "'; rm -rf /", "model with spaces"])
def test_hostile_model_names_stay_one_argument(hostile: str) -> None:
    si = make_si(speculation={"draft": {"model": hostile, "parameters": "8B", "tokenizer": "llama3"}})
    args = vllm_args(si.spec, Pool.SPECULATIVE)
    cfg = json.loads(args[args.index("--speculative-config") + 1])
    assert cfg["model"] == hostile

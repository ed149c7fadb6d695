"""spec.speculation.draftSampling: vLLM's draft_sample_method, rendered only where vLLM has it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from specops.api.v1alpha1 import DRAFT_SAMPLE_METHOD_KEY, SpeculativeInference
from specops.checks.validation import check_resource
from specops.render.manifests import speculative_config
from specops.vllm.dialect import CONFIG_KEY_GATES, parse_version
from tests.support.resources import deep_merge, make_doc, make_si

DRAFT = {
    "method": "draft_model",
    "numSpeculativeTokens": 5,
    "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
}


@pytest.mark.parametrize(("value", "rendered"), [("Probabilistic", "probabilistic"), ("Greedy", "greedy")])
def test_rendered_where_vllm_has_it(value: str, rendered: str) -> None:
    si = make_si(speculation={**DRAFT, "draftSampling": value})
    assert speculative_config(si.spec, parse_version("0.32.0"))[DRAFT_SAMPLE_METHOD_KEY] == rendered
    assert check_resource(si).ok


def test_unset_renders_nothing_and_vllm_keeps_its_default() -> None:
    assert DRAFT_SAMPLE_METHOD_KEY not in speculative_config(make_si().spec, parse_version("0.32.0"))


def test_refused_before_the_release_that_has_it() -> None:
    si = make_si(vllm={"version": "0.24.0"}, speculation={**DRAFT, "draftSampling": "Probabilistic"})
    errors = check_resource(si).errors
    assert [(e.code, e.field) for e in errors] == [
        ("KeyUnsupportedByVersion", "spec.speculation.draftSampling")
    ]
    assert ">= 0.32.0" in str(errors[0])
    # Never rendered there, whatever admission said.
    assert DRAFT_SAMPLE_METHOD_KEY not in speculative_config(si.spec, parse_version("0.24.0"))
    assert not CONFIG_KEY_GATES[DRAFT_SAMPLE_METHOD_KEY].allows(parse_version("0.15.1"))


def test_a_lookup_method_has_no_distribution_to_sample() -> None:
    doc = deep_merge(make_doc(), {"spec": {"speculation": {"method": "ngram", "draft": None,
                                                           "draftSampling": "Probabilistic"}}})  # fmt: skip
    with pytest.raises(ValidationError, match="draftSampling"):
        SpeculativeInference.model_validate(doc)

"""Rendered command lines against real vLLM's own argument parser.

Needs the optional extra (`pip install -e '.[vllm]'`): several GB with a CUDA torch, so CI does not
install it and these tests are skipped there (the README says so).  When vLLM is importable, the
resources are rendered for the installed version and parsed by vLLM's parser: an unknown or
removed flag makes argparse exit, and every --speculative-config key must be a SpeculativeConfig
field.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from specops.checks.validation import check_resource
from specops.render.manifests import Pool, vllm_args
from specops.vllm.dialect import parse_version
from tests.support.resources import make_si

vllm = pytest.importorskip("vllm", reason="real vLLM not installed (optional extra 'vllm')")
pytestmark = pytest.mark.vllm


def _parser() -> Any:
    from vllm.entrypoints.openai.cli_args import make_arg_parser

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older releases
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef,attr-defined]
    return make_arg_parser(FlexibleArgumentParser())


VERSION = str(vllm.__version__).split("+")[0]
CASES: list[dict[str, Any]] = [
    {},
    {
        "speculation": {
            "method": "ngram",
            "draft": None,
            "ngram": {"promptLookupMin": 2, "promptLookupMax": 4},
        }
    },
    {
        "speculation": {
            "method": "eagle3",
            "draft": {"model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"},
        }
    },
    {"target": {"kvCacheDtype": "fp8", "dtype": "bfloat16", "quantization": "fp8"}},
]


@pytest.mark.parametrize("patch", CASES)
@pytest.mark.parametrize("pool", list(Pool))
def test_vllm_parses_rendered_args(patch: dict[str, Any], pool: Pool) -> None:
    si = make_si(vllm={"version": VERSION}, **patch)
    if not check_resource(si).ok:
        pytest.skip(f"not valid for vLLM {VERSION}")
    args = vllm_args(si.spec, pool)
    ns = _parser().parse_args(args)  # SystemExit on any unknown or removed flag
    assert ns.model == si.spec.target.model
    if "--speculative-config" in args:
        from vllm.config import SpeculativeConfig

        cfg = json.loads(args[args.index("--speculative-config") + 1])
        fields = {f.name for f in dataclasses.fields(SpeculativeConfig)}
        assert set(cfg) <= fields, set(cfg) - fields
    assert parse_version(VERSION)

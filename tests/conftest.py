"""Fixtures every suite may use.  Helpers (documents, paths, the fake API server) are in
tests/support: test modules import them from there, never from a conftest."""

from __future__ import annotations

import pytest

from specops.api.v1alpha1 import SpeculativeInference
from tests.support.paths import VALID_EXAMPLES
from tests.support.resources import load_example


@pytest.fixture(params=VALID_EXAMPLES)
def example(request: pytest.FixtureRequest) -> SpeculativeInference:
    """Each shipped example that is meant to be valid, loaded."""
    return load_example(request.param)

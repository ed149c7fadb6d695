"""Packaging tests: the Helm chart, the kustomize manifests, the image recipe and the monitoring files.

The cluster tests reuse the integration suite's session fixtures (the tests.cluster plugin).
Tools are looked up, never skipped: a missing helm, promtool, hadolint or kubectl fails with how to
install it.  Only fixtures live here; the helpers (tools, paths) are in tests/support.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.support.paths import CHART
from tests.support.tools import helm_bin, load_docs, run


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Helm's cache, config and data under a temp dir: the tests never touch the user's ~/.config."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


@pytest.fixture(scope="session")
def helm(helm_env: dict[str, str]) -> Any:
    exe = helm_bin()

    def call(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([exe, *args], check=check, env=helm_env)

    return call


@pytest.fixture(scope="session")
def render(helm: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``helm template`` of the chart with some values: its documents (CRDs included)."""
    workdir = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def template(
        values: dict[str, Any] | None = None, namespace: str = "specops-system"
    ) -> list[dict[str, Any]]:
        path = workdir / f"values-{next(counter)}.yaml"
        path.write_text(json.dumps(values or {}))
        out = helm(
            "template", "specops", str(CHART), "--namespace", namespace, "--include-crds", "-f", str(path)
        )
        return load_docs(out.stdout)

    return template

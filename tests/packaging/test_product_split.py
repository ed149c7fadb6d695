"""The product ships without its test kit: the wheel the image installs holds only ``specops``, the
Dockerfile copies and installs nothing of ``testkit/``, and without the kit ``specops demo`` and
``specops simulate`` say how to get it instead of failing obscurely."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath

import pytest

from tests.support.paths import ROOT
from tests.support.tools import dockerfile_stages

# Module path components that belong to the kit, never to the product.
KIT_NAMES = {"specops_testkit", "emulator", "testbed", "sim"}
# What a checkout holds besides sources; left out of the copy the wheel is built from.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".local", "__pycache__", "*.egg-info", "build", "dist", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", ".hypothesis", "node_modules",
)  # fmt: skip


def build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel --no-deps .`` in ``source``, as the Dockerfile's builder stage runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
         "--wheel-dir", str(out), "."],
        cwd=source, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("specops-*.whl")
    return wheel


def docker_context(dest: Path) -> Path:
    """The image's build context: only what .dockerignore lets through (``*`` then ``!path``)."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for line in lines:
        if line.startswith("!"):
            path = line[1:].rstrip("/")
            src = ROOT / path
            if src.is_dir():
                shutil.copytree(src, dest / path, ignore=NOT_SOURCES)
            else:
                shutil.copy2(src, dest / path)
    return dest


@pytest.fixture(scope="module")
def checkout_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from the whole checkout (testkit/ beside operator/), in a copy: the build
    writes build/ and egg-info next to the sources, and other work goes on in this tree."""
    src = tmp_path_factory.mktemp("checkout") / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    assert (src / "testkit" / "specops_testkit").is_dir(), (
        "the copy must hold the kit for the test to mean anything"
    )
    with zipfile.ZipFile(build_wheel(src, tmp_path_factory.mktemp("dist"))) as wheel:
        yield wheel


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    src = docker_context(tmp_path_factory.mktemp("context"))
    with zipfile.ZipFile(build_wheel(src, tmp_path_factory.mktemp("dist"))) as wheel:
        yield wheel


def kit_modules(names: list[str]) -> list[str]:
    return [n for n in names if KIT_NAMES & set(PurePosixPath(n).with_suffix("").parts)]


@pytest.mark.parametrize("which", ["checkout_wheel", "image_wheel"])
def test_wheel_holds_the_product_and_nothing_of_the_kit(which: str, request: pytest.FixtureRequest) -> None:
    wheel: zipfile.ZipFile = request.getfixturevalue(which)
    names = wheel.namelist()
    assert kit_modules(names) == []
    tops = {PurePosixPath(n).parts[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"specops"}
    # Not vacuous: the product's layers are there.
    for module in ("cli.py", "vllm/budget.py", "controller/main.py", "api/v1alpha1.py", "py.typed"):
        assert f"specops/{module}" in names, module
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["specops"]
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry).decode()
    assert "specops = specops.cli:main" in text
    assert "specops.commands" not in text and "specops_testkit" not in text


def test_kit_check_sees_a_kit_module() -> None:
    """The filter the wheel test relies on does catch kit paths."""
    assert kit_modules(["specops_testkit/emulator/args.py", "specops/testbed/x.py", "specops/sim.py"]) == [
        "specops_testkit/emulator/args.py", "specops/testbed/x.py", "specops/sim.py",
    ]  # fmt: skip
    assert kit_modules(["specops/vllm/budget.py", "specops/simulation_notes.txt"]) == []


def test_dockerfile_copies_and_installs_only_the_product() -> None:
    copied: set[str] = set()
    installs: list[str] = []
    for stage in dockerfile_stages():
        for instr in stage:
            if instr.startswith("COPY ") and "--from=" not in instr:
                copied.update(instr.split()[1:-1])
            if instr.startswith("RUN "):
                installs += [part for part in instr.split("&&") if " install " in part]
    assert copied == {"requirements.lock", "pyproject.toml", "README.md", "operator"}
    assert installs, "no pip install found: the parsing above no longer matches the Dockerfile"
    for part in installs:
        assert "-r requirements.lock" in part or "/dist/specops-*.whl" in part, part
    for name in ("Dockerfile", ".dockerignore"):
        for line in (ROOT / name).read_text().splitlines():
            if not line.lstrip().startswith("#"):
                assert "testkit" not in line, f"{name}: {line}"


def test_dockerignore_lets_no_kit_path_through() -> None:
    ignore = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ignore[0] == "*"
    for line in ignore:
        if line.startswith("!"):
            assert "testkit" not in line and "tests" not in line and "benchmarks" not in line, line


# ----------------------------------------------------------------------- without the kit installed

# Runs the CLI as if the kit were not installed: no entry point in the `specops.commands` group.
WITHOUT_KIT = """
import importlib.metadata as md
import sys

real = md.entry_points

def entry_points(**params):
    if params.get("group") == "specops.commands":
        return md.EntryPoints([])
    return real(**params)

md.entry_points = entry_points
from specops.cli import main

sys.argv = ["specops", *sys.argv[1:]]
main()
"""


def run_without_kit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_KIT, *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [["simulate"], ["simulate", "scenarios/ramp.yaml", "--scale", "0.1"], ["demo", "--keep"]],
    ids=["simulate", "simulate-with-args", "demo-keep"],
)
def test_kit_commands_without_the_kit_say_how_to_install_it(argv: list[str]) -> None:
    out = run_without_kit(*argv)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"`specops {argv[0]}` comes with the SpecOps test kit, which is not installed" in out.stderr
    assert "pip install -e ./testkit" in out.stderr and "hack/setup-python.sh" in out.stderr
    assert "Traceback" not in out.stderr


def test_product_commands_work_without_the_kit() -> None:
    out = run_without_kit("version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_the_kit_registers_its_commands() -> None:
    """Where the kit is installed (this venv), the CLI gets the kit's own commands."""
    found = {ep.name: ep.value for ep in entry_points(group="specops.commands")}
    assert found == {"demo": "specops_testkit.commands:demo", "simulate": "specops_testkit.commands:simulate"}
    out = subprocess.run(
        [sys.executable, "-m", "specops.cli", "simulate", "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--scale" in out.stdout

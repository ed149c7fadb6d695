"""Install, into the running vLLM environment, only the packages the probe's imports need.

Run by that environment's own python (stdlib only).  The vLLM wheel was installed without its
dependencies; this loop runs ``probe.py imports`` in a fresh process, reads which module or
distribution is missing, installs it (with the version range vLLM's own metadata asks for) and
tries again.  Each package is first installed with its dependencies, but with torch pinned to the
CPU build already installed and triton forbidden, so nothing drags in CUDA; when that cannot
resolve, it is installed alone and the loop finds what it still lacks.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = Path(__file__).with_name("probe.py")
MAX_ROUNDS = 80

# Import names whose distribution is named differently.
DISTRIBUTION_OF: dict[str, str] = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "zmq": "pyzmq",
    "cpuinfo": "py-cpuinfo",
    "google": "protobuf",
    "sklearn": "scikit-learn",
    "pythonjsonlogger": "python-json-logger",
    "lmformatenforcer": "lm-format-enforcer",
    "multipart": "python-multipart",
    "dotenv": "python-dotenv",
    "jwt": "pyjwt",
    "attr": "attrs",
    "dateutil": "python-dateutil",
    "openai_harmony": "openai-harmony",
    "mcp": "mcp",
    "_cffi_backend": "cffi",
    "importlib_metadata": "importlib-metadata",
}
# Never installed: GPU toolchains (a module needing one is this machine's limit, which the probe
# reports, not something to download).
FORBIDDEN = ("triton", "nvidia-", "cupy", "flashinfer", "xformers", "vllm-flash-attn")
# Packages whose own dependencies are heavy (torch, triton, CUDA): always installed alone.
ALONE = {"xgrammar", "outlines", "compressed-tensors", "torchvision", "torchaudio", "ray", "numba"}

MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
MISSING_DIST = re.compile(r"The '([\w.\-]+)[^']*' distribution was not found")
INSTALL_HINT = re.compile(r"pip install ([A-Za-z0-9_.\-]+)")  # "... with: pip install python-multipart"
NEEDS_VERSION = re.compile(r"(\S+?)([<>=!~].*)? is required for a normal functioning of this module")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _vllm_requirement(dist: str) -> str:
    """vLLM's own requirement line for ``dist`` (its version range), or the bare name.

    A module named like the end of a requirement (tvm_ffi -> apache-tvm-ffi) takes that one.
    """
    lines = []
    for req in md.requires("vllm") or []:
        head, _, marker = req.partition(";")
        if "extra ==" in marker:
            continue
        name = re.split(r"[\s\[<>=!~(]", head.strip(), maxsplit=1)[0]
        head = re.sub(r"\[.*?\]", "", head)  # extras would pull more than the import needs
        lines.append((_norm(name), head.strip().replace(" ", "").replace("(", "").replace(")", "")))
    for name, line in lines:
        if name == _norm(dist):
            return line
    for name, line in lines:
        if name.endswith("-" + _norm(dist)):
            return line
    return dist


def _pip(args: list[str]) -> bool:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    print("   pip install", " ".join(args), flush=True)
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0:  # pip's notes on vLLM's uninstalled dependencies are expected noise
        print("\n".join(run.stderr.strip().splitlines()[-3:]), flush=True)
    return run.returncode == 0


def install(requirement: str, pins: Path) -> None:
    name = _norm(re.split(r"[<>=!~]", requirement, maxsplit=1)[0])
    if name not in ALONE and _pip(["--constraint", str(pins), requirement]):
        return
    if not _pip(["--no-deps", requirement]):
        sys.exit(f"bootstrap: could not install {requirement}")


def missing_requirement(stderr: str) -> str | None:
    """The requirement to install for the last import failure in ``stderr``, if it names one."""
    for pattern in (MISSING_DIST, NEEDS_VERSION):
        found = pattern.findall(stderr)
        if found:
            last = found[-1]
            dist = last[0] if isinstance(last, tuple) else last
            return _vllm_requirement(dist)
    found = MISSING_MODULE.findall(stderr)
    if found:
        top = found[-1].split(".")[0]
        if top in ("vllm", "torch"):
            return None
        return _vllm_requirement(DISTRIBUTION_OF.get(top, top))
    hint = INSTALL_HINT.findall(stderr)
    return _vllm_requirement(hint[-1]) if hint else None


def main() -> int:
    torch_version = md.version("torch")
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "pins.txt"
        # torch stays the CPU build; triton cannot be installed (the constraint is unsatisfiable).
        pins.write_text(f"torch=={torch_version}\ntriton<0\n")
        tried: set[str] = set()
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
        for _ in range(MAX_ROUNDS):
            run = subprocess.run(
                [sys.executable, str(PROBE), "imports"], capture_output=True, text=True, env=env, check=False
            )
            if run.returncode == 0:
                print("bootstrap: every import the probe needs works", flush=True)
                return 0
            requirement = missing_requirement(run.stderr)
            if requirement is None or requirement in tried:
                sys.stderr.write(run.stderr[-4000:])
                print(f"bootstrap: stuck ({requirement or 'no missing package named'})", file=sys.stderr)
                return 1
            if _norm(requirement).startswith(FORBIDDEN):
                sys.stderr.write(run.stderr[-2000:])
                print(f"bootstrap: the probe's imports need {requirement}, a GPU package", file=sys.stderr)
                return 1
            tried.add(requirement)
            install(requirement, pins)
    print("bootstrap: gave up after {MAX_ROUNDS} rounds", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

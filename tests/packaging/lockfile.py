"""The runtime dependency closure of the installed ``specops`` distribution, as pins.

``requirements.lock`` is this module's output, run with the project's virtualenv (hack/lib.sh:
``$SPECOPS_CACHE/venvs/<checkout>``, set up by hack/setup-python.sh):

    "$VENV"/bin/python -m tests.packaging.lockfile > requirements.lock

Only the package's own requirements are followed (no extras: test tools, plots and vLLM stay out),
with markers evaluated for this interpreter, which is the image's (CPython 3.11 on Linux).
"""

from __future__ import annotations

import importlib.metadata as md
import sys

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

HEADER = """\
# Runtime dependencies of specops (no extras), pinned at the versions the project's venv runs
# (CPython 3.11, Linux): the Dockerfile installs exactly these, with --no-deps, then `pip check`.
# Generated with the project's virtualenv (hack/lib.sh); do not edit by hand:
#   "$VENV"/bin/python -m tests.packaging.lockfile > requirements.lock
"""


def runtime_closure(root: str = "specops") -> dict[NormalizedName, str]:
    """Every distribution ``root`` needs at run time, with its installed version."""
    found: dict[NormalizedName, str] = {}
    visited: set[tuple[NormalizedName, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in visited:
            continue
        visited.add((key, extras))
        dist = md.distribution(name)
        if key != canonicalize_name(root):
            found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            environments = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(found.items()))


def render_lock(pins: dict[NormalizedName, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())


def parse_lock(text: str) -> dict[str, str]:
    """``name==version`` lines (comments and blank lines skipped); raises ValueError otherwise."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        if not sep or not name or not version or any(c in line for c in " ;[<>~!,"):
            raise ValueError(f"line {number}: {raw!r} is not an exact name==version pin")
        if name in pins:
            raise ValueError(f"line {number}: {name} pinned twice")
        pins[name] = version
    return pins


if __name__ == "__main__":
    sys.stdout.write(render_lock(runtime_closure()))

"""References between the repository's files and docs/domain.md resolve.

Domain facts live in docs/domain.md; code and docs cite it by anchor (``docs/domain.md#memory``, or
``domain.md#memory`` inside docs/) or by number (``docs/domain.md, section 5``).  These tests fail
when a file points outside the repository for them, or cites a section or anchor that is not there.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOMAIN_DOC = DOCS / "domain.md"

# This file holds broken references on purpose (the checker's own tests), so it is not scanned; the
# forbidden names are built from pieces so that a grep of the tree does not find them here either.
SELF = Path(__file__).resolve()
# The bare upper-case word counts too ("DOMAIN's figures"); SUBDOMAIN and the like do not.
_OUTSIDE = r"\b" + "DOMAIN" + r"\b"
_SHARED = "shared" + r"\b"
FORBIDDEN = re.compile(rf"{_OUTSIDE}|\.\./{_SHARED}|/work/{_SHARED}")
# docs/NAME.md#anchor anywhere; inside docs/ also relative links (NAME.md#anchor, ../NAME.md#anchor).
DOC_ANCHOR = re.compile(r"(?<![\w./-])((?:\.\./)*)(docs/)?([\w-]+)\.md#([\w-]+)")
# "domain.md, section 4", "domain.md sections 3, 4 and 7", across a wrapped comment line.
DOMAIN_SECTIONS = re.compile(r"domain\.md,?[\s#*/]*sections?[\s#*/]+(\d+(?:(?:,\s*|\s+and\s+)\d+)*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED = re.compile(r"^(\d+)\.\s")
EXPLICIT_ID = re.compile(r"""<a\s+(?:id|name)=["']([\w-]+)["']\s*>\s*</a>""")


def repository_files() -> list[Path]:
    """Tracked files plus new ones not ignored (so a file is checked before its first commit)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    paths = {ROOT / name for name in out.decode().split("\0") if name}
    return sorted(p for p in paths if p.is_file() and p.resolve() != SELF)


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def changelog_history_start(lines: list[str]) -> int:
    """Index of the first released section of CHANGELOG.md; lines from there on are history."""
    for i, line in enumerate(lines):
        if line.startswith("## ") and "unreleased" not in line.lower():
            return i
    return len(lines)


def forbidden_mentions(files: list[Path]) -> Iterator[str]:
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        rel = path.relative_to(ROOT).as_posix()
        lines = text.splitlines()
        end = changelog_history_start(lines) if rel == "CHANGELOG.md" else len(lines)
        for number, line in enumerate(lines[:end], start=1):
            if FORBIDDEN.search(line):
                yield f"{rel}:{number}: {line.strip()}"


def github_slug(title: str) -> str:
    plain = EXPLICIT_ID.sub("", title).strip().lower()
    plain = re.sub(r"[^\w\- ]", "", plain)
    return plain.replace(" ", "-")


def heading_anchors(markdown: str) -> tuple[set[str], set[int]]:
    """Anchors a link can target (explicit ids on or right above a heading, and GitHub's slugs) and
    the numbers of numbered headings ("## 5. Memory")."""
    anchors: set[str] = set()
    numbers: set[int] = set()
    seen: dict[str, int] = {}
    previous = ""
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else HEADING.match(line)
        if m:
            title = m.group(2)
            anchors.update(EXPLICIT_ID.findall(title))
            anchors.update(EXPLICIT_ID.findall(previous))
            slug = github_slug(title)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
            n = NUMBERED.match(EXPLICIT_ID.sub("", title).strip())
            if n:
                numbers.add(int(n.group(1)))
        if line.strip():
            previous = line
    return anchors, numbers


class HeadingIndex:
    """Anchors and section numbers of docs/*.md, read once per file."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[set[str], set[int]]] = {}

    def of(self, doc: Path) -> tuple[set[str], set[int]]:
        if doc not in self._cache:
            self._cache[doc] = heading_anchors(doc.read_text(encoding="utf-8"))
        return self._cache[doc]


def problems_in(text: str, where: str, base: Path | None, index: HeadingIndex) -> Iterator[str]:
    """Every reference in ``text`` that does not resolve, as ``where:line: reference: why``.

    ``base`` is the directory relative links start from: the file's own, for files under docs/;
    None elsewhere, where only ``docs/NAME.md#anchor`` counts as a reference."""
    for m in DOC_ANCHOR.finditer(text):
        ups, docs_prefix, name, anchor = m.groups()
        if docs_prefix:
            doc = DOCS / f"{name}.md"
        elif base is not None:
            doc = (base / ups / f"{name}.md").resolve()
        else:
            continue  # NAME.md#x outside docs/ is not a reference into docs/
        line = text.count("\n", 0, m.start()) + 1
        shown = doc.relative_to(ROOT).as_posix() if doc.is_relative_to(ROOT) else str(doc)
        if not doc.is_file():
            yield f"{where}:{line}: {m.group(0)}: {shown} does not exist"
        elif anchor not in index.of(doc)[0]:
            yield f"{where}:{line}: {m.group(0)}: no heading with anchor #{anchor} in {shown}"
    for m in DOMAIN_SECTIONS.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        for number in map(int, re.findall(r"\d+", m.group(1))):
            if number not in index.of(DOMAIN_DOC)[1]:
                cited = " ".join(m.group(0).split())
                yield f"{where}:{line}: {cited}: docs/domain.md has no section {number}"


def unresolved_references(files: list[Path]) -> Iterator[str]:
    index = HeadingIndex()
    for path in files:
        text = text_of(path)
        if text is not None:
            base = path.parent if path.is_relative_to(DOCS) else None
            yield from problems_in(text, path.relative_to(ROOT).as_posix(), base, index)


def test_no_file_points_outside_the_repository_for_domain_facts() -> None:
    found = list(forbidden_mentions(repository_files()))
    assert not found, "cite docs/domain.md (a section or #anchor) instead:\n" + "\n".join(found)


def test_domain_references_resolve_to_headings() -> None:
    broken = list(unresolved_references(repository_files()))
    assert not broken, "references to headings that do not exist:\n" + "\n".join(broken)


def test_domain_sections_are_numbered_in_order_and_each_has_an_anchor() -> None:
    lines = DOMAIN_DOC.read_text(encoding="utf-8").splitlines()
    sections = [(i, line) for i, line in enumerate(lines) if line.startswith("## ")]
    numbers = [int(m.group(1)) for _, line in sections if (m := NUMBERED.match(line[3:]))]
    assert numbers == list(range(1, len(sections) + 1)), f"sections numbered {numbers}"
    for i, line in sections:
        assert EXPLICIT_ID.search(lines[i - 1]), f"no <a id> anchor right above {line!r}"


@pytest.mark.parametrize(
    ("text", "base", "broken"),
    [
        ("see docs/domain.md#nowhere", None, 1),
        ("see docs/domain.md#memory", None, 0),
        ("see [memory](domain.md#memory)", DOCS, 0),
        ("see [memory](domain.md#memroy)", DOCS, 1),
        ("see [memory](../domain.md#memory)", DOCS / "benchmarks", 0),
        ("see [memory](../domain.md#memroy)", DOCS / "benchmarks", 1),
        ("docs/domain.md, section 99", None, 1),
        ("docs/domain.md,\n    # sections 3, 4 and 7: thresholds", None, 0),
        ("docs/domain.md sections 4 and 42", None, 1),
        ("docs/missing.md#memory", None, 1),
    ],
)
def test_the_checker_sees_each_form_of_reference(text: str, base: Path | None, broken: int) -> None:
    # Guards the checker itself: a form of reference it cannot see would pass vacuously.
    assert len(list(problems_in(text, "probe", base, HeadingIndex()))) == broken


@pytest.mark.parametrize(
    ("text", "forbidden"),
    [
        ("DOMAIN" + ".md section 4", True),
        ("as " + "DOMAIN" + "'s figures say", True),
        ("cp .." + "/shared" + "/data .", True),
        ("/work/" + "shared" + "/x", True),
        ("_DNS_SUB" + "DOMAIN = re.compile(...)", False),
        ("docs/domain.md#memory", False),
        ("labels shared by every template", False),
    ],
)
def test_the_checker_sees_each_forbidden_form(text: str, forbidden: bool) -> None:
    assert bool(FORBIDDEN.search(text)) is forbidden

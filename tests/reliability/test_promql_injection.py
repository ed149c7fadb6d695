"""PromQL injection, on the built strings: whatever a namespace or a window holds, a query keeps
its shape (the same tokens outside string literals as for a harmless value), each literal decodes
back to exactly the value, and as a regex matches that value and nothing else.

tests/integration/test_security.py asks the real Prometheus the same questions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specops.metrics.promql import build_queries, escape_string, promql_duration, selector
from tests.support.hostile import HOSTILE_LABEL_VALUES

_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def go_unquote(body: str) -> str:
    """The content of a PromQL double-quoted string as Prometheus reads it (Go's strconv rules)."""
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\n":
            raise ValueError("raw newline in a string")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        elif nxt in "01234567":
            out.append(chr(int(body[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return "".join(out)


def split_literals(query: str) -> tuple[str, list[str]]:
    """(the query with every string literal emptied, the literals' decoded contents)."""
    skeleton, literals, i = [], [], 0
    while i < len(query):
        c = query[i]
        if c != '"':
            skeleton.append(c)
            i += 1
            continue
        j = i + 1
        while j < len(query) and query[j] != '"':
            j += 2 if query[j] == "\\" else 1
        if j >= len(query):
            raise ValueError(f"unterminated string in {query!r}")
        literals.append(go_unquote(query[i + 1 : j]))
        skeleton.append('""')
        i = j + 1
    return "".join(skeleton), literals


def test_split_literals_sees_an_unescaped_breakout() -> None:
    """The checker itself: a value spliced raw changes the skeleton or breaks the string (so the
    tests below can fail)."""
    benign = split_literals('{namespace=~"x"}')[0]
    assert split_literals('{namespace=~"a"} or vector(1) or {x="b"}')[0] != benign
    with pytest.raises(ValueError, match="unterminated"):
        split_literals('{namespace=~"' + '"} or vector(1) #' + '"}')
    with pytest.raises(ValueError, match="newline"):
        split_literals('{namespace=~"a\nb"}')  # a raw newline: Prometheus refuses it too


@pytest.mark.parametrize("value", HOSTILE_LABEL_VALUES)
def test_escape_string_round_trips(value: str) -> None:
    skeleton, literals = split_literals(f'x{{a="{escape_string(value)}"}}')
    assert skeleton == 'x{a=""}'
    assert literals == [value]


@pytest.mark.parametrize("value", HOSTILE_LABEL_VALUES)
def test_namespace_selector_keeps_its_shape_and_matches_only_the_value(value: str) -> None:
    skeleton, literals = split_literals(selector((value,)))
    assert skeleton == split_literals(selector(("serving",)))[0]
    pattern = literals[-1]
    assert re.fullmatch(pattern, value, re.DOTALL)
    for other in ("serving", "", value + "x", "x" + value, value[:-1], "default"):
        if other != value:
            assert not re.fullmatch(pattern, other, re.DOTALL), (value, other)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=3, unique=True),
    other=st.text(max_size=30),
)
def test_any_namespaces_match_only_themselves(values: list[str], other: str) -> None:
    for query in build_queries("5m", tuple(values)).values():
        skeleton, _ = split_literals(query)
        assert skeleton == split_literals(query.replace(selector(tuple(values)), selector(("ns",))))[0]
    pattern = split_literals(selector(tuple(values)))[1][-1]
    for value in values:
        assert re.fullmatch(pattern, value, re.DOTALL)
    assert bool(re.fullmatch(pattern, other, re.DOTALL)) == (other in values)


def test_every_query_has_the_same_shape_with_hostile_namespaces() -> None:
    benign = {s: split_literals(q)[0] for s, q in build_queries("5m", ("serving",)).items()}
    hostile = {s: split_literals(q) for s, q in build_queries("5m", tuple(HOSTILE_LABEL_VALUES)).items()}
    assert {s: h[0] for s, h in hostile.items()} == benign
    for _, literals in hostile.values():
        assert re.fullmatch(literals[-1], '"} or vector(1) #')  # inside its literal, matched as text
        assert not re.fullmatch(literals[-1], "serving")


@pytest.mark.parametrize(
    ("window", "expected"),
    [("5m", "5m"), ("30s", "30s"), ("1.5m", "90s"), ("0.5s", "500ms"), ("1h30m", "90m"), ("10m0s", "10m"),
     ("2h", "2h"), ("1.25s", "1250ms"), ("90s", "90s")],
)  # fmt: skip
def test_window_is_rebuilt_as_a_prometheus_duration(window: str, expected: str) -> None:
    assert promql_duration(window) == expected
    assert f"[{expected}]" in build_queries(window)[next(iter(build_queries(window)))]


@pytest.mark.parametrize(
    "window",
    ["0s", "0ms", "0.0001s", "5m] or vector(1) #", "5m\n", "1d", "", "5", "-5m", "5m)", "9" * 30 + "h"],
)
def test_window_that_is_no_prometheus_duration_is_refused(window: str) -> None:
    with pytest.raises(ValueError, match=r"duration|PromQL range"):
        build_queries(window)

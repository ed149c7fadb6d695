"""Drift: does a live object still hold what SpecOps applied?  (Pure.)

A reconcile applies an object only when it is missing or a field SpecOps sets has drifted, so a
reconcile that finds everything in place makes no write request at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def _quantity(value: str) -> Decimal | None:
    for suffix in sorted(_QUANTITY_SUFFIX, key=len, reverse=True):
        if suffix and value.endswith(suffix):
            number, scale = value[: -len(suffix)], _QUANTITY_SUFFIX[suffix]
            break
    else:
        number, scale = value, 1
    try:
        return Decimal(number) * Decimal(scale)
    except InvalidOperation:
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # The apiserver canonicalises quantities ("0.5" CPU is stored as "500m").
    if isinstance(want, str) and isinstance(have, str):
        a, b = _quantity(want), _quantity(have)
        return a is not None and a == b
    if isinstance(want, int | str) and isinstance(have, int | str):
        return str(want) == str(have)
    return False


def contains(want: Any, have: Any, owned: Mapping[str, Any] | None = None) -> bool:
    """Does the live object ``have`` hold every field of ``want`` with the same value?

    Fields the server adds (defaults, status, other managers' fields) are ignored; lists must match
    element by element, since SpecOps owns whole lists (args, env, volumes).  Except keyed lists
    (containers, env, volumes, ports) when ``owned``, SpecOps's own managed fields (``fieldsV1``),
    names their elements: an element another field manager added is that manager's, server-side
    apply keeps it, and it is not drift (else every reconcile would re-apply, forever).  An element
    SpecOps set once and no longer wants is.
    """
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            contains(v, have[k], _sub(owned, f"f:{k}")) if k in have else _is_zero(v) for k, v in want.items()
        )
    if isinstance(want, list):
        if not isinstance(have, list):
            return False
        keyed = _owned_elements(owned)
        if keyed:
            return _contains_keyed(want, have, keyed)
        return len(want) == len(have) and all(contains(w, h) for w, h in zip(want, have, strict=True))
    return _same_scalar(want, have)


def _sub(owned: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    sub = owned.get(key) if owned else None
    return sub if isinstance(sub, Mapping) else None


def _owned_elements(owned: Mapping[str, Any] | None) -> list[tuple[dict[str, Any], Mapping[str, Any]]]:
    """Keyed elements of a list in a fieldsV1 tree: ``k:{"name":"HF_HOME"}`` -> ({"name": ...}, subtree)."""
    out = []
    for key, sub in (owned or {}).items():
        if key.startswith("k:"):
            try:
                element_key = json.loads(key[2:])
            except ValueError:
                return []
            if not isinstance(element_key, dict) or not element_key:
                return []
            out.append((element_key, sub if isinstance(sub, Mapping) else {}))
    return out


def _contains_keyed(
    want: list[Any], have: list[Any], keyed: list[tuple[dict[str, Any], Mapping[str, Any]]]
) -> bool:
    fields = {f for element_key, _ in keyed for f in element_key}

    def key_of(item: Any) -> dict[str, Any]:
        return {f: item[f] for f in fields if f in item} if isinstance(item, Mapping) else {}

    matched: set[int] = set()
    for w in want:
        wk = key_of(w)
        index = next(
            (i for i, h in enumerate(have)
             if wk and all(f in key_of(h) and _same_scalar(v, key_of(h)[f]) for f, v in wk.items())),
            None,
        )  # fmt: skip
        if index is None:
            return False
        matched.add(index)
        sub = next((s for k, s in keyed if k == key_of(have[index])), None)
        if not contains(w, have[index], sub):
            return False
    # Unmatched live elements are fine when another manager owns them, drift when SpecOps does.
    return all(i in matched or key_of(h) not in [k for k, _ in keyed] for i, h in enumerate(have))


def _is_zero(value: Any) -> bool:
    """Kubernetes omits zero values (false, 0, "", empty lists and maps) when it stores an object."""
    return value is False or value == 0 or value in ("", [], {})


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None, manager: str = "specops") -> bool:
    """Apply when the object is missing or anything SpecOps (field manager ``manager``) sets has
    drifted; what other field managers added beside it is theirs."""
    if live is None:
        return True
    fields = {k: v for k, v in desired.items() if k in ("metadata", "spec")}
    meta = dict(fields.get("metadata", {}))
    meta.pop("namespace", None)
    fields["metadata"] = meta
    live_meta = live.get("metadata", {})
    owned = next(
        (m.get("fieldsV1") for m in live_meta.get("managedFields") or []
         if m.get("manager") == manager and m.get("operation") == "Apply" and not m.get("subresource")),
        None,
    )  # fmt: skip
    return not contains(fields, {"metadata": live_meta, "spec": live.get("spec", {})}, owned)

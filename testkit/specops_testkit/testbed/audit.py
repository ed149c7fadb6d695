"""Read the local control plane's audit log: who wrote what, when.

The audit policy (``controlplane.AUDIT_POLICY``) records every create, update, patch and delete
at level Metadata; the operator has its own identity (``OPERATOR_USER``), so its writes are the
entries under that user name.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from specops_testkit.testbed.controlplane import OPERATOR_USER

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def entry_time(entry: dict[str, Any]) -> float:
    """When the API server received the request (epoch seconds, sub-second precision)."""
    ts = str(entry.get("requestReceivedTimestamp", ""))
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def writes_by(
    audit_log: Path, user: str = OPERATOR_USER, since: float = 0.0, until: float | None = None
) -> list[dict[str, Any]]:
    """Write requests ``user`` made in [since, until) (epoch seconds), oldest first."""
    needle = f'"username":"{user}"'
    out = []
    with audit_log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if needle not in line:  # most entries are other users': skip them unparsed
                continue
            entry = json.loads(line)
            if entry.get("user", {}).get("username") != user or entry.get("verb") not in WRITE_VERBS:
                continue
            when = entry_time(entry)
            if when >= since and (until is None or when < until):
                out.append(entry)
    return out


def describe(entry: dict[str, Any]) -> str:
    """'patch speculativeinferences/status scale-00/scale-0001' for messages."""
    ref = entry.get("objectRef", {})
    what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    where = "/".join(p for p in (ref.get("namespace"), ref.get("name")) if p)
    return f"{entry.get('verb')} {what} {where}".rstrip()

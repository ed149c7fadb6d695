"""Errors and warnings about a resource, each naming the field to change and how."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: a CamelCase ``code``, the ``field`` path, and a message that says the fix."""

    severity: Severity
    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [{self.code}]"


class HasFindings:
    """Errors and warnings of anything that holds ``findings``."""

    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]


def error(code: str, field: str, message: str) -> Finding:
    return Finding(Severity.ERROR, code, field, message)


def warning(code: str, field: str, message: str) -> Finding:
    return Finding(Severity.WARNING, code, field, message)

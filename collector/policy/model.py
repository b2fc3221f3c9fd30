"""The policy domain: checks, packs and per-host results, as plain frozen data.

Nothing here knows about YAML, SQLite or the wire: the loader builds these objects, the
evaluator reads them, scoring and reports consume the results. ``Check.tables`` and
``Check.paths`` are derived from the check's SQL when it is loaded, so the collection plan and
the "facts missing -> unknown" rule never depend on an author keeping a list up to date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

__all__ = [
    "FRAMEWORKS",
    "Check",
    "CheckResult",
    "FrameworkRef",
    "Pack",
    "Severity",
    "Status",
]


class Severity(StrEnum):
    """How much a failing check matters; ``weight`` is its share of a score (DESIGN §6)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def weight(self) -> int:
        return _WEIGHTS[self]


_WEIGHTS = {Severity.LOW: 1, Severity.MEDIUM: 3, Severity.HIGH: 7, Severity.CRITICAL: 10}


class Status(StrEnum):
    """One check's outcome on one host.

    ``error`` (could not evaluate) and ``unknown`` (facts missing) are never folded into
    ``fail``: an auditor must be able to tell "non-compliant" from "not known".
    """

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    NOTAPPLICABLE = "notapplicable"
    UNKNOWN = "unknown"


#: Framework keys a check may map to, with the name reports print for them.
FRAMEWORKS: dict[str, str] = {
    "cis": "CIS Benchmark",
    "cis_controls_v8": "CIS Controls v8",
    "nist_800_53r5": "NIST SP 800-53 Rev. 5",
    "cjis": "CJIS Security Policy",
    "pci_dss_v4": "PCI DSS v4",
}


@dataclass(frozen=True)
class FrameworkRef:
    """One control of one framework that a check provides evidence for.

    ``control`` is the section or control id ("5.1.20", "AC-6(2)"); ``document`` names the
    edition when the framework key alone does not: the CIS benchmark's title, or the CJIS
    Security Policy version ("6.0"). It is "" for keys that carry their edition.
    """

    framework: str
    control: str
    document: str = ""


@dataclass(frozen=True)
class Check:
    """One compliance check: metadata for people, SQL for the evaluator.

    ``query`` passes with one row or more and fails with none (Fleet's rule). ``applies``
    (optional) makes the check not applicable when it returns no rows; ``evidence``
    (optional) yields rows shown to auditors. ``tables`` lists every fact table the three
    statements read; ``paths`` gives, for each path table the check reads, the path
    literals (or LIKE patterns) its SQL constrains that table to: filesystem paths for
    ``file``, ``hash`` and ``file_lines``, registry keys for ``registry``, and for keyed
    tables (``system_controls``) the row names, ``%`` meaning every row.
    ``source`` and ``line`` locate the check in its pack file.
    """

    id: str
    title: str
    description: str
    rationale: str
    remediation: str
    severity: Severity
    platforms: frozenset[str]
    frameworks: dict[str, tuple[FrameworkRef, ...]] = field(hash=False)
    query: str
    applies: str | None
    evidence: str | None
    tables: frozenset[str]
    paths: dict[str, tuple[str, ...]] = field(hash=False)
    pack: str
    source: str
    line: int
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Pack:
    """A versioned set of checks loaded from one ``pack.yaml``.

    ``sha256`` is the digest of the pack file's bytes, recorded with every report so an
    auditor can tell exactly which policy text produced a result.
    """

    name: str
    version: str
    description: str
    sha256: str
    path: Path
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one host.

    ``reason`` explains error, unknown and notapplicable results. It is "" for pass and
    fail, except when the evidence query itself failed, which it then reports (the verdict
    stands). ``evidence`` holds up to 50 rows of the evidence query, values as strings.
    """

    check_id: str
    status: Status
    reason: str
    evidence: tuple[dict[str, str], ...] = ()

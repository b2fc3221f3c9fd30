"""Producing a report: fix its instant, resolve its scope, read history, render, register.

Every report starts by sealing the store (``collector.store.base``): a report without
``--as-of`` is a report as of that instant, and one with ``--as-of`` may name any instant
from the history floor (the retention boundary) up to it. The rendered file's SHA-256 is
recorded in the database with the report's instant, scope and author, so
``posture-collector report verify FILE`` can later say whether a file is one the collector
issued, unaltered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.governance import Governance
from collector.history import Scope, take_snapshot
from collector.policy.model import FRAMEWORKS
from collector.reports import Report, build_report, file_sha256, render
from collector.service import PostureService, ServiceError
from collector.store import IssuedReport

__all__ = ["IssuedFile", "ReportRequest", "issue_report", "verify_report"]


@dataclass(frozen=True)
class ReportRequest:
    fmt: str
    user: str
    group: str | None = None
    host: str | None = None
    framework: str | None = None
    as_of: datetime | None = None


@dataclass(frozen=True)
class IssuedFile:
    data: bytes
    sha256: str
    report: Report


def _scope(governance: Governance, request: ReportRequest) -> tuple[Scope, dict[str, Any]]:
    service = governance.service
    if request.framework is not None and request.framework not in FRAMEWORKS:
        raise ServiceError(f"unknown framework {request.framework!r}: {', '.join(FRAMEWORKS)}")
    host_ids = None
    if request.host is not None:
        host_ids = frozenset({service.find_host(request.host).id})
    if request.group is not None:
        governance.require_group(request.group)
    check_ids = None
    if request.framework is not None:
        check_ids = frozenset(
            check.id for check in service.checks.values() if check.frameworks.get(request.framework)
        )
    described = {"group": request.group, "host": request.host, "framework": request.framework}
    return Scope(host_ids, request.group, check_ids), described


def issue_report(service: PostureService, request: ReportRequest) -> IssuedFile:
    """Produce, render and register one report."""
    store = service.store
    sealed = store.seal(service.clock())
    as_of = request.as_of or sealed
    if as_of > sealed:
        raise ServiceError(f"--as-of {as_of.isoformat()} is in the future")
    floor = store.history_floor()
    if floor is not None and as_of < floor:
        raise ServiceError(
            f"history before {floor.isoformat()} was compacted; a report as of"
            f" {as_of.isoformat()} cannot be reproduced exactly"
        )
    governance = Governance(service)
    scope, described = _scope(governance, request)
    checks = {
        check_id: check
        for check_id, check in service.checks.items()
        if scope.check_ids is None or check_id in scope.check_ids
    }
    snapshot = take_snapshot(store, checks, as_of, scope)
    report = build_report(snapshot, service.packs, checks, request.framework, sealed, described)
    data = render(report, request.fmt)
    digest = file_sha256(data)
    store.record_issued_report(
        IssuedReport(
            digest, report.content_sha256, request.fmt, sealed, as_of, described, request.user
        )
    )
    return IssuedFile(data, digest, report)


def verify_report(service: PostureService, data: bytes) -> list[IssuedReport]:
    """The registrations of a report file with exactly these bytes (empty: not issued here,
    or altered since)."""
    return service.store.issued_reports(file_sha256(data))

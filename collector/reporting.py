"""Producing a report: fix its instant, resolve its scope, read history, render, register.

Every report starts by sealing the store (``collector.store.base``): a report without
``--as-of`` is a report as of that instant, and one with ``--as-of`` may name any instant
from the history floor (the retention boundary) up to it. The rendered file's SHA-256 is
recorded in the database with the report's instant, scope and author, so
``posture-collector report verify FILE`` can later say whether a file is one the collector
issued, unaltered.

A report is streamed (``collector.reports.stream``): into memory (``issue_report``, for a
group), into an anonymous temporary file the dashboard and the API send from
(``issue_report_spooled``), or straight into a file (``issue_report_file``: a temporary file
beside it, renamed into place once complete, so a failed report leaves nothing behind)
or any binary stream (``issue_report_to``), hashing the bytes as they are written.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from collector.governance import Governance
from collector.history import FleetAsOf, Scope
from collector.policy.model import FRAMEWORKS
from collector.reports import Report, ReportSpec, file_sha256, stream_report
from collector.reports.model import iso
from collector.reports.parallel import (
    BLOCK_HOSTS,
    RendererArgs,
    Slice,
    WorkerFailedError,
    default_workers,
    id_blocks,
    run_parts,
)
from collector.reports.stream import CanonicalSink, Part
from collector.service import PostureService, ServiceError
from collector.store import IssuedReport, SqliteStore

__all__ = [
    "Issued",
    "IssuedFile",
    "ReportRequest",
    "SpooledReport",
    "issue_report",
    "issue_report_file",
    "issue_report_spooled",
    "issue_report_to",
    "verify_report",
]


@dataclass(frozen=True)
class ReportRequest:
    fmt: str
    user: str
    group: str | None = None
    host: str | None = None
    framework: str | None = None
    as_of: datetime | None = None
    #: Worker processes (``collector.reports.parallel``): None picks one per core for a
    #: large fleet; 1 streams in this process.
    workers: int | None = None
    #: Hosts read per query.
    page_size: int = 500


@dataclass(frozen=True)
class Issued:
    """A report written out: the file's SHA-256, and the report without its hosts."""

    sha256: str
    report: Report


@dataclass(frozen=True)
class IssuedFile:
    """A report held in memory (fine for a group; a fleet's is better sent from a file)."""

    data: bytes
    sha256: str
    report: Report


class _Hashing:
    """A binary stream that hashes what goes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.out.write(data)


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


def issue_report_to(service: PostureService, request: ReportRequest, out: IO[bytes]) -> Issued:
    """Produce one report into ``out``, and register it."""
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
    scope, described = _scope(Governance(service), request)
    evidence_for = "all" if request.host is not None else "failing"
    fleet = FleetAsOf(
        store, service.checks, as_of, scope, evidence_for=evidence_for,
        page_size=request.page_size,
    )  # fmt: skip
    args = RendererArgs(
        request.fmt, fleet.checks, tuple(service.packs), iso(as_of) or "", iso(sealed) or "",
        request.host is not None, secrets.token_hex(32),
    )  # fmt: skip
    spec = ReportSpec(service.packs, request.framework, sealed, described)
    hashing = _Hashing(out)
    with fleet:
        workers, blocks = _split(store, request, scope, as_of)
        if workers == 1:
            report = stream_report(fleet, spec, args.make(), hashing)  # type: ignore[arg-type]
        else:
            report = _parallel(store, fleet, spec, args, (workers, blocks), hashing)
    digest = hashing.digest.hexdigest()
    store.record_issued_report(
        IssuedReport(
            digest, report.content_sha256, request.fmt, sealed, as_of, described, request.user
        )
    )
    return Issued(digest, report)


def _split(
    store: SqliteStore, request: ReportRequest, scope: Scope, as_of: datetime
) -> tuple[int, list[tuple[int, int | None]]]:
    """How many worker processes the report uses (1: none), and the blocks of host ids
    they share (``collector.reports.parallel``)."""
    if request.workers is not None and request.workers < 1:
        raise ServiceError(f"workers must be at least 1, not {request.workers}")
    if request.workers == 1 or scope.host_ids is not None:
        return 1, []
    ids = store.report_host_ids(as_of)
    workers = request.workers or default_workers(len(ids))
    blocks = id_blocks(ids, min(BLOCK_HOSTS, request.page_size))
    return min(workers, len(blocks)), blocks


def _parallel(
    store: SqliteStore,
    fleet: FleetAsOf,
    spec: ReportSpec,
    args: RendererArgs,
    split: tuple[int, list[tuple[int, int | None]]],
    out: _Hashing,
) -> Report:
    """The report streamed by worker processes, block by block, taken here in order."""
    assert fleet.given is not None  # read on entering ``fleet``
    workers, blocks = split
    with tempfile.TemporaryDirectory(prefix="posture-report-") as scratch:
        given, directory = fleet.given, Path(scratch)
        tasks = [
            Slice(store.location, fleet.checks, fleet.at, fleet.scope, fleet.evidence_for,
                  fleet.page_size, given, spec.framework, args, tuple(blocks[index::workers]),
                  directory, index)
            for index in range(workers)
        ]  # fmt: skip

        def hosts(sink: CanonicalSink) -> list[Part]:
            try:
                parts = run_parts(tasks, sink)
            except WorkerFailedError as error:
                raise ServiceError(str(error)) from error
            floor = store.history_floor()
            if floor is not None and fleet.at < floor:
                raise ServiceError(
                    f"history before {floor.isoformat()} was compacted while the report ran;"
                    " run it again"
                )
            return parts

        return stream_report(fleet, spec, args.make(), out, hosts)  # type: ignore[arg-type]


def issue_report(service: PostureService, request: ReportRequest) -> IssuedFile:
    """Produce, render and register one report, held in memory."""
    buffer = io.BytesIO()
    issued = issue_report_to(service, request, buffer)
    return IssuedFile(buffer.getvalue(), issued.sha256, issued.report)


@dataclass(frozen=True)
class SpooledReport:
    """A report written into an anonymous temporary file (``file``, at its start):
    nothing on disk carries its name, so it is gone once the file is closed, however the
    download ends. The dashboard and the API send it from there, not from memory."""

    file: IO[bytes]
    size: int
    sha256: str
    report: Report


def issue_report_spooled(service: PostureService, request: ReportRequest) -> SpooledReport:
    """Produce, render and register one report into an anonymous temporary file."""
    handle = tempfile.TemporaryFile(prefix="posture-report-")  # noqa: SIM115 (returned open)
    try:
        issued = issue_report_to(service, request, handle)
        size = handle.tell()
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return SpooledReport(handle, size, issued.sha256, issued.report)


def issue_report_file(service: PostureService, request: ReportRequest, path: Path) -> Issued:
    """Produce one report into the file ``path``: written beside it under a temporary
    name and renamed into place when complete, so ``path`` is never half a report."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    # Created as ``open`` creates files (mode 0666 less the umask), unlike mkstemp's 0600.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            issued = issue_report_to(service, request, handle)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return issued


def verify_report(service: PostureService, data: bytes) -> list[IssuedReport]:
    """The registrations of a report file with exactly these bytes (empty: not issued here,
    or altered since)."""
    return service.store.issued_reports(file_sha256(data))

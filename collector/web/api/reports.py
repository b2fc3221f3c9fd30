"""Compliance reports: generate and download in every CLI format; verify a file.

A report is produced as ``posture-collector report`` produces it (``collector.reporting``:
sealed instant, scope, history as of ``as_of``, registration of the file's SHA-256), on a
reader thread with its own connection, so a fleet report does not hold up ingest. The
file is written to an anonymous temporary file and sent from it a block at a time. The
file's SHA-256 and the content's SHA-256 travel in headers, as the CLI prints them.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from collector.access import Permission, Principal
from collector.reporting import (
    ReportRequest,
    SpooledReport,
    issue_report_spooled,
    verify_report,
)
from collector.reports.render import file_sha256
from collector.service import PostureService
from collector.web.api.common import ERRORS, Ctx
from collector.web.api.models import IssuedReportModel, ReportCreate, VerifyModel
from collector.web.auth import record, require
from collector.web.downloads import spooled_response
from collector.web.errors import ApiError

__all__ = ["MEDIA_TYPES", "router"]

router = APIRouter(tags=["reports"], responses=ERRORS)
Reporter = Annotated[Principal, Depends(require(Permission.REPORT))]

MEDIA_TYPES = {
    "table": "text/plain; charset=utf-8",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
_EXTENSIONS = {"table": "txt", "json": "json", "csv": "csv", "html": "html", "pdf": "pdf"}
#: The largest file ``verify`` accepts (a fleet PDF is far smaller).
MAX_VERIFY_BYTES = 256 * 1024 * 1024

_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the report file; X-Report-SHA256 and X-Content-SHA256 headers",
        "content": {media.split(";")[0]: {} for media in MEDIA_TYPES.values()},
    }
}


def _issue(service: PostureService, request: ReportRequest) -> SpooledReport:
    return issue_report_spooled(service, request)


@router.post("/reports", response_class=Response, responses=_FILE)
async def generate_report(
    ctx: Ctx, request: Request, body: ReportCreate, who: Reporter
) -> Response:
    """Generate a report (optionally for a group, a host, a framework, as of a past
    instant) and download it in the chosen format."""
    as_of = body.as_of
    if as_of is not None:
        as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    report_request = ReportRequest(
        fmt=body.format,
        user=who.actor,
        group=body.group or None,
        host=body.host or None,
        framework=body.framework,
        as_of=as_of,
    )
    issued = await ctx.read(_issue, report_request)
    scope: dict[str, object] = {"group": body.group, "host": body.host, "framework": body.framework}
    detail: dict[str, object] = {**scope, "format": body.format, "sha256": issued.sha256}
    await record(request, who.actor, "report.issue", f"report:{issued.sha256[:16]}", "ok", detail)
    stamp = issued.report.document["as_of"][:19].replace(":", "")
    filename = f"posture-report-{stamp}.{_EXTENSIONS[body.format]}"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Report-SHA256": issued.sha256,
        "X-Content-SHA256": issued.report.content_sha256,
    }
    return spooled_response(issued, MEDIA_TYPES[body.format], headers)


def _verify(service: PostureService, data: bytes) -> VerifyModel:
    found = verify_report(service, data)
    return VerifyModel(
        issued=bool(found),
        sha256=file_sha256(data),
        registrations=[
            IssuedReportModel(
                sha256=r.sha256,
                content_sha256=r.content_sha256,
                format=r.format,
                generated_at=r.generated_at,
                as_of=r.as_of,
                scope=r.scope,
                generated_by=r.generated_by,
            )
            for r in found
        ],
    )


_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/reports/verify", response_model=VerifyModel, openapi_extra=_RAW_BODY)
async def verify(ctx: Ctx, request: Request, _: Reporter) -> VerifyModel:
    """Is this file (the request body, as bytes) a report this collector issued, unaltered?"""
    data = await request.body()
    if len(data) > MAX_VERIFY_BYTES:
        raise ApiError(413, "file too large to be a report")
    return await ctx.read(_verify, data)

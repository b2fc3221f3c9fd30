"""Checks: what each verifies and how the fleet fares on it; which hosts fail it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from collector.access import Permission, Principal
from collector.service import PostureService
from collector.web.api.common import ERRORS, Ctx, Limit, Offset
from collector.web.api.hosts import _summary_model
from collector.web.api.models import (
    CheckModel,
    CheckSummaryModel,
    HostSummaryModel,
    Page,
    page_of,
)
from collector.web.auth import require
from collector.web.errors import ApiError
from collector.web.views import CheckRow, SummaryCache

__all__ = ["router"]

router = APIRouter(tags=["checks"], responses=ERRORS)
Reader = Annotated[Principal, Depends(require(Permission.READ))]
CheckId = Annotated[str, Path(min_length=1, max_length=200)]


def _summary(row: CheckRow) -> CheckSummaryModel:
    return CheckSummaryModel(
        check=CheckModel.of(row.check),
        counts={status.value: count for status, count in row.counts.items()},
        waived=row.waived,
    )


def _checks(service: PostureService, summaries: SummaryCache) -> list[CheckSummaryModel]:
    summary = summaries.get(service)
    return [_summary(summary.checks[check_id]) for check_id in sorted(summary.checks)]


@router.get("/checks", response_model=list[CheckSummaryModel])
async def list_checks(ctx: Ctx, _: Reader) -> list[CheckSummaryModel]:
    """Every loaded check with its framework mappings and how many hosts are in each status."""
    return await ctx.read(_checks, ctx.summaries)


def _check(service: PostureService, summaries: SummaryCache, check_id: str) -> CheckSummaryModel:
    row = summaries.get(service).checks.get(check_id)
    if row is None:
        raise ApiError(404, f"no check {check_id!r} in the loaded packs")
    return _summary(row)


@router.get("/checks/{check_id}", response_model=CheckSummaryModel)
async def get_check(ctx: Ctx, check_id: CheckId, _: Reader) -> CheckSummaryModel:
    """One check: description, rationale, remediation, frameworks, and the fleet's counts."""
    return await ctx.read(_check, ctx.summaries, check_id)


def _failing(
    service: PostureService, summaries: SummaryCache, check_id: str, limit: int, offset: int
) -> dict[str, object]:
    summary = summaries.get(service)
    if check_id not in summary.checks:
        raise ApiError(404, f"no check {check_id!r} in the loaded packs")
    ids = summary.failing_hosts.get(check_id, ())
    rows = [summary.by_id[host_id] for host_id in ids[offset : offset + limit]]
    return page_of([_summary_model(row) for row in rows], len(ids), limit, offset)


@router.get("/checks/{check_id}/failing-hosts", response_model=Page[HostSummaryModel])
async def failing_hosts(
    ctx: Ctx, check_id: CheckId, _: Reader, limit: Limit = 50, offset: Offset = 0
) -> dict[str, object]:
    """The hosts this check fails on now (stale hosts excluded: their results are unknown)."""
    return await ctx.read(_failing, ctx.summaries, check_id, limit, offset)

"""The audit log, read-only: who changed what, when, with which outcome."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from collector.access import Permission, Principal
from collector.service import PostureService
from collector.web.api.common import ERRORS, Ctx, Limit
from collector.web.api.models import AuditEntryModel
from collector.web.auth import require

__all__ = ["router"]

router = APIRouter(tags=["audit"], responses=ERRORS)


def _entries(service: PostureService, after_seq: int, limit: int) -> list[AuditEntryModel]:
    return [
        AuditEntryModel(
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            target=e.target,
            outcome=e.outcome,
            detail=dict(e.detail),
            prev_hash=e.prev_hash,
            hash=e.hash,
        )
        for e in service.audit.entries(after_seq, limit)
    ]


@router.get("/audit", response_model=list[AuditEntryModel])
async def audit_log(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require(Permission.READ))],
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Limit = 100,
) -> list[AuditEntryModel]:
    """Entries after ``after_seq``, oldest first (page by the last entry's ``seq``).
    ``posture-collector audit verify`` checks the hash chain."""
    return await ctx.read(_entries, after_seq, limit)

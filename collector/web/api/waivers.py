"""Waivers: list, request, approve (by someone other than the requester), revoke.

The rules are the domain's (``collector.governance``, ``collector.waivers``); the requester
and approver are the authenticated principals (``Principal.actor``), so two-person approval
holds across the API, the dashboard and the CLI alike. Every step is audited by the domain.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from collector.access import Permission, Principal
from collector.governance import Governance, WaiverRequest
from collector.service import PostureService
from collector.waivers import Waiver, WaiverScope, WaiverState
from collector.web.api.common import ERRORS, Ctx
from collector.web.api.models import WaiverCreate, WaiverModel, WaiverRevoke
from collector.web.auth import require
from collector.web.errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["waivers"], responses=ERRORS)
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Writer = Annotated[Principal, Depends(require(Permission.WAIVER_WRITE))]
WaiverId = Annotated[int, Path(ge=1, le=2**62)]


def _list(service: PostureService, state: WaiverState | None) -> list[WaiverModel]:
    now = service.clock()
    return [
        WaiverModel.of(w, now)
        for w in service.store.list_waivers()
        if state is None or w.state_at(now) is state
    ]


@router.get("/waivers", response_model=list[WaiverModel])
async def list_waivers(
    ctx: Ctx, _: Reader, state: Annotated[WaiverState | None, Query()] = None
) -> list[WaiverModel]:
    """Every waiver with its state now (requested, effective, expired, revoked)."""
    return await ctx.read(_list, state)


def _get(service: PostureService, waiver_id: int) -> WaiverModel:
    waiver = service.store.get_waiver(waiver_id)
    if waiver is None:
        raise ApiError(404, f"no waiver {waiver_id}")
    return WaiverModel.of(waiver, service.clock())


@router.get("/waivers/{waiver_id}", response_model=WaiverModel)
async def get_waiver(ctx: Ctx, waiver_id: WaiverId, _: Reader) -> WaiverModel:
    return await ctx.read(_get, waiver_id)


def _model(service: PostureService, waiver: Waiver) -> WaiverModel:
    return WaiverModel.of(waiver, service.clock())


def _request(service: PostureService, body: WaiverCreate, actor: str) -> WaiverModel:
    expires = body.expires_at
    expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)
    request = WaiverRequest(
        check_id=body.check_id,
        scope=WaiverScope(body.scope),
        target=body.target or None,
        justification=body.justification,
        ticket=body.ticket,
        compensating_control=body.compensating_control,
        expires_at=expires,
    )
    return _model(service, Governance(service).request_waiver(request, actor))


@router.post("/waivers", response_model=WaiverModel, status_code=201)
async def request_waiver(ctx: Ctx, body: WaiverCreate, who: Writer) -> WaiverModel:
    """Request a waiver; it takes effect once another person approves it."""
    waiver = await ctx.call(_request, ctx.service, body, who.actor)
    ctx.summaries.invalidate()
    return waiver


def _exists(service: PostureService, waiver_id: int) -> None:
    if service.store.get_waiver(waiver_id) is None:
        raise ApiError(404, f"no waiver {waiver_id}")


def _approve(service: PostureService, waiver_id: int, actor: str) -> WaiverModel:
    _exists(service, waiver_id)
    return _model(service, Governance(service).approve_waiver(waiver_id, actor))


@router.post("/waivers/{waiver_id}/approve", response_model=WaiverModel)
async def approve_waiver(ctx: Ctx, waiver_id: WaiverId, who: Writer) -> WaiverModel:
    """Approve someone else's request (400 when you requested it yourself)."""
    waiver = await ctx.call(_approve, ctx.service, waiver_id, who.actor)
    ctx.summaries.invalidate()
    return waiver


def _revoke(service: PostureService, waiver_id: int, actor: str, reason: str) -> WaiverModel:
    _exists(service, waiver_id)
    return _model(service, Governance(service).revoke_waiver(waiver_id, actor, reason))


@router.post("/waivers/{waiver_id}/revoke", response_model=WaiverModel)
async def revoke_waiver(
    ctx: Ctx, waiver_id: WaiverId, body: WaiverRevoke, who: Writer
) -> WaiverModel:
    """End a waiver now."""
    waiver = await ctx.call(_revoke, ctx.service, waiver_id, who.actor, body.reason)
    ctx.summaries.invalidate()
    return waiver

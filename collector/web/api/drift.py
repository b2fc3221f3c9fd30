"""Drift events across the fleet: check flips, score drops, configuration changes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from collector.access import Permission, Principal
from collector.drift import EventKind
from collector.governance import Governance
from collector.service import PostureService
from collector.store import EventFilter
from collector.web.api.common import ERRORS, Ctx, Limit
from collector.web.api.hosts import _utc
from collector.web.api.models import DriftEventModel, DriftPage
from collector.web.auth import require

__all__ = ["router"]

router = APIRouter(tags=["drift"], responses=ERRORS)
Reader = Annotated[Principal, Depends(require(Permission.READ))]


def _drift(
    service: PostureService,
    group: str,
    kind: EventKind | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    before_id: int | None,
) -> DriftPage:
    host_ids = None
    if group:
        governance = Governance(service)
        host_ids = frozenset(h.id for h in governance.hosts_in_group(group, service.clock()))
    if since is None and until is None:
        events = service.store.newest_drift(limit, before_id, kind, host_ids)
    else:  # a time window: the store's filter, newest first, paged by id
        where = EventFilter(host_ids=host_ids, since=since, until=until, kind=kind)
        matching = [
            e for e in service.store.drift_events(where) if before_id is None or e.id < before_id
        ]
        events = list(reversed(matching))[:limit]
    items = [DriftEventModel.of(event) for event in events]
    return DriftPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)


@router.get("/drift", response_model=DriftPage)
async def drift(
    ctx: Ctx,
    _: Reader,
    group: Annotated[str, Query(max_length=64)] = "",
    kind: EventKind | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> DriftPage:
    """Drift events, newest first; page with ``before_id``. Per host: /hosts/{id}/drift."""
    return await ctx.read(_drift, group, kind, _utc(since), _utc(until), limit, before_id)

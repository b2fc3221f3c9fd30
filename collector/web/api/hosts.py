"""Hosts: the filtered, sorted, paged list; one host's results, facts, drift and history;
baselines, collect-now and credential revocation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from collector.access import Permission, Principal
from collector.collect_requests import CollectRequest, CollectRequests
from collector.governance import Governance
from collector.service import PostureService
from collector.web.api.common import ERRORS, Ctx, Limit, Offset, audited, get_host
from collector.web.api.models import (
    BaselineApproval,
    CollectAccepted,
    DeviationModel,
    DriftEventModel,
    DriftPage,
    FactChangeModel,
    FactTableModel,
    HostDetailModel,
    HostModel,
    HostScoreModel,
    HostSummaryModel,
    Page,
    ResultModel,
    page_of,
)
from collector.web.auth import require
from collector.web.views import FleetSummary, HostFilter, HostRow, SummaryCache

__all__ = ["router"]

router = APIRouter(tags=["hosts"], responses=ERRORS)
Reader = Annotated[Principal, Depends(require(Permission.READ))]
HostId = Annotated[int, Path(ge=1, le=2**62, description="host id")]


class HostSort(StrEnum):
    HOSTNAME = "hostname"
    SCORE = "score"
    FAILED = "failed"
    LAST_COLLECTED = "last_collected"
    PLATFORM = "platform"
    ID = "id"


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


def _key(sort: HostSort) -> object:
    def key(row: HostRow) -> tuple[object, ...]:
        name = row.hostname.lower()
        if sort is HostSort.SCORE:
            return (row.score.percent is None, row.score.percent or 0.0, name, row.host.id)
        if sort is HostSort.FAILED:
            return (row.score.failed, name, row.host.id)
        if sort is HostSort.LAST_COLLECTED:
            seen = row.host.last_collected_at
            return (seen is None, seen.timestamp() if seen else 0.0, row.host.id)
        if sort is HostSort.PLATFORM:
            return (row.host.identity.platform, name, row.host.id)
        if sort is HostSort.ID:
            return (row.host.id,)
        return (name, row.host.id)

    return key


def _summary_model(row: HostRow) -> HostSummaryModel:
    return HostSummaryModel(
        host=HostModel.of(row.host),
        groups=list(row.groups),
        stale=row.stale,
        score=HostScoreModel.of(row.score),
        failing=list(row.failing),
    )


def _page(
    summary: FleetSummary, query: HostFilter, sort: HostSort, order: Order, limit: int, offset: int
) -> dict[str, object]:
    matched = [row for row in summary.hosts if query.matches(row)]
    matched.sort(key=_key(sort), reverse=order is Order.DESC)  # type: ignore[arg-type]
    if sort is HostSort.SCORE and order is Order.DESC:  # unscored hosts last either way
        matched.sort(key=lambda row: row.score.percent is None)
    items = [_summary_model(row) for row in matched[offset : offset + limit]]
    return page_of(items, len(matched), limit, offset)


def _list(
    service: PostureService,
    summaries: SummaryCache,
    query: HostFilter,
    sort: HostSort,
    order: Order,
    limit: int,
    offset: int,
) -> dict[str, object]:
    return _page(summaries.get(service), query, sort, order, limit, offset)


@router.get("/hosts", response_model=Page[HostSummaryModel])
async def list_hosts(
    ctx: Ctx,
    _: Reader,
    q: Annotated[str, Query(max_length=200, description="hostname, uuid, serial or id")] = "",
    group: Annotated[str, Query(max_length=64)] = "",
    platform: Annotated[str, Query(max_length=16)] = "",
    failing_check: Annotated[str, Query(max_length=200, description="hosts failing it")] = "",
    min_score: Annotated[float | None, Query(ge=0, le=100)] = None,
    max_score: Annotated[float | None, Query(ge=0, le=100)] = None,
    stale: bool | None = None,
    sort: HostSort = HostSort.HOSTNAME,
    order: Order = Order.ASC,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, object]:
    """Hosts with their score and failing checks. Filters combine; scores are raw percent
    (a host with no judged check has none and matches no score range)."""
    query = HostFilter(
        q=q.strip(),
        group=group,
        platform=platform,
        check=failing_check,
        min_score=min_score,
        max_score=max_score,
        stale=stale,
    )
    return await ctx.read(_list, ctx.summaries, query, sort, order, limit, offset)


def _detail(service: PostureService, host_id: int) -> HostDetailModel:
    host = get_host(service, host_id)
    view = service.host_view(host)
    checks = service.checks
    return HostDetailModel(
        host=HostModel.of(host),
        groups=list(view.groups),
        stale=view.stale,
        score=HostScoreModel.of(view.score),
        results=[
            ResultModel.of(r, checks[r.check_id], r.check_id in view.waived) for r in view.results
        ],
    )


@router.get("/hosts/{host_id}", response_model=HostDetailModel)
async def host_detail(ctx: Ctx, host_id: HostId, _: Reader) -> HostDetailModel:
    """One host: identity, groups, score, and every check's result with its evidence."""
    return await ctx.read(_detail, host_id)


def _facts(service: PostureService, host_id: int, table: str) -> list[FactTableModel]:
    host = get_host(service, host_id)
    states = service.store.table_states(host.id)
    names = sorted(states) if not table else [table] if table in states else []
    return [
        FactTableModel(
            table=name,
            error=states[name].error,
            collected_at=states[name].collected_at,
            rows=[dict(row) for row in service.store.host_rows(host.id, name)],
        )
        for name in names
    ]


@router.get("/hosts/{host_id}/facts", response_model=list[FactTableModel])
async def host_facts(
    ctx: Ctx,
    host_id: HostId,
    _: Reader,
    table: Annotated[str, Query(max_length=64, description="one table only")] = "",
) -> list[FactTableModel]:
    """The host's current facts, per table (osquery names), with each table's error."""
    return await ctx.read(_facts, host_id, table)


def _host_drift(
    service: PostureService, host_id: int, limit: int, before_id: int | None
) -> DriftPage:
    get_host(service, host_id)
    events = service.store.newest_drift(limit, before_id, None, frozenset({host_id}))
    items = [DriftEventModel.of(event) for event in events]
    return DriftPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)


@router.get("/hosts/{host_id}/drift", response_model=DriftPage)
async def host_drift(
    ctx: Ctx,
    host_id: HostId,
    _: Reader,
    limit: Limit = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> DriftPage:
    """The host's drift timeline, newest first."""
    return await ctx.read(_host_drift, host_id, limit, before_id)


def _changes(
    service: PostureService,
    host_id: int,
    view: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[FactChangeModel]:
    get_host(service, host_id)
    return [
        FactChangeModel(
            id=c.id,
            view=c.view,
            seq=c.seq,
            collected_at=c.collected_at,
            at=c.at,
            change=c.change,
            identity=json.loads(c.identity),
            old=json.loads(c.old) if c.old else None,
            new=json.loads(c.new) if c.new else None,
        )
        for c in service.store.fact_changes(host_id, view, since, until)
    ]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/hosts/{host_id}/changes", response_model=list[FactChangeModel])
async def host_changes(
    ctx: Ctx,
    host_id: HostId,
    _: Reader,
    view: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[FactChangeModel]:
    """Row-level fact history of the host's tracked tables (added, removed, modified)."""
    return await ctx.read(_changes, host_id, view, _utc(since), _utc(until))


def _deviations(service: PostureService, host_id: int) -> list[DeviationModel]:
    get_host(service, host_id)
    return [
        DeviationModel(
            view=e.view,
            type=e.type.value,
            identity=json.loads(e.identity),
            baseline=json.loads(e.old),
            current=json.loads(e.new),
            changed_fields=list(e.changed_fields),
        )
        for e in service.store.baseline_deviations(host_id)
    ]


@router.get("/hosts/{host_id}/baseline", response_model=list[DeviationModel])
async def host_baseline(ctx: Ctx, host_id: HostId, _: Reader) -> list[DeviationModel]:
    """How the host's tracked configuration differs from its baseline now."""
    return await ctx.read(_deviations, host_id)


def _approve(service: PostureService, host_id: int, actor: str) -> BaselineApproval:
    host = get_host(service, host_id)
    views = Governance(service).approve_baselines([host], actor)[host.id]
    return BaselineApproval(host_id=host.id, views=views, approved_by=actor)


@router.post("/hosts/{host_id}/baseline", response_model=BaselineApproval)
async def approve_baseline(
    ctx: Ctx,
    host_id: HostId,
    who: Annotated[Principal, Depends(require(Permission.BASELINE_APPROVE))],
) -> BaselineApproval:
    """Accept the host's current tracked configuration as its new baseline."""
    return await ctx.call(_approve, ctx.service, host_id, who.actor)


def _collect(service: PostureService, registry: CollectRequests, host_id: int, actor: str) -> bool:
    host = get_host(service, host_id)
    request = CollectRequest(host.id, actor, service.clock(), f"requested by {actor}")
    detail: dict[str, object] = {}
    with service.audit.recording(actor, "host.collect", f"host:{host.id}", detail):
        detail["stream_open"] = open_now = registry.request(request)
    return open_now


@router.post("/hosts/{host_id}/collect", response_model=CollectAccepted, status_code=202)
async def collect_now(
    ctx: Ctx,
    host_id: HostId,
    who: Annotated[Principal, Depends(require(Permission.HOST_COLLECT))],
) -> CollectAccepted:
    """Ask the host's agent to collect now: told at once over its open stream, else when
    it next connects (several requests before then make one collection)."""
    open_now = await ctx.call(_collect, ctx.service, ctx.collect, host_id, who.actor)
    return CollectAccepted(host_id=host_id, queued=True, stream_open=open_now)


def _revoke(service: PostureService, host_id: int) -> HostModel:
    host = get_host(service, host_id)
    service.revoke_credential(host)
    revoked = get_host(service, host_id)
    return HostModel.of(revoked)


@router.post("/hosts/{host_id}/credential/revoke", response_model=HostModel)
async def revoke_credential(
    ctx: Ctx,
    host_id: HostId,
    who: Annotated[Principal, Depends(require(Permission.HOST_CREDENTIAL))],
) -> HostModel:
    """Refuse this host's agent from now on (open streams at their next call)."""
    service = ctx.service
    target = f"host:{host_id}"
    return await ctx.call(
        audited, service, who.actor, "host.credential.revoke", target, {}, _revoke, service,
        host_id,
    )  # fmt: skip

"""Fleet summary, score trend, groups and their hostname rules."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from collector.access import Permission, Principal
from collector.governance import Governance
from collector.groups import GroupRule
from collector.service import PostureService
from collector.web.api.common import ERRORS, Ctx
from collector.web.api.models import (
    FleetModel,
    FleetScoreModel,
    GroupModel,
    GroupRuleCreate,
    GroupRuleModel,
    TrendPointModel,
    WorstCheckModel,
)
from collector.web.auth import require
from collector.web.views import FleetSummary, SummaryCache, score_trend, worst_checks

__all__ = ["router"]

router = APIRouter(tags=["fleet"], responses=ERRORS)
Reader = Annotated[Principal, Depends(require(Permission.READ))]
GroupWriter = Annotated[Principal, Depends(require(Permission.GROUP_WRITE))]


def _groups(summary: FleetSummary, known: set[str]) -> list[GroupModel]:
    names = sorted(known | set(summary.groups))
    return [
        GroupModel(
            name=name,
            score=FleetScoreModel.of(summary.groups[name]) if name in summary.groups else None,
        )
        for name in names
    ]


def _fleet(service: PostureService, summaries: SummaryCache) -> FleetModel:
    summary = summaries.get(service)
    worst = [
        WorstCheckModel(
            check_id=row.check.id,
            title=row.check.title,
            severity=row.check.severity.value,
            failing=row.failing,
        )
        for row in worst_checks(summary)
    ]
    return FleetModel(
        at=summary.at,
        score=FleetScoreModel.of(summary.fleet),
        groups=_groups(summary, Governance(service).known_groups()),
        worst_checks=worst,
        stale_hosts=sum(row.stale for row in summary.hosts),
    )


@router.get("/fleet", response_model=FleetModel)
async def fleet(ctx: Ctx, _: Reader) -> FleetModel:
    """The fleet's score (raw and waiver-adjusted), score distribution, share of hosts
    without a failing critical/high check, groups' scores and the checks failing most."""
    return await ctx.read(_fleet, ctx.summaries)


@router.get("/fleet/trend", response_model=list[TrendPointModel])
async def trend(
    ctx: Ctx,
    _: Reader,
    days: Annotated[int, Query(ge=1, le=3650)] = 30,
    points: Annotated[int, Query(ge=2, le=500)] = 30,
) -> list[TrendPointModel]:
    """The fleet's raw score at evenly spaced instants over the last ``days``."""
    trend_points = await ctx.read(score_trend, days, points)
    return [TrendPointModel(at=p.at, percent=p.percent) for p in trend_points]


def _group_list(service: PostureService, summaries: SummaryCache) -> list[GroupModel]:
    return _groups(summaries.get(service), Governance(service).known_groups())


@router.get("/groups", response_model=list[GroupModel])
async def groups(ctx: Ctx, _: Reader) -> list[GroupModel]:
    """Every group named by an enroll secret or rule, with its score (null: no hosts)."""
    return await ctx.read(_group_list, ctx.summaries)


def _rule(rule: GroupRule) -> GroupRuleModel:
    return GroupRuleModel(
        id=rule.id,
        group=rule.group,
        hostname_glob=rule.hostname_glob,
        created_at=rule.created_at,
        created_by=rule.created_by,
        deleted_at=rule.deleted_at,
        deleted_by=rule.deleted_by,
    )


@router.get("/group-rules", response_model=list[GroupRuleModel])
async def group_rules(ctx: Ctx, _: Reader) -> list[GroupRuleModel]:
    """Hostname rules that put hosts in groups, deleted ones included (history needs them)."""
    rules: list[GroupRule] = await ctx.read(lambda s: s.store.group_rules())
    return [_rule(rule) for rule in rules]


@router.post("/group-rules", response_model=GroupRuleModel, status_code=201)
async def add_group_rule(ctx: Ctx, body: GroupRuleCreate, who: GroupWriter) -> GroupRuleModel:
    """Hosts whose hostname matches ``hostname_glob`` (shell pattern) join ``group``."""
    governance = Governance(ctx.service)
    rule = await ctx.call(governance.add_group_rule, body.group, body.hostname_glob, who.actor)
    ctx.summaries.invalidate()
    return _rule(rule)


@router.delete("/group-rules/{rule_id}", status_code=204)
async def delete_group_rule(
    ctx: Ctx, rule_id: Annotated[int, Path(ge=1, le=2**62)], who: GroupWriter
) -> None:
    """End a rule (it stays in history)."""
    await ctx.call(Governance(ctx.service).delete_group_rule, rule_id, who.actor)
    ctx.summaries.invalidate()

"""Enroll secrets (admin only): list, create (shown once), revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from collector.access import Permission, Principal
from collector.service import PostureService, ServiceError
from collector.web.api.common import ERRORS, Ctx, audited
from collector.web.api.models import EnrollSecretCreate, EnrollSecretCreated, EnrollSecretModel
from collector.web.auth import require

__all__ = ["router"]

router = APIRouter(tags=["enroll secrets"], responses=ERRORS)
Admin = Annotated[Principal, Depends(require(Permission.SECRETS))]
Name = Annotated[str, Path(min_length=1, max_length=64)]


def _list(service: PostureService) -> list[EnrollSecretModel]:
    return [EnrollSecretModel.of(s) for s in service.store.list_enroll_secrets()]


@router.get("/enroll-secrets", response_model=list[EnrollSecretModel])
async def list_secrets(ctx: Ctx, _: Admin) -> list[EnrollSecretModel]:
    """Enroll secrets with their group, uses and state (never the secrets themselves)."""
    return await ctx.read(_list)


def _create(service: PostureService, name: str, group: str | None) -> EnrollSecretCreated:
    record, secret = service.create_enroll_secret(name, group)
    return EnrollSecretCreated(enroll_secret=EnrollSecretModel.of(record), secret=secret)


@router.post("/enroll-secrets", response_model=EnrollSecretCreated, status_code=201)
async def create_secret(ctx: Ctx, body: EnrollSecretCreate, who: Admin) -> EnrollSecretCreated:
    """A new enroll secret, shown in this answer only; hosts enrolling with it join
    ``group``."""
    service = ctx.service
    detail: dict[str, object] = {"group": body.group}
    created: EnrollSecretCreated = await ctx.call(
        audited, service, who.actor, "enroll_secret.create", f"enroll_secret:{body.name}",
        detail, _create, service, body.name, body.group or None,
    )  # fmt: skip
    ctx.summaries.invalidate()
    return created


def _revoke(service: PostureService, name: str) -> list[EnrollSecretModel]:
    if not service.store.revoke_enroll_secret(name, service.clock()):
        raise ServiceError(f"no live enroll secret named {name!r}")
    return [EnrollSecretModel.of(s) for s in service.store.list_enroll_secrets() if s.name == name]


@router.post("/enroll-secrets/{name}/revoke", response_model=list[EnrollSecretModel])
async def revoke_secret(ctx: Ctx, name: Name, who: Admin) -> list[EnrollSecretModel]:
    """Revoke every live secret called ``name``: no new host enrolls with it."""
    service = ctx.service
    return await ctx.call(
        audited, service, who.actor, "enroll_secret.revoke", f"enroll_secret:{name}", {},
        _revoke, service, name,
    )  # fmt: skip

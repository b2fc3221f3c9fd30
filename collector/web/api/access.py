"""Sessions (log in, who am I, log out), API tokens and people (admin only).

Tokens and people are normally managed with ``posture-collector token`` and ``user``; the
same actions here need the ``tokens`` and ``users`` permissions (admin), and each is
audited with who did it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from collector.access import Permission, Principal, Role
from collector.accounts import AccessControl
from collector.service import PostureService
from collector.web.api.common import ERRORS, Ctx, audited
from collector.web.api.models import (
    LoginRequest,
    PrincipalModel,
    RoleChange,
    SessionModel,
    TokenCreate,
    TokenCreated,
    TokenModel,
    UserCreate,
    UserModel,
)
from collector.web.auth import (
    authenticate,
    check_csrf,
    current_session,
    end_session,
    login_with_password,
    login_with_token,
    start_session,
)
from collector.web.auth import (
    require as require_permission,
)
from collector.web.errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["access"], responses=ERRORS)
Name = Annotated[str, Path(min_length=1, max_length=64)]
TokenAdmin = Annotated[Principal, Depends(require_permission(Permission.TOKENS))]
UserAdmin = Annotated[Principal, Depends(require_permission(Permission.USERS))]


def _access(service: PostureService) -> AccessControl:
    return AccessControl(service.store, service.clock)


# Sessions -------------------------------------------------------------------------------


async def _signed_in(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal is None:
        raise ApiError(401, "not logged in", headers={"WWW-Authenticate": "Bearer"})
    return principal


def _session_model(request: Request, principal: Principal) -> SessionModel:
    session = current_session(request)
    return SessionModel(
        principal=PrincipalModel.of(principal),
        expires_at=session.expires_at if session else None,
        csrf_token=session.csrf_token if session else None,
    )


@router.get("/session", response_model=SessionModel)
async def whoami(request: Request) -> SessionModel:
    """Who the request speaks for, with their permissions and the session's CSRF token."""
    return _session_model(request, await _signed_in(request))


@router.post("/session", response_model=SessionModel, status_code=201)
async def login(request: Request, response: Response, body: LoginRequest) -> SessionModel:
    """Log in with a name and password (or an API token) and get the session cookie.
    Open to everyone; wrong credentials are a 401 and an audit entry."""
    if body.token:
        session = await login_with_token(request, body.token)
    elif body.name and body.password:
        session = await login_with_password(request, body.name, body.password)
    else:
        raise ApiError(422, "send name and password, or token")
    start_session(request, response, session)
    return SessionModel(
        principal=PrincipalModel.of(session.principal),
        expires_at=session.expires_at,
        csrf_token=session.csrf_token,
    )


@router.delete("/session", status_code=204)
async def logout(request: Request, response: Response) -> None:
    """End the session (its cookie stops working at once). Needs the CSRF token."""
    await _signed_in(request)
    await check_csrf(request)
    await end_session(request, response)


# API tokens -----------------------------------------------------------------------------


@router.get("/tokens", response_model=list[TokenModel])
async def list_tokens(ctx: Ctx, _: TokenAdmin) -> list[TokenModel]:
    """API tokens (names, roles, state; never the tokens)."""
    tokens = await ctx.read(lambda s: _access(s).list_tokens())
    return [TokenModel.of(token) for token in tokens]


def _create_token(service: PostureService, body: TokenCreate, actor: str) -> TokenCreated:
    record, secret = _access(service).create_token(
        body.name, Role(body.role), actor, body.expires_at
    )
    return TokenCreated(api_token=TokenModel.of(record), token=secret)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
async def create_token(ctx: Ctx, body: TokenCreate, who: TokenAdmin) -> TokenCreated:
    """A new API token, shown in this answer only."""
    service = ctx.service
    return await ctx.call(
        audited, service, who.actor, "token.create", f"token:{body.name}", {"role": body.role},
        _create_token, service, body, who.actor,
    )  # fmt: skip


def _revoke_token(service: PostureService, name: str, actor: str) -> TokenModel:
    _access(service).revoke_token(name, actor)
    token = service.store.api_token_by_name(name)
    assert token is not None
    return TokenModel.of(token)


@router.post("/tokens/{name}/revoke", response_model=TokenModel)
async def revoke_token(ctx: Ctx, name: Name, who: TokenAdmin) -> TokenModel:
    """Revoke a token (and end dashboard sessions opened with it)."""
    service = ctx.service
    return await ctx.call(
        audited, service, who.actor, "token.revoke", f"token:{name}", {},
        _revoke_token, service, name, who.actor,
    )  # fmt: skip


# People ---------------------------------------------------------------------------------


@router.get("/users", response_model=list[UserModel])
async def list_users(ctx: Ctx, _: UserAdmin) -> list[UserModel]:
    users = await ctx.read(lambda s: _access(s).list_users())
    return [UserModel.of(user) for user in users]


def _add_user(service: PostureService, body: UserCreate, actor: str) -> UserModel:
    user = _access(service).add_user(body.name, Role(body.role), body.password, actor)
    return UserModel.of(user)


@router.post("/users", response_model=UserModel, status_code=201)
async def add_user(ctx: Ctx, body: UserCreate, who: UserAdmin) -> UserModel:
    """Add a person who logs in with ``password`` (argon2id-hashed, at least 12 characters)."""
    service = ctx.service
    return await ctx.call(
        audited, service, who.actor, "user.add", f"user:{body.name}", {"role": body.role},
        _add_user, service, body, who.actor,
    )  # fmt: skip


def _user(service: PostureService, name: str) -> UserModel:
    user = service.store.user_by_name(name)
    if user is None:
        raise ApiError(404, f"no user named {name!r}")
    return UserModel.of(user)


def _set_role(service: PostureService, name: str, role: str) -> UserModel:
    _user(service, name)
    _access(service).set_role(name, Role(role))
    return _user(service, name)


@router.put("/users/{name}/role", response_model=UserModel)
async def set_role(ctx: Ctx, name: Name, body: RoleChange, who: UserAdmin) -> UserModel:
    """Change a person's role (effective on their next request)."""
    service = ctx.service
    return await ctx.call(
        audited, service, who.actor, "user.role", f"user:{name}", {"role": body.role},
        _set_role, service, name, body.role,
    )  # fmt: skip


def _disable(service: PostureService, name: str) -> UserModel:
    _user(service, name)
    _access(service).disable_user(name)
    return _user(service, name)


@router.post("/users/{name}/disable", response_model=UserModel)
async def disable_user(ctx: Ctx, name: Name, who: UserAdmin) -> UserModel:
    """Stop a person logging in and end their sessions."""
    service = ctx.service
    return await ctx.call(
        audited, service, who.actor, "user.disable", f"user:{name}", {}, _disable, service, name
    )

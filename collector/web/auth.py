"""Authentication and authorization for the API and the dashboard, as FastAPI dependencies.

Two ways in:

- **API tokens** for scripts: ``Authorization: Bearer pst_...``. Not an ambient credential
  (a browser never adds it by itself), so requests with it need no CSRF token.
- **Sessions** for people, after ``login_with_password`` (or ``login_with_token``, to use the
  dashboard with a token): a cookie (``posture_session``; HttpOnly, SameSite=Strict, Secure
  over HTTPS, expiring with the session) naming a server-side session, so logout, disabling
  a person and revoking a token end it at once. A browser sends the cookie by itself, so
  every unsafe request (POST, PUT, PATCH, DELETE) made with it must carry the session's
  CSRF token: the ``X-CSRF-Token`` header (API calls) or the ``csrf_token`` form field
  (pages' forms); a foreign ``Origin`` is refused outright.

Use from a route::

    @router.post("/waivers/{id}/approve")
    async def approve(id: int, principal: Principal = Depends(require(Permission.WAIVER_WRITE))):
        ...  # principal.actor is who acts, for the domain and the audit log

Pages get the CSRF token for their forms with ``csrf_token(request)`` (None when the
visitor is not logged in with a session). Refusals are ``ApiError`` 401/403; the app turns
them into the JSON error body under ``/api/`` and into a redirect to ``/login`` (401) or a
short page (403) elsewhere. Denied attempts (a wrong token or password, a role that may not)
are recorded in the audit log.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import Request, Response

from collector.access import Permission, Principal, Session, User
from collector.accounts import AccessControl
from collector.service import AuthenticationError, PostureService
from collector.web.context import WebContext
from collector.web.errors import ApiError

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Principal",
    "authenticate",
    "check_csrf",
    "context",
    "csrf_token",
    "current_session",
    "end_session",
    "login_with_password",
    "login_with_token",
    "optional_principal",
    "record",
    "require",
    "start_session",
]

SESSION_COOKIE = "posture_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNSET = object()  # not authenticated yet (None: nobody)

log = logging.getLogger("posture.collector.web")


def context(request: Request) -> WebContext:
    """The app's ``WebContext`` (service, worker, reader pool)."""
    ctx: WebContext = request.app.state.context
    return ctx


async def record(
    request: Request,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    detail: dict[str, object] | None = None,
) -> None:
    """Append to the audit log (on the store's worker: it is a write)."""
    ctx = context(request)
    await ctx.call(ctx.service.audit.record, actor, action, target, outcome, detail or {})


def _bearer(request: Request) -> str | None:
    """The bearer token, None when the header is absent, "" when it is malformed."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _from_token(service: PostureService, secret: str) -> Principal:
    return AccessControl(service.store, service.clock).authenticate_token(secret)


def _from_session(service: PostureService, secret: str) -> Session:
    return AccessControl(service.store, service.clock).session(secret)


async def _denied(request: Request, actor: str, action: str, reason: str) -> None:
    target = f"{request.method} {request.url.path}"
    await record(request, actor, action, target, "denied", {"reason": reason})


async def authenticate(request: Request) -> Principal | None:
    """Who sent ``request`` (None: nobody logged in). A bearer token that is wrong is a 401,
    never a silent fall-back to anonymous. Cached on the request."""
    cached = getattr(request.state, "principal", _UNSET)
    if cached is None or isinstance(cached, Principal):
        return cached
    ctx = context(request)
    principal: Principal | None = None
    session: Session | None = None
    bearer = _bearer(request)
    if bearer is not None:
        try:
            principal = await ctx.read(_from_token, bearer)
        except AuthenticationError as error:
            await _denied(request, "anonymous", "auth.token", str(error))
            raise ApiError(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from None
    elif cookie := request.cookies.get(SESSION_COOKIE):
        try:
            session = await ctx.read(_from_session, cookie)
            principal = session.principal
        except AuthenticationError:
            session = None  # expired or ended: the visitor is simply logged out
    request.state.principal = principal
    request.state.session = session
    return principal


def current_session(request: Request) -> Session | None:
    """The session behind the request's cookie (after ``authenticate``); None for tokens."""
    session: Session | None = getattr(request.state, "session", None)
    return session


def csrf_token(request: Request) -> str | None:
    """The CSRF token to put in the ``csrf_token`` field of every form the page renders."""
    session = current_session(request)
    return session.csrf_token if session else None


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme in ("http", "https")


async def check_csrf(request: Request) -> None:
    """Refuse (403) an unsafe request made with the session cookie unless it carries the
    session's CSRF token and comes from no foreign origin. Safe methods and bearer-token
    requests pass."""
    session = current_session(request)
    if request.method in _SAFE_METHODS or session is None:
        return
    if not _same_origin(request):
        raise ApiError(403, "cross-origin request refused", "csrf")
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith(_FORM_TYPES):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, session.csrf_token):
        await _denied(request, session.principal.actor, "csrf", "missing or wrong CSRF token")
        raise ApiError(403, "missing or wrong CSRF token", "csrf")


async def optional_principal(request: Request) -> Principal | None:
    """Dependency: the principal if any (pages that show a login link to visitors)."""
    principal = await authenticate(request)
    if principal is not None:
        await check_csrf(request)
    return principal


def require(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency factory: the request's principal, who must hold ``permission``; 401 when
    nobody is logged in, 403 (recorded) when their role may not, or CSRF fails."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if principal is None:
            raise ApiError(
                401,
                "authentication required: log in, or send Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.can(permission):
            reason = f"role {principal.role.value} lacks permission {permission.value}"
            await _denied(request, principal.actor, f"permission.{permission.value}", reason)
            raise ApiError(403, f"forbidden: {reason}")
        await check_csrf(request)
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


# Logging in and out -----------------------------------------------------------------------


def _check_password(service: PostureService, name: str, password: str) -> User:
    return AccessControl(service.store, service.clock).check_password(name, password)


def _open_user_session(service: PostureService, user: User) -> Session:
    return AccessControl(service.store, service.clock).open_user_session(user)


def _open_token_session(service: PostureService, secret: str) -> Session:
    return AccessControl(service.store, service.clock).login_with_token(secret)


async def login_with_password(request: Request, name: str, password: str) -> Session:
    """Check a person's password and open a session (401 and an audit entry when wrong).

    The argon2 check runs on a reader thread, not the store's worker, so a burst of login
    attempts cannot delay agents' acks; opening the session is one short insert.
    """
    ctx = context(request)
    try:
        user = await ctx.read(_check_password, name, password)
        session = await ctx.call(_open_user_session, ctx.service, user)
    except AuthenticationError as error:
        await record(request, name[:64] or "anonymous", "login", f"user:{name[:64]}", "denied")
        raise ApiError(401, str(error)) from None
    await record(request, session.principal.actor, "login", f"user:{name}", "ok")
    return session


async def login_with_token(request: Request, secret: str) -> Session:
    """Open a dashboard session for an API token (it lasts while the token does)."""
    ctx = context(request)
    try:
        session = await ctx.call(_open_token_session, ctx.service, secret)
    except AuthenticationError as error:
        await record(request, "anonymous", "login", "token", "denied")
        raise ApiError(401, str(error)) from None
    await record(request, session.principal.actor, "login", f"token:{session.principal.name}", "ok")
    return session


def start_session(request: Request, response: Response, session: Session) -> None:
    """Give the browser the session cookie (after a login)."""
    lifetime = int((session.expires_at - session.created_at).total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        session.secret,
        max_age=lifetime,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _logout(service: PostureService, secret: str) -> bool:
    return AccessControl(service.store, service.clock).logout(secret)


async def end_session(request: Request, response: Response) -> None:
    """End the request's session server-side and clear the cookie (logout). Call only
    after ``require``/``check_csrf``: logging someone out is an unsafe request too."""
    ctx = context(request)
    secret = request.cookies.get(SESSION_COOKIE, "")
    session = current_session(request)
    ended: bool = bool(secret) and await ctx.call(_logout, ctx.service, secret)
    if ended and session is not None:
        await record(request, session.principal.actor, "logout", f"session:{session.id}", "ok")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

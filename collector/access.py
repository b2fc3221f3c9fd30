"""Who may use the collector's API and dashboard, and what each role may do.

Three roles (DESIGN §8): **admin** (everything), **analyst** (everything but enroll secrets,
API tokens and people's roles) and **auditor** (reads and reports only; no secrets, no
tokens). What a role may do is data (``ROLE_PERMISSIONS``), so the authorization test can
enumerate it and a new permission has one place to be granted.

Credentials are of two kinds. **API tokens** are for scripts: 256 random bits shown once and
stored as SHA-256 (a random 256-bit value needs no slow hash). **People** log in with a
password, stored with argon2id (argon2-cffi's defaults, RFC 9106's second recommendation),
and get a **session**: again 256 random bits held by the browser in a cookie and stored
hashed, with an absolute expiry, ended server-side on logout, when the person is disabled,
or when the token it was opened with is revoked. A session's CSRF token is an HMAC of the
session secret, so it needs no storage and is worthless without the cookie.

This module is data and hashing only; the rules (who may be created, how a login is
checked) are in ``collector.accounts``, and ``collector.web.auth`` maps both onto requests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

__all__ = [
    "ROLE_PERMISSIONS",
    "SESSION_LIFETIME",
    "TOKEN_PREFIX",
    "AccessStore",
    "ApiToken",
    "Permission",
    "Principal",
    "PrincipalKind",
    "Role",
    "Session",
    "SessionRecord",
    "User",
    "csrf_for",
    "hash_token",
    "valid_name",
]

#: API tokens start with this, so a leaked one is recognisable in logs and by scanners.
TOKEN_PREFIX = "pst_"
#: How long a person's session lasts from login, whatever they do.
SESSION_LIFETIME = timedelta(hours=8)


class Role(StrEnum):
    ADMIN = "admin"
    ANALYST = "analyst"
    AUDITOR = "auditor"


class Permission(StrEnum):
    """One kind of action; each endpoint needs exactly one."""

    READ = "read"  # fleet, groups, hosts, facts, checks, drift, waivers, audit log
    REPORT = "report"  # generate and verify compliance reports
    WAIVER_WRITE = "waiver.write"  # request, approve, revoke waivers
    BASELINE_APPROVE = "baseline.approve"
    GROUP_WRITE = "group.write"  # hostname rules
    HOST_COLLECT = "host.collect"  # ask an agent to collect now
    HOST_CREDENTIAL = "host.credential"  # refuse a host's agent
    SECRETS = "secrets"  # enroll secrets: list, create, revoke
    TOKENS = "tokens"  # API tokens: list, create, revoke
    USERS = "users"  # people: list, add, change roles, disable


_ANALYST = frozenset(Permission) - {Permission.SECRETS, Permission.TOKENS, Permission.USERS}

#: What each role may do.
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.ANALYST: _ANALYST,
    Role.AUDITOR: frozenset({Permission.READ, Permission.REPORT}),
}


class PrincipalKind(StrEnum):
    USER = "user"
    TOKEN = "token"


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a person (``user``) or a script's API token (``token``)."""

    name: str
    role: Role
    kind: PrincipalKind

    @property
    def actor(self) -> str:
        """The name recorded with actions (waivers, audit): tokens are ``token:NAME`` so a
        token never passes for the person of the same name (two-person approval)."""
        return self.name if self.kind is PrincipalKind.USER else f"token:{self.name}"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    def live_at(self, at: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    disabled_at: datetime | None


@dataclass(frozen=True)
class Session:
    """A login: ``secret`` is the cookie's value (known only right after login or when read
    from the request); ``principal`` is who it speaks for, with their role as of now."""

    id: int
    principal: Principal
    created_at: datetime
    expires_at: datetime
    secret: str = ""

    @property
    def csrf_token(self) -> str:
        return csrf_for(self.secret)


#: (session id, created at, expires at, its user or None, its token or None)
SessionRecord = tuple[int, datetime, datetime, User | None, ApiToken | None]


class AccessStore(Protocol):
    """What access control needs from storage (``collector.store.access.AccessMixin``)."""

    def create_api_token(
        self,
        name: str,
        role: str,
        token_hash: str,
        by: str,
        expires: datetime | None,
        now: datetime,
    ) -> ApiToken: ...
    def api_token_by_hash(self, token_hash: str) -> ApiToken | None: ...
    def api_token_by_name(self, name: str) -> ApiToken | None: ...
    def list_api_tokens(self) -> list[ApiToken]: ...
    def revoke_api_token(self, name: str, by: str, now: datetime) -> bool: ...
    def create_user(
        self, name: str, role: str, password_hash: str, by: str, now: datetime
    ) -> User: ...
    def user_by_name(self, name: str) -> User | None: ...
    def user_password_hash(self, name: str) -> str | None: ...
    def list_users(self) -> list[User]: ...
    def set_user_role(self, name: str, role: str) -> bool: ...
    def set_user_password(self, name: str, password_hash: str, now: datetime) -> bool: ...
    def disable_user(self, name: str, now: datetime) -> bool: ...
    def create_session(
        self,
        session_hash: str,
        user_id: int | None,
        token_id: int | None,
        now: datetime,
        expires: datetime,
    ) -> int: ...
    def session_by_hash(self, session_hash: str, now: datetime) -> SessionRecord | None: ...
    def end_session(self, session_hash: str, now: datetime) -> bool: ...
    def end_sessions_of_user(self, name: str, now: datetime) -> int: ...


def hash_token(secret: str) -> str:
    """Tokens and session secrets are 256-bit random values: SHA-256 suffices to store them."""
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_for(session_secret: str) -> str:
    """The session's CSRF token: derived, so nothing to store, and useless without the
    cookie (an attacker's page can neither read the cookie nor compute this)."""
    return hmac.new(session_secret.encode(), b"posture-csrf/1", hashlib.sha256).hexdigest()


def valid_name(name: str) -> bool:
    """Token and user names appear in the audit log and in URLs: keep them plain."""
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "-_.@" for c in name)

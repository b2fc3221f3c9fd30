"""Tokens, people and sessions: the rules of ``collector.access``'s records.

Refusals are ``ServiceError`` (bad names, short passwords, unknown people) and
``AuthenticationError`` (a wrong password, a revoked token, an ended session), so the CLI
and the API turn them into exit codes and status codes like every other domain refusal.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from collector.access import (
    SESSION_LIFETIME,
    TOKEN_PREFIX,
    AccessStore,
    ApiToken,
    Principal,
    PrincipalKind,
    Role,
    Session,
    User,
    hash_token,
    valid_name,
)
from collector.service import AuthenticationError, ServiceError

__all__ = ["MIN_PASSWORD", "AccessControl", "parse_role"]

MIN_PASSWORD = 12


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise ServiceError(
            f"unknown role {text!r}; choose one of {', '.join(r.value for r in Role)}"
        ) from None


class AccessControl:
    """Tokens, people and sessions. Changes are audited by the callers that know who acts
    (the CLI, the API) through ``collector.audit``; this class only enforces the rules."""

    def __init__(
        self,
        store: AccessStore,
        clock: Callable[[], datetime],
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.hasher = hasher or PasswordHasher()

    # API tokens ---------------------------------------------------------------------------

    def create_token(
        self, name: str, role: Role, by: str, expires: datetime | None = None
    ) -> tuple[ApiToken, str]:
        """A new token, returned in clear exactly once."""
        if not valid_name(name):
            raise ServiceError(f"invalid token name {name!r}: letters, digits, '-_.@' only")
        if self.store.api_token_by_name(name) is not None:
            raise ServiceError(f"a token named {name!r} exists (names are never reused)")
        now = self.clock()
        if expires is not None and expires <= now:
            raise ServiceError("a token must expire in the future")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = self.store.create_api_token(name, role.value, hash_token(secret), by, expires, now)
        return record, secret

    def revoke_token(self, name: str, by: str) -> None:
        if not self.store.revoke_api_token(name, by, self.clock()):
            raise ServiceError(f"no live token named {name!r}")

    def list_tokens(self) -> list[ApiToken]:
        return self.store.list_api_tokens()

    def authenticate_token(self, secret: str) -> Principal:
        token = self.store.api_token_by_hash(hash_token(secret)) if secret else None
        if token is None or not token.live_at(self.clock()):
            raise AuthenticationError("unknown, expired or revoked API token")
        return Principal(token.name, token.role, PrincipalKind.TOKEN)

    # People -------------------------------------------------------------------------------

    def add_user(self, name: str, role: Role, password: str, by: str) -> User:
        if not valid_name(name):
            raise ServiceError(f"invalid user name {name!r}: letters, digits, '-_.@' only")
        if self.store.user_by_name(name) is not None:
            raise ServiceError(f"a user named {name!r} exists")
        _check_password(password)
        return self.store.create_user(
            name, role.value, self.hasher.hash(password), by, self.clock()
        )

    def list_users(self) -> list[User]:
        return self.store.list_users()

    def set_role(self, name: str, role: Role) -> None:
        """Takes effect on the person's next request: sessions read the role live."""
        if not self.store.set_user_role(name, role.value):
            raise ServiceError(f"no user named {name!r}")

    def set_password(self, name: str, password: str) -> None:
        """A new password ends every session the person has open."""
        _check_password(password)
        if not self.store.set_user_password(name, self.hasher.hash(password), self.clock()):
            raise ServiceError(f"no user named {name!r}")
        self.store.end_sessions_of_user(name, self.clock())

    def disable_user(self, name: str) -> None:
        now = self.clock()
        if not self.store.disable_user(name, now):
            raise ServiceError(f"no enabled user named {name!r}")
        self.store.end_sessions_of_user(name, now)

    def check_password(self, name: str, password: str) -> User:
        """The person, if ``password`` is theirs and they are enabled. A wrong name costs
        the same hash as a wrong password, so timing does not tell which names exist."""
        stored = self.store.user_password_hash(name)
        user = self.store.user_by_name(name)
        try:
            self.hasher.verify(stored or _dummy_hash(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthenticationError("wrong user name or password") from None
        if stored is None or user is None or user.disabled_at is not None:
            raise AuthenticationError("wrong user name or password")
        return user

    # Sessions -----------------------------------------------------------------------------

    def login(self, name: str, password: str) -> Session:
        return self.open_user_session(self.check_password(name, password))

    def open_user_session(self, user: User) -> Session:
        """A session for a person whose password was just checked (``check_password``)."""
        return self._open(Principal(user.name, user.role, PrincipalKind.USER), user.id, None)

    def login_with_token(self, secret: str) -> Session:
        """A dashboard session speaking for an API token (as long as the token lives)."""
        principal = self.authenticate_token(secret)
        token = self.store.api_token_by_name(principal.name)
        assert token is not None
        return self._open(principal, None, token.id)

    def _open(self, principal: Principal, user_id: int | None, token_id: int | None) -> Session:
        now = self.clock()
        secret = secrets.token_urlsafe(32)
        expires = now + SESSION_LIFETIME
        session_id = self.store.create_session(hash_token(secret), user_id, token_id, now, expires)
        return Session(session_id, principal, now, expires, secret)

    def session(self, secret: str) -> Session:
        """The live session behind a cookie, with its principal's current role."""
        now = self.clock()
        found = self.store.session_by_hash(hash_token(secret), now) if secret else None
        if found is None:
            raise AuthenticationError("no such session, or it expired or ended")
        session_id, created, expires, user, token = found
        if user is not None and user.disabled_at is None:
            principal = Principal(user.name, user.role, PrincipalKind.USER)
        elif token is not None and token.live_at(now):
            principal = Principal(token.name, token.role, PrincipalKind.TOKEN)
        else:
            raise AuthenticationError("the session's user is disabled or its token revoked")
        return Session(session_id, principal, created, expires, secret)

    def logout(self, secret: str) -> bool:
        return bool(secret) and self.store.end_session(hash_token(secret), self.clock())


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ServiceError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ServiceError("a password may have at most 1024 characters")


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both paths cost one argon2 hash."""
    return PasswordHasher().hash(secrets.token_urlsafe(16))

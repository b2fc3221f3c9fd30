"""Tokens, people and sessions in the domain, on a real SQLite store and a moving clock."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.access import ROLE_PERMISSIONS, Permission, Role, csrf_for
from collector.accounts import AccessControl
from collector.collect_requests import CollectRequest, CollectRequests
from collector.service import AuthenticationError, ServiceError
from collector.store import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


Fixture = tuple[AccessControl, Clock, SqliteStore]


@pytest.fixture
def access(tmp_path: Path) -> Iterator[Fixture]:
    store = SqliteStore(tmp_path / "c.db")
    clock = Clock()
    yield AccessControl(store, clock), clock, store
    store.close()


def test_roles_grant_what_the_issue_says() -> None:
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    analyst = ROLE_PERMISSIONS[Role.ANALYST]
    assert {Permission.SECRETS, Permission.TOKENS, Permission.USERS}.isdisjoint(analyst)
    assert Permission.WAIVER_WRITE in analyst
    assert ROLE_PERMISSIONS[Role.AUDITOR] == {Permission.READ, Permission.REPORT}


def test_tokens_are_stored_hashed_and_expire_or_revoke(access: Fixture) -> None:
    control, clock, store = access
    _, secret = control.create_token("ci", Role.AUDITOR, "root", clock.now + timedelta(days=1))
    stored = store.conn.execute("SELECT token_hash FROM api_tokens").fetchone()[0]
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(store.conn.execute("SELECT * FROM api_tokens").fetchall())
    assert control.authenticate_token(secret).actor == "token:ci"
    with pytest.raises(ServiceError, match="never reused"):
        control.create_token("ci", Role.ADMIN, "root")
    clock.now += timedelta(days=2)
    with pytest.raises(AuthenticationError):
        control.authenticate_token(secret)
    _, other = control.create_token("ops", Role.ADMIN, "root")
    control.revoke_token("ops", "root")
    with pytest.raises(AuthenticationError):
        control.authenticate_token(other)


def test_passwords_use_argon2id_and_sessions_expire(access: Fixture) -> None:
    control, clock, store = access
    control.add_user("alice", Role.ANALYST, "a long enough passphrase", "root")
    stored = store.conn.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$")
    with pytest.raises(ServiceError, match="12 characters"):
        control.add_user("bob", Role.ANALYST, "short", "root")
    with pytest.raises(AuthenticationError):
        control.login("alice", "a wrong passphrase!!")
    session = control.login("alice", "a long enough passphrase")
    assert control.session(session.secret).principal.name == "alice"
    assert session.csrf_token == csrf_for(session.secret) != csrf_for(session.secret + "x")
    clock.now += timedelta(hours=8, seconds=1)
    with pytest.raises(AuthenticationError):
        control.session(session.secret)


def test_a_new_password_ends_every_open_session(access: Fixture) -> None:
    control, _, _ = access
    control.add_user("alice", Role.ANALYST, "a long enough passphrase", "root")
    session = control.login("alice", "a long enough passphrase")
    control.set_password("alice", "another long passphrase")
    with pytest.raises(AuthenticationError):
        control.session(session.secret)


def test_collect_requests_collapse_per_host_and_wake_open_streams() -> None:
    registry = CollectRequests()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert registry.request(CollectRequest(7, "alice", at, "first")) is False
    woken: list[str] = []
    handle = registry.stream_opened(7, lambda: woken.append("7"))
    assert registry.is_streaming(7)
    assert registry.request(CollectRequest(7, "bob", at, "second")) is True
    assert woken == ["7"]
    taken = registry.take(7)
    assert taken is not None and taken.requested_by == "bob"
    assert registry.take(7) is None
    registry.stream_closed(7, handle)
    assert not registry.is_streaming(7)

"""Storage of API tokens, people and sessions.

Only hashes are stored: SHA-256 of tokens and session secrets, argon2id of passwords. Rows
are never deleted: a revoked token, a disabled person or an ended session stays, so the
audit log's names keep meaning something. Sessions name either a person or a token, and
are looked up with their principal in one statement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.access import ApiToken, Role, SessionRecord, User
from collector.store.base import StoreBase, dt, ts

__all__ = ["ACCESS_SCHEMA", "AccessMixin"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
ACCESS_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        revoked_by TEXT
    )""",
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        password_changed_at TEXT NOT NULL,
        disabled_at TEXT
    )""",
    """CREATE TABLE web_sessions (
        id INTEGER PRIMARY KEY,
        session_hash TEXT NOT NULL UNIQUE,
        user_id INTEGER REFERENCES users(id),
        token_id INTEGER REFERENCES api_tokens(id),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        ended_at TEXT,
        CHECK ((user_id IS NULL) <> (token_id IS NULL))
    )""",
    "CREATE INDEX web_sessions_user ON web_sessions (user_id)",
)

_TOKEN_COLUMNS = "id, name, role, created_at, created_by, expires_at, revoked_at, revoked_by"
_USER_COLUMNS = "id, name, role, created_at, created_by, disabled_at"


def _token(row: Any) -> ApiToken:
    token_id, name, role, created, by, expires, revoked, revoked_by = row
    return ApiToken(
        token_id, name, Role(role), datetime.fromisoformat(created), by, dt(expires),
        dt(revoked), revoked_by,
    )  # fmt: skip


def _user(row: Any) -> User:
    user_id, name, role, created, by, disabled = row
    return User(user_id, name, Role(role), datetime.fromisoformat(created), by, dt(disabled))


class AccessMixin(StoreBase):
    # API tokens ---------------------------------------------------------------------------

    def create_api_token(
        self,
        name: str,
        role: str,
        token_hash: str,
        by: str,
        expires: datetime | None,
        now: datetime,
    ) -> ApiToken:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO api_tokens (name, role, token_hash, created_at, created_by,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, token_hash, ts(now), by, ts(expires) if expires else None),
            )
        token = self.api_token_by_name(name)
        assert token is not None
        return token

    def _token_where(self, where: str, value: object) -> ApiToken | None:
        row = self.conn.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE {where}", (value,)
        ).fetchone()
        return _token(row) if row else None

    def api_token_by_hash(self, token_hash: str) -> ApiToken | None:
        return self._token_where("token_hash = ?", token_hash)

    def api_token_by_name(self, name: str) -> ApiToken | None:
        return self._token_where("name = ?", name)

    def list_api_tokens(self) -> list[ApiToken]:
        rows = self.conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY id")
        return [_token(row) for row in rows]

    def revoke_api_token(self, name: str, by: str, now: datetime) -> bool:
        """Revoke the token and end the sessions opened with it; False if none was live."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE api_tokens SET revoked_at = ?, revoked_by = ?"
                " WHERE name = ? AND revoked_at IS NULL",
                (ts(now), by, name),
            )
            conn.execute(
                "UPDATE web_sessions SET ended_at = ? WHERE ended_at IS NULL AND token_id IN"
                " (SELECT id FROM api_tokens WHERE name = ?)",
                (ts(now), name),
            )
        return cursor.rowcount == 1

    # People -------------------------------------------------------------------------------

    def create_user(self, name: str, role: str, password_hash: str, by: str, now: datetime) -> User:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO users (name, role, password_hash, created_at, created_by,"
                " password_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, password_hash, ts(now), by, ts(now)),
            )
        user = self.user_by_name(name)
        assert user is not None
        return user

    def user_by_name(self, name: str) -> User | None:
        row = self.conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)
        ).fetchone()
        return _user(row) if row else None

    def user_password_hash(self, name: str) -> str | None:
        row = self.conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,))
        found = row.fetchone()
        return str(found[0]) if found else None

    def list_users(self) -> list[User]:
        return [
            _user(r) for r in self.conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")
        ]

    def _update_user(self, sql: str, params: tuple[object, ...]) -> bool:
        with self._transaction() as conn:
            return conn.execute(sql, params).rowcount == 1

    def set_user_role(self, name: str, role: str) -> bool:
        return self._update_user("UPDATE users SET role = ? WHERE name = ?", (role, name))

    def set_user_password(self, name: str, password_hash: str, now: datetime) -> bool:
        return self._update_user(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ?",
            (password_hash, ts(now), name),
        )

    def disable_user(self, name: str, now: datetime) -> bool:
        return self._update_user(
            "UPDATE users SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL",
            (ts(now), name),
        )

    # Sessions -----------------------------------------------------------------------------

    def create_session(
        self,
        session_hash: str,
        user_id: int | None,
        token_id: int | None,
        now: datetime,
        expires: datetime,
    ) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO web_sessions (session_hash, user_id, token_id, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?)",
                (session_hash, user_id, token_id, ts(now), ts(expires)),
            )
        return int(cursor.lastrowid or 0)

    def session_by_hash(self, session_hash: str, now: datetime) -> SessionRecord | None:
        """A live (not ended, not expired) session with its user or token."""
        row = self.conn.execute(
            "SELECT id, created_at, expires_at, user_id, token_id FROM web_sessions"
            " WHERE session_hash = ? AND ended_at IS NULL AND expires_at > ?",
            (session_hash, ts(now)),
        ).fetchone()
        if row is None:
            return None
        session_id, created, expires, user_id, token_id = row
        user = token = None
        if user_id is not None:
            found = self.conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            user = _user(found) if found else None
        if token_id is not None:
            token = self._token_where("id = ?", token_id)
        created_at, expires_at = datetime.fromisoformat(created), datetime.fromisoformat(expires)
        return session_id, created_at, expires_at, user, token

    def end_session(self, session_hash: str, now: datetime) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE web_sessions SET ended_at = ? WHERE session_hash = ? AND ended_at IS NULL",
                (ts(now), session_hash),
            )
        return cursor.rowcount == 1

    def end_sessions_of_user(self, name: str, now: datetime) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE web_sessions SET ended_at = ? WHERE ended_at IS NULL AND user_id IN"
                " (SELECT id FROM users WHERE name = ?)",
                (ts(now), name),
            )
        return int(cursor.rowcount)

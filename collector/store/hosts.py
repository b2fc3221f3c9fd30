"""Enroll secrets and hosts.

A secret's use is taken in the transaction that creates the host, by a statement that
succeeds only while the secret is live (unrevoked, unexpired, uses left): two agents racing
for the last use of a ``--max-uses 1`` secret cannot both enroll.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from collector.enrollment import EnrollSecretRecord
from collector.model import EnrollSecret, Host, HostIdentity
from collector.store.base import StoreBase, dt, ts

__all__ = ["HostExistsError", "HostsMixin", "SecretSpentError"]


class HostExistsError(Exception):
    """A host with this hardware identity is already enrolled."""


class SecretSpentError(Exception):
    """The enroll secret stopped being live (revoked, expired, used up) before this use."""


class HostsMixin(StoreBase):
    # Enroll secrets -------------------------------------------------------------------

    def create_enroll_secret(
        self,
        name: str,
        secret_hash: str,
        now: datetime,
        group: str | None = None,
        expires_at: datetime | None = None,
        max_uses: int | None = None,
    ) -> EnrollSecretRecord:
        expires = ts(expires_at) if expires_at else None
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO enroll_secrets (name, secret_hash, created_at, group_name,"
                " expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?)",
                (name, secret_hash, ts(now), group, expires, max_uses),
            )
        secret = self._secret_where("id = ?", cursor.lastrowid)
        assert secret is not None
        return secret

    def list_enroll_secrets(self) -> list[EnrollSecretRecord]:
        return [self._secret(row) for row in self.db["enroll_secrets"].rows_where(order_by="id")]

    def revoke_enroll_secret(self, name: str, now: datetime) -> int:
        """Revoke every live secret called ``name``; returns how many were revoked."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE enroll_secrets SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (ts(now), name),
            )
        return cursor.rowcount

    def find_live_enroll_secret(self, secret_hash: str) -> EnrollSecret | None:
        return self._secret_where("secret_hash = ? AND revoked_at IS NULL", secret_hash)

    def find_enroll_secret(self, secret_hash: str) -> EnrollSecretRecord | None:
        """The secret with this hash, whatever its state (the caller says why it is refused)."""
        return self._secret_where("secret_hash = ?", secret_hash)

    def _secret_where(self, where: str, value: object) -> EnrollSecretRecord | None:
        rows = list(self.db["enroll_secrets"].rows_where(where, [value]))
        return self._secret(rows[0]) if rows else None

    @staticmethod
    def _secret(row: dict[str, Any]) -> EnrollSecretRecord:
        return EnrollSecretRecord(
            id=row["id"],
            name=row["name"],
            created_at=datetime.fromisoformat(row["created_at"]),
            revoked_at=dt(row["revoked_at"]),
            uses=row["uses"],
            group=row["group_name"],
            expires_at=dt(row["expires_at"]),
            max_uses=row["max_uses"],
        )

    def host_secret_groups(self) -> dict[int, str]:
        """Host id -> the group of the enroll secret it enrolled with (hosts with one)."""
        rows = self.conn.execute(
            "SELECT hosts.id, enroll_secrets.group_name FROM hosts"
            " JOIN enroll_secrets ON enroll_secrets.id = hosts.enroll_secret_id"
            " WHERE enroll_secrets.group_name IS NOT NULL"
        )
        return {host_id: group for host_id, group in rows}

    # Hosts ------------------------------------------------------------------------------

    def create_host(
        self,
        identity: HostIdentity,
        credential_hash: str,
        secret: EnrollSecret,
        interval_seconds: int,
        now: datetime,
    ) -> Host:
        record = {
            "hardware_uuid": identity.hardware_uuid,
            "hardware_serial": identity.hardware_serial,
            "hostname": identity.hostname,
            "platform": identity.platform,
            "os_version": identity.os_version,
            "agent_version": identity.agent_version,
            "credential_hash": credential_hash,
            "enroll_secret_id": secret.id,
            "enrolled_at": ts(now),
            "interval_seconds": interval_seconds,
        }
        columns = ", ".join(record)
        try:
            with self._transaction() as conn:
                record["enrolled_at"] = ts(self._stamp(conn, now))
                cursor = conn.execute(
                    f"INSERT INTO hosts ({columns}) VALUES ({', '.join('?' * len(record))})",
                    tuple(record.values()),
                )
                self._use_secret(conn, secret.id, now)
        except sqlite3.IntegrityError as error:
            raise HostExistsError(identity.hostname) from error
        host = self.get_host(cursor.lastrowid or 0)
        assert host is not None
        return host

    @staticmethod
    def _use_secret(conn: sqlite3.Connection, secret_id: int, now: datetime) -> None:
        cursor = conn.execute(
            "UPDATE enroll_secrets SET uses = uses + 1 WHERE id = ? AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?)"
            " AND (max_uses IS NULL OR uses < max_uses)",
            (secret_id, ts(now)),
        )
        if cursor.rowcount != 1:
            raise SecretSpentError(secret_id)

    def get_host(self, host_id: int) -> Host | None:
        return self._host_where("id = ?", host_id)

    def host_by_credential(self, credential_hash: str) -> Host | None:
        return self._host_where("credential_hash = ?", credential_hash)

    def find_hosts(self, reference: str) -> list[Host]:
        """Hosts whose id, hostname or hardware UUID is ``reference``."""
        rows = self.db["hosts"].rows_where(
            "CAST(id AS TEXT) = ? OR hostname = ? OR hardware_uuid = ?", [reference] * 3
        )
        return [self._host(row) for row in rows]

    def list_hosts(self) -> list[Host]:
        return [self._host(row) for row in self.db["hosts"].rows_where(order_by="id")]

    def hosts_enrolled_by(self, at: datetime) -> list[Host]:
        """Hosts enrolled at or before ``at``, by id."""
        rows = self.db["hosts"].rows_where("enrolled_at <= ?", [ts(at)], order_by="id")
        return [self._host(row) for row in rows]

    def revoke_credential(self, host_id: int, now: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE hosts SET credential_revoked_at = ? WHERE id = ?", (ts(now), host_id)
            )

    def mark_seen(self, host_id: int, now: datetime) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE hosts SET last_seen_at = ? WHERE id = ?", (ts(now), host_id))

    def _host_where(self, where: str, value: object) -> Host | None:
        rows = list(self.db["hosts"].rows_where(where, [value]))
        return self._host(rows[0]) if rows else None

    @staticmethod
    def _host(row: dict[str, Any]) -> Host:
        identity = HostIdentity(
            hardware_uuid=row["hardware_uuid"],
            hardware_serial=row["hardware_serial"],
            hostname=row["hostname"],
            platform=row["platform"],
            os_version=row["os_version"],
            agent_version=row["agent_version"],
        )
        return Host(
            id=row["id"],
            identity=identity,
            enrolled_at=datetime.fromisoformat(row["enrolled_at"]),
            last_seen_at=dt(row["last_seen_at"]),
            last_collected_at=dt(row["last_collected_at"]),
            interval_seconds=row["interval_seconds"],
            credential_revoked=row["credential_revoked_at"] is not None,
            last_seq=row["last_seq"],
        )

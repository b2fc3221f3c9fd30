"""SQLite storage through sqlite-utils: the embedded default engine.

sqlite-utils owns the schema and the convenient reads; the hot path (applying a batch)
uses its underlying connection with ``executemany``, as GOALS.md measured. The database runs
in WAL mode with ``synchronous=FULL``: a batch is acknowledged only after its commit, and a
committed batch survives a crash or a power cut. One writer at a time: the service calls this
from a single worker thread; readers (policy evaluation) use their own connections.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from collector.model import (
    EnrollSecret,
    FactBatch,
    Host,
    HostIdentity,
    IngestOutcome,
    StoredResult,
    TableFacts,
    TableState,
)
from collector.policy.model import Pack, Status
from collector.store.facts import host_rows, replace_host_rows
from collector.store.schema import migrate
from protos.posture.v1.tables import TABLES

__all__ = ["HostExistsError", "SqliteStore", "Transition"]


class HostExistsError(Exception):
    """A host with this hardware identity is already enrolled."""


Transition = tuple[str, Status | None, Status]


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SqliteStore:
    """The collector's storage on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        self.db = Database(conn)
        self.conn = conn
        migrate(self.db)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # Enroll secrets -------------------------------------------------------------------

    def create_enroll_secret(self, name: str, secret_hash: str, now: datetime) -> EnrollSecret:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO enroll_secrets (name, secret_hash, created_at) VALUES (?, ?, ?)",
                (name, secret_hash, _ts(now)),
            )
        secret = self._secret_where("id = ?", cursor.lastrowid)
        assert secret is not None
        return secret

    def list_enroll_secrets(self) -> list[EnrollSecret]:
        return [self._secret(row) for row in self.db["enroll_secrets"].rows_where(order_by="id")]

    def revoke_enroll_secret(self, name: str, now: datetime) -> int:
        """Revoke every live secret called ``name``; returns how many were revoked."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE enroll_secrets SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (_ts(now), name),
            )
        return cursor.rowcount

    def find_live_enroll_secret(self, secret_hash: str) -> EnrollSecret | None:
        return self._secret_where("secret_hash = ? AND revoked_at IS NULL", secret_hash)

    def _secret_where(self, where: str, value: object) -> EnrollSecret | None:
        rows = list(self.db["enroll_secrets"].rows_where(where, [value]))
        return self._secret(rows[0]) if rows else None

    @staticmethod
    def _secret(row: dict[str, Any]) -> EnrollSecret:
        return EnrollSecret(
            id=row["id"],
            name=row["name"],
            created_at=datetime.fromisoformat(row["created_at"]),
            revoked_at=_dt(row["revoked_at"]),
            uses=row["uses"],
        )

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
            "enrolled_at": _ts(now),
            "interval_seconds": interval_seconds,
        }
        columns = ", ".join(record)
        try:
            with self._transaction() as conn:
                cursor = conn.execute(
                    f"INSERT INTO hosts ({columns}) VALUES ({', '.join('?' * len(record))})",
                    tuple(record.values()),
                )
                conn.execute("UPDATE enroll_secrets SET uses = uses + 1 WHERE id = ?", (secret.id,))
        except sqlite3.IntegrityError as error:
            raise HostExistsError(identity.hostname) from error
        host = self.get_host(cursor.lastrowid or 0)
        assert host is not None
        return host

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

    def revoke_credential(self, host_id: int, now: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE hosts SET credential_revoked_at = ? WHERE id = ?", (_ts(now), host_id)
            )

    def mark_seen(self, host_id: int, now: datetime) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE hosts SET last_seen_at = ? WHERE id = ?", (_ts(now), host_id))

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
            last_seen_at=_dt(row["last_seen_at"]),
            last_collected_at=_dt(row["last_collected_at"]),
            interval_seconds=row["interval_seconds"],
            credential_revoked=row["credential_revoked_at"] is not None,
            last_seq=row["last_seq"],
        )

    # Facts ------------------------------------------------------------------------------

    def apply_batch(self, host_id: int, batch: FactBatch, now: datetime) -> IngestOutcome:
        """Store a batch once: a (host, seq) already stored changes nothing and is reported."""
        with self._transaction() as conn:
            seen = conn.execute(
                "SELECT 1 FROM batches WHERE host_id = ? AND seq = ?", (host_id, batch.seq)
            ).fetchone()
            if seen:
                return IngestOutcome(seq=batch.seq, duplicate=True)
            known = [table for table in batch.changed if table.name in TABLES]
            for table in known:
                self._replace_table(conn, host_id, batch, table)
            conn.execute(
                "INSERT INTO batches (host_id, seq, collected_at, received_at, tables_changed)"
                " VALUES (?, ?, ?, ?, ?)",
                (host_id, batch.seq, _ts(batch.collected_at), _ts(now), len(known)),
            )
            conn.execute(
                "UPDATE hosts SET last_collected_at = MAX(COALESCE(last_collected_at, ''), ?),"
                " last_seen_at = ?, last_seq = MAX(last_seq, ?) WHERE id = ?",
                (_ts(batch.collected_at), _ts(now), batch.seq, host_id),
            )
            mismatched = self._mismatched_digests(conn, host_id, batch)
        return IngestOutcome(
            seq=batch.seq,
            duplicate=False,
            changed_tables=frozenset(table.name for table in known),
            mismatched_tables=mismatched,
        )

    def _replace_table(
        self, conn: sqlite3.Connection, host_id: int, batch: FactBatch, table: TableFacts
    ) -> None:
        collected_at = _ts(batch.collected_at)
        if not table.error:
            changes = _row_changes(host_rows(conn, host_id, table.name), table.rows)
            conn.executemany(
                "INSERT INTO fact_changes (host_id, table_name, seq, collected_at, change,"
                " row_json) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (host_id, table.name, batch.seq, collected_at, change, row_json)
                    for change, row_json in changes
                ],
            )
            replace_host_rows(conn, host_id, table.name, table.rows)
        conn.execute(
            "INSERT OR REPLACE INTO host_tables (host_id, table_name, digest, error,"
            " collected_at, seq) VALUES (?, ?, ?, ?, ?, ?)",
            (
                host_id,
                table.name,
                batch.digests.get(table.name, ""),
                table.error,
                collected_at,
                batch.seq,
            ),
        )

    @staticmethod
    def _mismatched_digests(
        conn: sqlite3.Connection, host_id: int, batch: FactBatch
    ) -> frozenset[str]:
        held = dict(
            conn.execute(
                "SELECT table_name, digest FROM host_tables WHERE host_id = ?", (host_id,)
            ).fetchall()
        )
        return frozenset(
            name
            for name, digest in batch.digests.items()
            if name in TABLES and held.get(name) != digest
        )

    def table_states(self, host_id: int) -> dict[str, TableState]:
        rows = self.conn.execute(
            "SELECT table_name, digest, error, collected_at FROM host_tables WHERE host_id = ?",
            (host_id,),
        )
        return {
            name: TableState(name, digest, error, datetime.fromisoformat(collected_at))
            for name, digest, error, collected_at in rows
        }

    def host_rows(self, host_id: int, table: str) -> list[dict[str, str]]:
        return host_rows(self.conn, host_id, table)

    def batch_count(self, host_id: int) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM batches WHERE host_id = ?", (host_id,))
        return int(row.fetchone()[0])

    def stored_seqs(self, host_id: int) -> list[int]:
        rows = self.conn.execute(
            "SELECT seq FROM batches WHERE host_id = ? ORDER BY seq", (host_id,)
        )
        return [seq for (seq,) in rows]

    # Results ----------------------------------------------------------------------------

    def save_results(
        self, host_id: int, results: Sequence[StoredResult], now: datetime
    ) -> list[Transition]:
        """Upsert the latest results and record every status change; returns the changes."""
        previous = {result.check_id: result for result in self.results_for(host_id)}
        transitions: list[Transition] = []
        with self._transaction() as conn:
            for result in results:
                before = previous.get(result.check_id)
                changed = before is None or before.status != result.status
                evidence = json.dumps(result.evidence, sort_keys=True)
                changed_at = now if changed or before is None else before.changed_at
                conn.execute(
                    "INSERT OR REPLACE INTO results (host_id, check_id, status, reason,"
                    " evidence_json, evaluated_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        host_id,
                        result.check_id,
                        result.status.value,
                        result.reason,
                        evidence,
                        _ts(now),
                        _ts(changed_at),
                    ),
                )
                if changed:
                    old = before.status if before else None
                    self._record_transition(conn, host_id, result, old, evidence, now)
                    transitions.append((result.check_id, old, result.status))
        return transitions

    @staticmethod
    def _record_transition(
        conn: sqlite3.Connection,
        host_id: int,
        result: StoredResult,
        old: Status | None,
        evidence: str,
        now: datetime,
    ) -> None:
        conn.execute(
            "INSERT INTO result_transitions (host_id, check_id, old_status, new_status, at,"
            " reason, evidence_sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                host_id,
                result.check_id,
                old.value if old else None,
                result.status.value,
                _ts(now),
                result.reason,
                hashlib.sha256(evidence.encode()).hexdigest(),
            ),
        )

    def results_for(self, host_id: int) -> list[StoredResult]:
        rows = self.db["results"].rows_where("host_id = ?", [host_id], order_by="check_id")
        return [_stored_result(row) for row in rows]

    def all_results(self) -> list[StoredResult]:
        rows = self.db["results"].rows_where(order_by="host_id, check_id")
        return [_stored_result(row) for row in rows]

    def transitions_for(self, host_id: int) -> list[dict[str, Any]]:
        return list(
            self.db["result_transitions"].rows_where("host_id = ?", [host_id], order_by="id")
        )

    # Policy packs -----------------------------------------------------------------------

    def record_packs(self, packs: Sequence[Pack], now: datetime) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO policy_packs (name, version, sha256, first_loaded_at)"
                " VALUES (?, ?, ?, ?)",
                [(pack.name, pack.version, pack.sha256, _ts(now)) for pack in packs],
            )


def _stored_result(row: Mapping[str, Any]) -> StoredResult:
    return StoredResult(
        host_id=row["host_id"],
        check_id=row["check_id"],
        status=Status(row["status"]),
        reason=row["reason"],
        evidence=tuple(json.loads(row["evidence_json"])),
        evaluated_at=datetime.fromisoformat(row["evaluated_at"]),
        changed_at=datetime.fromisoformat(row["changed_at"]),
    )


def _row_changes(
    old: Sequence[Mapping[str, str]], new: Sequence[Mapping[str, str]]
) -> list[tuple[str, str]]:
    """Rows added and removed between two versions of a table (as multisets)."""

    def canonical(rows: Sequence[Mapping[str, str]]) -> Counter[str]:
        return Counter(
            json.dumps({k: v for k, v in row.items() if v != ""}, sort_keys=True) for row in rows
        )

    before, after = canonical(old), canonical(new)
    added = [("added", row) for row in (after - before).elements()]
    removed = [("removed", row) for row in (before - after).elements()]
    return added + removed

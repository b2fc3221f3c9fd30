"""Storage of enrollment control: secret limits, client certificates and re-enrollment requests.

Three things an attacker would like to change live here, so each write is one short
transaction that checks its precondition in the same statement (a use of a secret is taken
only while uses remain; a request is decided only while it is pending), never a read
followed by a blind write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.enrollment import (
    ClientCertificate,
    EnrollmentRequest,
    RequestState,
    RevokedSets,
)
from collector.model import HostIdentity
from collector.store.base import StoreBase, dt, ts

__all__ = ["IDENTITY_SCHEMA", "IdentityMixin", "NewRequest"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
IDENTITY_SCHEMA: tuple[str, ...] = (
    "ALTER TABLE enroll_secrets ADD COLUMN expires_at TEXT",
    "ALTER TABLE enroll_secrets ADD COLUMN max_uses INTEGER",
    """CREATE TABLE client_certificates (
        fingerprint TEXT PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        serial TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        revoked_at TEXT,
        revoke_reason TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX client_certificates_host ON client_certificates (host_id)",
    """CREATE TABLE enrollment_requests (
        id INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        token_hash TEXT NOT NULL,
        secret_id INTEGER NOT NULL REFERENCES enroll_secrets(id),
        hardware_uuid TEXT NOT NULL,
        hardware_serial TEXT NOT NULL,
        hostname TEXT NOT NULL,
        platform TEXT NOT NULL,
        os_version TEXT NOT NULL,
        agent_version TEXT NOT NULL,
        peer TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        last_attempt_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'approved', 'denied', 'completed')),
        decided_at TEXT,
        decided_by TEXT,
        reason TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE UNIQUE INDEX enrollment_requests_token ON enrollment_requests (host_id, token_hash)",
    "CREATE INDEX enrollment_requests_state ON enrollment_requests (state, id)",
)

_REQUEST_COLUMNS = (
    "id, host_id, token_hash, secret_id, hardware_uuid, hardware_serial, hostname, platform,"
    " os_version, agent_version, peer, requested_at, last_attempt_at, attempts, state,"
    " decided_at, decided_by, reason"
)


@dataclass(frozen=True)
class NewRequest:
    """A re-enrollment request as the service files it."""

    host_id: int
    token_hash: str
    secret_id: int
    identity: HostIdentity
    peer: str


class IdentityMixin(StoreBase):
    # Client certificates -------------------------------------------------------------------

    def add_certificate(self, certificate: ClientCertificate) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO client_certificates (fingerprint, host_id, serial, not_before,"
                " not_after, issued_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    certificate.fingerprint,
                    certificate.host_id,
                    certificate.serial,
                    ts(certificate.not_before),
                    ts(certificate.not_after),
                    ts(certificate.issued_at),
                ),
            )

    def certificate(self, fingerprint: str) -> ClientCertificate | None:
        rows = list(self.db["client_certificates"].rows_where("fingerprint = ?", [fingerprint]))
        return _certificate(rows[0]) if rows else None

    def host_certificates(self, host_id: int) -> list[ClientCertificate]:
        rows = self.db["client_certificates"].rows_where(
            "host_id = ?", [host_id], order_by="issued_at"
        )
        return [_certificate(row) for row in rows]

    def revoke_host_certificates(self, host_id: int, now: datetime, reason: str) -> int:
        """Revoke every live certificate of ``host_id``; returns how many."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE client_certificates SET revoked_at = ?, revoke_reason = ?"
                " WHERE host_id = ? AND revoked_at IS NULL",
                (ts(now), reason, host_id),
            )
        return cursor.rowcount

    def revoked_sets(self, now: datetime) -> RevokedSets:
        """The deny list: revoked, unexpired certificates and hosts with revoked credentials."""
        fingerprints = self.conn.execute(
            "SELECT fingerprint FROM client_certificates"
            " WHERE revoked_at IS NOT NULL AND not_after > ?",
            (ts(now),),
        ).fetchall()
        hosts = self.conn.execute(
            "SELECT id FROM hosts WHERE credential_revoked_at IS NOT NULL"
        ).fetchall()
        return RevokedSets(
            frozenset(row[0] for row in fingerprints), frozenset(row[0] for row in hosts)
        )

    # Re-enrollment requests ----------------------------------------------------------------

    def host_by_identity(self, identity: HostIdentity) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM hosts WHERE hardware_uuid = ? AND hardware_serial = ?",
            (identity.hardware_uuid, identity.hardware_serial),
        ).fetchone()
        return int(row[0]) if row else None

    def enrollment_request_for(self, host_id: int, token_hash: str) -> EnrollmentRequest | None:
        row = self.conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM enrollment_requests"
            " WHERE host_id = ? AND token_hash = ?",
            (host_id, token_hash),
        ).fetchone()
        return _request(row) if row else None

    def enrollment_request(self, request_id: int) -> EnrollmentRequest | None:
        row = self.conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM enrollment_requests WHERE id = ?", (request_id,)
        ).fetchone()
        return _request(row) if row else None

    def add_enrollment_request(self, request: NewRequest, now: datetime) -> EnrollmentRequest:
        """File a pending request, or count one more attempt of the same (host, token)."""
        identity = request.identity
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO enrollment_requests (host_id, token_hash, secret_id, hardware_uuid,"
                " hardware_serial, hostname, platform, os_version, agent_version, peer,"
                " requested_at, last_attempt_at, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')"
                " ON CONFLICT (host_id, token_hash) DO UPDATE SET"
                " attempts = enrollment_requests.attempts + 1,"
                " last_attempt_at = excluded.last_attempt_at, peer = excluded.peer",
                (
                    request.host_id, request.token_hash, request.secret_id,
                    identity.hardware_uuid, identity.hardware_serial, identity.hostname,
                    identity.platform, identity.os_version, identity.agent_version,
                    request.peer, ts(now), ts(now),
                ),
            )  # fmt: skip
        found = self.enrollment_request_for(request.host_id, request.token_hash)
        assert found is not None
        return found

    def enrollment_requests(self, states: tuple[RequestState, ...]) -> list[EnrollmentRequest]:
        if not states:  # "IN ()" is SQLite's, not PostgreSQL's
            return []
        marks = ", ".join("?" * len(states))
        rows = self.conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM enrollment_requests WHERE state IN ({marks})"
            " ORDER BY id",
            tuple(state.value for state in states),
        ).fetchall()
        return [_request(row) for row in rows]

    def decide_enrollment_request(
        self, request_id: int, approve: bool, by: str, reason: str, now: datetime
    ) -> bool:
        """Approve or deny a *pending* request; False if it was not pending.

        Approving also revokes the host's current credential and certificates and denies the
        host's other pending requests, in the same transaction: from this commit on only the
        approved requester can become this host.
        """
        state = RequestState.APPROVED if approve else RequestState.DENIED
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE enrollment_requests SET state = ?, decided_at = ?, decided_by = ?,"
                " reason = ? WHERE id = ? AND state = 'pending'",
                (state.value, ts(now), by, reason, request_id),
            )
            if cursor.rowcount != 1:
                return False
            if approve:
                self._hand_over(conn, request_id, by, now)
        return True

    @staticmethod
    def _hand_over(conn: Any, request_id: int, by: str, now: datetime) -> None:
        (host_id,) = conn.execute(
            "SELECT host_id FROM enrollment_requests WHERE id = ?", (request_id,)
        ).fetchone()
        conn.execute("UPDATE hosts SET credential_revoked_at = ? WHERE id = ?", (ts(now), host_id))
        conn.execute(
            "UPDATE client_certificates SET revoked_at = ?, revoke_reason = ?"
            " WHERE host_id = ? AND revoked_at IS NULL",
            (ts(now), f"re-enrollment request {request_id} approved", host_id),
        )
        conn.execute(
            "UPDATE enrollment_requests SET state = 'denied', decided_at = ?, decided_by = ?,"
            " reason = ? WHERE host_id = ? AND state = 'pending' AND id != ?",
            (ts(now), by, f"request {request_id} was approved instead", host_id, request_id),
        )

    def complete_enrollment_request(
        self, request: EnrollmentRequest, credential_hash: str, now: datetime
    ) -> bool:
        """The approved requester takes the host over: new credential, its identity fields.

        False if the request is no longer approved (collected already, by a race).
        """
        identity = request.identity
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE enrollment_requests SET state = 'completed', last_attempt_at = ?"
                " WHERE id = ? AND state = 'approved'",
                (ts(now), request.id),
            )
            if cursor.rowcount != 1:
                return False
            conn.execute(
                "UPDATE hosts SET credential_hash = ?, credential_revoked_at = NULL,"
                " hostname = ?, platform = ?, os_version = ?, agent_version = ?,"
                " enroll_secret_id = ? WHERE id = ?",
                (
                    credential_hash, identity.hostname, identity.platform, identity.os_version,
                    identity.agent_version, request.secret_id, request.host_id,
                ),
            )  # fmt: skip
        return True


def _certificate(row: dict[str, Any]) -> ClientCertificate:
    not_before, not_after, issued = (
        dt(row[key]) for key in ("not_before", "not_after", "issued_at")
    )
    assert not_before and not_after and issued
    return ClientCertificate(
        fingerprint=row["fingerprint"],
        host_id=row["host_id"],
        serial=row["serial"],
        not_before=not_before,
        not_after=not_after,
        issued_at=issued,
        revoked_at=dt(row["revoked_at"]),
        revoke_reason=row["revoke_reason"],
    )


def _request(row: tuple[Any, ...]) -> EnrollmentRequest:
    identity = HostIdentity(*row[4:10])
    requested, last = dt(row[11]), dt(row[12])
    assert requested and last
    return EnrollmentRequest(
        id=row[0],
        host_id=row[1],
        token_hash=row[2],
        secret_id=row[3],
        identity=identity,
        peer=row[10],
        requested_at=requested,
        last_attempt_at=last,
        attempts=row[13],
        state=RequestState(row[14]),
        decided_at=dt(row[15]),
        decided_by=row[16],
        reason=row[17],
    )

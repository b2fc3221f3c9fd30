"""Waivers: created once, approved once, revoked once; each step stamped and signed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.store.base import StoreBase, dt, ts
from collector.waivers import Waiver, WaiverScope

__all__ = ["WaiversMixin"]


class WaiversMixin(StoreBase):
    def create_waiver(self, waiver: Waiver) -> Waiver:
        """Store a requested waiver (its ``id`` and approval fields are ignored)."""
        with self._transaction() as conn:
            requested_at = self._stamp(conn, waiver.requested_at)
            cursor = conn.execute(
                "INSERT INTO waivers (check_id, scope, host_id, group_name, justification,"
                " ticket, compensating_control, requested_by, requested_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    waiver.check_id,
                    waiver.scope.value,
                    waiver.host_id,
                    waiver.group,
                    waiver.justification,
                    waiver.ticket,
                    waiver.compensating_control,
                    waiver.requested_by,
                    ts(requested_at),
                    ts(waiver.expires_at),
                ),
            )
        stored = self.get_waiver(cursor.lastrowid or 0)
        assert stored is not None
        return stored

    def get_waiver(self, waiver_id: int) -> Waiver | None:
        rows = list(self.db["waivers"].rows_where("id = ?", [waiver_id]))
        return _waiver(rows[0]) if rows else None

    def list_waivers(self) -> list[Waiver]:
        return [_waiver(row) for row in self.db["waivers"].rows_where(order_by="id")]

    def approve_waiver(self, waiver_id: int, approved_by: str, now: datetime) -> bool:
        """Record the approval; False if the waiver was approved or revoked meanwhile."""
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            cursor = conn.execute(
                "UPDATE waivers SET approved_by = ?, approved_at = ? WHERE id = ?"
                " AND approved_at IS NULL AND revoked_at IS NULL AND requested_by != ?",
                (approved_by, ts(now), waiver_id, approved_by),
            )
        return cursor.rowcount == 1

    def revoke_waiver(self, waiver_id: int, revoked_by: str, reason: str, now: datetime) -> bool:
        """Record the revocation; False if the waiver was revoked meanwhile."""
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            cursor = conn.execute(
                "UPDATE waivers SET revoked_by = ?, revoked_at = ?, revoke_reason = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (revoked_by, ts(now), reason, waiver_id),
            )
        return cursor.rowcount == 1


def _waiver(row: dict[str, Any]) -> Waiver:
    return Waiver(
        id=row["id"],
        check_id=row["check_id"],
        scope=WaiverScope(row["scope"]),
        host_id=row["host_id"],
        group=row["group_name"],
        justification=row["justification"],
        ticket=row["ticket"],
        compensating_control=row["compensating_control"],
        requested_by=row["requested_by"],
        requested_at=datetime.fromisoformat(row["requested_at"]),
        expires_at=datetime.fromisoformat(row["expires_at"]),
        approved_by=row["approved_by"],
        approved_at=dt(row["approved_at"]),
        revoked_by=row["revoked_by"],
        revoked_at=dt(row["revoked_at"]),
        revoke_reason=row["revoke_reason"],
    )

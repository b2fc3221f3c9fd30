"""Group label rules (hostname patterns); rules are added and deleted, never edited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.groups import GroupRule
from collector.store.base import StoreBase, dt, ts

__all__ = ["GroupsMixin"]


class GroupsMixin(StoreBase):
    def add_group_rule(
        self, group: str, hostname_glob: str, created_by: str, now: datetime
    ) -> GroupRule:
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            cursor = conn.execute(
                "INSERT INTO group_rules (group_name, hostname_glob, created_at, created_by)"
                " VALUES (?, ?, ?, ?)",
                (group, hostname_glob, ts(now), created_by),
            )
        return GroupRule(cursor.lastrowid or 0, group, hostname_glob, now, created_by)

    def delete_group_rule(self, rule_id: int, deleted_by: str, now: datetime) -> bool:
        """End a rule (its history stays); False when no live rule has this id."""
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            cursor = conn.execute(
                "UPDATE group_rules SET deleted_at = ?, deleted_by = ?"
                " WHERE id = ? AND deleted_at IS NULL",
                (ts(now), deleted_by, rule_id),
            )
        return cursor.rowcount == 1

    def group_rules(self) -> list[GroupRule]:
        """Every rule, deleted ones included (membership in the past depends on them)."""
        return [_rule(row) for row in self.db["group_rules"].rows_where(order_by="id")]


def _rule(row: dict[str, Any]) -> GroupRule:
    return GroupRule(
        id=row["id"],
        group=row["group_name"],
        hostname_glob=row["hostname_glob"],
        created_at=datetime.fromisoformat(row["created_at"]),
        created_by=row["created_by"],
        deleted_at=dt(row["deleted_at"]),
        deleted_by=row["deleted_by"],
    )

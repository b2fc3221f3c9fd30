"""Storage of delivery gaps and spool epochs."""

from __future__ import annotations

__all__ = ["DELIVERY_SCHEMA"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
DELIVERY_SCHEMA: tuple[str, ...] = ()

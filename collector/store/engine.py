"""Choosing the storage engine from a database location: a path or a URL.

``sqlite:///relative/path``, ``sqlite:////absolute/path`` (SQLAlchemy's spelling) or a plain
path open the embedded SQLite engine; ``postgresql://user@host:port/db`` (or
``postgres://``; any libpq connection URL, with its ``?sslmode=...`` parameters) opens
PostgreSQL, for several collectors sharing one database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from collector.store.sqlite import SqliteStore

__all__ = ["Location", "StoreUnavailableError", "open_store", "parse_location"]

_POSTGRES = re.compile(r"^postgres(?:ql)?:/+", re.IGNORECASE)
#: Any other URL (two letters or more, so that ``C:/`` stays a path; one slash counts, as
#: ``pathlib`` leaves one of the two).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


class StoreUnavailableError(ConnectionError):
    """The database cannot be opened: an unknown URL, or a server that does not answer or
    refuses us (the message names it, without its password, and says why). A
    ``ConnectionError``, so the command line reports it like any other OSError."""


@dataclass(frozen=True)
class Location:
    """A parsed database location: ``engine`` is "sqlite" (with ``path``) or "postgresql"
    (with ``url``)."""

    engine: str
    path: Path | None = None
    url: str | None = None


def parse_location(location: str | Path) -> Location:
    """Which engine ``location`` names; StoreUnavailableError for a URL of an unknown kind.

    A ``postgresql:/host...`` with one slash is taken for ``postgresql://host...``: it is
    what a URL becomes after a round trip through ``pathlib.Path`` (an ``argparse`` option
    typed ``Path``), and it cannot be a file name anyone meant.
    """
    text = str(location)
    if _POSTGRES.match(text):
        return Location("postgresql", url=_POSTGRES.sub("postgresql://", text, count=1))
    if text.lower().startswith("sqlite:"):
        rest = re.sub(r"^sqlite:/*", "", text, flags=re.IGNORECASE)
        absolute = re.match(r"^sqlite:/{4}", text, flags=re.IGNORECASE) is not None
        if not rest:
            raise StoreUnavailableError(f"{text!r} names no SQLite file (sqlite:///path)")
        return Location("sqlite", path=Path("/" + rest if absolute else rest))
    if _SCHEME.match(text):
        raise StoreUnavailableError(
            f"unknown database URL {text.split(':/')[0]}://... "
            "(use a path, sqlite:///path or postgresql://user@host:port/db)"
        )
    return Location("sqlite", path=Path(text))


def open_store(location: str | Path, *, pool_size: int = 8) -> SqliteStore:
    """Open (and migrate) the store at ``location``; see ``parse_location``.

    ``pool_size`` bounds the PostgreSQL connections this store opens (each thread in a
    transaction holds one).
    """
    parsed = parse_location(location)
    if parsed.engine == "postgresql":
        from collector.store.postgres import PostgresStore  # psycopg only when needed

        assert parsed.url is not None
        return PostgresStore(parsed.url, pool_size=pool_size)
    assert parsed.path is not None
    return SqliteStore(parsed.path)

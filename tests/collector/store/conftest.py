"""The storage contract's fixtures: ``store`` runs each test on every engine.

``engine`` is parametrised: ``sqlite`` (a file in tmp_path) and ``postgresql`` (a fresh
database on the session's private PostgreSQL server, ``tests/postgres_fixture.py``). The
PostgreSQL cases skip with the reason when no server can start; the session summary says
which engines ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.store import SqliteStore, open_store


@dataclass(frozen=True)
class Engine:
    """One engine's database for one test: ``open()`` gives a store on it (several stores
    on one database stand for several collectors)."""

    name: str
    location: str

    def open(self) -> SqliteStore:
        return open_store(self.location)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        return Engine("sqlite", str(tmp_path / "collector.db"))
    server = request.getfixturevalue("postgres")
    return Engine("postgresql", server.database())


@pytest.fixture
def store(engine: Engine) -> Iterator[SqliteStore]:
    opened = engine.open()
    yield opened
    opened.close()

"""The storage contract's fixtures: ``store`` runs each test on every engine.

``engine`` is parametrised: ``sqlite`` (a file in tmp_path) and ``postgresql`` (a fresh
database on the session's private PostgreSQL server, ``tests/postgres_fixture.py``). The
PostgreSQL cases skip with the reason when no server can start; the session summary says
which engines ran.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.store import SqliteStore, open_store


def _fixture_module() -> Any:
    name = "posture_tests_postgres"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "postgres_fixture.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_pg = _fixture_module()
postgres = _pg.postgres


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(_pg.describe())

"""A private PostgreSQL server for the tests that need one, and databases on it.

The server (``benchmarks/pgserver.py``: Debian's ``initdb``/``pg_ctl`` on a temporary
directory and a free 127.0.0.1 port) starts once per test session, the first time a test
asks for it, and is stopped when the session ends. When it cannot start (no binaries, no
``postgres`` user), the tests that need it skip with the reason and the SQLite ones still
run; ``describe()`` says which happened, for the session's summary.

``POSTURE_TEST_POSTGRES=off`` skips PostgreSQL on purpose; ``POSTURE_TEST_POSTGRES_URL``
points the tests at an existing server instead (its user must be allowed to create
databases).

Each test gets a database of its own, copied from a migrated template (``CREATE DATABASE
... TEMPLATE``), so a test costs a file copy rather than a migration.

Loaded by path (pytest's importlib mode has no test packages) under one module name, so
every conftest that loads it shares the one server.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
_TEMPLATE = "posture_template"


def _pgserver() -> Any:
    name = "posture_pgserver"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "pgserver.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Postgres:
    """The session's server: ``database()`` gives a fresh migrated database's URL."""

    base_url: str
    version: str
    server: Any = None
    _names: Any = field(default_factory=lambda: itertools.count(1))

    def database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
        return _with_database(self.base_url, name)

    def empty_database(self) -> str:
        """A database with no schema at all (to test migrations themselves)."""
        name = f"e{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return _with_database(self.base_url, name)

    def sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


_state: dict[str, Any] = {}


def session_postgres() -> Postgres | None:
    """The session's server, started on first use; None when unavailable (see ``reason``)."""
    if "server" in _state:
        return _state["server"]  # type: ignore[no-any-return]
    _state["server"] = None
    try:
        _state["server"] = _start()
    except Exception as error:  # any failure to start means "skip PostgreSQL", with why
        _state["reason"] = f"PostgreSQL unavailable: {str(error).strip().splitlines()[0]}"
    return _state["server"]  # type: ignore[no-any-return]


def _start() -> Postgres:
    if os.environ.get("POSTURE_TEST_POSTGRES", "").lower() in ("0", "off", "no"):
        raise RuntimeError("disabled by POSTURE_TEST_POSTGRES=off")
    external = os.environ.get("POSTURE_TEST_POSTGRES_URL")
    server = None
    if external:
        base = external
    else:
        server = _pgserver().PostgresServer().start()
        atexit.register(server.stop)
        base = server.url()
    postgres = Postgres(base, "", server)
    postgres.sql(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
    postgres.sql(f"CREATE DATABASE {_TEMPLATE}")
    _migrate(_with_database(base, _TEMPLATE))
    postgres.version = _version(base)
    return postgres


def _migrate(url: str) -> None:
    from collector.store import open_store

    open_store(url).close()


def _version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def reason() -> str:
    return str(_state.get("reason", "PostgreSQL not started"))


def describe() -> str:
    """One line for the session summary: which engines the store tests ran on."""
    if "server" not in _state:
        return "store engines: no test asked for PostgreSQL"
    server: Postgres | None = _state["server"]
    if server is None:
        return f"store engines: SQLite only; PostgreSQL tests SKIPPED ({reason()})"
    where = "private server" if server.server is not None else "POSTURE_TEST_POSTGRES_URL"
    return f"store engines: SQLite and PostgreSQL {server.version} ({where})"


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """The session's PostgreSQL server; skips the test when there is none."""
    server = session_postgres()
    if server is None:
        pytest.skip(reason())
    return server

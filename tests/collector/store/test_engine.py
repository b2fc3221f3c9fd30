"""Choosing the engine from ``--db``: paths, sqlite:// and postgresql:// URLs, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.store import StoreUnavailableError, open_store, parse_location


def test_paths_and_sqlite_urls_name_a_sqlite_file() -> None:
    assert parse_location("posture.db").path == Path("posture.db")
    assert parse_location(Path("/var/lib/p.db")).path == Path("/var/lib/p.db")
    assert parse_location("sqlite:///rel/p.db").path == Path("rel/p.db")
    assert parse_location("sqlite:////var/lib/p.db").path == Path("/var/lib/p.db")
    assert parse_location("C:/data/p.db").engine == "sqlite"


def test_postgresql_urls_survive_a_trip_through_pathlib() -> None:
    url = "postgresql://posture@db:5432/posture?sslmode=require"
    assert parse_location(url).url == url
    assert parse_location(Path(url)).url == url  # Path() leaves "postgresql:/posture@..."
    assert parse_location("postgres://u@h/d").url == "postgresql://u@h/d"


def test_an_unknown_url_or_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="unknown database URL mysql://"):
        open_store("mysql://x/y")
    with pytest.raises(StoreUnavailableError, match="names no SQLite file"):
        open_store("sqlite:///")
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1/x: connection failed"):
        open_store("postgresql://nobody:secret@127.0.0.1:1/x")
    with pytest.raises(StoreUnavailableError) as refused:
        open_store("postgresql://nobody:secret@127.0.0.1:1/x")
    assert "secret" not in str(refused.value)  # the password never reaches a message
    assert not list(tmp_path.iterdir())

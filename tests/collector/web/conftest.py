"""A real HTTP server (uvicorn on 127.0.0.1) over the real app and a seeded SQLite store.

Three Linux hosts in two groups report facts from the city-baseline pack's own fixtures:
``pd-1`` (Police) fails ``city.linux.only-root-uid-0`` (evidence: the extra UID 0 account
``toor``), ``pd-2`` (Police) passes it, ``parks-1`` (Parks) fails it too. Each role has an
API token, and three people (alice and bob, analysts; carol, admin) can log in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from collector.access import Role
from collector.accounts import AccessControl
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.web.app import create_app

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "policies" / "city-baseline" / "fixtures"
FAILING_CHECK = "city.linux.only-root-uid-0"
PASSWORD = "correct horse battery staple"
ROLES = ("admin", "analyst", "auditor")


def _tables(fixture: str) -> dict[str, list[dict[str, str]]]:
    data = json.loads((FIXTURES / fixture).read_text())
    tables: dict[str, list[dict[str, str]]] = data["tables"]
    return tables


@dataclass
class ApiServer:
    url: str
    service: PostureService
    tokens: dict[str, str]
    hosts: dict[str, Host]
    db: Path
    server: uvicorn.Server
    thread: threading.Thread
    worker: ThreadPoolExecutor
    extra: dict[str, object] = field(default_factory=dict)

    def client(self, role: str | None = None) -> httpx.Client:
        """An HTTP client, with the bearer token of ``role`` if given."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def login(self, name: str) -> tuple[httpx.Client, str]:
        """A client holding ``name``'s session cookie, and the session's CSRF token."""
        client = httpx.Client(base_url=self.url, timeout=120)
        answer = client.post("/api/v1/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        return client, answer.json()["csrf_token"]


def seed(service: PostureService) -> dict[str, Host]:
    _, police = service.create_enroll_secret("police", group="Police")
    _, parks = service.create_enroll_secret("parks", group="Parks")
    hosts = {}
    plan = (
        ("pd-1", police, "city.linux.only-root-uid-0.fail.json"),
        ("pd-2", police, "city.linux.only-root-uid-0.pass.json"),
        ("parks-1", parks, "city.linux.only-root-uid-0.fail.json"),
    )
    for hostname, secret, fixture in plan:
        identity = HostIdentity(f"UUID-{hostname}", f"SN-{hostname}", hostname, "linux",
                                "Debian GNU/Linux 12 (bookworm)", "0.1.0")  # fmt: skip
        host = service.enroll(secret, identity).host
        tables = _tables(fixture)
        batch = FactBatch(1, service.clock(), [TableFacts(n, r) for n, r in tables.items()],
                          {name: f"{name}-1" for name in tables})  # fmt: skip
        service.ingest(host, batch)
        hosts[hostname] = host
    return hosts


def _people(service: PostureService) -> dict[str, str]:
    access = AccessControl(service.store, service.clock)
    tokens = {role: access.create_token(f"{role}-token", Role(role), "test")[1] for role in ROLES}
    for name, role in (("alice", Role.ANALYST), ("bob", Role.ANALYST), ("carol", Role.ADMIN)):
        access.add_user(name, role, PASSWORD, "test")
    access.add_user("dave", Role.AUDITOR, PASSWORD, "test")
    return tokens


def start_api(db: Path) -> ApiServer:
    store = SqliteStore(db)
    service = PostureService(store, load_packs(ROOT / "policies"), interval_seconds=3600)
    hosts = seed(service)
    tokens = _people(service)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posture-store")
    app = create_app(service, worker)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while not server.started:
        assert thread.is_alive() and datetime.now(UTC) < deadline, "uvicorn did not start"
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return ApiServer(f"http://127.0.0.1:{port}", service, tokens, hosts, db, server, thread, worker)


def stop_api(api: ApiServer) -> None:
    api.server.should_exit = True
    api.thread.join(timeout=30)
    api.server.config.app.state.context.close()
    api.worker.shutdown(wait=True)
    api.service.close()
    api.service.store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(tmp_path / "collector.db")
    yield server
    stop_api(server)

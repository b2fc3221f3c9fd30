"""What keeps the agent light: heavy modules stay unimported until a command needs them, and
the daemon gives a collection's memory back.

Each import check runs in a fresh interpreter, since this test process has imported
everything already. Timings and RSS are benchmarks' business (benchmarks/agent_footprint.py);
these tests pin the behaviour the figures rest on.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import platform
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import agent
from agent.memory import release_memory

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("grpc", "cryptography", "google.protobuf", "osquery", "thrift", "asyncio")


def imported_after(code: str) -> list[str]:
    """Which of ``HEAVY`` a fresh interpreter has loaded after running ``code``."""
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_a_collection_imports_no_transport_or_osquery_bindings(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    tables = [{"name": "os_version"}, {"name": "system_controls", "paths": ["kernel.%"]}]
    plan.write_text(json.dumps({"version": "v", "interval_seconds": 300, "tables": tables}))
    code = (
        "from agent.cli import main\n"
        f"assert main(['--osquery-socket', {str(tmp_path / 'none.em')!r}, 'facts', '--plan',"
        f" {str(plan)!r}]) == 0"
    )
    assert imported_after(code) == []


def test_the_daemon_needs_no_cryptography_without_a_client_certificate() -> None:
    assert imported_after("import agent.online") == ["grpc", "google.protobuf", "asyncio"]


def test_the_agent_version_is_the_packages() -> None:
    assert agent.__version__ == importlib.metadata.version("posture")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_glibc_takes_the_allocator_settings() -> None:
    script = "from agent.memory import tune_allocator; print(tune_allocator())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


def test_release_memory_frees_unreachable_cycles() -> None:
    class Node:
        other: Node | None = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    watched = weakref.ref(first)
    del first, second
    gc.disable()
    try:
        assert watched() is not None  # a cycle: reference counting alone never frees it
        release_memory()
        assert watched() is None
    finally:
        gc.enable()

"""The audit log: governance actions land in it with their outcome, and the chain catches
any entry edited, removed, reordered or cut off behind a checkpoint."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from collector.audit import AuditEntry, Checkpoint, verify_chain
from collector.governance import Governance, WaiverRequest
from collector.policy.loader import load_packs
from collector.service import PostureService, ServiceError
from collector.store import SqliteStore
from collector.waivers import WaiverScope

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[PostureService]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(POLICIES), clock=lambda: T0)
    yield service
    service.close()
    store.close()


def _record_five(service: PostureService) -> list[AuditEntry]:
    return [
        service.audit.record("alice", "token.create", f"token:{n}", detail={"role": "analyst"})
        for n in range(5)
    ]


def test_entries_chain_and_verify(service: PostureService) -> None:
    entries = _record_five(service)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in pairwise(entries))
    result = service.audit.verify()
    assert result.intact and result.entries == 5
    assert result.head is not None and result.head.head_hash == entries[-1].hash
    assert service.audit.entries() == entries  # what was stored is what was returned


def _tamper(service: PostureService, sql: str) -> None:
    with sqlite3.connect(service.store.path) as conn:
        conn.execute(sql)


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"], "entry 3: content does not"),
        (["DELETE FROM audit_log WHERE seq = 2"], "entry 3: expected entry 2"),
        (
            [  # swap entries 2 and 3 (through a free key: seq is the primary key)
                "UPDATE audit_log SET seq = 100 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 100",
            ],
            "entry 2: does not link",
        ),
    ],
    ids=["edited", "removed", "reordered"],
)
def test_any_tampering_in_the_middle_is_named(
    service: PostureService, statements: list[str], expected: str
) -> None:
    _record_five(service)
    for statement in statements:
        _tamper(service, statement)
    result = service.audit.verify()
    assert not result.intact
    assert any(problem.startswith(expected) for problem in result.problems), result.problems


def test_cutting_the_tail_is_caught_only_by_a_checkpoint(service: PostureService) -> None:
    _record_five(service)
    checkpoint = service.audit.checkpoint()
    assert checkpoint is not None and checkpoint.seq == 5
    _tamper(service, "DELETE FROM audit_log WHERE seq >= 4")
    assert service.audit.verify().intact  # what is left is a consistent chain...
    result = service.audit.verify([Checkpoint.from_json(checkpoint.to_json())])
    assert result.problems == ["checkpoint at entry 5: that entry is gone (log truncated)"]


def test_a_rewritten_history_does_not_pass_an_old_checkpoint(service: PostureService) -> None:
    _record_five(service)
    checkpoint = service.audit.checkpoint()
    assert checkpoint is not None
    _tamper(service, "DELETE FROM audit_log")
    for n in range(5):  # a forger re-creates a consistent chain of their own
        service.audit.record("mallory", "token.create", f"token:{n}")
    assert service.audit.verify().intact
    assert not service.audit.verify([checkpoint]).intact


def test_verification_is_independent_of_the_store(service: PostureService) -> None:
    entries = _record_five(service)
    assert verify_chain(entries).intact
    assert not verify_chain([entries[0], *entries[2:]]).intact


def test_bad_checkpoint_files_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="not a Posture audit checkpoint"):
        Checkpoint.from_json('{"seq": 1}')
    with pytest.raises(ValueError, match="not a SHA-256"):
        Checkpoint.from_json('{"seq": 1, "head_hash": "ab", "taken_at": "2026-01-01T00:00:00"}')


def test_governance_records_successes_and_refusals(service: PostureService) -> None:
    governance = Governance(service)
    check = next(iter(service.checks))
    request = WaiverRequest(
        check, WaiverScope.FLEET, None, "vendor patch pending", "CHG-1", "isolated VLAN",
        T0 + timedelta(days=30),
    )  # fmt: skip
    waiver = governance.request_waiver(request, "alice")
    with pytest.raises(ServiceError):
        governance.approve_waiver(waiver.id, "alice")  # the requester cannot approve
    governance.approve_waiver(waiver.id, "bob")
    with pytest.raises(ServiceError):
        governance.add_group_rule("bad/name", "*", "carol")
    log = [(e.actor, e.action, e.target, e.outcome) for e in service.audit.entries()]
    assert log == [
        ("alice", "waiver.request", f"check:{check}", "ok"),
        ("alice", "waiver.approve", f"waiver:{waiver.id}", "denied"),
        ("bob", "waiver.approve", f"waiver:{waiver.id}", "ok"),
        ("carol", "group_rule.add", "group:bad/name", "denied"),
    ]
    entries = service.audit.entries()
    assert entries[0].detail["waiver_id"] == waiver.id
    assert entries[1].detail["reason"]  # the rule's own words, for the auditor
    assert service.audit.verify().intact


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "collector", "audit", *args, "--db", str(db)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_cli_verify_checkpoint_and_list(service: PostureService, tmp_path: Path) -> None:
    _record_five(service)
    db = service.store.path
    saved = tmp_path / "head.json"
    assert _cli(db, "checkpoint", "--output", str(saved)).returncode == 0
    verified = _cli(db, "verify", "--checkpoint", str(saved))
    assert verified.returncode == 0, verified.stderr
    assert "intact: 5 entries, 1 checkpoint(s) matched" in verified.stdout
    listed = _cli(db, "list", "--limit", "2")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["4", "5"]
    _tamper(service, "UPDATE audit_log SET target = 'token:9' WHERE seq = 4")
    broken = _cli(db, "verify", "--checkpoint", str(saved))
    assert broken.returncode == 1
    assert "BROKEN entry 4: content does not match its hash (edited)" in broken.stdout
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    refused = _cli(db, "verify", "--checkpoint", str(garbage))
    assert refused.returncode == 2 and "garbage.json" in refused.stderr

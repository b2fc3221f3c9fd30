"""The streamed report against the whole-fleet snapshot it replaced: same hosts, results,
stale overlay, waivers and scores, read a page at a time; scores accumulated host by host
equal scoring's; CSV fields quoted as the csv module reads them; a failed report leaves no
file behind."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.governance import Governance, WaiverRequest
from collector.history import FleetAsOf, Scope, take_snapshot
from collector.model import FactBatch, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.policy.model import Severity, Status
from collector.reporting import ReportRequest, issue_report, issue_report_file
from collector.reports import ReportSpec, renderer_for, stream_report
from collector.reports.tally import FleetTally, Tally
from collector.scoring import fleet_score, host_score
from collector.service import PostureService, ServiceError
from collector.store import SqliteStore
from collector.waivers import WaiverScope
from tests.collector.test_reports import PACK, ROOT_ONLY, TELNET, TOOR

TRICKY = 'pd-"quoted", with\nnewline'


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[PostureService]:
    """Seven hosts over two groups: failures, a stale host, a group waiver."""
    (tmp_path / "packs" / "r").mkdir(parents=True)
    (tmp_path / "packs" / "r" / "pack.yaml").write_text(PACK)
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(tmp_path / "packs"), interval_seconds=3600)
    now = [datetime(2025, 3, 3, 9, 0, tzinfo=UTC)]
    service.clock = lambda: now[0]
    _, police = service.create_enroll_secret("police", group="Police")
    _, parks = service.create_enroll_secret("parks", group="Parks")
    names = ["pd-1", TRICKY, "pd-3", "parks-1", "parks-2", "pd-stale", "parks-3"]
    for index, name in enumerate(names):
        secret = police if name.startswith("pd") else parks
        identity = HostIdentity(f"UUID-{index}", f"SN-{index}", name, "linux", "Debian 12", "0.1")
        host = service.enroll(secret, identity).host
        now[0] += timedelta(minutes=1)
        users = TOOR if index % 2 else ROOT_ONLY
        ports = TELNET if index % 3 == 0 else []
        tables = [TableFacts("users", users), TableFacts("listening_ports", ports)]
        collected = now[0] - (timedelta(hours=5) if name == "pd-stale" else timedelta(seconds=5))
        service.ingest(
            host, FactBatch(1, collected, tables, {"users": "u", "listening_ports": "p"})
        )
    governance = Governance(service)
    waiver = governance.request_waiver(
        WaiverRequest("test.linux.no-telnet", WaiverScope.GROUP, "Parks", "j", "T-1", "c",
                      now[0] + timedelta(days=9)), "bob")  # fmt: skip
    governance.approve_waiver(waiver.id, "carol")
    now[0] += timedelta(minutes=1)
    yield service
    service.close()
    store.close()


def _streamed(service: PostureService, at: datetime, scope: Scope) -> dict[str, object]:
    out = io.BytesIO()
    fleet = FleetAsOf(service.store, service.checks, at, scope, page_size=2)
    renderer = renderer_for("json", fleet.checks, service.packs, "", "", one_host=False)
    with fleet:
        stream_report(fleet, ReportSpec(service.packs, None, at, {}), renderer, out)
    doc = json.loads(out.getvalue())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("group", [None, "Police", "Parks"])
def test_streaming_a_page_at_a_time_shows_what_the_snapshot_shows(
    fleet: PostureService, group: str | None
) -> None:
    at = fleet.clock()
    scope = Scope(group=group)
    doc = _streamed(fleet, at, scope)
    snapshot = take_snapshot(fleet.store, fleet.checks, at, scope)
    hosts = doc["hosts"]
    assert isinstance(hosts, list)
    assert [h["id"] for h in hosts] == [view.host.id for view in snapshot.hosts]
    for host, view in zip(hosts, snapshot.hosts, strict=True):
        assert host["stale"] == view.stale and host["groups"] == list(view.groups)
        shown = [
            (r.raw.check_id, r.status.value, r.raw.status.value, r.reason, r.waived,
             r.waiver.id if r.waiver else None)
            for r in view.results
        ]  # fmt: skip
        streamed = [
            (r["check_id"], r["status"], r["raw_status"], r["reason"], r["waived"],
             r["waiver_id"])
            for r in host["results"]
        ]  # fmt: skip
        assert streamed == shown
        assert host["score"]["raw_percent"] == pytest.approx(view.score.percent, abs=0.005)
        assert host["score"]["waived"] == view.score.waived
    summary = doc["summary"]
    assert isinstance(summary, dict)
    expected = snapshot.fleet
    assert (summary["hosts"], summary["failed"], summary["waived"], summary["unknown"]) == (
        expected.hosts, expected.failed, expected.waived, expected.unknown)  # fmt: skip
    assert summary["adjusted_percent"] == pytest.approx(snapshot.fleet.adjusted_percent, abs=0.005)
    groups = {g["name"]: g["score"] for g in doc["summary_by_group"]}  # type: ignore[attr-defined]
    assert set(groups) == set(snapshot.groups)
    assert any(h["stale"] for h in hosts) == (group != "Parks")


def test_tallies_merged_host_by_host_equal_scoring_over_all_results() -> None:
    rng = random.Random(7)
    hosts = [
        [
            (rng.choice(list(Severity)), rng.choice(list(Status)), rng.random() < 0.2)
            for _ in range(rng.randrange(0, 12))
        ]
        for _ in range(200)
    ]
    fleet = FleetTally()
    for results in hosts:
        tally = Tally()
        for severity, status, waived in results:
            weight = (severity.weight, severity in (Severity.HIGH, Severity.CRITICAL))
            tally.add(weight, status.value, waived)
        expected = host_score(results)
        document = tally.host_document()
        assert document["failed"] == expected.failed and document["waived"] == expected.waived
        assert document["raw_percent"] == (
            None if expected.percent is None else round(expected.percent, 2)
        )
        fleet.add_host(tally)
    expected_fleet = fleet_score(hosts)
    document = fleet.document()
    assert document["distribution"] == expected_fleet.distribution
    assert document["unscored"] == expected_fleet.unscored
    assert document["adjusted_percent"] == round(expected_fleet.adjusted_percent or 0, 2)
    assert document["share_without_severe_failures"] == round(
        expected_fleet.share_without_severe_failures or 0, 4
    )


def test_csv_fields_with_quotes_commas_and_newlines_read_back_intact(
    fleet: PostureService,
) -> None:
    data = issue_report(fleet, ReportRequest(fmt="csv", user="auditor")).data
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    tricky = [row for row in rows if row["hostname"] == TRICKY]
    assert len(tricky) == 2 and len(rows) == 7 * 2
    failing = next(row for row in tricky if row["status"] == "fail")
    assert json.loads(failing["evidence"]) == [
        {"uid": "0", "username": "root"},
        {"uid": "0", "username": "toor"},
    ]
    digests = {row["report_content_sha256"] for row in rows}
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_a_report_that_fails_leaves_no_file_and_no_partial_file(
    fleet: PostureService, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    with pytest.raises(ServiceError, match="in the future"):
        issue_report_file(
            fleet,
            ReportRequest(fmt="json", user="a", as_of=fleet.clock() + timedelta(days=1)),
            target,
        )
    assert list(target.parent.iterdir()) == []
    issued = issue_report_file(fleet, ReportRequest(fmt="json", user="a"), target)
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
    assert json.loads(target.read_bytes())["content_sha256"] == issued.report.content_sha256

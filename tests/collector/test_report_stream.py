"""The streamed report against the whole-fleet snapshot it replaced: same hosts, results,
stale overlay, waivers and scores, read a page at a time; scores accumulated host by host
equal scoring's; CSV fields quoted as the csv module reads them; a failed report leaves no
file behind."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector import cli, reporting
from collector.governance import Governance, WaiverRequest
from collector.history import FleetAsOf, Scope, take_snapshot
from collector.model import FactBatch, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.policy.model import Severity, Status
from collector.reporting import (
    ReportRequest,
    issue_report,
    issue_report_file,
    issue_report_spooled,
)
from collector.reporting import verify_report as verify_report_of
from collector.reports import ReportSpec, renderer_for, stream_report
from collector.reports.parallel import Slice, default_workers, id_blocks, run_parts
from collector.reports.stream import CanonicalSink, Part
from collector.reports.tally import FleetTally, Tally
from collector.scoring import fleet_score, host_score
from collector.service import PostureService, ServiceError
from collector.store import SqliteStore, open_store
from collector.waivers import WaiverScope
from tests.collector.test_reports import PACK, ROOT_ONLY, TELNET, TOOR, _masked, _pdf_text

TRICKY = 'pd-"quoted", with\nnewline'


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[PostureService]:
    """Seven hosts over two groups: failures, a stale host, a group waiver."""
    store = SqliteStore(tmp_path / "collector.db")
    yield from _fleet_on(store, tmp_path)


def _fleet_on(store: SqliteStore, tmp_path: Path) -> Iterator[PostureService]:
    (tmp_path / "packs" / "r").mkdir(parents=True)
    (tmp_path / "packs" / "r" / "pack.yaml").write_text(PACK)
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


# Reports split across worker processes -------------------------------------------------


def _issued(service: PostureService, fmt: str, **request: Any) -> tuple[bytes, str]:
    issued = issue_report(service, ReportRequest(fmt=fmt, user="auditor", **request))
    return issued.data, issued.report.content_sha256


_SCOPES = {"fleet": {}, "group": {"group": "Police"}, "framework": {"framework": "cjis"}}
#: Every text format in every scope, and the PDF once (WeasyPrint is slow).
_SPLIT_CASES = [
    pytest.param(fmt, scope, id=f"{name}-{fmt}")
    for name, scope in _SCOPES.items()
    for fmt in ("json", "csv", "html", "table", "pdf")
    if fmt != "pdf" or not scope
]


@pytest.mark.parametrize(("fmt", "scope"), _SPLIT_CASES)
def test_a_report_split_across_workers_is_the_single_process_report_byte_for_byte(
    fleet: PostureService, fmt: str, scope: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = fleet.clock()
    single, digest = _issued(fleet, fmt, as_of=at, workers=1, page_size=2)
    workers_seen: list[int] = []

    def counting(tasks: list[Slice], sink: CanonicalSink) -> list[Part]:
        workers_seen.append(len(tasks))
        assert len(tasks[0].blocks) == 2  # blocks of 2 hosts, dealt in turn: 0 gets 2 of 4
        return run_parts(tasks, sink)

    monkeypatch.setattr(reporting, "run_parts", counting)
    split, split_digest = _issued(fleet, fmt, as_of=at, workers=3, page_size=2, **scope)
    if scope:  # the same scope in one process
        single, digest = _issued(fleet, fmt, as_of=at, workers=1, page_size=2, **scope)
    assert workers_seen == [3]
    assert split_digest == digest
    if fmt == "pdf":
        stamp = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00")  # generated differs
        first, second = (stamp.sub("<t>", _pdf_text(data)[1]) for data in (single, split))
        assert first.count("Host ") == 7 and first == second
        return
    assert split != single  # generated (sealed) a microsecond apart...
    assert _masked(split, fmt) == _masked(single, fmt)  # ...and nothing else differs


def test_the_hosts_are_cut_into_blocks_of_as_many_hosts_the_last_open_ended() -> None:
    ids = [1, 2, 3, 5, 8, 13, 21]
    assert id_blocks(ids, 100) == [(0, None)]
    assert id_blocks(ids, 3) == [(0, 3), (3, 13), (13, None)]  # 3, 3 and 1 hosts
    assert id_blocks(ids, 1) == [(0, 1), (1, 2), (2, 3), (3, 5), (5, 8), (8, 13), (13, None)]
    assert id_blocks([], 4) == [(0, None)]
    assert default_workers(10) == 1  # too few hosts to be worth a process


def test_a_worker_that_fails_fails_the_report_and_leaves_no_file(
    fleet: PostureService, tmp_path: Path
) -> None:
    # A failing result of the last host names evidence that is not stored: only the worker
    # reading that host can notice (blocks of 2 of 7 hosts: the fourth block, worker 0's).
    last = max(host.id for host in fleet.store.list_hosts())
    fleet.store.conn.execute("PRAGMA foreign_keys=OFF")
    fleet.store.conn.execute(
        "UPDATE result_transitions SET evidence_sha256 = ? WHERE id = (SELECT MAX(id) FROM"
        " result_transitions WHERE host_id = ? AND new_status = 'fail')",
        ("f" * 64, last),
    )
    target = tmp_path / "out" / "report.csv"
    target.parent.mkdir()
    request = ReportRequest(fmt="csv", user="a", workers=3, page_size=2)
    with pytest.raises(
        ServiceError, match=r"report worker 0 \(hosts 1\.\.2, \d+\.\.\) failed: evidence"
    ):
        issue_report_file(fleet, request, target)
    assert list(target.parent.iterdir()) == []
    with pytest.raises(ServiceError, match="workers must be at least 1"):
        issue_report_file(fleet, ReportRequest(fmt="csv", user="a", workers=0), target)


def test_a_spooled_report_is_an_anonymous_file_holding_exactly_the_issued_bytes(
    fleet: PostureService,
) -> None:
    spooled = issue_report_spooled(fleet, ReportRequest(fmt="csv", user="auditor"))
    try:
        assert os.fstat(spooled.file.fileno()).st_nlink == 0  # no name: nothing left behind
        data = spooled.file.read()
    finally:
        spooled.file.close()
    assert len(data) == spooled.size > 0
    assert hashlib.sha256(data).hexdigest() == spooled.sha256
    assert [r.sha256 for r in verify_report_of(fleet, data)] == [spooled.sha256]


@pytest.fixture
def pg_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostureService]:
    server = request.getfixturevalue("postgres")
    yield from _fleet_on(open_store(server.database()), tmp_path)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_on_postgresql_a_split_report_is_the_single_process_report(
    pg_fleet: PostureService, fmt: str
) -> None:
    at = pg_fleet.clock()
    single, digest = _issued(pg_fleet, fmt, as_of=at, workers=1, page_size=2)
    split, split_digest = _issued(pg_fleet, fmt, as_of=at, workers=3, page_size=2)
    assert split_digest == digest
    assert _masked(split, fmt) == _masked(single, fmt)
    assert single.count(b"pd-3") >= 1


def test_the_cli_report_takes_workers_and_writes_the_same_content(
    fleet: PostureService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, packs = str(fleet.store.location), str(tmp_path / "packs")
    at = fleet.clock().isoformat()
    digests = []
    for workers in ("1", "3"):
        out = tmp_path / f"report-{workers}.csv"
        argv = ["report", "--db", db, "--policies", packs, "--format", "csv", "--as-of", at,
                "--workers", workers, "--output", str(out)]  # fmt: skip
        assert cli.main(argv) == 0
        digests.append(capsys.readouterr().err.split("content sha256 ")[1].strip())
        assert out.with_name(out.name + ".sha256").exists()
    assert digests[0] == digests[1] and len(digests[0]) == 64
    with pytest.raises(SystemExit) as usage:
        cli.main(["report", "--db", db, "--policies", packs, "--workers", "0"])
    assert usage.value.code == 2
    assert "at least 1, not '0'" in capsys.readouterr().err


# The host's canonical JSON, written key by key -----------------------------------------


@pytest.mark.parametrize(
    ("hostname", "groups", "instant", "score"),
    [
        (TRICKY, ("Police", "Parks"), "2025-03-03T09:00:00.000001+00:00", (87.5, 100.0, 0.9)),
        ("h\u00e9\u2603\x01\\/", (), None, (None, None, None)),
        ("plain", ('Zeta "q"',), "2025-03-03T09:00:00+00:00", (0.0, 33.33, 1.0)),
    ],
)
def test_a_hosts_json_written_key_by_key_is_its_canonical_json(
    hostname: str, groups: tuple[str, ...], instant: str | None, score: tuple[Any, ...]
) -> None:
    from collector.history import HostRecord
    from collector.reports.stream import _host_json, canonical, host_document

    record = HostRecord(
        12, hostname, "UU\"ID", "SN\n1", "linux", "Debian 12 \u00e9", "0.1", "2025-01-01", groups,
        instant, instant, None, instant is None, None, [], {},
    )  # fmt: skip
    raw, adjusted, coverage = score
    scored = {"raw_percent": raw, "adjusted_percent": adjusted, "coverage": coverage,
              "passed": 3, "failed": 1, "errors": 0, "notapplicable": 2, "unknown": 0,
              "waived": 1}  # fmt: skip
    results = '{"check_id":"a"},{"check_id":"b"}'
    text = _host_json(record, scored, results)
    expected = host_document(record, scored, [{"check_id": "a"}, {"check_id": "b"}])
    assert text == canonical(expected)
    assert json.loads(text) == expected


def test_a_spool_gives_whole_lines_from_itself_and_the_segments_it_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collector.reports import stream

    monkeypatch.setattr(stream, "_CHUNK", 5)  # every line longer than a chunk
    other = tmp_path / "worker-spool"
    other.write_bytes(b"skip\nline-three\nline-four\nskip\n")
    spool = stream.Spool()
    try:
        spool.write("line-one\nline-two\n")
        spool.adopt(other, 5, 26)  # "line-three\nline-four\n"
        spool.adopt(other, 0, 0)  # an empty block adds nothing
        chunks = list(spool.chunks(whole_lines=True))
        assert all(chunk.endswith(b"\n") for chunk in chunks)
        assert b"".join(chunks) == b"line-one\nline-two\nline-three\nline-four\n"
        assert b"".join(spool.chunks()) == b"".join(chunks)
    finally:
        spool.close()


class _DiesOnArrival:
    """Unpickled in a worker process, it ends that process on the spot (as a crash or an
    out-of-memory kill would)."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return os._exit, (3,)


def test_a_worker_that_dies_fails_the_report_naming_it(
    fleet: PostureService, tmp_path: Path
) -> None:
    from collector.history import Given
    from collector.reports.parallel import RendererArgs, WorkerFailedError

    args = RendererArgs("json", fleet.checks, tuple(fleet.packs), "", "", False, "0" * 64)
    task = Slice(
        str(fleet.store.location), fleet.checks, fleet.clock(), Scope(None, None, None),
        "failing", 2, Given((), ()), _DiesOnArrival(), args, ((0, None),), tmp_path, 0,  # type: ignore[arg-type]
    )  # fmt: skip
    written: list[bytes] = []

    class Sink:
        def write_bytes(self, data: bytes | memoryview) -> None:
            written.append(bytes(data))

    with pytest.raises(WorkerFailedError, match=r"report worker 0 \(hosts 1\.\.\) died"):
        run_parts([task], Sink())
    assert written == []

"""Reports from real history: every format, the documented JSON schema, the report of an
instant reproduced byte for byte after new data arrived, and HTML and PDF checked by
parsing and by rendering the pages to images."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pypdfium2
import pytest

from collector.governance import Governance, WaiverRequest
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.reporting import ReportRequest, issue_report, verify_report
from collector.service import PostureService, ServiceError
from collector.store import SqliteStore
from collector.waivers import WaiverScope

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "report-schema.json").read_text())
PACK = """\
name: report-test
version: "2.1"
description: two checks mapped to CJIS and NIST
checks:
  - id: test.linux.only-root-uid-0
    title: Only root has UID 0
    description: d
    rationale: r
    remediation: Remove the extra UID 0 account.
    severity: critical
    platforms: [linux]
    frameworks:
      nist_800_53r5: ["AC-6"]
      cjis: {version: "5.9", sections: ["5.5.2.1"]}
    query: >-
      SELECT 1 FROM users WHERE uid = 0 AND username = 'root'
      AND NOT EXISTS (SELECT 1 FROM users WHERE uid = 0 AND username <> 'root')
    evidence: SELECT username, uid FROM users WHERE uid = 0 ORDER BY username
  - id: test.linux.no-telnet
    title: Nothing listens on the telnet port
    description: d
    rationale: r
    remediation: m
    severity: medium
    platforms: [linux]
    frameworks: {nist_800_53r5: ["CM-7"], cis_controls_v8: ["4.8"]}
    query: SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM listening_ports WHERE port = 23)
"""
ROOT_ONLY = [{"uid": "0", "gid": "0", "username": "root"}]
TOOR = [*ROOT_ONLY, {"uid": "0", "gid": "0", "username": "toor"}]
TELNET = [{"port": "23", "protocol": "6", "family": "2", "address": "0.0.0.0", "path": "/t"}]
HOSTILE = "pd-<script>alert(1)</script>"


class Scenario:
    """Two Police hosts and one Parks host with history, on a clock the test moves."""

    def __init__(self, service: PostureService) -> None:
        self.service, self.store = service, service.store
        self.now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
        service.clock = lambda: self.now
        self.governance = Governance(service)
        _, self.police = service.create_enroll_secret("police", group="Police")
        _, self.parks = service.create_enroll_secret("parks", group="Parks")
        self.seqs: dict[int, int] = {}

    def enroll(self, hostname: str, secret: str) -> Host:
        identity = HostIdentity(f"UUID-{hostname}", f"SN-{hostname}", hostname, "linux",
                                "Debian GNU/Linux 12 (bookworm)", "0.1.0")  # fmt: skip
        return self.service.enroll(secret, identity).host

    def report(self, host: Host, **tables: list[dict[str, str]]) -> None:
        self.now += timedelta(minutes=1)
        seq = self.seqs[host.id] = self.seqs.get(host.id, 0) + 1
        batch = FactBatch(seq, self.now - timedelta(seconds=5),
                          [TableFacts(n, r) for n, r in tables.items()],
                          {name: f"{name}{seq}" for name in tables})  # fmt: skip
        self.service.ingest(host, batch)

    def issue(self, fmt: str, **request: object) -> tuple[bytes, datetime]:
        self.now += timedelta(seconds=1)
        issued = issue_report(self.service, ReportRequest(fmt=fmt, user="auditor", **request))  # type: ignore[arg-type]
        return issued.data, datetime.fromisoformat(issued.report.document["as_of"])


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    (tmp_path / "packs" / "r").mkdir(parents=True)
    (tmp_path / "packs" / "r" / "pack.yaml").write_text(PACK)
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(tmp_path / "packs"), interval_seconds=3600)
    s = Scenario(service)
    for name, secret in (("pd-1", s.police), (HOSTILE, s.police), ("parks-1", s.parks)):
        s.report(s.enroll(name, secret), users=ROOT_ONLY, listening_ports=[])
    s.report(s.store.find_hosts("pd-1")[0], users=TOOR)
    s.report(s.store.find_hosts("parks-1")[0], listening_ports=TELNET)
    waiver = s.governance.request_waiver(
        WaiverRequest("test.linux.no-telnet", WaiverScope.GROUP, "Parks", "radio console",
                      "CHG-7", "isolated VLAN", s.now + timedelta(days=30)), "bob")  # fmt: skip
    s.governance.approve_waiver(waiver.id, "carol")
    yield s
    service.close()
    store.close()


def _document(data: bytes) -> dict[str, object]:
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def test_the_json_report_follows_its_documented_schema_and_states_what_auditors_need(
    scenario: Scenario,
) -> None:
    doc = _document(scenario.issue("json")[0])
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "posture.report/2" and doc["collector"]["name"] == "posture-collector"  # type: ignore[index]
    (pack,) = doc["packs"]  # type: ignore[misc]
    assert (pack["name"], pack["version"], len(pack["sha256"])) == ("report-test", "2.1", 64)
    hosts = {h["hostname"]: h for h in doc["hosts"]}  # type: ignore[attr-defined]
    pd1 = hosts["pd-1"]
    assert (pd1["hardware_uuid"], pd1["hardware_serial"], pd1["agent_version"]) == (
        "UUID-pd-1", "SN-pd-1", "0.1.0")  # fmt: skip
    assert pd1["groups"] == ["Police"] and pd1["facts_collected_at"] and pd1["evaluated_at"]
    result = next(r for r in pd1["results"] if r["check_id"] == "test.linux.only-root-uid-0")
    assert result["status"] == "fail"
    assert result["evidence"] == [
        {"username": "root", "uid": "0"},
        {"username": "toor", "uid": "0"},
    ]
    check = next(c for c in doc["checks"] if c["id"] == result["check_id"])  # type: ignore[attr-defined]
    assert check["severity"] == "critical"
    assert check["frameworks"]["cjis"] == [{"control": "5.5.2.1", "document": "5.9"}]
    parks = hosts["parks-1"]
    telnet = next(r for r in parks["results"] if r["check_id"] == "test.linux.no-telnet")
    assert telnet["status"] == "fail" and telnet["waived"] is True and telnet["waiver_id"] == 1
    assert parks["score"]["raw_percent"] == pytest.approx(100 * 10 / 13, abs=0.01)
    assert parks["score"]["adjusted_percent"] == 100.0
    (waiver,) = doc["waivers"]  # type: ignore[misc]
    assert (waiver["approved_by"], waiver["state"], waiver["ticket"]) == (
        "carol",
        "effective",
        "CHG-7",
    )
    body = {k: v for k, v in doc.items() if k not in ("generated_at", "content_sha256")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == doc["content_sha256"]


#: Where each format states its generation time (and nowhere else).
_GENERATED = {
    "json": re.compile(rb'"generated_at":"[^"]+"'),
    "csv": re.compile(rb",[^,\n]+\n"),  # the last column of every row
    "html": re.compile(rb"<dt>Generated</dt><dd>[^<]+</dd>"),
    "table": re.compile(rb"generated \S+ by"),
}


def _masked(data: bytes, fmt: str) -> bytes:
    """The file with its generation time blanked out."""
    masked, count = _GENERATED[fmt].subn(b"<generated>", data)
    assert count >= 1
    return masked


@pytest.mark.parametrize("fmt", ["json", "csv", "html", "table"])
def test_a_report_as_of_an_instant_is_reproduced_byte_for_byte_after_new_data(
    scenario: Scenario, fmt: str
) -> None:
    first, instant = scenario.issue(fmt)
    # New data of every kind after the instant: a flip, a new host, a waiver, a group rule.
    pd1 = scenario.store.find_hosts("pd-1")[0]
    scenario.report(pd1, users=ROOT_ONLY, listening_ports=TELNET)
    scenario.enroll("pd-2", scenario.police)
    scenario.governance.add_group_rule("Police", "parks-*", "alice")
    waiver = scenario.governance.request_waiver(
        WaiverRequest("test.linux.only-root-uid-0", WaiverScope.FLEET, None, "j", "", "",
                      scenario.now + timedelta(days=3)), "bob")  # fmt: skip
    scenario.governance.approve_waiver(waiver.id, "carol")
    scenario.now += timedelta(minutes=30)
    again, _ = scenario.issue(fmt, as_of=instant)
    assert first != again  # the generation time differs...
    assert _masked(first, fmt) == _masked(again, fmt)  # ...and nothing else does
    now, _ = scenario.issue(fmt)
    assert _masked(now, fmt) != _masked(first, fmt)  # while the data did change


def test_reports_refuse_a_future_instant_and_one_before_the_history_floor(
    scenario: Scenario,
) -> None:
    with pytest.raises(ServiceError, match="in the future"):
        scenario.issue("json", as_of=scenario.now + timedelta(hours=1))
    scenario.store.compact_history(scenario.now - timedelta(minutes=2), [1, 2, 3])
    with pytest.raises(ServiceError, match="was compacted"):
        scenario.issue("json", as_of=scenario.now - timedelta(minutes=3))


def test_reports_filter_by_group_host_and_framework(scenario: Scenario) -> None:
    doc = _document(scenario.issue("json", group="Police", framework="cjis")[0])
    assert sorted(h["hostname"] for h in doc["hosts"]) == sorted([HOSTILE, "pd-1"])  # type: ignore[attr-defined]
    assert [c["id"] for c in doc["checks"]] == ["test.linux.only-root-uid-0"]  # type: ignore[attr-defined]
    assert doc["framework"] == {"key": "cjis", "name": "CJIS Security Policy"}
    (control,) = doc["summary_by_control"]  # type: ignore[misc]
    assert (control["control"], control["pass"], control["fail"]) == ("5.5.2.1", 1, 1)
    assert [g["name"] for g in doc["summary_by_group"]] == ["Police"]  # type: ignore[attr-defined]
    assert doc["waivers"] == []  # the Parks waiver is out of scope
    one = _document(scenario.issue("json", host="parks-1")[0])
    assert [h["hostname"] for h in one["hosts"]] == ["parks-1"]  # type: ignore[attr-defined]


def test_the_csv_has_one_row_per_host_and_check_with_the_policy_name_and_framework_ids(
    scenario: Scenario,
) -> None:
    rows = list(csv.DictReader(io.StringIO(scenario.issue("csv")[0].decode())))
    assert len(rows) == 3 * 2
    row = next(r for r in rows if r["hostname"] == "pd-1" and r["status"] == "fail")
    assert row["policy"] == "Only root has UID 0"
    assert (row["cjis"], row["nist_800_53r5"], row["severity"]) == ("5.5.2.1", "AC-6", "critical")
    waived = next(
        r for r in rows if r["hostname"] == "parks-1" and r["check_id"].endswith("telnet")
    )
    assert (waived["waived"], waived["waiver_id"], waived["groups"]) == ("yes", "1", "Parks")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_report_is_self_contained_escaped_and_complete(scenario: Scenario) -> None:
    html = scenario.issue("html")[0].decode()
    page = _Page()
    page.feed(html)
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert not [
        a for _, a in page.tags if any((v or "").startswith(("http", "//")) for v in a.values())
    ]
    text = " ".join(page.text)
    assert HOSTILE in text  # shown as text, not run: escaped in the source
    assert "<script>alert(1)</script>" not in html
    for expected in ("Only root has UID 0", "UUID-parks-1", "CHG-7", "carol", "report-test"):
        assert expected in text
    assert (
        sum(1 for tag, a in page.tags if tag == "section" and "host" in (a.get("class") or "")) == 3
    )
    assert "@page" in html  # print layout


def _pdf_text(data: bytes) -> tuple[int, str]:
    pdf = pypdfium2.PdfDocument(data)
    try:
        image = pdf[0].render(scale=1).to_pil().convert("L")
        low, high = image.getextrema()
        assert high - low > 100  # ink on paper, not a blank page
        assert sum(image.histogram()[:128]) > 500  # dark pixels: text and rules
        text = "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
        return len(pdf), text
    finally:
        pdf.close()


def test_a_group_pdf_is_the_compact_layout_a_line_per_host_and_its_failing_checks(
    scenario: Scenario,
) -> None:
    pages, text = _pdf_text(scenario.issue("pdf", group="Police")[0])
    assert pages >= 2  # the header and summary, then the hosts
    assert "Compact group layout" in text and "5.5.2.1" in text
    assert "Host 1 pd-1" in text and "test.linux.only-root-uid-0" in text  # the failing check
    assert "Only root has UID 0" in text  # its title, in the checks table
    assert "toor" not in text  # evidence rows stay in the JSON, CSV and HTML


def test_a_host_pdf_is_detailed_with_its_evidence_rows(scenario: Scenario) -> None:
    pages, text = _pdf_text(scenario.issue("pdf", host="pd-1")[0])
    assert pages >= 2  # the summary, then the host's own page
    assert "Compact group layout" not in text
    assert "username=toor" in text and "Only root has UID 0" in text


def test_fleet_reports_carry_evidence_for_failing_results_only_and_say_so(
    scenario: Scenario,
) -> None:
    fleet = _document(scenario.issue("json")[0])
    assert fleet["evidence"] == "failing" and "fail or error only" in str(fleet["evidence_notice"])
    results = [r for h in fleet["hosts"] for r in h["results"]]  # type: ignore[attr-defined]
    for result in results:
        assert len(result["evidence_sha256"]) == 64
        if result["raw_status"] in ("fail", "error"):
            assert isinstance(result["evidence"], list)
        else:
            assert result["evidence"] is None
    assert any(r["evidence"] for r in results)
    one = _document(scenario.issue("json", host="pd-1")[0])
    assert one["evidence"] == "all"
    (host,) = one["hosts"]  # type: ignore[misc]
    passing = [r for r in host["results"] if r["status"] == "pass"]
    assert passing and all(isinstance(r["evidence"], list) for r in passing)
    for fmt, notice in (("table", b"evidence: Fleet-wide"), ("html", b"Fleet-wide report")):
        assert notice in scenario.issue(fmt)[0]


def test_the_json_file_is_the_canonical_json_followed_by_its_seal(scenario: Scenario) -> None:
    data = scenario.issue("json")[0]
    doc = _document(data)
    sealed = b',"content_sha256":"%s","generated_at":"%s"}\n' % (
        str(doc["content_sha256"]).encode(),
        str(doc["generated_at"]).encode(),
    )
    assert data.endswith(sealed)
    body = data[: -len(sealed)] + b"}"
    assert hashlib.sha256(body).hexdigest() == doc["content_sha256"]


def test_issued_reports_verify_and_altered_ones_do_not(scenario: Scenario) -> None:
    data = scenario.issue("csv")[0]
    (record,) = verify_report(scenario.service, data)
    assert (record.format, record.generated_by) == ("csv", "auditor")
    assert verify_report(scenario.service, data.replace(b"fail", b"pass")) == []

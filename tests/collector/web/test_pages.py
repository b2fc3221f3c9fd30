"""The dashboard's pages over real HTTP: a real app on 127.0.0.1 over a real SQLite store
with enrolled hosts, results, drift and waivers; people log in with real passwords.

View models are checked against the domain (the fleet summary must agree with
``PostureService.host_view`` host by host), pages for what a person reads on them, and
roles for what they may see and do: an auditor gets no approve buttons and 403 on POST.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from collector.access import Role
from collector.accounts import AccessControl
from collector.governance import Governance, WaiverRequest
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.waivers import WaiverScope
from collector.web.app import create_app
from collector.web.charts import distribution_chart, trend_chart
from collector.web.serve import start_http
from collector.web.views import (
    PAGE_SIZE,
    HostFilter,
    SummaryCache,
    build_summary,
    filter_hosts,
    score_trend,
    worst_checks,
)

PACK = """\
name: page-test
version: "1"
description: checks the dashboard tests read
checks:
  - id: test.linux.no-telnet
    title: Nothing listens on the telnet port
    description: Telnet sends passwords in clear.
    rationale: Clear-text logins are captured on the wire.
    remediation: Stop and disable the telnet service.
    severity: high
    platforms: [linux]
    frameworks: {nist_800_53r5: ["CM-7"], cjis: {version: "5.9", sections: ["5.10.1.2"]}}
    query: SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM listening_ports WHERE port = 23)
    evidence: SELECT port, address FROM listening_ports WHERE port = 23
  - id: test.linux.has-users
    title: Users exist
    description: There is at least one account.
    rationale: r
    remediation: m
    severity: low
    platforms: [linux]
    frameworks: {nist_800_53r5: ["AC-2"]}
    query: SELECT 1 FROM users
"""
TELNET = "test.linux.no-telnet"
PASSWORD = "correct horse battery"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PORT23 = {"port": "23", "protocol": "6", "family": "2", "address": "10.1.2.3", "path": "/t"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class City:
    service: PostureService
    clock: Clock
    hosts: dict[str, Host]

    def report(self, host: Host, seq: int, telnet: bool) -> None:
        tables = [
            TableFacts("listening_ports", [PORT23] if telnet else []),
            TableFacts("users", [{"uid": "0", "username": "root"}]),
        ]
        digests = {"listening_ports": f"p{telnet}", "users": "u"}
        self.service.ingest(host, FactBatch(seq, self.clock.now, tables, digests))


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    """Police laptops (alpha fails telnet; charlie flips to failing), a Parks one (bravo)."""
    (tmp_path / "packs" / "page-test").mkdir(parents=True)
    (tmp_path / "packs" / "page-test" / "pack.yaml").write_text(PACK)
    clock = Clock()
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(tmp_path / "packs"), clock=clock)
    _, police = service.create_enroll_secret("police", group="Police")
    _, parks = service.create_enroll_secret("parks", group="Parks")
    hosts = {}
    for name, secret in (("alpha", police), ("bravo", parks), ("charlie", police)):
        identity = HostIdentity(f"U-{name}", f"S-{name}", name, "linux", "Debian 12", "0.1.0")
        hosts[name] = service.enroll(secret, identity).host
    city = City(service, clock, hosts)
    city.report(hosts["alpha"], 1, telnet=True)
    city.report(hosts["bravo"], 1, telnet=False)
    city.report(hosts["charlie"], 1, telnet=False)
    clock.now = T0 + timedelta(minutes=2)
    city.report(hosts["charlie"], 2, telnet=True)  # pass -> fail: compliance drift
    access = AccessControl(store, clock)
    for name, role in (("ana", Role.ANALYST), ("bob", Role.ANALYST), ("aud", Role.AUDITOR)):
        access.add_user(name, role, PASSWORD, "test")
    yield city
    service.close()
    store.close()


@dataclass
class Site:
    url: str
    city: City

    @asynccontextmanager
    async def login(self, name: str) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post("/login", data={"username": name, "password": PASSWORD})
            assert response.status_code == 303, response.text
            yield client


@pytest.fixture
async def site(city: City) -> AsyncIterator[Site]:
    worker = ThreadPoolExecutor(max_workers=1)
    app = create_app(city.service, worker)
    endpoint = await start_http(app, "127.0.0.1:0")
    yield Site(endpoint.url, city)
    await endpoint.stop()
    app.state.context.close()
    worker.shutdown()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


# View models ------------------------------------------------------------------------------


def test_summary_agrees_with_the_domain_host_by_host(city: City) -> None:
    service = city.service
    governance = Governance(service)
    request = WaiverRequest(
        TELNET, WaiverScope.HOST, "alpha", "legacy radio console", "CHG-1", "isolated VLAN",
        city.clock.now + timedelta(days=30),
    )  # fmt: skip
    waiver = governance.request_waiver(request, "ana")
    governance.approve_waiver(waiver.id, "bob")
    summary = build_summary(service)
    views = {view.host.id: view for view in service.host_views()}
    assert {row.host.id for row in summary.hosts} == set(views)
    for row in summary.hosts:
        assert row.score == views[row.host.id].score
        assert row.groups == views[row.host.id].groups
    assert summary.fleet == service.fleet()
    assert summary.by_id[city.hosts["alpha"].id].score.waived == 1
    assert summary.failing_hosts[TELNET] == (city.hosts["alpha"].id, city.hosts["charlie"].id)
    assert summary.groups["Police"].hosts == 2 and summary.groups["Parks"].hosts == 1
    assert summary.groups["Parks"].share_without_severe_failures == 1.0


def test_stale_hosts_read_as_unknown_in_the_summary_as_in_the_domain(city: City) -> None:
    city.clock.now = T0 + timedelta(hours=3)  # > 2 intervals of 300 s since the last report
    summary = build_summary(city.service)
    assert all(row.stale for row in summary.hosts)
    assert summary.fleet.unknown == 6 and summary.fleet.percent is None
    assert summary.fleet == city.service.fleet()


def test_hosts_filter_sort_search_and_page(city: City) -> None:
    summary = build_summary(city.service)
    names = [r.hostname for r in filter_hosts(summary, HostFilter()).rows]
    assert names == ["alpha", "bravo", "charlie"]
    assert [r.hostname for r in filter_hosts(summary, HostFilter(group="Police")).rows] == [
        "alpha",
        "charlie",
    ]
    assert [r.hostname for r in filter_hosts(summary, HostFilter(check=TELNET)).rows] == [
        "alpha",
        "charlie",
    ]
    assert [r.hostname for r in filter_hosts(summary, HostFilter(q="BRAV")).rows] == ["bravo"]
    assert [r.hostname for r in filter_hosts(summary, HostFilter(q="S-charlie")).rows] == [
        "charlie"
    ]
    best_first = filter_hosts(summary, HostFilter(sort="score", descending=True)).rows
    assert best_first[0].hostname == "bravo"
    assert filter_hosts(summary, HostFilter(min_score=99)).total == 1
    assert filter_hosts(summary, HostFilter(max_score=50)).total == 2
    assert filter_hosts(summary, HostFilter(platform="windows")).total == 0
    assert filter_hosts(summary, HostFilter(stale=True)).total == 0
    page = filter_hosts(summary, HostFilter(page=99))
    assert page.page == 1 and page.pages == 1 and PAGE_SIZE >= 3


def test_worst_checks_and_trend_follow_the_results(city: City) -> None:
    summary = build_summary(city.service)
    worst = worst_checks(summary)
    assert [(row.check.id, row.failing) for row in worst] == [(TELNET, 2)]
    trend = score_trend(city.service, points=5)
    assert len(trend) == 5 and trend[-1].at == city.clock.now
    # At the end: 2 of 3 telnet checks (weight 7) fail, all 3 users checks (weight 1) pass.
    assert trend[-1].percent == pytest.approx(100 * (7 + 3) / (21 + 3))
    # Before charlie flipped, only alpha failed.
    assert trend[0].percent == pytest.approx(100 * (14 + 3) / 24)


def test_summary_cache_rebuilds_when_the_store_changes(city: City) -> None:
    cache = SummaryCache()
    first = cache.get(city.service)
    assert cache.get(city.service) is first
    city.clock.now += timedelta(seconds=1)
    city.report(city.hosts["alpha"], 2, telnet=False)
    cache.build_seconds = 0.0  # a tiny fleet: no hold-off
    second = cache.get(city.service)
    assert second is not first
    assert second.by_id[city.hosts["alpha"].id].failing == ()


def test_charts_are_svg_without_scripts_or_remote_resources(city: City) -> None:
    summary = build_summary(city.service)
    for svg in (trend_chart(score_trend(city.service)), distribution_chart(summary.fleet)):
        assert svg.startswith("<svg")
        assert "<script" not in svg
        remote = re.findall(r'(?:href|src)\s*=\s*"([^"]+)"', svg)
        assert not [link for link in remote if not link.startswith("#")]
        assert "@import" not in svg and "url(http" not in svg


# Pages over HTTP --------------------------------------------------------------------------


async def test_pages_need_a_login_and_a_wrong_password_is_refused(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as client:
        response = await client.get("/hosts?group=Police")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Fhosts%3Fgroup%3DPolice"
        login = await client.get("/login")
        assert login.status_code == 200 and "<title>Sign in · Posture</title>" in login.text
        wrong = await client.post("/login", data={"username": "ana", "password": "nope" * 4})
        assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
        assert "posture_session" not in wrong.headers.get("set-cookie", "")
        for target, expected in (
            ("/hosts?q=a", "/hosts?q=a"),
            ("//evil.example", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example", "/"),
        ):
            fields = {"username": "aud", "password": PASSWORD, "next": target}
            right = await client.post("/login", data=fields)
            assert right.status_code == 303 and right.headers["location"] == expected


async def test_login_logout_and_the_overview(site: Site) -> None:
    async with site.login("ana") as client:
        page = await client.get("/")
        assert page.status_code == 200
        text = page.text
        assert "<title>Fleet overview · Posture</title>" in text
        assert 'class="skip" href="#main"' in text
        # 3 hosts; alpha and charlie fail a high check: 1 of 3 hosts has no severe failure.
        assert re.search(r'data-testid="share-no-severe">33\.3 %', text)
        assert "Nothing listens on the telnet port" in text  # worst checks
        assert "check_regressed" in text  # newest drift: charlie's flip
        assert "<svg" in text and "<script" not in text
        assert not re.search(r'(?:src|href)\s*=\s*"(?:https?:)?//', text)  # nothing remote
        css = await client.get("/static/posture.css")
        assert css.status_code == 200 and "skip" in css.text
        out = await client.post("/logout", data={"csrf_token": csrf_of(text)})
        assert out.status_code == 303
        after = await client.get("/")
        assert after.status_code == 303 and after.headers["location"].startswith("/login")
        signed_out = await client.get(out.headers["location"])
        assert "Signed out." in signed_out.text


async def test_notices_are_fixed_sentences_never_text_from_the_url(site: Site) -> None:
    async with site.login("ana") as client:
        crafted = await client.get(
            "/waivers", params={"notice": "Call 555-0100 to verify", "done": "pwned"}
        )
        assert "555-0100" not in crafted.text and 'class="notice"' not in crafted.text
        shown = await client.get("/waivers", params={"done": "waiver-approved", "waiver": "7"})
        assert "Waiver 7 approved." in shown.text
        bad_id = await client.get("/waivers", params={"done": "waiver-approved", "waiver": "x"})
        assert 'class="notice"' not in bad_id.text


async def test_hosts_list_host_page_and_evidence(site: Site) -> None:
    async with site.login("aud") as client:
        listing = await client.get("/hosts", params={"check": TELNET, "sort": "hostname"})
        assert listing.status_code == 200
        assert "2 hosts match." in listing.text
        assert ">alpha</a>" in listing.text and ">bravo</a>" not in listing.text
        alpha = site.city.hosts["alpha"].id
        page = await client.get(f"/hosts/{alpha}")
        assert page.status_code == 200 and "<title>alpha · Posture</title>" in page.text
        row = page.text.split(f'id="result-{TELNET}"')[1].split('id="result-')[0]
        assert 'data-status="fail"' in row
        assert "10.1.2.3" in row and '<th scope="col">port</th>' in row  # evidence table
        assert "listening_ports" in page.text  # facts per table
        missing = await client.get("/hosts/9999")
        assert missing.status_code == 404


async def test_check_groups_drift_and_sorting_pages(site: Site) -> None:
    async with site.login("aud") as client:
        check = await client.get(f"/checks/{TELNET}")
        assert check.status_code == 200
        assert "Stop and disable the telnet service." in check.text
        assert "CM-7" in check.text and "5.10.1.2" in check.text
        assert "Failing hosts (2)" in check.text
        assert (await client.get("/checks/no.such")).status_code == 404
        groups = await client.get("/groups")
        assert ">Police</a>" in groups.text and ">Parks</a>" in groups.text
        drift = await client.get("/drift", params={"kind": "compliance"})
        assert "check_regressed" in drift.text and ">charlie</a>" in drift.text
        parks = await client.get("/drift", params={"group": "Parks"})
        assert "No drift events." in parks.text
        by_score = await client.get("/hosts", params={"sort": "score", "dir": "desc"})
        order = re.findall(r'<a href="/hosts/\d+">(\w+)</a>', by_score.text)
        assert order[0] == "bravo"
        assert 'aria-sort="descending"' in by_score.text


async def test_waiver_needs_two_people_through_the_forms(site: Site) -> None:
    async with site.login("ana") as ana, site.login("bob") as bob:
        form = await ana.get("/waivers", params={"check": TELNET, "target": "alpha"})
        fields = {
            "csrf_token": csrf_of(form.text), "check_id": TELNET, "scope": "host",
            "target": "alpha", "expires": "2026-06-01", "ticket": "CHG-9",
            "justification": "radio console", "compensating_control": "VLAN",
        }  # fmt: skip
        created = await ana.post("/waivers", data=fields)
        assert created.status_code == 303
        listing = (await ana.get("/waivers")).text
        assert 'data-state="requested"' in listing
        assert "Approve waiver" not in listing  # not to the requester
        bob_page = (await bob.get("/waivers")).text
        waiver_id = re.search(r'action="/waivers/(\d+)/approve"', bob_page)
        assert waiver_id
        approved = await bob.post(
            f"/waivers/{waiver_id.group(1)}/approve", data={"csrf_token": csrf_of(bob_page)}
        )
        assert approved.status_code == 303
        assert 'data-state="effective"' in (await bob.get("/waivers")).text
        alpha = (await bob.get(f"/hosts/{site.city.hosts['alpha'].id}")).text
        assert ">waived</span>" in alpha
        # Bad input is refused with the reason, and nothing is created.
        bad = await ana.post("/waivers", data=fields | {"expires": "someday"})
        assert bad.status_code == 400 and "is not a date" in bad.text
        no_csrf = await ana.post("/waivers", data=fields | {"csrf_token": "x"})
        assert no_csrf.status_code == 403
    waivers = site.city.service.store.list_waivers()
    assert len(waivers) == 1 and waivers[0].approved_by == "bob"


async def test_auditor_sees_no_write_controls_and_gets_403_on_post(site: Site) -> None:
    async with site.login("ana") as ana:
        page = (await ana.get("/waivers")).text
        fields = {
            "csrf_token": csrf_of(page), "check_id": TELNET, "scope": "fleet", "target": "",
            "expires": "2026-06-01", "ticket": "", "justification": "j",
            "compensating_control": "",
        }  # fmt: skip
        assert (await ana.post("/waivers", data=fields)).status_code == 303
    async with site.login("aud") as aud:
        waivers = (await aud.get("/waivers")).text
        assert 'data-state="requested"' in waivers  # the waiver is listed, without actions
        assert "/approve" not in waivers and "/revoke" not in waivers
        assert 'id="waiver-form"' not in waivers
        host = (await aud.get(f"/hosts/{site.city.hosts['alpha'].id}")).text
        assert "Request a waiver" not in host
        csrf = csrf_of(waivers)  # the sign-out form's token: a valid token, wrong role
        waiver_id = site.city.service.store.list_waivers()[0].id
        for path in ("/waivers", f"/waivers/{waiver_id}/approve", f"/waivers/{waiver_id}/revoke"):
            response = await aud.post(path, data=fields | {"csrf_token": csrf})
            assert response.status_code == 403, path
    assert site.city.service.store.list_waivers()[0].approved_at is None


async def test_reports_download_csv(site: Site) -> None:
    async with site.login("aud") as client:
        page = await client.get("/reports")
        assert page.status_code == 200 and ">Police</option>" in page.text
        data = {"csrf_token": csrf_of(page.text), "group": "Police", "format": "csv"}
        response = await client.post("/reports", data=data)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="posture-Police-')
        assert disposition.endswith('.csv"')
        lines = response.text.splitlines()
        assert any("alpha" in line and TELNET in line and "fail" in line for line in lines)
        assert not any("bravo" in line for line in lines)
        bad = await client.post("/reports", data=data | {"format": "docx"})
        assert bad.status_code == 400 and "unknown format" in bad.text

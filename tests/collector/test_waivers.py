"""Waivers: two people, an expiry that reverts the result by itself, scopes, and reports
that show raw and waiver-adjusted scores side by side."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.governance import Governance, WaiverRequest
from collector.history import Scope, take_snapshot
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.policy.model import Status
from collector.service import PostureService, ServiceError
from collector.store import SqliteStore
from collector.waivers import Waiver, WaiverScope, WaiverState, applicable_waiver

PACK = """\
name: waiver-test
version: "1"
description: one failing check to waive
checks:
  - id: test.linux.no-telnet
    title: Nothing listens on the telnet port
    description: d
    rationale: r
    remediation: m
    severity: high
    platforms: [linux]
    frameworks: {nist_800_53r5: ["CM-7"]}
    query: SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM listening_ports WHERE port = 23)
  - id: test.linux.has-users
    title: Users exist
    description: d
    rationale: r
    remediation: m
    severity: high
    platforms: [linux]
    frameworks: {nist_800_53r5: ["AC-2"]}
    query: SELECT 1 FROM users
"""
CHECK = "test.linux.no-telnet"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
TELNET = [{"port": "23", "protocol": "6", "family": "2", "address": "0.0.0.0", "path": "/t"}]


class City:
    def __init__(self, service: PostureService) -> None:
        self.service, self.store = service, service.store
        self.now = T0
        service.clock = lambda: self.now
        self.governance = Governance(service)
        _, self.police = service.create_enroll_secret("police", group="Police")
        _, self.parks = service.create_enroll_secret("parks", group="Parks")

    def host(self, hostname: str, secret: str) -> Host:
        identity = HostIdentity(f"U-{hostname}", "", hostname, "linux", "Debian 12", "0.1.0")
        host = self.service.enroll(secret, identity).host
        tables = [TableFacts("listening_ports", TELNET), TableFacts("users", [{"uid": "0"}])]
        self.service.ingest(host, FactBatch(1, self.now, tables, {"users": "u"}))
        return host

    def request(self, scope: WaiverScope, target: str | None, days: int = 30) -> Waiver:
        request = WaiverRequest(
            CHECK, scope, target, "telnet needed by the legacy radio console", "CHG-1042",
            "console on an isolated VLAN", self.now + timedelta(days=days),
        )  # fmt: skip
        return self.governance.request_waiver(request, "bob")

    def statuses(self, at: datetime | None = None) -> dict[str, tuple[Status, bool, str]]:
        """Hostname -> (status, waived, "lapsed" if an expired waiver covered it)."""
        snapshot = take_snapshot(self.store, self.service.checks, at or self.now, Scope())
        return {
            h.host.identity.hostname: (r.status, r.waived, "lapsed" if r.lapsed_waiver else "")
            for h in snapshot.hosts
            for r in h.results
            if r.raw.check_id == CHECK
        }


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    (tmp_path / "packs" / "w").mkdir(parents=True)
    (tmp_path / "packs" / "w" / "pack.yaml").write_text(PACK)
    store = SqliteStore(tmp_path / "collector.db")
    # Hosts report every 30 days here, so the weeks these tests span leave them fresh.
    service = PostureService(store, load_packs(tmp_path / "packs"), interval_seconds=30 * 86400)
    yield City(service)
    service.close()
    store.close()


def test_a_waiver_applies_only_once_someone_else_approves_it(city: City) -> None:
    city.host("pd-1", city.police)
    waiver = city.request(WaiverScope.HOST, "pd-1")
    assert waiver.state_at(city.now) is WaiverState.REQUESTED
    assert city.statuses()["pd-1"] == (Status.FAIL, False, "")
    with pytest.raises(ServiceError, match="another person must approve it"):
        city.governance.approve_waiver(waiver.id, "bob")
    city.now += timedelta(hours=1)
    approved = city.governance.approve_waiver(waiver.id, "carol")
    assert (approved.approved_by, approved.approved_at) == ("carol", city.now)
    assert city.statuses()["pd-1"] == (Status.FAIL, True, "")  # the real result stays
    with pytest.raises(ServiceError, match="already approved"):
        city.governance.approve_waiver(waiver.id, "dave")


def test_an_expired_waiver_stops_applying_by_itself_and_says_so(city: City) -> None:
    city.host("pd-1", city.police)
    waiver = city.request(WaiverScope.HOST, "pd-1", days=7)
    city.governance.approve_waiver(waiver.id, "carol")
    during = take_snapshot(city.store, city.service.checks, city.now, Scope())
    city.now += timedelta(days=8)
    assert city.statuses()["pd-1"] == (Status.FAIL, False, "lapsed")
    after = take_snapshot(city.store, city.service.checks, city.now, Scope())
    assert during.fleet.adjusted_percent == 100.0 and during.fleet.percent == 50.0
    assert after.fleet.adjusted_percent == after.fleet.percent == 50.0
    late = city.request(WaiverScope.FLEET, None, days=1)
    city.now += timedelta(days=2)
    with pytest.raises(ServiceError, match="expired; request a new one"):
        city.governance.approve_waiver(late.id, "carol")


def test_a_revoked_waiver_stops_applying_and_history_remembers_it_applied(city: City) -> None:
    city.host("pd-1", city.police)
    waiver = city.request(WaiverScope.FLEET, None)
    city.governance.approve_waiver(waiver.id, "carol")
    approved_at = city.now
    city.now += timedelta(days=1)
    revoked = city.governance.revoke_waiver(waiver.id, "dave", "radio console replaced")
    assert revoked.state_at(city.now) is WaiverState.REVOKED
    assert city.statuses()["pd-1"] == (Status.FAIL, False, "")
    assert city.statuses(approved_at + timedelta(hours=1))["pd-1"][1] is True
    with pytest.raises(ServiceError, match="already revoked"):
        city.governance.revoke_waiver(waiver.id, "dave", "again")


def test_group_waivers_cover_the_group_only(city: City) -> None:
    city.host("pd-1", city.police)
    city.host("parks-1", city.parks)
    waiver = city.request(WaiverScope.GROUP, "Police")
    city.governance.approve_waiver(waiver.id, "carol")
    statuses = city.statuses()
    assert statuses["pd-1"][1] is True and statuses["parks-1"][1] is False
    with pytest.raises(ServiceError, match="no group named 'Fire'"):
        city.request(WaiverScope.GROUP, "Fire")


@pytest.mark.parametrize(
    ("scope", "target", "message"),
    [
        (WaiverScope.HOST, None, "must name its host"),
        (WaiverScope.FLEET, "pd-1", "names no host or group"),
        (WaiverScope.HOST, "nobody", "no host matches"),
    ],
)
def test_malformed_waiver_requests_are_refused(
    city: City, scope: WaiverScope, target: str | None, message: str
) -> None:
    city.host("pd-1", city.police)
    with pytest.raises(ServiceError, match=message):
        city.request(scope, target)


def test_a_waiver_must_expire_in_the_future_and_name_a_loaded_check(city: City) -> None:
    with pytest.raises(ServiceError, match="expire in the future"):
        city.request(WaiverScope.FLEET, None, days=-1)
    request = WaiverRequest(
        "no.such.check", WaiverScope.FLEET, None, "j", "", "", T0 + timedelta(1)
    )
    with pytest.raises(ServiceError, match=r"no check 'no\.such\.check'"):
        city.governance.request_waiver(request, "bob")


def test_the_narrowest_effective_waiver_is_the_one_shown() -> None:
    def waiver(id_: int, scope: WaiverScope, **fields: object) -> Waiver:
        base = dict(check_id=CHECK, host_id=None, group=None, justification="j", ticket="",
                    compensating_control="", requested_by="bob", requested_at=T0,
                    expires_at=T0 + timedelta(9), approved_by="carol", approved_at=T0)  # fmt: skip
        return Waiver(id_, scope=scope, **{**base, **fields})  # type: ignore[arg-type]

    waivers = [
        waiver(1, WaiverScope.FLEET),
        waiver(2, WaiverScope.GROUP, group="Police"),
        waiver(3, WaiverScope.HOST, host_id=7, approved_at=None),  # not approved
    ]
    at = T0 + timedelta(days=1)
    chosen = applicable_waiver(waivers, 7, ["Police"], CHECK, at)
    assert chosen is not None and chosen.id == 2
    fleet_only = applicable_waiver(waivers, 8, ["Parks"], CHECK, at)
    assert fleet_only is not None and fleet_only.id == 1
    assert applicable_waiver(waivers, 7, ["Police"], "other.check", at) is None

"""Configuration drift through the real service and store: the first state is the baseline,
changes against it raise added/removed/modified events, an approved baseline silences them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.drift import EventKind, EventType, StoredEvent
from collector.governance import Governance
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.service import PostureService, ServiceError
from collector.store import EventFilter, SqliteStore

PACK = """\
name: baseline-test
version: "1"
description: one check, so results exist
checks:
  - id: test.linux.has-users
    title: Users exist
    description: d
    rationale: r
    remediation: m
    severity: low
    platforms: [linux]
    frameworks: {nist_800_53r5: ["AC-2"]}
    query: SELECT 1 FROM users
"""


def _port(port: str, pid: str, path: str = "/usr/sbin/sshd") -> dict[str, str]:
    return {"port": port, "protocol": "6", "family": "2", "address": "0.0.0.0", "path": path,
            "pid": pid}  # fmt: skip


PACKAGES = [
    {"name": "openssh-server", "arch": "amd64", "version": "1:9.2p1-2"},
    {"name": "telnetd", "arch": "amd64", "version": "0.17-44"},
]


class Hosts:
    def __init__(self, service: PostureService) -> None:
        self.service = service
        self.store = service.store
        self.seqs: dict[int, int] = {}
        self.now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
        service.clock = lambda: self.now
        _, self.police = service.create_enroll_secret("police", group="Police")

    def enroll(self, hostname: str) -> Host:
        identity = HostIdentity(
            f"U-{hostname}", f"S-{hostname}", hostname, "linux", "Debian 12", "0.1.0"
        )
        return self.service.enroll(self.police, identity).host

    def report(self, host: Host, **tables: list[dict[str, str]]) -> None:
        self.now += timedelta(minutes=5)
        seq = self.seqs[host.id] = self.seqs.get(host.id, 0) + 1
        batch = FactBatch(seq, self.now, [TableFacts(n, r) for n, r in tables.items()],
                          {name: f"{name}{seq}" for name in tables})  # fmt: skip
        self.service.ingest(host, batch)

    def config_events(self, host: Host) -> list[StoredEvent]:
        where = EventFilter(host_ids=frozenset({host.id}), kind=EventKind.CONFIG)
        return self.store.drift_events(where)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    (tmp_path / "packs" / "t").mkdir(parents=True)
    (tmp_path / "packs" / "t" / "pack.yaml").write_text(PACK)
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(tmp_path / "packs"))
    yield Hosts(service)
    service.close()
    store.close()


def _summary(events: list[StoredEvent]) -> list[tuple[str, str, dict[str, str], object, object]]:
    return [
        (e.event.type.value, e.event.view, json.loads(e.event.identity),
         json.loads(e.event.old), json.loads(e.event.new))
        for e in events
    ]  # fmt: skip


def test_the_first_state_is_the_baseline_and_raises_nothing(hosts: Hosts) -> None:
    host = hosts.enroll("pd-1")
    hosts.report(host, listening_ports=[_port("22", "100")], deb_packages=PACKAGES)
    hosts.report(host, listening_ports=[_port("22", "777")], deb_packages=PACKAGES)  # new pid
    assert hosts.config_events(host) == []
    assert hosts.store.baseline_deviations(host.id) == []
    assert set(hosts.store.baseline_set_at(host.id)) == {"listening_ports", "deb_packages"}


def test_changes_against_the_baseline_are_added_removed_and_modified_rows(hosts: Hosts) -> None:
    host = hosts.enroll("pd-1")
    hosts.report(host, listening_ports=[_port("22", "100")], deb_packages=PACKAGES)
    upgraded = {**PACKAGES[0], "version": "1:9.2p1-2+deb12u3"}
    hosts.report(
        host,
        listening_ports=[_port("22", "100"), _port("23", "200", "/usr/sbin/in.telnetd")],
        deb_packages=[upgraded],
    )
    assert _summary(hosts.config_events(host)) == [
        ("added", "listening_ports", {"address": "0.0.0.0", "family": "2",
         "path": "/usr/sbin/in.telnetd", "port": "23", "protocol": "6"}, None, {}),
        ("modified", "deb_packages", {"arch": "amd64", "name": "openssh-server"},
         {"version": "1:9.2p1-2"}, {"version": "1:9.2p1-2+deb12u3"}),
        ("removed", "deb_packages", {"arch": "amd64", "name": "telnetd"},
         {"version": "0.17-44"}, None),
    ]  # fmt: skip
    assert hosts.config_events(host)[1].event.changed_fields == ("version",)
    deviations = hosts.store.baseline_deviations(host.id)
    assert sorted(e.type.value for e in deviations) == ["added", "modified", "removed"]
    # Putting the port back is news too, and leaves one deviation fewer.
    hosts.report(host, listening_ports=[_port("22", "100")])
    assert hosts.config_events(host)[-1].event.type is EventType.RESTORED
    assert len(hosts.store.baseline_deviations(host.id)) == 2


def test_an_approved_baseline_silences_the_expected_change(hosts: Hosts) -> None:
    host = hosts.enroll("pd-1")
    hosts.report(host, deb_packages=PACKAGES)
    upgraded = [{**PACKAGES[0], "version": "1:9.2p1-2+deb12u3"}, PACKAGES[1]]
    hosts.report(host, deb_packages=upgraded)
    assert len(hosts.config_events(host)) == 1
    views = Governance(hosts.service).approve_baselines([host], "alice")
    assert views[host.id] >= 1
    assert hosts.store.baseline_deviations(host.id) == []
    approved_at = hosts.store.baseline_set_at(host.id)["deb_packages"]
    assert approved_at[1] == "alice"
    hosts.report(host, deb_packages=upgraded, listening_ports=[_port("22", "1")])
    hosts.report(host, deb_packages=upgraded)
    assert len(hosts.config_events(host)) == 1  # the upgrade is the baseline now
    # Going back to the old version is now the deviation.
    hosts.report(host, deb_packages=PACKAGES)
    last = hosts.config_events(host)[-1].event
    assert (last.type, json.loads(last.old), json.loads(last.new)) == (
        EventType.MODIFIED, {"version": "1:9.2p1-2+deb12u3"}, {"version": "1:9.2p1-2"}
    )  # fmt: skip


def test_a_group_baseline_approval_covers_every_host_of_the_group(hosts: Hosts) -> None:
    first, second = hosts.enroll("pd-1"), hosts.enroll("pd-2")
    for host in (first, second):
        hosts.report(host, kernel_modules=[{"name": "ext4"}])
        hosts.report(host, kernel_modules=[{"name": "ext4"}, {"name": "usb_storage"}])
    governance = Governance(hosts.service)
    members = governance.hosts_in_group("Police", hosts.now)
    assert [h.id for h in members] == [first.id, second.id]
    governance.approve_baselines(members, "alice")
    assert all(hosts.store.baseline_deviations(h.id) == [] for h in members)
    with pytest.raises(ServiceError, match="no group named 'Parks'"):
        governance.hosts_in_group("Parks", hosts.now)


def test_local_admins_are_tracked_once_all_their_tables_arrived(hosts: Hosts) -> None:
    host = hosts.enroll("pd-1")
    users = [{"uid": "1000", "gid": "1000", "username": "jrivera"}]
    groups = [{"gid": "27", "groupname": "sudo"}]
    hosts.report(host, users=users, groups=groups)
    assert "local_admins" not in hosts.store.baseline_set_at(host.id)
    hosts.report(host, user_groups=[])
    assert "local_admins" in hosts.store.baseline_set_at(host.id)
    hosts.report(host, user_groups=[{"uid": "1000", "gid": "27"}])
    (event,) = [e for e in hosts.config_events(host) if e.event.view == "local_admins"]
    assert event.event.type is EventType.ADDED
    assert json.loads(event.event.identity) == {"groupname": "sudo", "username": "jrivera"}


def test_a_table_that_fails_to_collect_changes_no_baseline_and_raises_nothing(
    hosts: Hosts,
) -> None:
    host = hosts.enroll("pd-1")
    hosts.report(host, kernel_modules=[{"name": "ext4"}])
    hosts.now += timedelta(minutes=5)
    seq = hosts.seqs[host.id] = hosts.seqs[host.id] + 1
    failed = TableFacts("kernel_modules", [], error="permission denied")
    hosts.service.ingest(host, FactBatch(seq, hosts.now, [failed], {"kernel_modules": "e"}))
    hosts.report(host, kernel_modules=[{"name": "ext4"}])
    assert hosts.config_events(host) == []
    assert hosts.store.host_rows(host.id, "kernel_modules") == [{"name": "ext4"}]

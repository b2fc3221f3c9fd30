"""Drift as pure functions: tracked views, row diffs, baseline deviations, compliance flips."""

from __future__ import annotations

import json
import random

import pytest

from collector.drift import (
    Change,
    EventType,
    RowChange,
    State,
    baseline_drift,
    canonical,
    compliance_drift,
    diff_keyed,
    diff_states,
    full_state,
    keyed_state_of_values,
    view_state,
)
from collector.policy.model import Status
from collector.policy.plan import CollectionPlan, PlannedTable
from collector.store.facts import as_dicts, column_names
from collector.tracked import (
    TRACKED,
    TrackedView,
    default_view,
    plan_with_tracking,
    views_for_tables,
)
from protos.posture.v1.tables import TABLES

VIEWS = {view.name: view for view in TRACKED}
PASS, FAIL, ERROR, UNKNOWN = Status.PASS, Status.FAIL, Status.ERROR, Status.UNKNOWN


def _port(port: str, pid: str, protocol: str = "6", path: str = "/usr/sbin/sshd") -> dict[str, str]:
    return {"port": port, "protocol": protocol, "family": "2", "address": "0.0.0.0",
            "path": path, "pid": pid, "fd": "3"}  # fmt: skip


def _identities(state: dict[str, str]) -> list[dict[str, str]]:
    return [json.loads(identity) for identity in sorted(state)]


def test_a_listening_port_is_the_same_port_whichever_pid_holds_it() -> None:
    view = VIEWS["listening_ports"]
    before = view_state(view, {"listening_ports": [_port("22", "100")]})
    after = view_state(view, {"listening_ports": [_port("22", "4242")]})
    assert before == after
    assert _identities(before) == [
        {
            "address": "0.0.0.0",
            "family": "2",
            "path": "/usr/sbin/sshd",
            "port": "22",
            "protocol": "6",
        }
    ]


def test_client_udp_sockets_are_tracked_without_their_random_port() -> None:
    view = VIEWS["listening_ports"]
    chrome = "/opt/google/chrome/chrome"
    one = view_state(view, {"listening_ports": [_port("41234", "1", "17", chrome)]})
    two = view_state(view, {"listening_ports": [_port("55001", "2", "17", chrome)]})
    dns = view_state(view, {"listening_ports": [_port("53", "3", "17", "/usr/sbin/named")]})
    assert one == two and _identities(one)[0]["port"] == "ephemeral"
    assert _identities(dns)[0]["port"] == "53"


def test_row_changes_are_added_removed_and_modified_by_identity() -> None:
    view = VIEWS["deb_packages"]
    old = view_state(view, {"deb_packages": [
        {"name": "openssh-server", "arch": "amd64", "version": "1:9.2p1-2", "size": "1"},
        {"name": "telnetd", "arch": "amd64", "version": "0.17-44"},
    ]})  # fmt: skip
    new = view_state(view, {"deb_packages": [
        {"name": "openssh-server", "arch": "amd64", "version": "1:9.2p1-2+deb12u3", "size": "2"},
        {"name": "auditd", "arch": "amd64", "version": "1:3.0.9-1"},
    ]})  # fmt: skip
    changes = diff_states("deb_packages", old, new)
    assert [(c.change, json.loads(c.identity)["name"]) for c in changes] == [
        (Change.ADDED, "auditd"),
        (Change.MODIFIED, "openssh-server"),
        (Change.REMOVED, "telnetd"),
    ]
    modified = changes[1]
    assert json.loads(modified.old or "") == {"version": "1:9.2p1-2"}
    assert json.loads(modified.new or "") == {"version": "1:9.2p1-2+deb12u3"}


def test_duplicate_identities_merge_their_values_so_no_difference_hides() -> None:
    view = VIEWS["users"]
    rows = [
        {"username": "svc", "uid": "1001", "gid": "1001", "directory": "/", "shell": "/bin/sh"},
        {"username": "svc", "uid": "0", "gid": "0", "directory": "/", "shell": "/bin/sh"},
    ]
    state = view_state(view, {"users": rows})
    assert json.loads(next(iter(state.values())))["uid"] == "0\n1001"


def test_sshd_settings_are_tracked_keyword_by_keyword_within_match_blocks() -> None:
    lines = [
        ("/etc/ssh/sshd_config", "# PermitRootLogin yes"),
        ("/etc/ssh/sshd_config", "PermitRootLogin no"),
        ("/etc/ssh/sshd_config", "PasswordAuthentication=no"),
        ("/etc/ssh/sshd_config", "Match User backup"),
        ("/etc/ssh/sshd_config", "  PasswordAuthentication yes"),
        ("/etc/ssh/sshd_config.d/10-city.conf", "MaxAuthTries 4"),
        ("/etc/login.defs", "PASS_MAX_DAYS 90"),
    ]
    rows = [{"path": path, "line": line} for path, line in lines]
    state = view_state(VIEWS["sshd_settings"], {"file_lines": rows})
    settings = {
        (i["path"].rsplit("/", 1)[1], i["block"], i["keyword"]): json.loads(v)["value"]
        for i, v in ((json.loads(k), v) for k, v in state.items())
    }
    assert settings == {
        ("sshd_config", "", "permitrootlogin"): "no",
        ("sshd_config", "", "passwordauthentication"): "no",
        ("sshd_config", "User backup", "passwordauthentication"): "yes",
        ("10-city.conf", "", "maxauthtries"): "4",
    }


def test_local_admins_are_members_of_admin_groups_by_membership_or_primary_group() -> None:
    tables = {
        "users": [{"uid": "0", "gid": "0", "username": "root"},
                  {"uid": "1000", "gid": "1000", "username": "jrivera"},
                  {"uid": "1001", "gid": "27", "username": "itadmin"}],
        "groups": [{"gid": "27", "groupname": "sudo"}, {"gid": "1000", "groupname": "jrivera"}],
        "user_groups": [{"uid": "1000", "gid": "27"}, {"uid": "1000", "gid": "1000"}],
    }  # fmt: skip
    state = view_state(VIEWS["local_admins"], tables)
    assert _identities(state) == [
        {"groupname": "sudo", "username": "itadmin"},
        {"groupname": "sudo", "username": "jrivera"},
    ]


def test_volatile_sysctls_and_transient_units_are_not_tracked() -> None:
    names = ("net.ipv4.ip_forward", "kernel.random.entropy_avail", "fs.file-nr")
    sysctls = [{"name": name, "current_value": "1", "config_value": ""} for name in names]
    tracked = view_state(VIEWS["system_controls"], {"system_controls": sysctls})
    assert [identity["name"] for identity in _identities(tracked)] == ["net.ipv4.ip_forward"]
    units = [{"id": "ssh.service", "unit_file_state": "enabled"},
             {"id": "session-3.scope", "unit_file_state": ""},
             {"id": "run-u12.service", "unit_file_state": "transient"}]  # fmt: skip
    state = view_state(VIEWS["systemd_units"], {"systemd_units": units})
    assert [i["id"] for i in _identities(state)] == ["ssh.service"]


def test_tables_without_a_declared_view_keep_whole_row_history_but_volatile_ones_none() -> None:
    views = {view.name for view in views_for_tables({"os_version", "uptime", "users"})}
    assert views == {"os_version", "users", "local_admins"}
    state = view_state(
        default_view("os_version"), {"os_version": [{"name": "Debian", "major": "12"}]}
    )
    assert _identities(state) == [{"major": "12", "name": "Debian"}]


def _change(kind: Change, name: str, old: str | None, new: str | None) -> RowChange:
    return RowChange("deb_packages", kind, canonical({"name": name}), old, new)


def test_baseline_drift_reports_deviations_and_their_return() -> None:
    v1, v2, v3 = (canonical({"version": v}) for v in ("1", "2", "3"))
    baseline = {canonical({"name": "curl"}): v1, canonical({"name": "telnetd"}): v1}
    changes = [
        _change(Change.MODIFIED, "curl", v1, v2),  # away from the baseline
        _change(Change.MODIFIED, "curl", v2, v3),  # still away, a new deviation
        _change(Change.REMOVED, "telnetd", v1, None),
        _change(Change.ADDED, "nc", None, v1),
        _change(Change.MODIFIED, "curl", v3, v1),  # back to the baseline
        _change(Change.REMOVED, "nc", v1, None),  # an addition undone
    ]
    events = baseline_drift(changes, baseline)
    assert [e.type for e in events] == [
        EventType.MODIFIED,
        EventType.MODIFIED,
        EventType.REMOVED,
        EventType.ADDED,
        EventType.RESTORED,
        EventType.RESTORED,
    ]
    assert (events[1].old, events[1].new, events[1].changed_fields) == (v1, v3, ("version",))
    assert (events[2].old, events[2].new) == (v1, "null")


def test_a_flip_between_pass_and_not_pass_is_compliance_drift() -> None:
    flips = [
        ("a", PASS, FAIL),
        ("b", FAIL, PASS),
        ("c", PASS, ERROR),
        ("d", None, FAIL),  # a first result is the baseline, not drift
        ("e", FAIL, ERROR),  # still not compliant
        ("f", PASS, UNKNOWN),  # facts went missing: not a verdict
    ]
    events = compliance_drift(flips, None, None, 10.0)
    assert [(e.check_id, e.type) for e in events] == [
        ("a", EventType.CHECK_REGRESSED),
        ("b", EventType.CHECK_RECOVERED),
        ("c", EventType.CHECK_REGRESSED),
    ]
    assert json.loads(events[0].old) == {"status": "pass"}


@pytest.mark.parametrize(
    ("old", "new", "raised"),
    [(90.0, 79.9, True), (90.0, 80.0, False), (None, 10.0, False), (50.0, 70.0, False)],
)
def test_a_score_drop_beyond_the_threshold_is_drift(
    old: float | None, new: float | None, raised: bool
) -> None:
    events = compliance_drift([], old, new, 10.0)
    assert [e.type for e in events] == ([EventType.SCORE_DROPPED] if raised else [])


def test_plans_gain_the_tracked_tables_and_keep_whole_tables_whole() -> None:
    plan = CollectionPlan(
        "v0",
        300,
        (
            PlannedTable("users", (), ("uid", "username")),
            PlannedTable("os_version"),
            PlannedTable("file_lines", ("/etc/login.defs",), ("line", "path")),
        ),
    )
    merged = {table.name: table for table in plan_with_tracking(plan, "linux").tables}
    assert merged["users"].columns == ("directory", "gid", "shell", "uid", "username")
    assert merged["os_version"].columns == ()
    assert merged["file_lines"].paths == (
        "/etc/login.defs",
        "/etc/ssh/sshd_config",
        "/etc/ssh/sshd_config.d/%",
    )
    assert {"listening_ports", "deb_packages", "kernel_modules", "groups"} <= merged.keys()
    assert "programs" not in merged and "processes" not in merged  # Windows-only; history-only
    windows = {table.name for table in plan_with_tracking(plan, "windows").tables}
    assert {"programs", "services"} <= windows and "deb_packages" not in windows
    assert plan_with_tracking(plan, "linux").version != plan.version
    assert plan_with_tracking(plan, "linux") == plan_with_tracking(plan, "linux")


# Keyed states: the same states and diffs as view_state, from stored value tuples --------


def _reference_state(view: TrackedView, tables: dict[str, list[dict[str, str]]]) -> State:
    """``view_state`` as it was written before keyed states: canonical JSON per row."""
    merged: dict[str, dict[str, set[str]]] = {}
    for row in view.rows(tables):
        if view.identity:
            identity = canonical({column: row.get(column, "") for column in view.identity})
        else:
            identity = canonical({column: value for column, value in row.items() if value != ""})
        values = merged.setdefault(identity, {column: set() for column in view.compared})
        for column in view.compared:
            values[column].add(row.get(column, ""))
    return {
        identity: canonical({column: "\n".join(sorted(v)) for column, v in values.items()})
        for identity, values in merged.items()
    }


def _stored_rows(table: str, rng: random.Random, count: int) -> list[tuple[object, ...]]:
    """Rows as the store reads them: text, None for NULL, a float now and then in a
    numeric column; few distinct values, so identities repeat."""
    columns = TABLES[table].columns
    pool: list[object] = ["", "a", "b", "0", "7", None, "a\nb"]
    rows = []
    for _ in range(count):
        row: list[object] = [rng.choice(pool) for _ in columns]
        for position, column in enumerate(columns):
            if column.sql_type != "TEXT" and rng.random() < 0.1:
                row[position] = 1.5
        rows.append(tuple(row))
    return rows


SINGLE_SOURCE = [view for view in TRACKED if view.derive is None] + [
    default_view("os_version"),
    default_view("shadow"),
]


@pytest.mark.parametrize("view", SINGLE_SOURCE, ids=lambda view: view.name)
def test_keyed_states_match_view_state_row_for_row(view: TrackedView) -> None:
    rng = random.Random(view.name)
    table = view.sources[0]
    columns = column_names(table)
    for _ in range(20):
        old_rows = _stored_rows(table, rng, rng.randrange(0, 12))
        new_rows = old_rows[: rng.randrange(0, len(old_rows) + 1)]
        new_rows += _stored_rows(table, rng, rng.randrange(0, 4))
        old_dicts = {table: as_dicts(columns, old_rows)}
        new_dicts = {table: as_dicts(columns, new_rows)}
        old, new = _reference_state(view, old_dicts), _reference_state(view, new_dicts)
        assert view_state(view, old_dicts) == old
        old_keyed = keyed_state_of_values(view, columns, old_rows)
        new_keyed = keyed_state_of_values(view, columns, new_rows)
        assert full_state(view, old_keyed) == old and full_state(view, new_keyed) == new
        assert diff_keyed(view, old_keyed, new_keyed) == diff_states(view.name, old, new)


def test_keyed_states_read_only_the_columns_a_report_filled() -> None:
    """A column missing from the tuples is NULL, as in the store (``TableChange``)."""
    view = VIEWS["users"]
    rows = [("0", "root"), ("1000", "ana")]
    keyed = keyed_state_of_values(view, ("uid", "username"), rows)
    dicts = {"users": [{"uid": "0", "username": "root"}, {"uid": "1000", "username": "ana"}]}
    assert full_state(view, keyed) == _reference_state(view, dicts)


def test_derived_views_need_their_rows_as_mappings() -> None:
    with pytest.raises(ValueError, match="derives"):
        keyed_state_of_values(VIEWS["listening_ports"], column_names("listening_ports"), [])

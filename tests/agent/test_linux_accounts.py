"""users, groups, user_groups, shadow and logged_in_users."""

from __future__ import annotations

import os
import sys

import pytest

from agent.sources.base import ProbeError
from agent.sources.linux import accounts, shadow
from protos.posture.v1.tables import columns_for

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice Smith,,,:/home/alice:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
svc:x:4294967294:4294967294::/:/sbin/nologin
+@netgroup::::::
broken line without fields
"""

GROUP = """\
root:x:0:
sudo:x:27:alice
adm:x:4:syslog,alice
alice:x:1000:
docker:x:999: alice , bob
"""

SHADOW = """\
root:!:19700:0:99999:7:::
alice:$y$j9T$Fz3Pp0mE$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG:19701:1:90:14:30:20000:
nopass::19702:0:99999:7:::
daemon:*:19700:0:99999:7:::
legacy:!!:19700::::::
locked6:!$6$salt$hashhashhash:19700:0:99999:7:::
sha512:$6$rounds=5000$salt$hash:19703:0:99999:7:::
short:line
"""


def test_users_have_osquery_columns_and_signed_ids() -> None:
    rows = accounts.user_rows(accounts.parse_passwd(PASSWD))
    assert [row["username"] for row in rows] == ["root", "daemon", "alice", "nobody", "svc"]
    alice = rows[2]
    assert alice == {
        "uid": "1000",
        "gid": "1000",
        "uid_signed": "1000",
        "gid_signed": "1000",
        "username": "alice",
        "description": "Alice Smith,,,",
        "directory": "/home/alice",
        "shell": "/bin/bash",
        "uuid": "",
    }
    assert (rows[4]["uid"], rows[4]["uid_signed"]) == ("4294967294", "-2")


def test_groups_parse_members() -> None:
    groups = accounts.parse_group(GROUP)
    assert groups[2] == accounts.GroupEntry("adm", 4, ("syslog", "alice"))
    assert groups[4].members == ("alice", "bob")
    rows = accounts.group_rows(groups)
    assert rows[1] == {"gid": "27", "gid_signed": "27", "groupname": "sudo"}


def test_user_groups_are_primary_plus_supplementary_without_duplicates() -> None:
    users = accounts.parse_passwd(PASSWD)
    rows = accounts.user_group_rows(users, accounts.parse_group(GROUP))
    pairs = {(row["uid"], row["gid"]) for row in rows}
    assert {("1000", "1000"), ("1000", "27"), ("1000", "4"), ("1000", "999")} <= pairs
    assert ("0", "0") in pairs
    assert len([row for row in rows if row["uid"] == "1000"]) == 4


def test_shadow_classifies_passwords_like_osquery_and_never_keeps_hashes() -> None:
    rows = {row["username"]: row for row in shadow.parse_shadow(SHADOW)}
    assert set(rows) == {"root", "alice", "nopass", "daemon", "legacy", "locked6", "sha512"}
    statuses = {name: row["password_status"] for name, row in rows.items()}
    assert statuses == {
        "root": "locked",
        "alice": "active",
        "nopass": "empty",
        "daemon": "locked",
        "legacy": "not_set",
        "locked6": "locked",
        "sha512": "active",
    }
    assert rows["alice"]["hash_alg"] == "y"
    assert rows["sha512"]["hash_alg"] == "6"
    assert rows["alice"] == {
        "password_status": "active",
        "hash_alg": "y",
        "last_change": "19701",
        "min": "1",
        "max": "90",
        "warning": "14",
        "inactive": "30",
        "expire": "20000",
        "flag": "-1",
        "username": "alice",
    }
    assert rows["legacy"]["max"] == "-1"
    every_value = " ".join(value for row in rows.values() for value in row.values())
    assert "$" not in every_value and "abcdefghij" not in every_value


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads this Linux host"
)


@linux_only
def test_this_hosts_users_include_root() -> None:
    rows = accounts.collect_users()
    assert all(tuple(row) == columns_for("users", "linux") for row in rows)
    root = next(row for row in rows if row["username"] == "root")
    assert (root["uid"], root["gid"], root["directory"]) == ("0", "0", "/root")


@linux_only
def test_this_hosts_groups_and_memberships() -> None:
    groups = accounts.collect_groups()
    assert all(tuple(row) == columns_for("groups", "linux") for row in groups)
    assert {"root": "0"}.items() <= {row["groupname"]: row["gid"] for row in groups}.items()
    memberships = accounts.collect_user_groups()
    assert {"uid": "0", "gid": "0"} in memberships
    assert all(row["uid"].isdigit() and row["gid"].isdigit() for row in memberships)


@linux_only
def test_this_hosts_shadow_or_a_clear_error() -> None:
    if os.geteuid() != 0:
        with pytest.raises(ProbeError, match="not readable"):
            shadow.collect_shadow()
        return
    rows = shadow.collect_shadow()
    assert all(tuple(row) == columns_for("shadow", "linux") for row in rows)
    root = next(row for row in rows if row["username"] == "root")
    valid = {"active", "locked", "empty", "not_set"}
    assert root["password_status"] in valid
    assert all(row["password_status"] in valid for row in rows)
    assert not any("$" in value for row in rows for value in row.values())


@linux_only
def test_this_hosts_logged_in_users_shape() -> None:
    for row in accounts.collect_logged_in_users():
        assert tuple(row) == columns_for("logged_in_users", "linux")
        assert row["type"] == "user" and row["time"].isdigit()

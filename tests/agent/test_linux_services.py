"""systemd_units: systemctl's JSON and plain outputs, and the "systemd not running" error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.runner import CommandRunner, RecordedRunner
from agent.sources.base import ProbeError
from agent.sources.linux import services
from protos.posture.v1.tables import columns_for

# systemd 252's ``list-units --all --plain --output=json``: the JOB column is hidden (and so
# absent from the JSON) when no job is pending; an empty cell is null.
LIST_UNITS_JSON = (
    '[{"unit":"-.mount","load":"loaded","active":"active","sub":"mounted",'
    '"description":"Root Mount"},'
    '{"unit":"auditd.service","load":"not-found","active":"inactive","sub":"dead",'
    '"description":"auditd.service"},'
    '{"unit":"getty@tty1.service","load":"loaded","active":"active","sub":"running",'
    '"description":"Getty on tty1"},'
    '{"unit":"ssh.service","load":"loaded","active":"active","sub":"running",'
    '"description":"OpenBSD Secure Shell server"},'
    '{"unit":"ufw.service","load":"loaded","active":"failed","sub":"failed","description":null}]\n'
)

LIST_UNIT_FILES_JSON = (
    '[{"unit_file":"ssh.service","state":"enabled","preset":"enabled"},'
    '{"unit_file":"getty@.service","state":"enabled","preset":"enabled"},'
    '{"unit_file":"ufw.service","state":"disabled","preset":"enabled"},'
    '{"unit_file":"telnet.socket","state":"masked","preset":null}]\n'
)

# systemd 245 (Ubuntu 20.04) ignores --output=json here and prints its plain table; the JOB
# column appears because a job is pending.
LIST_UNITS_PLAIN = """\
apt-daily.service        loaded activating start   start Daily apt download activities
cron.service             loaded active     running       Regular background processing daemon
systemd-journald.service loaded active     running       Journal Service
"""

LIST_UNIT_FILES_PLAIN = """\
apt-daily.service                      static          enabled
cron.service                           enabled         enabled
"""


def _replay(units: str, unit_files: str) -> RecordedRunner:
    return RecordedRunner(
        {tuple(services.LIST_UNITS): units, tuple(services.LIST_UNIT_FILES): unit_files}
    )


def test_units_from_json_with_unit_file_states(tmp_path: Path) -> None:
    rows = services.collect_systemd_units(_replay(LIST_UNITS_JSON, LIST_UNIT_FILES_JSON), tmp_path)
    assert all(tuple(row) == columns_for("systemd_units", "linux") for row in rows)
    by_id = {row["id"]: row for row in rows}
    assert by_id["ssh.service"] == {
        "id": "ssh.service",
        "description": "OpenBSD Secure Shell server",
        "load_state": "loaded",
        "active_state": "active",
        "sub_state": "running",
        "unit_file_state": "enabled",
        "following": "",
        "object_path": "/org/freedesktop/systemd1/unit/ssh_2eservice",
        "job_id": "0",
        "job_type": "",
        "job_path": "/",
        "fragment_path": "",
        "user": "",
        "source_path": "",
    }
    assert by_id["getty@tty1.service"]["unit_file_state"] == "enabled"  # from its template
    assert by_id["ufw.service"]["description"] == ""
    assert by_id["ufw.service"]["unit_file_state"] == "disabled"
    assert by_id["-.mount"]["object_path"] == "/org/freedesktop/systemd1/unit/_2d_2emount"
    assert by_id["auditd.service"]["load_state"] == "not-found"


def test_units_from_plain_output_of_older_systemd(tmp_path: Path) -> None:
    rows = services.collect_systemd_units(
        _replay(LIST_UNITS_PLAIN, LIST_UNIT_FILES_PLAIN), tmp_path
    )
    by_id = {row["id"]: row for row in rows}
    apt = by_id["apt-daily.service"]
    assert (apt["active_state"], apt["sub_state"], apt["job_type"]) == (
        "activating",
        "start",
        "start",
    )
    assert (apt["description"], apt["job_id"], apt["unit_file_state"]) == (
        "Daily apt download activities",
        "",
        "static",
    )
    cron = by_id["cron.service"]
    assert cron["description"] == "Regular background processing daemon"
    assert (cron["job_type"], cron["job_id"], cron["unit_file_state"]) == ("", "0", "enabled")


def test_object_path_escapes_like_systemd() -> None:
    assert services.object_path("dbus-broker.service").endswith("/dbus_2dbroker_2eservice")
    assert services.object_path("1password.service").endswith("/_31password_2eservice")
    assert services.object_path("user@1000.service").endswith("/user_401000_2eservice")


def test_systemctl_failure_is_a_probe_error(tmp_path: Path) -> None:
    failure = ProbeError("systemctl exited with status 1: Failed to connect to bus")
    runner = RecordedRunner({tuple(services.LIST_UNITS): failure})
    with pytest.raises(ProbeError, match="Failed to connect to bus"):
        services.collect_systemd_units(runner, tmp_path)


def test_malformed_json_is_a_probe_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="malformed JSON"):
        services.collect_systemd_units(_replay('[{"unit": ', LIST_UNIT_FILES_JSON), tmp_path)


def test_without_systemd_the_table_is_an_error_not_empty(tmp_path: Path) -> None:
    runner = _replay(LIST_UNITS_JSON, LIST_UNIT_FILES_JSON)
    with pytest.raises(ProbeError, match="systemd is not running"):
        services.collect_systemd_units(runner, tmp_path / "run-systemd-system")
    assert runner.calls == []


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl is not installed")
def test_this_hosts_unit_files_parse() -> None:
    states = services.parse_list_unit_files(CommandRunner().run(services.LIST_UNIT_FILES))
    assert states, "systemctl listed no unit files"
    known = {"enabled", "enabled-runtime", "disabled", "static", "masked", "masked-runtime"}
    known |= {"indirect", "generated", "transient", "alias", "linked", "linked-runtime", "bad"}
    assert set(states.values()) <= known
    assert all(name.rpartition(".")[2] for name in states)

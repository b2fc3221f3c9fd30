"""Loading packs: the model built from YAML, and every refusal naming file, check and line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from collector.policy.loader import PolicyError, load_pack, load_packs
from collector.policy.model import Check, FrameworkRef, Severity
from protos.posture.v1.tables import TABLES

CHECK_ID = "test.linux.root-only"

#: One valid check, one YAML line per key except the SQL (a block scalar).
FIELDS: dict[str, str] = {
    "id": CHECK_ID,
    "title": "Only root has uid 0",
    "description": "Checks that no account but root has uid 0.",
    "rationale": "A second uid 0 account is a hidden administrator.",
    "remediation": "Give the other account its own uid.",
    "severity": "high",
    "platforms": "[linux]",
    "frameworks": '{nist_800_53r5: ["AC-6(2)"]}',
    "query": "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM users WHERE uid = 0 AND username != 'root')",
}
SQL_KEYS = ("query", "applies", "evidence")


def check_yaml(**changes: str | None) -> str:
    """The check as YAML list item; a change of None drops the key."""
    fields = {**FIELDS, **changes}
    lines: list[str] = []
    for key, value in fields.items():
        if value is None:
            continue
        prefix = "  - " if not lines else "    "
        if key in SQL_KEYS:
            lines.append(f"{prefix}{key}: |")
            lines += [f"      {sql_line}" for sql_line in value.splitlines()]
        else:
            lines.append(f"{prefix}{key}: {value}")
    return "\n".join(lines) + "\n"


def pack_yaml(*checks: str, header: str = "") -> str:
    head = header or 'name: test-pack\nversion: "1.0.0"\ndescription: A pack for tests.\n'
    return head + "checks:\n" + "".join(checks or (check_yaml(),))


def write_pack(root: Path, text: str, directory: str = "test-pack") -> Path:
    pack_dir = root / directory
    pack_dir.mkdir(parents=True, exist_ok=True)
    (pack_dir / "pack.yaml").write_text(text)
    return pack_dir


def line_of(text: str, fragment: str, start: int = 0) -> int:
    """1-based number of the first line from ``start`` containing ``fragment``."""
    for number, line in enumerate(text.splitlines()[start:], start=start + 1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in pack")


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_pack(write_pack(tmp_path, text))
    return caught.value.problems


# --- a valid pack -----------------------------------------------------------------------


def test_a_valid_pack_loads_into_the_model(tmp_path: Path) -> None:
    text = pack_yaml(
        check_yaml(
            frameworks=(
                '{cis: [{benchmark: "CIS Debian Linux 12 Benchmark v1.1.0", section: "5.4.2.1"}],'
                ' cis_controls_v8: ["5.4"], nist_800_53r5: ["AC-6(2)", "CM-6"],'
                ' cjis: {version: "6.0", sections: ["5.5.2.1"]}, pci_dss_v4: ["A1.1.1"]}'
            ),
            applies="SELECT 1 FROM os_version WHERE platform_like LIKE '%debian%'",
            evidence="SELECT username, uid FROM users WHERE uid = 0",
        )
    )
    pack_dir = write_pack(tmp_path, text)
    pack = load_pack(pack_dir)
    pack_file = pack_dir / "pack.yaml"
    assert (pack.name, pack.version, pack.description) == (
        "test-pack",
        "1.0.0",
        "A pack for tests.",
    )
    assert pack.sha256 == hashlib.sha256(pack_file.read_bytes()).hexdigest()
    assert pack.path == pack_file
    (check,) = pack.checks
    assert check.id == CHECK_ID
    assert check.severity is Severity.HIGH
    assert check.platforms == frozenset({"linux"})
    assert check.frameworks == {
        "cis": (FrameworkRef("cis", "5.4.2.1", "CIS Debian Linux 12 Benchmark v1.1.0"),),
        "cis_controls_v8": (FrameworkRef("cis_controls_v8", "5.4"),),
        "nist_800_53r5": (
            FrameworkRef("nist_800_53r5", "AC-6(2)"),
            FrameworkRef("nist_800_53r5", "CM-6"),
        ),
        "cjis": (FrameworkRef("cjis", "5.5.2.1", "6.0"),),
        "pci_dss_v4": (FrameworkRef("pci_dss_v4", "A1.1.1"),),
    }
    assert check.query == FIELDS["query"]
    assert check.applies == "SELECT 1 FROM os_version WHERE platform_like LIKE '%debian%'"
    assert check.tables == frozenset({"users", "os_version"})
    assert check.columns == {"os_version": ("platform_like",), "users": ("uid", "username")}
    assert (check.pack, check.source, check.line) == ("test-pack", str(pack_file), 5)


def test_the_pack_file_itself_may_be_given(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path, pack_yaml())
    assert load_pack(pack_dir / "pack.yaml").checks[0].id == CHECK_ID


def test_load_packs_reads_every_pack_directory_in_name_order(tmp_path: Path) -> None:
    write_pack(tmp_path, pack_yaml(header=header("b-pack")), "b")
    write_pack(tmp_path, pack_yaml(check_yaml(id="test.other")).replace("test-pack", "a"), "a")
    (tmp_path / "notes").mkdir()
    packs = load_packs(tmp_path)
    assert [pack.name for pack in packs] == ["a", "b-pack"]


def header(name: str) -> str:
    return f'name: {name}\nversion: "2"\ndescription: Another pack.\n'


# --- refusals ---------------------------------------------------------------------------

CASES: list[tuple[str, str, str, str]] = [
    # (name, pack text, fragment of the line blamed, expected message after "check <id>: ")
    ("unknown check key", pack_yaml(check_yaml(owner="me")), "owner:", "unknown key 'owner'"),
    (
        "misspelt key",
        pack_yaml(check_yaml(remediation=None, remedation="Fix it.")),
        "remedation:",
        "unknown key 'remedation' (did you mean 'remediation'?)",
    ),
    (
        "missing key",
        pack_yaml(check_yaml(rationale=None)),
        "- id:",
        "missing required key 'rationale'",
    ),
    ("wrong type", pack_yaml(check_yaml(title="[a, b]")), "title:", "title must be a string"),
    ("empty text", pack_yaml(check_yaml(title="''")), "title:", "title must not be empty"),
    (
        "bad severity",
        pack_yaml(check_yaml(severity="extreme")),
        "severity:",
        "severity 'extreme' must be one of low, medium, high, critical",
    ),
    (
        "bad platform",
        pack_yaml(check_yaml(platforms="[linux, beos]")),
        "platforms:",
        "platforms: 'beos' is not a platform (linux, darwin or windows)",
    ),
    (
        "no platform",
        pack_yaml(check_yaml(platforms="[]")),
        "platforms:",
        "platforms must be a non-empty list",
    ),
    (
        "unknown framework",
        pack_yaml(check_yaml(frameworks="{hipaa: ['164.312']}")),
        "frameworks:",
        "unknown key 'hipaa' in frameworks",
    ),
    (
        "no framework",
        pack_yaml(check_yaml(frameworks="{}")),
        "frameworks:",
        "frameworks must map at least one of: cis, cis_controls_v8",
    ),
    (
        "bad control id",
        pack_yaml(check_yaml(frameworks='{nist_800_53r5: ["AC6"]}')),
        "frameworks:",
        "frameworks.nist_800_53r5: 'AC6' is not a NIST SP 800-53 control id",
    ),
    (
        "number that YAML mangles",
        pack_yaml(check_yaml(frameworks="{cis_controls_v8: [4.10]}")),
        "frameworks:",
        "frameworks.cis_controls_v8 items must be a string (quote it",
    ),
    (
        "cjis without version",
        pack_yaml(check_yaml(frameworks='{cjis: {sections: ["5.5.2.1"]}}')),
        "frameworks:",
        "missing required key 'version' in frameworks.cjis",
    ),
    (
        "unknown cis key",
        pack_yaml(check_yaml(frameworks='{cis: [{benchmark: "B", section: "1.1", level: 1}]}')),
        "frameworks:",
        "unknown key 'level' in frameworks.cis[0]",
    ),
    (
        "duplicate yaml key",
        pack_yaml(check_yaml(title="One\n    title: Two")),
        "title: Two",
        "duplicate key 'title'",
    ),
]


@pytest.mark.parametrize(
    ("text", "blamed", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_problems_name_file_check_and_line(
    tmp_path: Path, text: str, blamed: str, message: str
) -> None:
    problems = problems_of(tmp_path, text)
    pack_file = tmp_path / "test-pack" / "pack.yaml"
    expected = f"{pack_file}:{line_of(text, blamed, 4)}: check {CHECK_ID}: {message}"
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_bad_id_is_named_by_position(tmp_path: Path) -> None:
    text = pack_yaml(check_yaml(), check_yaml(id="Root_Only"))
    problems = problems_of(tmp_path, text)
    pack_file = tmp_path / "test-pack" / "pack.yaml"
    assert problems == [
        f"{pack_file}:{line_of(text, 'Root_Only')}: check #2: id 'Root_Only' must be lowercase "
        "dotted words, e.g. city.linux.ssh-root-login"
    ]


def test_duplicate_ids_in_one_pack_name_both_lines(tmp_path: Path) -> None:
    text = pack_yaml(check_yaml(), check_yaml())
    problems = problems_of(tmp_path, text)
    pack_file = tmp_path / "test-pack" / "pack.yaml"
    second = line_of(text, "- id:", line_of(text, "- id:"))
    assert problems == [
        f"{pack_file}:{second}: check {CHECK_ID}: duplicate id (also in {pack_file}:5)"
    ]


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        ("owner: me\n", 4, "pack: unknown key 'owner'"),
        ("", 1, "pack: missing required key 'version'"),
        ("name: Test Pack\n", 1, "pack: name 'Test Pack' must match [a-z0-9-]+"),
        ("version: 1.10\n", 2, "pack: version must be a string (quote it"),
    ],
    ids=["unknown key", "missing key", "bad name", "unquoted version"],
)
def test_pack_problems_name_file_and_line(
    tmp_path: Path, change: str, line: int, message: str
) -> None:
    lines = ["name: test-pack\n", 'version: "1.0.0"\n', "description: D.\n"]
    if change.startswith("owner"):
        lines.append(change)
    elif change.startswith("name"):
        lines[0] = change
    elif change.startswith("version"):
        lines[1] = change
    else:
        del lines[1]
    problems = problems_of(tmp_path, pack_yaml(header="".join(lines)))
    pack_file = tmp_path / "test-pack" / "pack.yaml"
    assert any(p.startswith(f"{pack_file}:{line}: {message}") for p in problems), problems


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, pack_yaml() + "  - id: [unclosed\n")
    assert len(problems) == 1
    assert "pack.yaml:" in problems[0] and "invalid YAML" in problems[0]


def test_a_missing_pack_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_pack(tmp_path)


def test_policy_error_lists_one_problem_per_line(tmp_path: Path) -> None:
    text = pack_yaml(check_yaml(severity="extreme", platforms="[beos]"))
    with pytest.raises(PolicyError) as caught:
        load_pack(write_pack(tmp_path, text))
    assert len(caught.value.problems) == 2
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_load_packs_reports_every_pack_and_duplicates_across_packs(tmp_path: Path) -> None:
    write_pack(tmp_path, pack_yaml(header=header("a")), "a")
    write_pack(tmp_path, pack_yaml(header=header("b")), "b")
    write_pack(
        tmp_path, pack_yaml(check_yaml(id="test.c", severity="none"), header=header("c")), "c"
    )
    with pytest.raises(PolicyError) as caught:
        load_packs(tmp_path)
    assert caught.value.problems == [
        f"{tmp_path / 'c' / 'pack.yaml'}:10: check test.c: severity 'none' must be one of "
        "low, medium, high, critical",
        f"{tmp_path / 'b' / 'pack.yaml'}:5: check {CHECK_ID}: duplicate id "
        f"(also in {tmp_path / 'a' / 'pack.yaml'}:5)",
    ]


# --- SQL ----------------------------------------------------------------------------------

SQL_CASES: list[tuple[str, str, str]] = [
    ("pragma", "PRAGMA table_info(users)", "must be a single SELECT statement"),
    ("attach", "ATTACH 'other.db' AS other", "must be a single SELECT statement"),
    ("insert", "INSERT INTO users (uid) VALUES (0)", "must be a single SELECT statement"),
    (
        "several statements",
        "SELECT 1 FROM users; SELECT 2",
        "must be a single SELECT statement (found several statements)",
    ),
    (
        "write behind a CTE",
        "WITH x AS (SELECT 1) DELETE FROM users",
        "DELETE is not allowed in policy SQL (only SELECT)",
    ),
    (
        "load_extension",
        "SELECT load_extension('/tmp/evil.so')",
        "function load_extension() is not allowed in policy SQL",
    ),
    ("unknown function", "SELECT 1 FROM users WHERE rot13(username)", "function rot13()"),
    ("syntax", "SELECT 1 FROM users WHERE", "does not compile: incomplete input"),
    ("unknown table", "SELECT 1 FROM hosts", "unknown table hosts"),
    ("collector schema", "SELECT 1 FROM main.users", "unknown table main.users"),
    ("unknown column", "SELECT 1 FROM users WHERE password = ''", "unknown column users.password"),
    (
        "unknown column by alias",
        "SELECT 1 FROM user_groups ug WHERE ug.groupname = 'sudo'",
        "unknown column user_groups.groupname",
    ),
    (
        "sqlite schema",
        "SELECT count(*) FROM sqlite_master",
        "reads sqlite_master that is not a fact table",
    ),
    (
        "path table without a path",
        "SELECT 1 FROM file WHERE mode = '0600'",
        "reads file but names no path",
    ),
    (
        "table not on the platform",
        "SELECT 1 FROM bitlocker_info WHERE protection_status = 1",
        "reads bitlocker_info, which is not collected on linux",
    ),
    (
        # Fleet's "Get local users and their privileges", verbatim: users.type is Windows-only.
        "column not on the platform",
        "SELECT uid, username, type, groupname FROM users u JOIN groups g ON g.gid = u.gid;",
        "column users.type is only collected on windows, not on linux",
    ),
]


@pytest.mark.parametrize(
    ("sql", "message"), [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES]
)
def test_sql_problems_name_the_statement_and_its_line(
    tmp_path: Path, sql: str, message: str
) -> None:
    text = pack_yaml(check_yaml(query=sql))
    problems = problems_of(tmp_path, text)
    expected = f"pack.yaml:{line_of(text, 'query:')}: check {CHECK_ID}: query: {message}"
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    ("key", "sql", "message"),
    [
        ("applies", "SELECT 1 FROM nope", "applies: unknown table nope"),
        (
            "evidence",
            "SELECT * FROM file",
            "evidence: reads file but names no path: the agent collects only named paths",
        ),
    ],
)
def test_applies_and_evidence_are_validated_too(
    tmp_path: Path, key: str, sql: str, message: str
) -> None:
    text = pack_yaml(check_yaml(**{key: sql}))
    problems = problems_of(tmp_path, text)
    pack_file = tmp_path / "test-pack" / "pack.yaml"
    expected = f"{pack_file}:{line_of(text, key + ':')}: check {CHECK_ID}: {message}"
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def load_check(tmp_path: Path, **changes: str) -> Check:
    return load_pack(write_pack(tmp_path, pack_yaml(check_yaml(**changes)))).checks[0]


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        # SQLite's authorizer never reports a table joined only USING (...): the program does.
        ("SELECT 1 FROM file f JOIN hash h USING (path) WHERE f.path = '/a'", {"file", "hash"}),
        ("WITH u AS (SELECT uid FROM users) SELECT 1 WHERE EXISTS (SELECT 1 FROM u)", {"users"}),
        ("SELECT count(*) > 0 FROM processes", {"processes"}),
        ("SELECT 1 WHERE (SELECT count(*) FROM mounts) > 0", {"mounts"}),
        ("SELECT 1", set()),
    ],
)
def test_tables_are_derived_from_what_the_sql_reads(
    tmp_path: Path, sql: str, tables: set[str]
) -> None:
    assert load_check(tmp_path, query=sql).tables == tables


@pytest.mark.parametrize(
    ("sql", "paths"),
    [
        (
            "SELECT 1 FROM file_lines WHERE path = '/etc/ssh/sshd_config'"
            " OR path LIKE '/etc/ssh/sshd_config.d/%'",
            {"file_lines": ("/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/%")},
        ),
        (
            "SELECT 1 FROM file f JOIN hash h USING (path) WHERE f.path IN ('/b', '/a')",
            {"file": ("/a", "/b"), "hash": ("/a", "/b")},
        ),
        (
            "SELECT 1 FROM mounts m JOIN file f ON f.path = m.path"
            " WHERE m.path = '/' AND f.path == '/etc/fstab'",
            {"file": ("/etc/fstab",)},
        ),
        ("SELECT 1 FROM file WHERE path = '/tmp/it''s' -- path = '/b'", {"file": ("/tmp/it's",)}),
    ],
)
def test_paths_are_derived_from_the_literals_compared_with_path(
    tmp_path: Path, sql: str, paths: dict[str, tuple[str, ...]]
) -> None:
    assert load_check(tmp_path, query=sql).paths == paths


@pytest.mark.parametrize(
    ("sql", "columns"),
    [
        (
            # Neither side's uid is reported to SQLite's authorizer: the program shows both.
            "SELECT 1 FROM users CROSS JOIN user_ssh_keys USING (uid) WHERE encrypted = '0'",
            {"users": ("uid",), "user_ssh_keys": ("encrypted", "uid")},
        ),
        ("SELECT count(*) > 1 FROM processes", {"processes": ()}),
        (
            "SELECT * FROM shadow",
            {"shadow": tuple(sorted(c.name for c in TABLES["shadow"].columns))},
        ),
        (
            "WITH r AS (SELECT username FROM users WHERE uid = 0) SELECT 1 FROM r",
            {"users": ("uid", "username")},
        ),
    ],
)
def test_columns_are_derived_from_what_the_sql_uses(
    tmp_path: Path, sql: str, columns: dict[str, tuple[str, ...]]
) -> None:
    assert load_check(tmp_path, query=sql).columns == columns


SYSTEM_POLICIES = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System"
AU = r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU"


@pytest.mark.parametrize(
    ("sql", "keys"),
    [
        # Fleet's "Screen lock enabled (Windows)", verbatim: a value's path names its key.
        (
            f"SELECT 1 FROM registry WHERE path = '{SYSTEM_POLICIES}\\InactivityTimeoutSecs' "
            "AND CAST(data as INTEGER) <= 1800;",
            (SYSTEM_POLICIES,),
        ),
        (
            f"SELECT 1 FROM registry WHERE key = '{AU}' AND name = 'NoAutoUpdate' AND data = '0'",
            (AU,),
        ),
        (
            f"SELECT 1 FROM registry r WHERE r.key LIKE '{AU}\\' "
            f"OR r.path IN ('{SYSTEM_POLICIES}\\A', '{SYSTEM_POLICIES}\\B')",
            (SYSTEM_POLICIES, AU),  # sorted
        ),
        # % in a key name: every user's hive (the agent expands it within one key name)
        (
            "SELECT 1 FROM registry WHERE path LIKE "
            "'HKEY_USERS\\%\\Control Panel\\Desktop\\ScreenSaveTimeOut'",
            ("HKEY_USERS\\%\\Control Panel\\Desktop",),
        ),
    ],
)
def test_registry_keys_are_derived_from_key_and_path_literals(
    tmp_path: Path, sql: str, keys: tuple[str, ...]
) -> None:
    check = load_check(tmp_path, platforms="[windows]", query=sql)
    assert check.paths == {"registry": keys}


def test_a_registry_key_never_comes_from_a_file_path(tmp_path: Path) -> None:
    sql = (
        "SELECT 1 FROM file, registry WHERE file.path = 'C:\\Windows\\win.ini' "
        f"AND registry.key = '{AU}'"
    )
    check = load_check(tmp_path, platforms="[windows]", query=sql)
    assert check.paths == {"file": ("C:\\Windows\\win.ini",), "registry": (AU,)}


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "SELECT 1 FROM registry WHERE name = 'NoAutoUpdate'",
            "reads registry but names no key: the agent collects only named keys",
        ),
        (
            r"SELECT 1 FROM registry WHERE key = 'HKLM\SOFTWARE\Policies'",
            r"registry key 'HKLM\SOFTWARE\Policies' abbreviates its hive: write it in full",
        ),
        (
            r"SELECT 1 FROM registry WHERE path = 'HKEY_CURRENT_USER\Control Panel\Desktop\X'",
            "HKEY_CURRENT_USER is the agent service's own profile; read users' settings under "
            "HKEY_USERS",
        ),
        (
            "SELECT 1 FROM registry WHERE path = 'NoAutoUpdate'",
            "registry key '' must start with a hive: HKEY_LOCAL_MACHINE",
        ),
    ],
)
def test_registry_reads_that_no_agent_could_collect_are_refused(
    tmp_path: Path, sql: str, message: str
) -> None:
    text = pack_yaml(check_yaml(platforms="[windows]", query=sql))
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and message in problems[0], problems


def test_paths_of_query_applies_and_evidence_are_merged(tmp_path: Path) -> None:
    check = load_check(
        tmp_path,
        query="SELECT 1 FROM file WHERE path = '/etc/shadow' AND mode = '0640'",
        applies="SELECT 1 FROM file WHERE path = '/etc/shadow'",
        evidence="SELECT path, mode FROM file WHERE path IN ('/etc/shadow', '/etc/gshadow')",
    )
    assert check.paths == {"file": ("/etc/gshadow", "/etc/shadow")}


# Fleet's standard-library policies and reports (osquery-and-fleet.md Appendix A, CC BY-SA
# 4.0, (c) Fleet Device Management Inc and contributors), verbatim.
FLEET: list[tuple[str, str, str, set[str]]] = [
    (
        "A.1.1 full disk encryption",
        "[linux]",
        "SELECT 1 FROM mounts m, disk_encryption d WHERE m.device_alias = d.name AND "
        "d.encrypted = 1 AND m.path = '/';",
        {"mounts", "disk_encryption"},
    ),
    (
        "A.1.2 antivirus healthy",
        "[linux]",
        "SELECT score FROM (SELECT case when COUNT(*) = 2 then 1 ELSE 0 END AS score FROM "
        "processes WHERE (name = 'clamd') OR (name = 'freshclam')) WHERE score == 1;",
        {"processes"},
    ),
    (
        "A.1.3 ssh keys encrypted",
        "[darwin, linux, windows]",
        "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM users CROSS JOIN user_ssh_keys USING (uid) "
        "WHERE encrypted='0');",
        {"users", "user_ssh_keys"},
    ),
    (
        "A.1.5 gnome password policy",
        "[linux]",
        """SELECT 1
FROM file_lines
WHERE
  path = '/etc/pam.d/common-password'
  AND ltrim(line) NOT LIKE '#%'
  AND line LIKE '%pam_pwquality.so%'
  AND line LIKE '%minlen=12%'
  AND line LIKE '%enforce_for_root%';""",
        {"file_lines"},
    ),
    (
        "A.1.6 gnome lock screen",
        "[linux]",
        """SELECT 1
WHERE (
  SELECT COUNT(*) FROM file_lines
  WHERE path = '/etc/dconf/profile/user'
    AND ltrim(line) = 'system-db:local'
    AND ltrim(line) NOT LIKE '#%'
) > 0
AND (
  SELECT COUNT(*) FROM file_lines
  WHERE path = '/etc/dconf/db/local.d/00-lockscreen'
    AND trim(line) = 'lock-enabled=true'
    AND ltrim(line) NOT LIKE '#%'
) > 0;""",
        {"file_lines"},
    ),
    (
        "A.2.1 openssl versions",
        "[linux]",
        "SELECT name AS name, version AS version, 'deb_packages' AS source FROM deb_packages "
        "WHERE name LIKE 'openssl%' UNION SELECT name AS name, version AS version, "
        "'apt_sources' AS source FROM apt_sources WHERE name LIKE 'openssl%' UNION SELECT name "
        "AS name, version AS version, 'rpm_packages' AS source FROM rpm_packages WHERE name "
        "LIKE 'openssl%';",
        {"deb_packages", "apt_sources", "rpm_packages"},
    ),
    (
        "A.2.2 authorized keys",
        "[darwin, linux]",
        "SELECT username, authorized_keys. * FROM users CROSS JOIN authorized_keys USING (uid);",
        {"users", "authorized_keys"},
    ),
    (
        "A.2.5 active accounts",
        "[linux]",
        "SELECT * FROM shadow WHERE password_status='active' and username!='root';",
        {"shadow"},
    ),
    (
        "A.2.6 listening ports",
        "[linux, darwin, windows]",
        "SELECT lp.address, lp.pid, lp.port, lp.protocol, p.name, p.path, p.cmdline FROM "
        'listening_ports lp JOIN processes p ON lp.pid = p.pid WHERE lp.address = "0.0.0.0";',
        {"listening_ports", "processes"},
    ),
    (
        "A.2.9 disk encryption vital",
        "[linux]",
        "SELECT de.encrypted, m.path FROM disk_encryption de JOIN mounts m ON m.device_alias = "
        "de.name",
        {"disk_encryption", "mounts"},
    ),
]


@pytest.mark.parametrize(
    ("platforms", "sql", "tables"), [f[1:] for f in FLEET], ids=[f[0] for f in FLEET]
)
def test_fleet_queries_load_unmodified(
    tmp_path: Path, platforms: str, sql: str, tables: set[str]
) -> None:
    check = load_check(tmp_path, platforms=platforms, query=sql)
    assert check.query == sql
    assert check.tables == tables


def test_fleet_lock_screen_policy_collects_exactly_its_files(tmp_path: Path) -> None:
    check = load_check(tmp_path, query=FLEET[4][2])
    assert check.paths == {
        "file_lines": ("/etc/dconf/db/local.d/00-lockscreen", "/etc/dconf/profile/user")
    }


def test_fleet_queries_on_tables_outside_the_catalogue_are_refused(tmp_path: Path) -> None:
    # A.1.4 reads parse_json, a table of Fleet's own agent, not of osquery or Posture.
    sql = (
        "SELECT 1 FROM parse_json WHERE path = '/var/lib/ubuntu-advantage/status.json' AND "
        "((key = 'attached' AND value = 'true'))"
    )
    problems = problems_of(tmp_path, pack_yaml(check_yaml(query=sql)))
    assert problems[0].endswith("query: unknown table parse_json")

"""file, hash and file_lines for the paths a plan names, and the secrets they refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sources.base import ProbeError
from agent.sources.linux import files
from protos.posture.v1.tables import columns_for


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "home" / "alice" / ".openclaw" / "deep").mkdir(parents=True)
    (tmp_path / "home" / "bob").mkdir()
    (tmp_path / "home" / "alice" / ".openclaw" / "config.json").write_text("{}\n")
    (tmp_path / "home" / "alice" / ".openclaw" / "deep" / "state").write_text("x")
    (tmp_path / "home" / "bob" / ".bashrc").write_text("export A=1\n")
    (tmp_path / "etc_x").write_text("literal underscore\n")
    (tmp_path / "etcAx").write_text("must not match _\n")
    (tmp_path / "odd[1]").write_text("brackets\n")
    return tmp_path


def test_percent_is_a_glob_that_sees_hidden_files(tree: Path) -> None:
    assert files.expand_pattern(f"{tree}/home/%/.bashrc") == [f"{tree}/home/bob/.bashrc"]
    assert files.expand_pattern(f"{tree}/home/alice/%") == [f"{tree}/home/alice/.openclaw"]


def test_double_percent_recurses(tree: Path) -> None:
    found = files.expand_pattern(f"{tree}/home/%%/.openclaw/%")
    assert found == [
        f"{tree}/home/alice/.openclaw/config.json",
        f"{tree}/home/alice/.openclaw/deep",
    ]
    assert f"{tree}/home/alice/.openclaw/deep/state" in files.expand_pattern(f"{tree}/home/%%")


def test_other_characters_are_literal(tree: Path) -> None:
    assert files.expand_pattern(f"{tree}/etc_%") == [f"{tree}/etc_x"]
    assert files.expand_pattern(f"{tree}/odd[1]%") == [f"{tree}/odd[1]"]
    assert files.expand_pattern(f"{tree}/nothing/%") == []


def test_file_rows_describe_files_directories_and_links(tree: Path) -> None:
    config = tree / "home" / "alice" / ".openclaw" / "config.json"
    config.chmod(0o640)
    link = tree / "link"
    link.symlink_to(config)
    rows = files.file_rows([str(config), str(tree / "home"), str(link), str(tree / "absent")])
    assert all(tuple(row) == columns_for("file", "linux") for row in rows)
    regular, directory, symlink = rows
    info = config.stat()
    assert regular == {
        "path": str(config),
        "directory": str(config.parent),
        "filename": "config.json",
        "inode": str(info.st_ino),
        "uid": str(info.st_uid),
        "gid": str(info.st_gid),
        "mode": "0640",
        "device": "0",
        "size": "3",
        "block_size": str(info.st_blksize),
        "atime": str(int(info.st_atime)),
        "mtime": str(int(info.st_mtime)),
        "ctime": str(int(info.st_ctime)),
        "btime": "",
        "hard_links": "1",
        "symlink": "0",
        "type": "regular",
        "symlink_target_path": "",
    }
    assert (directory["type"], directory["filename"]) == ("directory", "home")
    assert (symlink["symlink"], symlink["type"], symlink["mode"]) == ("1", "regular", "0640")
    assert symlink["symlink_target_path"] == str(config)


def test_setuid_mode_keeps_four_digits(tmp_path: Path) -> None:
    target = tmp_path / "tool"
    target.write_text("")
    target.chmod(0o4755)
    (row,) = files.file_rows([str(target)])
    assert row["mode"] == "4755"


def test_hash_rows_for_regular_files_only(tree: Path) -> None:
    hello = tree / "hello"
    hello.write_bytes(b"hello\n")
    rows = files.hash_rows([str(hello), str(tree / "home"), str(tree / "absent")])
    assert rows == [
        {
            "path": str(hello),
            "directory": str(tree),
            "md5": "b1946ac92492d2347c6235b4d2611184",
            "sha1": "f572d396fae9206628714fb2ce00f72e94f2258f",
            "sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        }
    ]


def test_hash_of_a_file_over_the_limit_has_empty_digests(tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    with big.open("wb") as handle:
        handle.truncate(files.HASH_MAX_BYTES + 1)  # sparse: no 50 MiB written
    (row,) = files.hash_rows([str(big)])
    assert (row["md5"], row["sha1"], row["sha256"]) == ("", "", "")


def test_file_lines_strip_newlines_and_keep_blank_lines(tmp_path: Path) -> None:
    pam = tmp_path / "common-password"
    pam.write_bytes(b"# comment\r\n\npassword requisite pam_pwquality.so minlen=12\nlast")
    rows = files.file_line_rows([str(pam)])
    assert all(tuple(row) == columns_for("file_lines", "linux") for row in rows)
    assert [row["line"] for row in rows] == [
        "# comment",
        "",
        "password requisite pam_pwquality.so minlen=12",
        "last",
    ]
    assert {row["path"] for row in rows} == {str(pam)}


def test_file_lines_skip_binaries_directories_and_missing(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"\x7fELF\x00\x01")
    (tmp_path / "dir").mkdir()
    patterns = [str(tmp_path / "blob"), str(tmp_path / "dir"), str(tmp_path / "absent")]
    assert files.file_line_rows(patterns) == []


def test_file_lines_read_only_the_first_mebibyte_in_whole_lines(tmp_path: Path) -> None:
    line = "x" * 99
    big = tmp_path / "big.conf"
    big.write_text(f"{line}\n" * 15_000)  # 1.5 MB
    rows = files.file_line_rows([str(big)])
    assert len(rows) == files.LINES_MAX_BYTES // 100
    assert {row["line"] for row in rows} == {line}


def test_file_lines_refuse_shadow_by_name_and_through_links(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="refusing to read /etc/shadow"):
        files.file_line_rows(["/etc/passwd", "/etc/shadow"])
    link = tmp_path / "innocent"
    link.symlink_to("/etc/shadow")
    with pytest.raises(ProbeError, match="holds secrets"):
        files.file_line_rows([str(link)])
    assert files.is_secret("/etc/gshadow") and files.is_secret("/etc/ssh/ssh_host_ed25519_key")
    assert not files.is_secret("/etc/ssh/ssh_host_ed25519_key.pub")


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="this host has no /etc/shadow")
def test_file_lines_patterns_skip_shadow_but_keep_the_rest() -> None:
    rows = files.file_line_rows(["/etc/%sswd", "/etc/%shadow%"])
    paths = {row["path"] for row in rows}
    assert "/etc/passwd" in paths
    assert not {"/etc/shadow", "/etc/gshadow", "/etc/shadow-"} & paths
    assert not any(row["line"].startswith("root:$") for row in rows)
    assert files.hash_rows(["/etc/shadow"])[0]["sha256"]  # a digest reveals nothing

"""kernel_modules and system_controls."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.sources.base import ProbeError
from agent.sources.linux import kernel, sysctl
from protos.posture.v1.tables import columns_for, is_volatile_sysctl

PROC_MODULES = """\
nf_conntrack 176128 5 xt_conntrack,nf_nat,xt_MASQUERADE, Live 0xffffffffc0a2f000
usb_storage 81920 1 uas, Live 0x0000000000000000
cramfs 45056 0 - Loading 0xffffffffc09e0000
vboxdrv 589824 2 vboxnetadp,vboxnetflt, Live 0xffffffffc1200000 (OE)
truncated line
"""


def test_proc_modules_rows_match_osquery() -> None:
    rows = kernel.parse_proc_modules(PROC_MODULES)
    assert all(tuple(row) == columns_for("kernel_modules", "linux") for row in rows)
    assert [row["name"] for row in rows] == ["nf_conntrack", "usb_storage", "cramfs", "vboxdrv"]
    assert rows[0] == {
        "name": "nf_conntrack",
        "size": "176128",
        "used_by": "xt_conntrack,nf_nat,xt_MASQUERADE",
        "status": "Live",
        "address": "0xffffffffc0a2f000",
    }
    assert (rows[2]["used_by"], rows[2]["status"]) == ("-", "Loading")


@pytest.fixture
def sysctl_dirs(tmp_path: Path) -> tuple[tuple[Path, ...], Path]:
    """/etc, /run and /usr/lib sysctl.d folders and an /etc/sysctl.conf, systemd-style."""
    etc, run, usr = tmp_path / "etc.d", tmp_path / "run.d", tmp_path / "usr.d"
    for directory in (etc, run, usr):
        directory.mkdir()
    (usr / "10-defaults.conf").write_text(
        "# vendor defaults\nkernel.randomize_va_space = 1\nnet.ipv4.ip_forward=1\n"
        "; also a comment\nkernel.kptr_restrict = 1\n"
    )
    (usr / "50-masked.conf").write_text("net.ipv4.tcp_syncookies = 0\n")
    (etc / "50-masked.conf").write_text("net.ipv4.tcp_syncookies = 1\n")
    (etc / "90-hardening.conf").write_text(
        "kernel/randomize_va_space = 2\n-net.ipv4.conf.all.accept_redirects = 0\n"
        "net.ipv4.conf.*.rp_filter = 1\nnet.ipv4.conf.lo.rp_filter = 0\n"
    )
    (run / "20-runtime.conf").write_text("kernel.kptr_restrict = 2\n")
    (run / "README").write_text("kernel.kptr_restrict = 9\n")
    sysctl_conf = tmp_path / "sysctl.conf"
    sysctl_conf.write_text("net.ipv4.ip_forward = 0\n")
    return (etc, run, usr), sysctl_conf


def test_sysctl_files_read_in_systemd_order(sysctl_dirs: tuple[tuple[Path, ...], Path]) -> None:
    (etc, run, usr), sysctl_conf = sysctl_dirs
    assert sysctl.config_files((etc, run, usr), sysctl_conf) == [
        usr / "10-defaults.conf",
        run / "20-runtime.conf",
        etc / "50-masked.conf",
        etc / "90-hardening.conf",
        sysctl_conf,
    ]


def test_sysctl_config_values_last_assignment_wins(
    sysctl_dirs: tuple[tuple[Path, ...], Path],
) -> None:
    directories, sysctl_conf = sysctl_dirs
    config = sysctl.load_config(sysctl.config_files(directories, sysctl_conf))
    assert config.value_for("kernel.randomize_va_space") == "2"
    assert config.value_for("net.ipv4.ip_forward") == "0"
    assert config.value_for("net.ipv4.tcp_syncookies") == "1"
    assert config.value_for("kernel.kptr_restrict") == "2"
    assert config.value_for("net.ipv4.conf.all.accept_redirects") == "0"
    assert config.value_for("net.ipv4.conf.eth0.rp_filter") == "1"
    assert config.value_for("net.ipv4.conf.lo.rp_filter") == "0"
    assert config.value_for("vm.swappiness") == ""


def test_sysctl_conf_linked_from_sysctl_d_is_read_once(tmp_path: Path) -> None:
    etc = tmp_path / "sysctl.d"
    etc.mkdir()
    sysctl_conf = tmp_path / "sysctl.conf"
    sysctl_conf.write_text("vm.swappiness = 10\n")
    (etc / "99-sysctl.conf").symlink_to(sysctl_conf)
    assert sysctl.config_files((etc,), sysctl_conf) == [etc / "99-sysctl.conf"]


def test_control_rows_walk_a_proc_sys_tree(tmp_path: Path) -> None:
    proc_sys = tmp_path / "sys"
    (proc_sys / "kernel").mkdir(parents=True)
    (proc_sys / "net" / "ipv4" / "conf" / "eth0").mkdir(parents=True)
    (proc_sys / "kernel" / "randomize_va_space").write_text("2\n")
    (proc_sys / "kernel" / "printk").write_text("4\t4\t1\t7\n")
    (proc_sys / "kernel" / "ns_last_pid").write_text("4242\n")  # a counter: left out
    (proc_sys / "net" / "ipv4" / "conf" / "eth0" / "rp_filter").write_text("1\n")
    config = sysctl.SysctlConfig()
    config.add_text("kernel.randomize_va_space = 2\nnet/ipv4/conf/eth0/rp_filter = 2\n")
    rows = sysctl.control_rows(proc_sys, config)
    assert all(tuple(row) == columns_for("system_controls", "linux") for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {
        "kernel.printk",
        "kernel.randomize_va_space",
        "net.ipv4.conf.eth0.rp_filter",
    }
    assert by_name["net.ipv4.conf.eth0.rp_filter"] == {
        "name": "net.ipv4.conf.eth0.rp_filter",
        "oid": "",
        "subsystem": "net",
        "current_value": "1",
        "config_value": "2",
        "type": "string",
    }
    assert by_name["kernel.printk"]["current_value"] == "4\t4\t1\t7"


def test_missing_proc_sys_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="system_controls"):
        sysctl.control_rows(tmp_path / "absent", sysctl.SysctlConfig())


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads this Linux host"
)


@linux_only
def test_this_hosts_system_controls() -> None:
    rows = sysctl.collect_system_controls()
    by_name = {row["name"]: row for row in rows}
    assert by_name["kernel.randomize_va_space"]["current_value"] in ("0", "1", "2")
    assert by_name["kernel.randomize_va_space"]["subsystem"] == "kernel"
    assert "vm.compact_memory" not in by_name  # write-only: skipped, not an empty value
    assert not [name for name in by_name if is_volatile_sysctl(name)]
    assert len(rows) > 100
    assert all(tuple(row) == columns_for("system_controls", "linux") for row in rows)


@linux_only
def test_this_hosts_kernel_modules_or_no_module_support() -> None:
    if not kernel.PROC_MODULES.exists():
        with pytest.raises(ProbeError, match="no loadable module support"):
            kernel.collect_kernel_modules()
        return
    for row in kernel.collect_kernel_modules():
        assert tuple(row) == columns_for("kernel_modules", "linux")
        assert row["size"].isdigit()


def _proc_sys_tree(root: Path) -> Path:
    proc_sys = root / "sys"
    for name, value in {
        "kernel/randomize_va_space": "2",
        "kernel/yama/ptrace_scope": "1",
        "kernel/printk": "4\t4\t1\t7",
        "net/ipv4/ip_forward": "0",
        "net/ipv4/ip_forward_use_pmtu": "0",
        "net/ipv4/icmp_echo_ignore_broadcasts": "1",
        "net/ipv4/conf/all/rp_filter": "1",
        "net/ipv4/conf/eth0.100/rp_filter": "2",
        "vm/swappiness": "60",
    }.items():
        (proc_sys / name).parent.mkdir(parents=True, exist_ok=True)
        (proc_sys / name).write_text(value + "\n")
    return proc_sys


def test_named_rows_are_the_only_ones_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc_sys = _proc_sys_tree(tmp_path)
    read: list[str] = []
    real_read = sysctl._read_value
    monkeypatch.setattr(sysctl, "_read_value", lambda path: read.append(path) or real_read(path))
    names = ("kernel.yama.ptrace_scope", "net.ipv4.ip_forward", "net.IPv4.icmp%", "x.y")
    rows = sysctl.control_rows(proc_sys, sysctl.SysctlConfig(), names)
    assert [row["name"] for row in rows] == [
        "kernel.yama.ptrace_scope",
        "net.ipv4.icmp_echo_ignore_broadcasts",  # the pattern, case ignored
        "net.ipv4.ip_forward",  # exact: not ip_forward_use_pmtu
    ]
    assert sorted(Path(path).relative_to(proc_sys).as_posix() for path in read) == [
        "kernel/yama/ptrace_scope",
        "net/ipv4/icmp_echo_ignore_broadcasts",
        "net/ipv4/ip_forward",
    ]
    assert all(tuple(row) == columns_for("system_controls", "linux") for row in rows)


def test_name_patterns_span_dots_and_read_underscore_literally(tmp_path: Path) -> None:
    proc_sys = _proc_sys_tree(tmp_path)
    rows = sysctl.control_rows(proc_sys, sysctl.SysctlConfig(), ("net.ipv4.conf.%.rp_filter",))
    assert [row["name"] for row in rows] == [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.eth0.100.rp_filter",
    ]
    assert sysctl.control_rows(proc_sys, sysctl.SysctlConfig(), ("kernel.printk_",)) == []


def test_no_names_reads_every_row_as_before(tmp_path: Path) -> None:
    proc_sys = _proc_sys_tree(tmp_path)
    rows = sysctl.control_rows(proc_sys, sysctl.SysctlConfig(), ())
    assert len(rows) == 9
    assert sysctl.control_rows(proc_sys, sysctl.SysctlConfig(), ("%",)) == rows


@linux_only
def test_this_hosts_named_system_controls_match_the_whole_walk() -> None:
    every = {row["name"]: row for row in sysctl.collect_system_controls()}
    names = ("kernel.randomize_va_space", "net.ipv4.conf.all.%", "fs.suid_dumpable")
    named = sysctl.collect_system_controls(names)
    wanted = sysctl.NameFilter(names)
    assert named == [row for name, row in sorted(every.items()) if wanted.matches(name)]
    assert 2 < len(named) < len(every) / 10

"""A private, throwaway PostgreSQL server on 127.0.0.1, for tests and benchmarks.

The contract tests and the scale-out benchmark need a real PostgreSQL, not a mock, and must
not depend on one being configured on the machine: this module runs Debian's own binaries
(``initdb``, ``pg_ctl``) on a fresh data directory and a free loopback port, with trust
authentication (nothing but this machine's loopback can reach it) and the C collation (so
text order is byte order, the order the store's ISO time stamps rely on), and removes it
all when stopped. PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
user Debian's package creates (``setpriv``), with its data directory handed over to it.

``PostgresServer.start`` raises ``PostgresUnavailable`` with the reason when no binaries are
installed or the server does not come up; callers skip (tests) or say so (benchmarks). A
process killed before it could stop its server leaves it running: the next ``start`` stops
and deletes every server whose starting process is gone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir"]

#: Where Debian installs the server binaries (``apt-get install postgresql``).
_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
_SUPERUSER = "posture"
_PREFIX = "posture-pg-"
#: The file in a server's directory holding the pid of the process that started it.
_OWNER = "owner.pid"


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be started here; the message says why."""


def find_bindir() -> Path | None:
    """The newest installed server's bin directory, or None when there is none."""
    override = os.environ.get("POSTURE_PG_BINDIR")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    found = sorted(
        (path for path in Path("/").glob(_BINDIR_GLOB.lstrip("/")) if (path / "initdb").exists()),
        key=lambda path: _major(path.parent.name),
    )
    return found[-1] if found else None


def _major(version: str) -> int:
    return int(version) if version.isdigit() else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """One private server; ``url(db)`` names a database on it (``create_database`` first).

    ``durable`` False turns ``fsync`` off (tests: a crash of the test machine loses nothing
    that matters); benchmarks keep it on so their figures are a real deployment's.
    """

    durable: bool = False
    settings: Sequence[str] = ()
    port: int = 0
    directory: Path | None = None
    _bindir: Path | None = None
    _run_as: list[str] = field(default_factory=list)

    def start(self) -> PostgresServer:
        self._bindir = find_bindir()
        if self._bindir is None:
            raise PostgresUnavailable(
                "no PostgreSQL server binaries (apt-get install postgresql); "
                "set POSTURE_PG_BINDIR to use others"
            )
        self._run_as = self._identity()
        self._reap_orphans()
        self.directory = Path(tempfile.mkdtemp(prefix=_PREFIX))
        (self.directory / _OWNER).write_text(str(os.getpid()))
        self._hand_over(self.directory)
        data = self.directory / "data"
        self._run(
            "initdb", "-D", str(data), "-U", _SUPERUSER, "--auth=trust", "--no-locale",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.port = _free_port()
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            f"-c fsync={'on' if self.durable else 'off'}",
            "-c max_connections=200",
            *(f"-c {setting}" for setting in self.settings),
        ]
        log = self.directory / "server.log"
        try:
            self._run("pg_ctl", "-D", str(data), "-l", str(log), "-o", " ".join(options), "-w",
                      "-t", "60", "start")  # fmt: skip
        except PostgresUnavailable as error:
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
            raise PostgresUnavailable(f"{error}\n{detail}") from None
        return self

    def _reap_orphans(self) -> None:
        """Stop and delete the servers of processes that died without stopping theirs (a
        test run killed by a timeout): each server's directory names its owner's pid."""
        for owner in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*/{_OWNER}"):
            try:
                pid = int(owner.read_text())
            except (OSError, ValueError):
                continue
            if _alive(pid):
                continue
            orphan = PostgresServer(_bindir=self._bindir, _run_as=self._run_as)
            orphan.directory = owner.parent
            orphan.stop()

    def _identity(self) -> list[str]:
        """The command prefix that drops root for the ``postgres`` user (none if not root)."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no postgres user") from None
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresUnavailable("running as root and setpriv is not installed")
        return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups"]

    def _hand_over(self, directory: Path) -> None:
        if self._run_as:
            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)

    def _run(self, program: str, *args: str) -> str:
        assert self._bindir is not None
        command = [*self._run_as, str(self._bindir / program), *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=120, cwd=self.directory
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PostgresUnavailable(f"{program}: {error}") from None
        if done.returncode != 0:
            raise PostgresUnavailable(f"{program} failed: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, underscores); returns its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and underscores only")
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement through ``psql`` and return its unaligned output."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-d", self.url(database), "-c", statement)  # fmt: skip

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is worth a checkpoint) and delete it."""
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
            except PostgresUnavailable:
                time.sleep(1)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

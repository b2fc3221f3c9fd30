"""``authorized_keys``: the public keys that may log in as each local user.

Each user's ``~/.ssh/authorized_keys`` and ``~/.ssh/authorized_keys2`` are read, as osquery
does; an ``AuthorizedKeysFile`` pointing elsewhere in sshd_config is not followed. Lines are
split the way sshd(8) reads them: optional options (a comma-separated list that may hold
double-quoted strings with spaces, e.g. ``command="echo hi"``), then the key type, the
base64 key and a free-text comment. Unlike osquery, which only knows five key types, any
type sshd accepts is recognised (security keys, certificates, DSA), so a ``sk-`` key or a
certificate is not silently missing from the table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from agent.sources.base import Row
from agent.sources.linux.accounts import PasswdEntry, read_passwd
from agent.sources.linux.common import make_row

__all__ = ["KEY_FILES", "authorized_keys_rows", "collect_authorized_keys", "parse_authorized_keys"]

log = logging.getLogger(__name__)

KEY_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")

#: Key types sshd accepts: plain, FIDO security keys and OpenSSH certificates.
_KEY_TYPE = re.compile(
    r"^(ssh-(rsa|dss|ed25519|ed448)|ecdsa-sha2-nistp(256|384|521)"
    r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com"
    r"|[a-z0-9-]+(@openssh\.com)?-cert-v01@openssh\.com)$"
)


def _split_options(line: str) -> tuple[str, str]:
    """(options, rest): options end at the first whitespace outside double quotes."""
    quoted = False
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return line[:index], line[index:].lstrip()
    return line, ""


def _parse_line(line: str) -> dict[str, str] | None:
    words = line.split(None, 1)
    if _KEY_TYPE.match(words[0]):
        options, rest = "", line
    else:
        options, rest = _split_options(line)
    parts = rest.split(None, 2)
    if len(parts) < 2 or not _KEY_TYPE.match(parts[0]):
        return None
    comment = parts[2].strip() if len(parts) == 3 else ""
    return {"options": options, "algorithm": parts[0], "key": parts[1], "comment": comment}


def parse_authorized_keys(text: str, uid: str, key_file: str) -> list[Row]:
    """One row per key line; blank, comment and unparseable lines are skipped."""
    rows = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _parse_line(line)
        if fields is not None:
            rows.append(make_row("authorized_keys", {**fields, "uid": uid, "key_file": key_file}))
    return rows


def authorized_keys_rows(users: Iterable[PasswdEntry]) -> list[Row]:
    """Keys of every user whose home directory holds an authorized_keys file."""
    rows: list[Row] = []
    for user in users:
        if not user.directory.startswith("/"):
            continue
        for name in KEY_FILES:
            path = Path(user.directory) / name
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            except OSError as error:
                log.info("authorized_keys: cannot read %s: %s", path, error.strerror)
                continue
            rows.extend(parse_authorized_keys(text, str(user.uid), str(path)))
    return rows


def collect_authorized_keys() -> list[Row]:
    return authorized_keys_rows(read_passwd("authorized_keys"))

"""Render a streamed report as text, JSON or CSV, and digest the rendered file.

Every renderer sees each host once (``host``) and writes the file at the end (``finish``),
when the scores and the content digest are known. The document's only part that depends
on when the report was produced is ``generated_at``; so two reports of the same instant
differ only there, in every format.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import IO, Any

from collector.policy.model import FRAMEWORKS, Check, Pack, Status
from collector.reports.stream import HostView, Renderer, Spool, canonical

__all__ = [
    "CSV_COLUMNS",
    "CsvRenderer",
    "JsonRenderer",
    "TableRenderer",
    "csv_field",
    "file_sha256",
    "sidecar",
]

CSV_COLUMNS = (
    "host_id",
    "hostname",
    "hardware_uuid",
    "check_id",
    "policy",
    "status",
    "raw_status",
    "waived",
    "waiver_id",
    "severity",
    "pack",
    "pack_version",
    *FRAMEWORKS,
    "reason",
    "result_since",
    "facts_collected_at",
    "evaluated_at",
    "hardware_serial",
    "groups",
    "agent_version",
    "evidence_sha256",
    "evidence",
    "report_as_of",
    "report_content_sha256",
    "report_generated_at",
)
_PASS = Status.PASS.value


class JsonRenderer(Renderer):
    """The canonical JSON itself, streamed as it is hashed, then its seal: compact, keys
    sorted, except ``content_sha256`` and ``generated_at``, which close the document (they
    are not part of the content they seal). ``jq .`` pretty-prints it."""

    reads_results = False
    is_canonical_json = True

    def host(self, view: HostView) -> None:
        """Nothing to add: the hosts' canonical JSON is this format's body."""

    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        seal = {k: document[k] for k in ("content_sha256", "generated_at")}
        out.write(("," + canonical(seal)[1:] + "\n").encode())


def csv_field(value: str) -> str:
    """One CSV field, quoted only when it must be (as ``csv``'s QUOTE_MINIMAL does)."""
    if '"' in value:
        return '"' + value.replace('"', '""') + '"'
    if "," in value or "\n" in value or "\r" in value:
        return '"' + value + '"'
    return value


def _check_fields(check_id: str, check: Check, packs: Mapping[str, Pack]) -> tuple[str, str]:
    """The CSV fields that depend on the check alone: (``check_id`` and ``policy``,
    ``severity`` through the frameworks), joined and quoted once per report rather than
    once per row."""
    pack = packs.get(check.pack)
    refs = [" ".join(ref.control for ref in check.frameworks.get(f, ())) for f in FRAMEWORKS]
    tail = [check.severity.value, check.pack, pack.version if pack else "", *refs]
    head = f"{csv_field(check_id)},{csv_field(check.title)}"
    return head, ",".join(csv_field(value) for value in tail)


class _Quoted(dict[str, str]):
    """CSV fields by text, quoted once each: a fleet's reasons and evidence repeat."""

    def __missing__(self, text: str) -> str:
        if len(self) >= 50_000:
            self.clear()
        field = self[text] = csv_field(text)
        return field


class CsvRenderer(Renderer):
    """One row per (host, check), with the policy's name and every framework's ids. Rows
    are spooled with a random placeholder where the content digest goes, replaced when
    the file is written (the digest covers every host, so it is known only then)."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        packs: Sequence[Pack],
        as_of: str,
        generated_at: str,
        token: str | None = None,
    ) -> None:
        by_name = {pack.name: pack for pack in packs}
        self._checks = {cid: _check_fields(cid, check, by_name) for cid, check in checks.items()}
        #: The placeholder; workers of one report are given the parent's (``token``).
        self.token = token or secrets.token_hex(32)
        self._token = self.token
        self._report = f"{csv_field(as_of)},{self._token},{csv_field(generated_at)}\n"
        self._quoted = _Quoted()
        self._middles: dict[tuple[str, str, str, bool, int | None], str] = {}
        self._spool = Spool()

    def host(self, view: HostView) -> None:
        r = view.record
        head = f"{r.id},{csv_field(r.hostname)},{csv_field(r.hardware_uuid)}"
        tail = ",".join(
            csv_field(value)
            for value in (
                r.facts_collected_at or "",
                r.evaluated_at or "",
                r.hardware_serial,
                " ".join(r.groups),
                r.agent_version,
            )
        )
        report, quoted, middles = self._report, self._quoted, self._middles
        rows = []
        for (
            check_id,
            status,
            raw,
            reason,
            since,
            _,
            digest,
            evidence,
            waived,
            waiver_id,
            note,
        ) in view.results:
            key = (check_id, status, raw, waived, waiver_id)
            middle = middles.get(key) or self._middle(key)
            rows.append(
                f"{head},{middle},{quoted[reason or note]},{since},{tail},{digest},"
                f"{quoted[evidence] if evidence else ''},{report}"
            )
        self._spool.write("".join(rows))

    def _middle(self, key: tuple[str, str, str, bool, int | None]) -> str:
        """The fields from ``check_id`` to the frameworks, which depend only on the check
        and the result's status and waiver: built once per distinct value, not per row."""
        check_id, status, raw, waived, waiver_id = key
        title, fields = self._checks[check_id]
        waiver = "" if waiver_id is None else waiver_id
        middle = f"{title},{status},{raw},{'yes' if waived else 'no'},{waiver},{fields}"
        if len(self._middles) >= 50_000:
            self._middles.clear()
        self._middles[key] = middle
        return middle

    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        out.write((",".join(CSV_COLUMNS) + "\n").encode())
        token, digest = self._token.encode(), str(document["content_sha256"]).encode()
        for chunk in self._spool.chunks(whole_lines=True):
            out.write(chunk.replace(token, digest))

    def close(self) -> None:
        self._spool.close()

    def spools(self) -> list[Spool]:
        return [self._spool]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def score_line(score: Mapping[str, Any]) -> str:
    coverage = "n/a" if score["coverage"] is None else f"{100 * score['coverage']:.0f}%"
    return (
        f"score {_percent(score['raw_percent'])} raw, {_percent(score['adjusted_percent'])}"
        f" with waivers, coverage {coverage}; pass {score['passed']}, fail {score['failed']},"
        f" error {score['errors']}, n/a {score['notapplicable']}, unknown {score['unknown']},"
        f" waived {score['waived']}"
    )


class TableRenderer(Renderer):
    """Text for a terminal: the header and summary, then per host its non-passing checks."""

    def __init__(self, checks: Mapping[str, Check]) -> None:
        self._checks = {cid: (c.severity.value, c.title) for cid, c in checks.items()}
        self._spool = Spool()

    def host(self, view: HostView) -> None:
        r = view.record
        stale = " STALE" if r.stale else ""
        lines = [
            "",
            f"Host {r.id} {r.hostname} ({r.os_version}, agent {r.agent_version}){stale}:"
            f" {score_line(view.score)}",
            f"  facts collected {r.facts_collected_at}, evaluated {r.evaluated_at}",
        ]
        for result in view.results:
            if result.status == _PASS:
                continue
            severity, title = self._checks[result.check_id]
            note = result.reason or result.waiver_note
            waived = " (waived)" if result.waived else ""
            lines.append(
                f"  {result.status.upper():<13} {severity:<8}"
                f" {result.check_id}: {title}{waived}{f' ({note})' if note else ''}"
            )
        self._spool.write("\n".join(lines) + "\n")

    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        doc = document
        scope = ", ".join(f"{k} {v}" for k, v in sorted(doc["scope"].items()) if v is not None)
        lines = [
            f"Posture compliance report as of {doc['as_of']}",
            f"  generated {doc['generated_at']} by posture-collector {doc['collector']['version']}",
            f"  scope: {scope}",
        ]
        lines += [f"  pack {p['name']} {p['version']} sha256 {p['sha256']}" for p in doc["packs"]]
        lines.append(f"  evidence: {doc['evidence_notice']}")
        lines.append(
            f"Summary over {doc['summary']['hosts']} host(s): {score_line(doc['summary'])}"
        )
        lines += [f"  group {g['name']}: {score_line(g['score'])}" for g in doc["summary_by_group"]]
        out.write(("\n".join(lines) + "\n").encode())
        for chunk in self._spool.chunks():
            out.write(chunk)
        out.write(f"\ncontent sha256 {doc['content_sha256']}\n".encode())

    def close(self) -> None:
        self._spool.close()

    def spools(self) -> list[Spool]:
        return [self._spool]


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar(digest: str, filename: str) -> str:
    """The ``FILE.sha256`` line, in the format ``sha256sum -c`` checks."""
    return f"{digest}  {filename}\n"

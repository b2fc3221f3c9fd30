"""Streaming a report: one host at a time, in bounded memory, hashed over canonical bytes.

The fleet is read a page of hosts at a time (``collector.history.FleetAsOf``). Each host is
turned into its part of the canonical JSON (sorted keys, no whitespace, UTF-8), which is
hashed as it goes (and is the file, for JSON), and handed to the format's renderer, which
spools its own rendering of the host; the scores, control counts and waivers in scope
accumulate on the way. The fields that depend on every host sort after ``hosts`` in the
canonical JSON (schema ``posture.report/2``), so the content SHA-256 is known once the last
host is hashed; the renderer then writes the file from its spool. Memory holds one page of
hosts and the accumulators, whatever the size of the fleet. A report split across worker
processes hands this module the workers' blocks instead (``SplitHosts``, ``_adopt``).

Per result the work is a few dictionary lookups and one string: stored instants and
evidence arrive as report text (``collector.history``), and JSON strings are escaped by
the C encoder, so producing the JSON costs little more than writing it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

from collector.history import FleetAsOf, HostRecord, instant_text, instants
from collector.policy.model import FRAMEWORKS, Pack, Status
from collector.reports.model import (
    EVIDENCE_NOTICE,
    SCHEMA,
    Report,
    check_document,
    collector_version,
    control_rows,
    iso,
    waiver_document,
    waiver_note,
)
from collector.reports.tally import FleetTally, Tally, check_weights
from collector.waivers import Waiver, WaiverScope

__all__ = [
    "Accumulated",
    "CanonicalSink",
    "HostView",
    "Part",
    "Renderer",
    "ReportSpec",
    "Shown",
    "SplitHosts",
    "Spool",
    "canonical",
    "host_document",
    "spliced",
    "stream_hosts",
    "stream_report",
]

_FAILING = frozenset({Status.FAIL.value, Status.ERROR.value})
_PASS_TEXT, _FAIL_TEXT = Status.PASS.value, Status.FAIL.value
_CHUNK = 1 << 20
#: The JSON string encoder ``json.dumps(..., ensure_ascii=False)`` uses (C when built).
_encode: Callable[[str], str] = json.encoder.encode_basestring
_EMPTY = '""'


def canonical(value: object) -> str:
    """The canonical JSON of ``value``: sorted keys, no whitespace, not ASCII-escaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spliced(document: Mapping[str, Any], key: str) -> tuple[str, str]:
    """The canonical JSON of ``document`` around a value for ``key`` (which it lacks):
    ``before + json_of_value + after`` is the canonical JSON of the document with it."""
    head = {k: v for k, v in document.items() if k < key}
    tail = {k: v for k, v in document.items() if k > key}
    before = (canonical(head)[:-1] + "," if head else "{") + _encode(key) + ":"
    after = ("," + canonical(tail)[1:]) if tail else "}"
    return before, after


class Spool:
    """A temporary file that text is appended to and later copied out of, followed by
    the segments other processes spooled (``adopt``), in the order adopted."""

    def __init__(self, directory: str | None = None) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close)
        self.parts: list[tuple[IO[bytes], int, int]] = []
        self._opened: dict[Path, IO[bytes]] = {}

    def write(self, text: str) -> None:
        self.file.write(text.encode())

    def reopen(self, path: Path) -> None:
        """Spool into the named file ``path`` instead (a worker's part, which the parent
        adopts); only before anything is written."""
        self.file.close()
        self.file = path.open("w+b")

    def adopt(self, path: Path, start: int, end: int) -> None:
        """Append bytes ``start`` to ``end`` of the file ``path`` (spooled by ``reopen``
        in another process): one block of hosts, so blocks of several workers interleave."""
        if end <= start:
            return
        file = self._opened.get(path)
        if file is None:
            file = self._opened[path] = path.open("rb")
        self.parts.append((file, start, end))

    def chunks(self, *, whole_lines: bool = False) -> Iterator[bytes]:
        """The spooled bytes in chunks; with ``whole_lines``, each ends at a line break
        (where there is one), so no line is split between two chunks: a chunk is completed
        with the rest of its last line (every segment ends at a line break where its
        writer's text did) rather than cut and rejoined, which would copy it twice more."""
        self.file.flush()
        end = self.file.seek(0, 2)
        for file, start, stop in ((self.file, 0, end), *self.parts):
            file.seek(start)
            while start < stop and (block := file.read(min(_CHUNK, stop - start))):
                start += len(block)
                if whole_lines and start < stop and not block.endswith(b"\n"):
                    line = file.readline(stop - start)
                    start += len(line)
                    block += line
                yield block

    def close(self) -> None:
        self.file.close()
        for file in self._opened.values():
            file.close()


class Shown(NamedTuple):
    """One result as the report shows it; ``evidence`` is canonical JSON text, or None
    when this report leaves the rows out."""

    check_id: str
    status: str
    raw_status: str
    reason: str
    since: str
    changed_at: str
    evidence_sha256: str
    evidence: str | None
    waived: bool
    waiver_id: int | None
    waiver_note: str


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as rendered: its record, its ``score`` object, its results shown."""

    record: HostRecord
    score: dict[str, Any]
    results: list[Shown]


class Renderer(ABC):
    """A format: spools each host as it streams by, then writes the file."""

    #: Whether ``host`` reads ``HostView.results`` (JSON does not: it is the canonical
    #: text itself, and building the results would cost a tuple per result for nothing).
    reads_results = True

    @abstractmethod
    def host(self, view: HostView) -> None: ...

    #: Whether the file is the canonical JSON itself, written to ``out`` as it streams
    #: (then ``finish`` only adds the seal and the closing brace).
    is_canonical_json = False

    @abstractmethod
    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        """Write the file (the rest of it): ``document`` is the report without hosts."""

    def close(self) -> None:  # noqa: B027 (most renderers have a spool to release)
        """Release any spool."""

    def spools(self) -> list[Spool]:
        """The spools ``host`` writes to, in a fixed order: a report split across
        processes redirects a worker's (``Spool.reopen``) and the parent adopts them."""
        return []


@dataclass(frozen=True)
class ReportSpec:
    """What a report states besides the hosts: packs, framework, instant, scope as asked."""

    packs: Sequence[Pack]
    framework: str | None
    generated_at: datetime
    scope: Mapping[str, Any]


class Accumulated:
    """What the report's header needs from every host: scores, control counts, and which
    hosts and groups were in scope (for the waivers that touch them)."""

    def __init__(self, check_ids: Sequence[str], framework: str | None) -> None:
        self.fleet = FleetTally()
        self.groups: dict[str, FleetTally] = {}
        self.controls: dict[str, dict[str, int]] | None = (
            {check_id: {} for check_id in check_ids} if framework else None
        )
        self.host_ids: set[int] = set()
        self.group_names: set[str] = set()

    def add(self, record: HostRecord, tally: Tally, results: list[Shown]) -> None:
        self.fleet.add_host(tally)
        groups = self.groups
        for group in record.groups:
            group_tally = groups.get(group)
            if group_tally is None:
                group_tally = groups[group] = FleetTally()
            group_tally.add_host(tally)
        self.host_ids.add(record.id)
        self.group_names.update(record.groups)
        if self.controls is not None:
            for result in results:
                counts = self.controls[result.check_id]
                counts[result.status] = counts.get(result.status, 0) + 1
                counts["waived"] = counts.get("waived", 0) + result.waived

    def merge(self, other: Accumulated) -> None:
        """Add what another part of the report accumulated (sums: order does not matter)."""
        self.fleet.merge(other.fleet)
        for name, tally in other.groups.items():
            self.groups.setdefault(name, FleetTally()).merge(tally)
        self.host_ids |= other.host_ids
        self.group_names |= other.group_names
        if self.controls is not None and other.controls is not None:
            for check_id, counts in other.controls.items():
                mine = self.controls[check_id]
                for key, count in counts.items():
                    mine[key] = mine.get(key, 0) + count

    def touches(self, waiver: Waiver, whole_fleet: bool) -> bool:
        if whole_fleet:
            return True
        if waiver.scope is WaiverScope.HOST:
            return waiver.host_id in self.host_ids
        if waiver.scope is WaiverScope.GROUP:
            return waiver.group in self.group_names
        return bool(self.host_ids)


def _host_view(
    fleet: FleetAsOf,
    record: HostRecord,
    weights: Mapping[str, tuple[int, bool]],
    quoted: Mapping[str, str],
    keep: bool,
) -> tuple[HostView, str, Tally]:
    """The host shown, its canonical JSON, and its tally: the hot loop of a report, run
    once per result of the fleet. A result whose check has no waiver, on a host that is
    not stale, is shown as stored without asking ``fleet.shown``. ``quoted`` holds the
    check ids as JSON strings; ``keep`` says whether the renderer reads the results."""
    tally = Tally()
    counts = tally.counts
    passed = judged = waived_count = waived_weight = 0
    results: list[Shown] = []
    parts: list[str] = []
    encode, stale, waivers = _encode, record.stale, fleet.waivers_by_check
    known, instant = instants(), instant_text
    every, texts = fleet.evidence_for == "all", record.evidence
    new = tuple.__new__
    for _, check_id, raw, reason, digest, since, changed in record.results:
        since = known.get(since) or instant(since)
        changed = known.get(changed) or instant(changed)
        status, waived, waiver_id, note = raw, False, None, ""
        if stale or check_id in waivers:
            status, reason, waiver, lapsed = fleet.shown(record, check_id, raw, reason)
            waived = waiver is not None and status in _FAILING
            waiver_id = waiver.id if waiver is not None else None
            note = waiver_note(status, waiver, lapsed)
        evidence = texts[digest] if every or raw in _FAILING else None
        # Tally.add, inlined: this loop runs once per result of the fleet.
        if status not in counts:
            raise ValueError(f"host {record.id} check {check_id}: unknown status {raw!r}")
        counts[status] += 1
        weight, severe = weights[check_id]
        if status == _PASS_TEXT:
            passed += weight
            judged += weight
        elif status in _FAILING:
            judged += weight
            if waived:
                waived_count += 1
                waived_weight += weight
            if severe and status == _FAIL_TEXT:
                tally.severe = True
        parts.append(
            f'{{"changed_at":"{changed}","check_id":{quoted[check_id]},"evidence":'
            f'{"null" if evidence is None else evidence},"evidence_sha256":{encode(digest)},'
            f'"raw_status":"{raw}","reason":{encode(reason) if reason else _EMPTY},'
            f'"since":"{since}","status":"{status}","waived":{"true" if waived else "false"},'
            f'"waiver_id":{"null" if waiver_id is None else waiver_id},"waiver_note":'
            f"{encode(note) if note else _EMPTY}}}"
        )
        if keep:  # Shown(...) without its Python-level __new__
            results.append(
                new(Shown, (check_id, status, raw, reason, since, changed, digest, evidence,
                            waived, waiver_id, note))
            )  # fmt: skip
    tally.passed_weight, tally.judged = passed, judged
    tally.waived, tally.waived_weight = waived_count, waived_weight
    score = tally.host_document()
    text = _host_json(record, score, ",".join(parts))
    return HostView(record, score, results), text, tally


def _text(value: str | None) -> str:
    return "null" if value is None else _encode(value)


def _number(value: float | None) -> str:
    """A number as ``json.dumps`` writes it (``float.__repr__``, ``int.__repr__``)."""
    return "null" if value is None else repr(value)


def _host_json(record: HostRecord, score: Mapping[str, Any], results: str) -> str:
    """The host's canonical JSON, written out key by key in sorted order: ``canonical`` of
    the same object (``host_document``) builds and sorts dictionaries per host, and this
    runs once per host of the fleet (``test_report_stream`` holds the two equal)."""
    r, s = record, score
    groups = ",".join(_encode(group) for group in r.groups)
    return (
        f'{{"agent_version":{_encode(r.agent_version)},"enrolled_at":{_encode(r.enrolled_at)},'
        f'"evaluated_at":{_text(r.evaluated_at)},'
        f'"facts_collected_at":{_text(r.facts_collected_at)},"groups":[{groups}],'
        f'"hardware_serial":{_encode(r.hardware_serial)},'
        f'"hardware_uuid":{_encode(r.hardware_uuid)},"hostname":{_encode(r.hostname)},'
        f'"id":{r.id},"last_seen_at":{_text(r.last_seen_at)},'
        f'"os_version":{_encode(r.os_version)},"platform":{_encode(r.platform)},'
        f'"results":[{results}],"score":{{"adjusted_percent":{_number(s["adjusted_percent"])},'
        f'"coverage":{_number(s["coverage"])},"errors":{s["errors"]},"failed":{s["failed"]},'
        f'"notapplicable":{s["notapplicable"]},"passed":{s["passed"]},'
        f'"raw_percent":{_number(s["raw_percent"])},"unknown":{s["unknown"]},'
        f'"waived":{s["waived"]}}},"stale":{"true" if r.stale else "false"}}}'
    )


def host_document(
    record: HostRecord, score: Mapping[str, Any], results: list[Any]
) -> dict[str, Any]:
    """The host's object in the report (what ``_host_json`` writes), as a dictionary."""
    return {
        "agent_version": record.agent_version,
        "enrolled_at": record.enrolled_at,
        "evaluated_at": record.evaluated_at,
        "facts_collected_at": record.facts_collected_at,
        "groups": list(record.groups),
        "hardware_serial": record.hardware_serial,
        "hardware_uuid": record.hardware_uuid,
        "hostname": record.hostname,
        "id": record.id,
        "last_seen_at": record.last_seen_at,
        "os_version": record.os_version,
        "platform": record.platform,
        "results": results,
        "score": dict(score),
        "stale": record.stale,
    }


def _leading(fleet: FleetAsOf, spec: ReportSpec) -> dict[str, Any]:
    """The fields that sort before ``hosts``: known before the first host is read, so the
    content digest can be computed as the hosts stream by."""
    checks = fleet.checks
    pack_by_name = {pack.name: pack for pack in spec.packs}
    framework = spec.framework
    return {
        "as_of": iso(fleet.at),
        "checks": [check_document(checks[cid], pack_by_name) for cid in sorted(checks)],
        "collector": {"name": "posture-collector", "version": collector_version()},
        "evidence": fleet.evidence_for,
        "evidence_notice": EVIDENCE_NOTICE[fleet.evidence_for],
        "framework": {"key": framework, "name": FRAMEWORKS[framework]} if framework else None,
    }


def _trailing(fleet: FleetAsOf, spec: ReportSpec, seen: Accumulated) -> dict[str, Any]:
    """The fields that sort after ``hosts``: what the hosts add up to."""
    checks, framework, controls = fleet.checks, spec.framework, seen.controls
    whole_fleet = fleet.scope.host_ids is None and fleet.scope.group is None
    return {
        "packs": [
            {"name": p.name, "version": p.version, "sha256": p.sha256}
            for p in sorted(spec.packs, key=lambda p: p.name)
        ],
        "schema": SCHEMA,
        "scope": {**spec.scope, "hosts": seen.fleet.hosts, "checks": len(checks)},
        "summary": seen.fleet.document(),
        "summary_by_control": (
            control_rows(checks, framework, controls) if framework and controls else []
        ),
        "summary_by_group": [
            {"name": name, "score": seen.groups[name].document()} for name in sorted(seen.groups)
        ],
        "waivers": [
            waiver_document(w, fleet.at)
            for w in fleet.waivers
            if w.check_id in checks and seen.touches(w, whole_fleet)
        ],
    }


class _Canonical:
    """The canonical JSON as it streams: hashed, and copied to ``out`` when the file is
    the canonical JSON itself (the JSON format). The closing brace is held back, so the
    file can end with its seal (``content_sha256``, ``generated_at``) before it."""

    def __init__(self, out: IO[bytes] | None) -> None:
        self.digest = hashlib.sha256()
        self.out = out

    def write(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_bytes(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        if self.out is not None:
            self.out.write(data)

    def close(self) -> str:
        """The content SHA-256, once the closing brace is counted in."""
        self.digest.update(b"}")
        return self.digest.hexdigest()


class _TextSink(Protocol):
    def write(self, text: str) -> object: ...


def stream_hosts(
    fleet: FleetAsOf, framework: str | None, renderer: Renderer, sink: _TextSink
) -> Accumulated:
    """Read ``fleet`` (an open ``FleetAsOf``) host by host: write each host's canonical
    JSON to ``sink`` (comma separated), hand it to ``renderer``, and return what the
    hosts add up to. The whole report, or one worker's range of hosts."""
    weights = check_weights(fleet.checks)
    quoted = {check_id: _encode(check_id) for check_id in fleet.checks}
    keep = renderer.reads_results or framework is not None  # controls count results
    seen = Accumulated(sorted(fleet.checks), framework)
    separator = ""
    for record in fleet.hosts():
        view, text, tally = _host_view(fleet, record, weights, quoted, keep)
        sink.write(separator + text)
        separator = ","
        seen.add(record, tally, view.results)
        renderer.host(view)
    return seen


@dataclass(frozen=True)
class Part:
    """One worker's blocks of hosts, rendered: the renderer's spools in ``spools``
    (``Renderer.spools`` order), where each of its blocks lies in them (``spans``: per
    block, per spool, (start, end)), and what its hosts add up to. The hosts' canonical
    JSON went to the report process as each block was done (``collector.reports.parallel``)."""

    spools: tuple[Path, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]
    seen: Accumulated


class CanonicalSink(Protocol):
    """Where a split report's hosts' canonical JSON goes, block by block, in order."""

    def write_bytes(self, data: bytes | memoryview) -> None: ...


#: Streams a split report's hosts into the sink (comma separated, in id order) and returns
#: the workers' parts, in worker order (``collector.reports.parallel.run_parts``).
SplitHosts = Callable[[CanonicalSink], Sequence[Part]]


def _adopt(
    parts: Sequence[Part], renderer: Renderer, framework: str | None, checks: Sequence[str]
) -> Accumulated:
    """The renderer's spools adopt the parts' blocks in report order (block ``b`` is the
    ``b // workers``-th block of worker ``b % workers``), and the accumulators merge."""
    seen = Accumulated(checks, framework)
    spools = renderer.spools()
    blocks = sum(len(part.spans) for part in parts)
    for number in range(blocks):
        part = parts[number % len(parts)]
        spans = part.spans[number // len(parts)]
        for spool, path, (start, end) in zip(spools, part.spools, spans, strict=True):
            spool.adopt(path, start, end)
    for part in parts:
        seen.merge(part.seen)
    return seen


def stream_report(
    fleet: FleetAsOf,
    spec: ReportSpec,
    renderer: Renderer,
    out: IO[bytes],
    split: SplitHosts | None = None,
) -> Report:
    """Read ``fleet`` (an open ``FleetAsOf``) host by host, render it with ``renderer``
    into ``out``, and return the report's header document (with its content digest).
    With ``split`` (worker processes streaming the hosts, ``collector.reports.parallel``)
    the hosts' canonical JSON comes from the workers, block by block in id order, and
    ``fleet`` is read for nothing else than its instant, scope, checks and waivers."""
    leading = _leading(fleet, spec)
    canonical_json = _Canonical(out if renderer.is_canonical_json else None)
    try:
        canonical_json.write(canonical(leading)[:-1] + ',"hosts":[')
        if split is None:
            seen = stream_hosts(fleet, spec.framework, renderer, canonical_json)
        else:
            parts = split(canonical_json)
            seen = _adopt(parts, renderer, spec.framework, sorted(fleet.checks))
        trailing = _trailing(fleet, spec, seen)
        canonical_json.write("]," + canonical(trailing)[1:-1])
        document = {
            **leading,
            **trailing,
            "content_sha256": canonical_json.close(),
            "generated_at": iso(spec.generated_at),
        }
        renderer.finish(document, out)
    finally:
        renderer.close()
    return Report(document)

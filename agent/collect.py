"""One collection: ask the sources for every table of the plan, keep the planned columns.

Each table comes from the first source in the registry that is available and claims it
(osquery before native, so a host with osqueryd gets osquery's rows). A table no source can
produce, or whose probe fails, carries an error instead of rows: an empty table would read
as "nothing found" and could pass a check it should not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.guard import ProbeBackoff
from agent.plan import CollectionPlan
from agent.sources.base import FactSource, ProbeError, Row, TableRequest

__all__ = ["Collection", "TableResult", "collect", "table_digest"]

log = logging.getLogger("posture.agent")


@dataclass(frozen=True)
class TableResult:
    rows: list[Row] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Collection:
    tables: dict[str, TableResult]

    def digests(self) -> dict[str, str]:
        return {name: table_digest(result) for name, result in self.tables.items()}

    def as_json(self) -> dict[str, object]:
        """Tables as ``posture-agent facts`` prints them: name -> rows (or the error)."""
        return {
            name: ({"error": result.error} if result.error else result.rows)
            for name, result in sorted(self.tables.items())
        }


def table_digest(result: TableResult) -> str:
    """SHA-256 of the table's canonical form: order of rows and keys does not matter."""
    rows = sorted(json.dumps(row, sort_keys=True, separators=(",", ":")) for row in result.rows)
    canonical = json.dumps({"rows": rows, "error": result.error}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _project(rows: list[Row], columns: Sequence[str]) -> list[Row]:
    if not columns:
        return rows
    return [{column: row.get(column, "") for column in columns} for row in rows]


def _collect_table(
    request: TableRequest, sources: Sequence[tuple[FactSource, frozenset[str]]]
) -> TableResult:
    source = next((s for s, tables in sources if request.name in tables), None)
    if source is None:
        return TableResult(error=f"no fact source on this host provides {request.name}")
    try:
        return TableResult(rows=_project(source.collect(request), request.columns))
    except ProbeError as error:
        log.warning("%s: %s source failed: %s", request.name, source.name, error)
        return TableResult(error=f"{source.name}: {error}")


def collect(
    plan: CollectionPlan, sources: Sequence[FactSource], backoff: ProbeBackoff | None = None
) -> Collection:
    """Every table of ``plan``; with ``backoff``, tables whose probe keeps failing are paused."""
    available = [(source, source.tables()) for source in sources if source.available()]
    tables: dict[str, TableResult] = {}
    for request in plan.tables:
        paused = backoff.paused(request.name) if backoff else None
        if paused:
            tables[request.name] = TableResult(error=paused)
            continue
        tables[request.name] = _collect_table(request, available)
        if backoff:
            backoff.record(request.name, tables[request.name].error or None)
    return Collection(tables)

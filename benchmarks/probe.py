"""Work measured in a fresh process, so its CPU and peak memory are its own.

    python -m benchmarks.probe collect PLAN.json           # one agent collection
    python -m benchmarks.probe evaluate FACTS.json DB      # store + evaluate one host

Each prints one JSON line with the CPU seconds of the work alone (imports excluded); the
parent reads the whole process's CPU and peak RSS from ``wait4``.
"""

from __future__ import annotations

import json
import resource
import sys
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["main"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _collect(plan_path: Path) -> dict[str, object]:
    from agent.collect import collect
    from agent.plan import load_plan
    from agent.sources import default_sources

    plan = load_plan(plan_path)
    started = _cpu()
    collection = collect(plan, default_sources(None))
    collection.digests()  # the agent digests every collection to find what changed
    rows = sum(len(table.rows) for table in collection.tables.values())
    return {"work_cpu": _cpu() - started, "tables": len(collection.tables), "rows": rows}


def _evaluate(facts_path: Path, db_path: Path) -> dict[str, object]:
    from collector.model import FactBatch, HostIdentity, TableFacts
    from collector.policy.loader import load_packs
    from collector.service import PostureService
    from collector.store import SqliteStore

    facts = json.loads(facts_path.read_text())
    started = _cpu()
    store = SqliteStore(db_path)
    service = PostureService(store, load_packs(Path(facts["policies"])))
    _, secret = service.create_enroll_secret("probe")
    host = service.enroll(secret, HostIdentity("probe", "", "probe", "linux", "", "")).host
    tables = [TableFacts(n, t["rows"], t["error"]) for n, t in facts["tables"].items()]
    batch = FactBatch(1, datetime.now(UTC), tables, facts["digests"])
    service.ingest(host, batch)
    checks = len(service.host_view(service.find_host("probe")).results)
    service.close()
    store.close()
    return {"work_cpu": _cpu() - started, "checks": checks}


def main(argv: list[str]) -> int:
    if argv[:1] == ["collect"] and len(argv) == 2:
        print(json.dumps(_collect(Path(argv[1]))))
        return 0
    if argv[:1] == ["evaluate"] and len(argv) == 3:
        print(json.dumps(_evaluate(Path(argv[1]), Path(argv[2]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

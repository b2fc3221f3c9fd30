"""Where web handlers run their domain calls: writes on the store's worker, reads beside it.

SQLite has one writer, and the store's connection is not thread-safe, so every write goes to
the single worker thread ingest uses (``call``). Reads that scan the fleet (host lists over
50,000 hosts, reports) would hold that thread for a long time and delay agents' acks, so
they run on a small pool of their own (``read``), each thread with its own connection to
the same file: WAL lets readers work while the worker writes. A read function receives a
*reader service*, the collector's service over that thread's connection.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from collector.audit import AuditLog
from collector.collect_requests import CollectRequests, registry_for
from collector.service import PostureService
from collector.store import SqliteStore, open_store
from collector.web.views import SummaryCache

__all__ = ["READER_THREADS", "WebContext"]

T = TypeVar("T")
P = ParamSpec("P")

#: Reader threads: two cores per machine class (GOALS.md); a third would only queue.
READER_THREADS = 2


@dataclass
class WebContext:
    service: PostureService
    worker: ThreadPoolExecutor
    collect: CollectRequests = field(default_factory=CollectRequests)
    readers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(READER_THREADS, "posture-web-read")
    )
    #: The fleet summary the API and the pages share (built on reader threads).
    summaries: SummaryCache = field(default_factory=SummaryCache)
    _local: threading.local = field(default_factory=threading.local)
    _stores: list[SqliteStore] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_service(cls, service: PostureService, worker: ThreadPoolExecutor) -> WebContext:
        return cls(service, worker, registry_for(service))

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a domain call on the store's worker thread (writes go here)."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    async def read(
        self, function: Callable[Concatenate[PostureService, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run ``function(reader_service, *args)`` on a reader thread."""

        def run() -> T:
            return function(self._reader(), *args, **kw)

        return await asyncio.get_running_loop().run_in_executor(self.readers, run)

    def _reader(self) -> PostureService:
        reader: PostureService | None = getattr(self._local, "service", None)
        if reader is None:
            store = open_store(self.service.store.location)
            with self._lock:
                self._stores.append(store)
            # The same packs, checks and clock over this thread's connection; the evaluator
            # is shared but never called by reads.
            reader = copy.copy(self.service)
            reader.store = store
            reader.audit = AuditLog(store, self.service.clock)
            self._local.service = reader
        return reader

    def close(self) -> None:
        """Stop the reader threads and close their connections (the worker is not ours)."""
        self.readers.shutdown(wait=True)
        with self._lock:
            for store in self._stores:
                store.close()
            self._stores.clear()

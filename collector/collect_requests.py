"""Requests to collect now, waiting for the agent's stream to carry them.

An analyst asks for a fresh collection (``POST /api/v1/hosts/{id}/collect``); the collector
can only tell an agent over the agent's own stream (``CollectNow``), which agents open when
they have something to send. So a request waits here until the servicer drains it: at once
if the host's stream is open (the servicer is woken through the callback it registered),
else when the agent next connects. Requests for one host collapse into one: an agent asked
twice collects once.

Thread-safe and asyncio-free: the web layer and the servicer call it from the event loop or
worker threads alike; the servicer's wake-up callback is what crosses into its loop.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["CollectRequest", "CollectRequests", "registry_for"]


@dataclass(frozen=True)
class CollectRequest:
    host_id: int
    requested_by: str
    requested_at: datetime
    reason: str


class CollectRequests:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, CollectRequest] = {}
        self._streams: dict[int, dict[int, Callable[[], None]]] = {}
        self._next_stream = 0

    def request(self, request: CollectRequest) -> bool:
        """Queue ``request`` (replacing an older one for the host); True when the host has a
        stream open right now, whose servicer is woken to send it."""
        with self._lock:
            self._pending[request.host_id] = request
            wakers = list(self._streams.get(request.host_id, {}).values())
        for wake in wakers:
            wake()
        return bool(wakers)

    def take(self, host_id: int) -> CollectRequest | None:
        """The host's pending request, removed (the servicer sends it as ``CollectNow``)."""
        with self._lock:
            return self._pending.pop(host_id, None)

    def pending(self, host_id: int) -> CollectRequest | None:
        with self._lock:
            return self._pending.get(host_id)

    def stream_opened(self, host_id: int, wake: Callable[[], None] = lambda: None) -> int:
        """Note an open stream of ``host_id``; ``wake`` is called (from any thread) when a
        request for it arrives. Returns a handle for ``stream_closed``."""
        with self._lock:
            self._next_stream += 1
            self._streams.setdefault(host_id, {})[self._next_stream] = wake
            return self._next_stream

    def stream_closed(self, host_id: int, handle: int) -> None:
        with self._lock:
            streams = self._streams.get(host_id, {})
            streams.pop(handle, None)
            if not streams:
                self._streams.pop(host_id, None)

    def is_streaming(self, host_id: int) -> bool:
        with self._lock:
            return bool(self._streams.get(host_id))


_REGISTRIES: weakref.WeakKeyDictionary[object, CollectRequests] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def registry_for(service: object) -> CollectRequests:
    """The one registry of a running service, shared by the web app and the servicer
    without either having to hand it to the other."""
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(service)
        if registry is None:
            registry = _REGISTRIES[service] = CollectRequests()
        return registry

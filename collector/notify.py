"""Webhook notifications of drift events: signed HTTP POSTs from the outbox, retried forever.

Events are queued in the store's ``outbox`` in the transaction that records them; this
module delivers them from a background thread of the ``serve`` process, with its own
database connection, so the event loop and the ingest worker never wait on a slow
receiver. A delivery is one POST of the event's JSON document (``posture.drift-event/1``);
a 2xx answer marks it delivered, anything else (an error status, a refused connection, a
timeout) schedules a retry with exponential backoff, and nothing is ever dropped.

Each request carries ``X-Posture-Event`` (the event id, stable across retries, for the
receiver to ignore a repeat should the collector die between a receiver's 2xx and recording
it), ``X-Posture-Timestamp`` (Unix seconds) and ``X-Posture-Signature: sha256=<hex>``, the
HMAC-SHA256 with the shared secret of ``<timestamp>.<body>``: a receiver recomputes it over
the raw body and rejects a mismatch or a timestamp too far from its clock.

With several collectors sharing one database, one of them delivers at a time: each pass
takes the ``notify`` lease (``collector.jobs.HeldLease``) and renews it before every POST,
so the others skip their passes while it lives, and take over within ``lease_seconds`` of
its holder dying.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from collector.drift import StoredEvent
from collector.groups import host_groups
from collector.jobs import HeldLease, instance_id
from collector.model import Host
from collector.policy.model import Check
from collector.reports.drift import event_document
from collector.reports.model import collector_version
from collector.store import SqliteStore, open_store

__all__ = ["DeliveryError", "Notifier", "WebhookConfig", "retry_delay", "sign"]

log = logging.getLogger("posture.notify")


class DeliveryError(Exception):
    """The receiver did not accept the notification (the message says why)."""


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: bytes
    timeout_seconds: float = 10.0
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    #: How often the outbox is checked when nothing wakes the notifier.
    poll_seconds: float = 5.0
    #: How long the delivering collector's lease lasts unrenewed (it renews before every
    #: POST, so this must exceed one POST's timeout).
    lease_seconds: float = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL must be http:// or https://, not {self.url!r}")
        if len(self.secret) < 16:
            raise ValueError("the webhook secret must be at least 16 bytes")
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError("the delivery lease must outlast one request's timeout")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Posture-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def retry_delay(attempts: int, config: WebhookConfig) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones: 2, 4, 8 s... up to the max."""
    seconds = config.backoff_base_seconds * 2 ** min(attempts - 1, 30)
    return timedelta(seconds=min(seconds, config.backoff_max_seconds))


def post(config: WebhookConfig, event_id: int, body: bytes, now: datetime) -> None:
    """POST one notification; raises DeliveryError unless the receiver answers 2xx."""
    timestamp = str(int(now.timestamp()))
    request = urllib.request.Request(
        config.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"posture-collector/{collector_version()}",
            "X-Posture-Event": str(event_id),
            "X-Posture-Timestamp": timestamp,
            "X-Posture-Signature": sign(config.secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_seconds) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        raise DeliveryError(f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise DeliveryError(str(getattr(error, "reason", error))) from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}")


class Notifier:
    """Delivers the outbox of the database at ``location`` (a path or URL) to one webhook.

    ``deliver_due`` makes one pass (tests call it directly); ``start`` runs passes in a
    thread until ``stop``, waking early when ``wake`` is called (after an ingest), each pass
    only while this collector holds the delivery lease (``holder`` names it).
    """

    def __init__(
        self,
        location: str | Path,
        config: WebhookConfig,
        checks: Mapping[str, Check],
        clock: Callable[[], datetime],
        *,
        holder: str | None = None,
    ) -> None:
        self.config = config
        self.checks = checks
        self.clock = clock
        self.lease = HeldLease(
            "notify", holder or instance_id(), timedelta(seconds=config.lease_seconds)
        )
        self._location = location
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_as_holder(self, store: SqliteStore) -> int:
        """One pass, if this collector holds (or can take) the delivery lease; 0 if not."""
        if not self.lease.acquire(store, self.clock()):
            return 0
        return self.deliver_due(store, renew=lambda: self.lease.acquire(store, self.clock()))

    def deliver_due(self, store: SqliteStore, renew: Callable[[], bool] | None = None) -> int:
        """Try every notification due now, oldest first; returns how many were delivered.

        ``renew`` is called before each POST; the pass stops when it returns False (the
        delivery lease went to another collector).
        """
        delivered = 0
        due = store.pending_notifications(self.clock())
        hosts = self._hosts(store, {pending.event.host_id for pending in due})
        for pending in due:
            if renew is not None and not renew():
                log.warning("delivery lease lost; another collector delivers now")
                break
            stored = pending.event
            body = self._body(stored, *hosts.get(stored.host_id, (None, ())))
            try:
                post(self.config, stored.id, body, self.clock())
            except DeliveryError as error:
                retry_at = self.clock() + retry_delay(pending.attempts + 1, self.config)
                log.warning("event %s not delivered (%s); retry at %s", stored.id, error, retry_at)
                store.mark_failed(stored.id, str(error), retry_at)
                continue
            store.mark_delivered(stored.id, self.clock())
            delivered += 1
        return delivered

    def _hosts(
        self, store: SqliteStore, host_ids: set[int]
    ) -> dict[int, tuple[Host, tuple[str, ...]]]:
        """The hosts of the events about to go, with their groups (receivers route by
        department)."""
        if not host_ids:
            return {}
        rules, secret_groups = store.group_rules(), store.host_secret_groups()
        now = self.clock()
        hosts = {}
        for host_id in host_ids:
            host = store.get_host(host_id)
            if host is not None:
                groups = host_groups(host.identity.hostname, secret_groups.get(host_id), rules, now)
                hosts[host_id] = (host, groups)
        return hosts

    def _body(self, stored: StoredEvent, host: Host | None, groups: tuple[str, ...]) -> bytes:
        check = self.checks.get(stored.event.check_id)
        document = event_document(stored, host, check, groups)
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="posture-notify", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        store = open_store(self._location, pool_size=2)
        try:
            while not self._stopping.is_set():
                try:
                    self.deliver_as_holder(store)
                except Exception:  # a database hiccup must not end notifications for good
                    log.exception("webhook delivery pass failed; retrying")
                self._wakeup.wait(self.config.poll_seconds)
                self._wakeup.clear()
            self._release(store)
        finally:
            store.close()

    def _release(self, store: SqliteStore) -> None:
        """Hand the outbox to another collector at once rather than after the lease ends."""
        try:
            self.lease.release(store, self.clock())
        except Exception:  # it will expire on its own
            log.exception("could not release the delivery lease")

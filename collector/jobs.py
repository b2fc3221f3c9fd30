"""Background jobs that run once across every collector sharing one database.

A collector runs jobs beside serving agents: delivering the webhook outbox
(``collector.notify``) and compacting history (``collector.retention``). With several
collectors on one PostgreSQL each job must still run once, not once per collector; the
database arbitrates through leases (``collector.store.leases``), so no collector needs to
know the others:

- ``HeldLease``: a job that runs continuously on one collector at a time (the outbox). The
  holder renews the lease before each unit of work; when it stops (crash, kill -9, network
  partition) the lease expires after ``ttl`` and the next collector to ask takes over. A
  clean stop releases it at once.
- ``claim_period``: a job that runs once per period (retention, daily). Every collector asks
  now and then; the first to ask after the previous period ended runs it.

Waiver expiry and stale-host detection are not jobs: both are read at the instant a view or
report is made (``collector.waivers``, ``collector.history``), from the shared database, so
every collector gives the same answer without running anything.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

__all__ = ["HeldLease", "LeaseStore", "claim_period", "instance_id"]


def instance_id() -> str:
    """A name for this collector process in lease records: host, pid and a random tag
    (a restarted process is a new holder)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


class LeaseStore(Protocol):
    """The storage a job needs (``collector.store.leases.LeasesMixin``)."""

    def hold_lease(self, name: str, holder: str, now: datetime, until: datetime) -> bool: ...

    def claim_period(self, name: str, holder: str, now: datetime, until: datetime) -> bool: ...

    def release_lease(self, name: str, holder: str, now: datetime) -> bool: ...


@dataclass(frozen=True)
class HeldLease:
    """Job ``name`` run by ``holder`` while it keeps renewing within ``ttl``."""

    name: str
    holder: str
    ttl: timedelta

    def acquire(self, store: LeaseStore, now: datetime) -> bool:
        """Take or renew the lease; False while another collector holds it."""
        return store.hold_lease(self.name, self.holder, now, now + self.ttl)

    def release(self, store: LeaseStore, now: datetime) -> None:
        store.release_lease(self.name, self.holder, now)


def claim_period(
    store: LeaseStore, name: str, holder: str, now: datetime, period: timedelta
) -> bool:
    """True when this collector should run job ``name`` now: the first to ask once the
    previous period is over claims the next ``period``."""
    return store.claim_period(name, holder, now, now + period)

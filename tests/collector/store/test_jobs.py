"""Background jobs with two collectors on one database, on every engine: the webhook outbox
is delivered by one collector at a time (each event once), handed over when its holder
dies, and retention compacts once a day whoever asks.

The two "collectors" are two notifiers (and retention runners), each on its own store
opened on the shared database, against a real HTTP receiver on 127.0.0.1; their clocks are
set by the test, so a lease's expiry is a step of the clock, not a wait.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.model import FactBatch, HostIdentity, TableFacts
from collector.notify import Notifier, WebhookConfig
from collector.retention import RetentionThread
from collector.store import SqliteStore

SECRET = b"0123456789abcdef-shared-secret"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
ROOT_ONLY = [{"uid": "0", "gid": "0", "username": "root"}]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _queue_events(store: SqliteStore, count: int) -> None:
    """Raise ``count`` configuration drift events (new users after the baseline)."""
    store.notify_events = True
    secret = store.create_enroll_secret("t", "h", T0)
    identity = HostIdentity("UUID-1", "SN-1", "pd-1", "linux", "Debian 12", "0.1.0")
    host = store.create_host(identity, "cred", secret, 300, T0)
    users = list(ROOT_ONLY)
    for seq in range(1, count + 2):
        batch = FactBatch(seq, T0, [TableFacts("users", list(users))], {"users": str(seq)})
        store.apply_batch(host.id, batch, T0)
        users.append({"uid": str(1000 + seq), "gid": "100", "username": f"user{seq}"})


def test_two_collectors_deliver_each_event_once(engine: Any, receiver: Any) -> None:
    a, b = engine.open(), engine.open()
    clock = Clock()
    config = WebhookConfig(receiver.url, SECRET, timeout_seconds=5, lease_seconds=30)
    notifiers = [Notifier(engine.location, config, {}, clock, holder=name) for name in ("a", "b")]
    try:
        _queue_events(a, 3)
        passes = []
        start = threading.Barrier(2)

        def deliver(notifier: Notifier, store: SqliteStore) -> None:
            start.wait()
            passes.append(notifier.deliver_as_holder(store))

        threads = [
            threading.Thread(target=deliver, args=pair)
            for pair in zip(notifiers, (a, b), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(passes) == [0, 3]  # one collector delivered all, the other none
        assert len(receiver.event_ids) == 3 and len(set(receiver.event_ids)) == 3
        # The holder stops renewing (killed): the other takes over once the lease ends.
        _queue_more(a, clock)
        holder = a.lease("notify")
        assert holder is not None
        other = notifiers[1] if holder.holder == "a" else notifiers[0]
        clock.now += timedelta(seconds=10)
        assert other.deliver_as_holder(b) == 0  # the lease still lives
        clock.now += timedelta(seconds=30)
        assert other.deliver_as_holder(b) == 1
        assert len(receiver.event_ids) == 4 and len(set(receiver.event_ids)) == 4
    finally:
        a.close()
        b.close()


def _queue_more(store: SqliteStore, clock: Clock) -> None:
    """One more drift event: a user added on the host's next batch."""
    (host,) = store.list_hosts()
    users = [
        *ROOT_ONLY,
        *({"uid": str(1000 + n), "gid": "100", "username": f"user{n}"} for n in range(1, 5)),
    ]
    batch = FactBatch(99, T0, [TableFacts("users", users)], {"users": "99"})
    assert not store.apply_batch(host.id, batch, clock()).duplicate


def test_retention_runs_once_a_day_across_collectors(engine: Any) -> None:
    a, b = engine.open(), engine.open()
    clock = Clock()
    runners = [RetentionThread(engine.location, 30, clock, holder=name) for name in ("a", "b")]
    try:
        assert runners[0].run_if_due(a)
        assert not runners[1].run_if_due(b)
        clock.now += timedelta(hours=23)
        assert not runners[1].run_if_due(b) and not runners[0].run_if_due(a)
        clock.now += timedelta(hours=2)
        assert runners[1].run_if_due(b)
        assert not runners[0].run_if_due(a)
        lease = a.lease("retention")
        assert lease is not None and (lease.holder, lease.runs) == ("b", 2)
    finally:
        a.close()
        b.close()

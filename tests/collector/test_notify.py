"""Webhook notifications against a real HTTP receiver on 127.0.0.1: signed, retried with
backoff after failures, delivered once per event, never lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.notify import Notifier, WebhookConfig, retry_delay
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore

SECRET = b"0123456789abcdef-shared-secret"
PACK = """\
name: notify-test
version: "1"
description: one check to flip
checks:
  - id: test.linux.no-empty-passwords
    title: No account has an empty password
    description: d
    rationale: r
    remediation: m
    severity: critical
    platforms: [linux]
    frameworks: {nist_800_53r5: ["IA-5"]}
    query: SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM shadow WHERE password_status = 'empty')
"""
# shadow is history-only (no configuration drift), so the flip is the only drift here.
LOCKED = [{"username": "root", "password_status": "locked"}]
EMPTY = [*LOCKED, {"username": "guest", "password_status": "empty"}]


class Setup:
    def __init__(self, service: PostureService, url: str) -> None:
        self.service, self.store = service, service.store
        self.now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
        service.clock = lambda: self.now
        service.score_drop_points = 100.0  # only the flip is drift here
        self.store.notify_events = True
        self.config = WebhookConfig(url, SECRET, timeout_seconds=5, poll_seconds=0.2)
        self.notifier = Notifier(self.store.path, self.config, service.checks, lambda: self.now)
        _, secret = service.create_enroll_secret("police", group="Police")
        identity = HostIdentity("UUID-1", "SN-1", "pd-1", "linux", "Debian 12", "0.1.0")
        self.host: Host = service.enroll(secret, identity).host
        self.seq = 0

    def report(self, shadow: list[dict[str, str]]) -> None:
        self.seq += 1
        self.now += timedelta(minutes=5)
        batch = FactBatch(
            self.seq, self.now, [TableFacts("shadow", shadow)], {"shadow": str(self.seq)}
        )
        self.service.ingest(self.host, batch)


@pytest.fixture
def setup(tmp_path: Path, receiver: Any) -> Iterator[Setup]:
    (tmp_path / "packs" / "n").mkdir(parents=True)
    (tmp_path / "packs" / "n" / "pack.yaml").write_text(PACK)
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(tmp_path / "packs"))
    yield Setup(service, receiver.url)
    service.close()
    store.close()


def _verify(headers: dict[str, str], body: bytes) -> bool:
    signed = headers["X-Posture-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Posture-Signature"])


def test_a_flip_is_notified_once_even_when_the_receiver_fails_first(
    setup: Setup, receiver: Any
) -> None:
    receiver.statuses = [503]
    setup.report(LOCKED)
    setup.report(EMPTY)  # the flip: pass -> fail
    assert setup.notifier.deliver_due(setup.store) == 0  # 503: kept, retry scheduled
    (event_id,) = setup.store.outbox_status()
    attempts, delivered_at, error = setup.store.outbox_status()[event_id]
    assert (attempts, delivered_at, error) == (1, None, "HTTP 503 Service Unavailable")
    assert setup.notifier.deliver_due(setup.store) == 0  # not due before the backoff
    assert len(receiver.received) == 1
    setup.now += retry_delay(1, setup.config)
    assert setup.notifier.deliver_due(setup.store) == 1
    assert setup.notifier.deliver_due(setup.store) == 0  # delivered means done
    assert [status for _, _, status in receiver.received] == [503, 200]
    first, second = receiver.received
    assert first[1] == second[1]  # the same document both times
    headers, body, _ = second
    assert _verify(headers, body) and headers["Content-Type"] == "application/json"
    assert headers["X-Posture-Event"] == str(event_id)
    document = json.loads(body)
    assert (document["schema"], document["kind"], document["type"]) == (
        "posture.drift-event/1", "compliance", "check_regressed")  # fmt: skip
    assert document["check"]["id"] == "test.linux.no-empty-passwords"
    assert document["host"]["hostname"] == "pd-1"
    assert (document["old"], document["new"]) == ({"status": "pass"}, {"status": "fail"})
    assert setup.store.outbox_status()[event_id][:2] == (2, setup.now)


def test_a_tampered_body_fails_the_signature_check(setup: Setup, receiver: Any) -> None:
    setup.report(LOCKED)
    setup.report(EMPTY)
    setup.notifier.deliver_due(setup.store)
    headers, body, _ = receiver.received[0]
    assert _verify(headers, body)
    assert not _verify(headers, body.replace(b"pd-1", b"pd-2"))


def test_an_unreachable_receiver_loses_nothing_and_backs_off(
    setup: Setup, receiver: Any, tmp_path: Path
) -> None:
    down = WebhookConfig("http://127.0.0.1:9/unreachable", SECRET, timeout_seconds=2)
    notifier = Notifier(setup.store.path, down, setup.service.checks, lambda: setup.now)
    setup.report(LOCKED)
    setup.report(EMPTY)
    for attempt in (1, 2, 3):
        assert notifier.deliver_due(setup.store) == 0
        (status,) = setup.store.outbox_status().values()
        assert status[0] == attempt and status[1] is None and status[2]
        setup.now += retry_delay(attempt, down)
    assert [retry_delay(n, down).total_seconds() for n in (1, 2, 3, 20)] == [2, 4, 8, 600]
    assert setup.notifier.deliver_due(setup.store) == 1  # the receiver is back
    assert len(receiver.received) == 1


def test_the_background_notifier_delivers_after_an_ingest_wakes_it(
    setup: Setup, receiver: Any
) -> None:
    setup.report(LOCKED)
    setup.service.after_ingest = setup.notifier.wake
    setup.notifier.start()
    try:
        setup.report(EMPTY)
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        setup.notifier.stop()
    assert len(receiver.received) == 1
    assert all(status[1] is not None for status in setup.store.outbox_status().values())


def test_without_a_webhook_no_notification_is_queued(setup: Setup) -> None:
    setup.store.notify_events = False
    setup.report(LOCKED)
    setup.report(EMPTY)
    assert setup.store.outbox_status() == {}


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("file:///etc/passwd", SECRET, "http:// or https://"),
        ("ftp://example.org/", SECRET, "http:// or https://"),
        ("https://example.org/hook", b"short", "at least 16 bytes"),
    ],
)
def test_webhook_settings_are_checked(url: str, secret: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookConfig(url, secret)

"""A real ``posture-collector serve`` with a webhook: a check flips on a host reporting over
gRPC with TLS, and a real HTTP receiver on loopback, failing at first, ends up with exactly
one notification of exactly one drift event."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

pytestmark = pytest.mark.integration

SECRET = b"integration-webhook-secret-0123456789"
PACK = """\
name: webhook-test
version: "1"
description: one check the test flips
checks:
  - id: test.linux.no-empty-passwords
    title: No account has an empty password
    description: d
    rationale: r
    remediation: m
    severity: critical
    platforms: [linux]
    frameworks: {nist_800_53r5: ["IA-5"], cjis: {version: "5.9", sections: ["5.6.2.1"]}}
    query: SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM shadow WHERE password_status = 'empty')
"""
LOCKED = [{"username": "root", "password_status": "locked"}]
EMPTY = [*LOCKED, {"username": "guest", "password_status": "empty"}]


def _send(address: str, ca: bytes, credential: str, batches: list[pb.AgentMessage]) -> list[int]:
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        replies = stub.Connect(iter(batches), metadata=(("authorization", f"Bearer {credential}"),))
        return [reply.ack.seq for reply in replies if reply.HasField("ack")]


def _batch(seq: int, shadow: list[dict[str, str]]) -> pb.AgentMessage:
    table = pb.Table(name="shadow", rows=[pb.Row(columns=row) for row in shadow])
    batch = pb.Batch(seq=seq, collected_at_ms=int(time.time() * 1000), changed=[table],
                     digests={"shadow": f"digest-{seq}"})  # fmt: skip
    return pb.AgentMessage(batch=batch)


def test_a_flip_is_one_drift_event_and_one_notification(
    collector: Any, receiver: Any, tmp_path: Path
) -> None:
    packs = tmp_path / "packs" / "webhook-test"
    packs.mkdir(parents=True)
    (packs / "pack.yaml").write_text(PACK)
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    collector.stop()
    receiver.statuses = [500]  # the first delivery fails; the outbox retries
    collector.extra = ["--policies", str(packs.parent), "--webhook-url", receiver.url,
                       "--webhook-secret-file", str(secret_file),
                       "--score-drop", "100"]  # only the flip is drift here  # fmt: skip
    collector.start()

    ca = collector.pki.ca_cert.read_bytes()
    enroll_secret = collector.cli("enroll-secret", "create", "police", "--group", "Police")
    identity = pb.HostIdentity(hardware_uuid="UUID-PD-7", hardware_serial="SN7",
                               hostname="pd-laptop-7", platform="linux",
                               os_version="Debian GNU/Linux 12", agent_version="0.1.0")  # fmt: skip
    with grpc.secure_channel(collector.address, grpc.ssl_channel_credentials(ca)) as channel:
        enrolled = agent_pb2_grpc.AgentServiceStub(channel).Enroll(
            pb.EnrollRequest(enroll_secret=enroll_secret.stdout.strip(), identity=identity)
        )
    credential = enrolled.agent_credential
    assert _send(collector.address, ca, credential, [_batch(1, LOCKED)]) == [1]
    assert _send(collector.address, ca, credential, [_batch(2, EMPTY)]) == [2]  # the flip

    deadline = time.monotonic() + 60  # first try fails; the retry comes after its backoff
    while not receiver.accepted() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _send(collector.address, ca, credential, [_batch(3, EMPTY)]) == [3]  # no new drift
    collector.stop()  # the notifier stops with the server: nothing more can be sent

    assert [status for _, _, status in receiver.received] == [500, 200]
    headers, body, _ = receiver.accepted()[0]
    signed = headers["X-Posture-Timestamp"].encode() + b"." + body
    assert headers["X-Posture-Signature"] == (
        "sha256=" + hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
    )
    notified = json.loads(body)
    assert (notified["type"], notified["check"]["id"], notified["host"]["hostname"]) == (
        "check_regressed", "test.linux.no-empty-passwords", "pd-laptop-7")  # fmt: skip
    assert notified["host"]["groups"] == ["Police"]

    listed = json.loads(collector.cli("drift", "--format", "json").stdout)
    assert [(e["id"], e["kind"], e["type"]) for e in listed] == [
        (notified["id"], "compliance", "check_regressed")
    ]
    police = collector.cli("drift", "--group", "Police", "--kind", "compliance", "--format", "csv")
    assert len(police.stdout.strip().splitlines()) == 2  # header + the one event

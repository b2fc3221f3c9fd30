"""Hostile input against a real collector: every message gets a clear status or is stored as
inert data, and the server goes on serving the next agent."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.policy.loader import PolicyError, load_pack
from collector.tls import CertificateError, check_csr
from collector.transport.convert import InvalidMessage, batch_from_proto
from protos.posture.v1 import agent_pb2 as pb

CONNECT = "/posture.v1.AgentService/Connect"
#: Examples per property test; the long fuzz run sets it (docs/reliability.md).
FUZZ = int(os.environ.get("POSTURE_FUZZ_EXAMPLES", "0"))


def _identity(uuid: str) -> pb.HostIdentity:
    return pb.HostIdentity(hardware_uuid=uuid, hostname=uuid, platform="linux")


async def _enroll(serving: Any, uuid: str = "HOST-A") -> tuple[int, str]:
    response = await serving.stub.Enroll(
        pb.EnrollRequest(enroll_secret=serving.secret, identity=_identity(uuid))
    )
    return int(response.host_id), response.agent_credential


def _metadata(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def _batch(seq: int, tables: dict[str, list[dict[str, str]]]) -> pb.AgentMessage:
    changed = [
        pb.Table(name=name, rows=[pb.Row(columns=row) for row in rows])
        for name, rows in tables.items()
    ]
    return pb.AgentMessage(
        batch=pb.Batch(seq=seq, collected_at_ms=int(time.time() * 1000), changed=changed)
    )


async def _acks(serving: Any, credential: str, messages: list[pb.AgentMessage]) -> list[int]:
    call = serving.stub.Connect(metadata=_metadata(credential))
    for message in messages:
        await call.write(message)
    acks = []
    while len(acks) < len(messages):
        reply = await call.read()
        if reply.WhichOneof("message") == "ack":
            acks.append(reply.ack.seq)
    call.cancel()
    return acks


async def _raw_connect(serving: Any, credential: str, payload: bytes) -> grpc.aio.AioRpcError:
    connect = serving.channel.stream_stream(CONNECT)  # bytes in, bytes out
    call = connect(metadata=_metadata(credential))
    await call.write(payload)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return caught.value


async def _still_serving(serving: Any, credential: str, seq: int) -> None:
    assert await _acks(serving, credential, [_batch(seq, {"users": []})]) == [seq]


async def test_malformed_protobuf_bytes_are_refused(serving: Any) -> None:
    _, credential = await _enroll(serving)
    error = await _raw_connect(serving, credential, b"\xff\xff\xff\xff\x0f")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed message" in (error.details() or "")
    await _still_serving(serving, credential, 1)


async def test_invalid_utf8_in_a_fact_value_is_refused(serving: Any) -> None:
    _, credential = await _enroll(serving)
    valid = _batch(1, {"users": [{"username": "bob"}]}).SerializeToString()
    error = await _raw_connect(serving, credential, valid.replace(b"bob", b"b\xffb"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad UTF-8" in (error.details() or "")
    await _still_serving(serving, credential, 1)


async def test_gzip_decompression_bomb_is_refused_by_decompressed_size(serving: Any) -> None:
    _, credential = await _enroll(serving)
    bomb = _batch(1, {"processes": [{"cmdline": "a" * (8 * 1024 * 1024)}]})
    call = serving.stub.Connect(metadata=_metadata(credential), compression=grpc.Compression.Gzip)
    await call.write(bomb)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await _still_serving(serving, credential, 1)


async def test_unknown_and_huge_table_names_are_acked_but_not_stored(serving: Any) -> None:
    host_id, credential = await _enroll(serving)
    batch = _batch(1, {"no_such_table": [{"a": "1"}], "x" * 20_000: [], "users": []})
    assert await _acks(serving, credential, [batch]) == [1]
    assert set(serving.service.store.table_states(host_id)) == {"users"}


async def test_fact_values_that_look_like_sql_are_stored_as_inert_text(serving: Any) -> None:
    host_id, credential = await _enroll(serving)
    hostile = "root'; DROP TABLE hosts; --"
    rows = [{"uid": "0", "username": hostile, "shell": "' OR 1=1 --"}]
    assert await _acks(serving, credential, [_batch(1, {"users": rows})]) == [1]
    store = serving.service.store
    assert store.host_rows(host_id, "users") == [
        {"uid": "0", "username": hostile, "shell": "' OR 1=1 --"}
    ]
    assert [host.id for host in store.list_hosts()] == [host_id]


async def test_duplicate_and_out_of_order_seqs_are_stored_once(serving: Any) -> None:
    host_id, credential = await _enroll(serving)
    messages = [_batch(seq, {"users": []}) for seq in (5, 3, 5, 3, 4)]
    assert await _acks(serving, credential, messages) == [5, 3, 5, 3, 4]
    assert serving.service.store.stored_seqs(host_id) == [3, 4, 5]


async def test_a_batch_is_stored_for_the_credential_holder_whatever_it_claims(
    serving: Any,
) -> None:
    host_a, credential_a = await _enroll(serving, "HOST-A")
    host_b, _ = await _enroll(serving, "HOST-B")
    # There is no host field to forge: identity comes from the credential alone.
    batch = _batch(1, {"system_info": [{"uuid": "HOST-B", "hostname": "HOST-B"}]})
    assert await _acks(serving, credential_a, [batch]) == [1]
    assert serving.service.store.stored_seqs(host_b) == []
    assert serving.service.store.host_rows(host_a, "system_info")[0]["uuid"] == "HOST-B"


@pytest.mark.parametrize(
    "credential",
    ["", "not-a-credential", "x" * 4000, "Bearer", "' OR 1=1 --"],
    ids=["empty", "wrong", "long", "bearer-word", "sql"],
)
async def test_wrong_credentials_are_unauthenticated_and_store_nothing(
    serving: Any, credential: str
) -> None:
    host_id, good = await _enroll(serving)
    call = serving.stub.Connect(metadata=_metadata(credential))
    await call.write(_batch(1, {"users": [{"username": "intruder"}]}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "unknown agent credential"
    assert serving.service.store.stored_seqs(host_id) == []
    await _still_serving(serving, good, 1)


async def test_a_revoked_credential_is_refused_mid_stream_and_on_reconnect(serving: Any) -> None:
    host_id, credential = await _enroll(serving)
    _, other = await _enroll(serving, "HOST-B")
    call = serving.stub.Connect(metadata=_metadata(credential))
    await call.write(_batch(1, {"users": []}))
    assert (await call.read()).ack.seq == 1
    await serving.settled()
    serving.service.revoke_credential(serving.service.find_host(str(host_id)))
    await call.write(_batch(2, {"users": []}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == f"agent credential of host {host_id} is revoked"
    error = await _raw_connect(serving, credential, _batch(3, {}).SerializeToString())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert serving.service.store.stored_seqs(host_id) == [1]
    await _still_serving(serving, other, 1)


async def test_a_replay_of_another_hosts_batch_is_stored_as_the_senders_only(
    serving: Any,
) -> None:
    host_a, credential_a = await _enroll(serving, "HOST-A")
    host_b, credential_b = await _enroll(serving, "HOST-B")
    captured = _batch(7, {"users": [{"uid": "0", "username": "b-admin"}]}).SerializeToString()
    assert await _acks(serving, credential_b, [pb.AgentMessage.FromString(captured)]) == [7]
    b_before = serving.service.store.host_rows(host_b, "users")

    replay = serving.channel.stream_stream(CONNECT)(metadata=_metadata(credential_a))
    await replay.write(captured)  # the same bytes, under A's credential
    assert pb.CollectorMessage.FromString(await replay.read()).ack.seq == 7
    replay.cancel()
    await serving.settled()
    store = serving.service.store
    assert store.stored_seqs(host_a) == [7]
    assert store.host_rows(host_a, "users") == [{"uid": "0", "username": "b-admin"}]
    assert store.stored_seqs(host_b) == [7] and store.host_rows(host_b, "users") == b_before
    # B replaying its own batch changes nothing: (host, seq) is stored once.
    assert await _acks(serving, credential_b, [pb.AgentMessage.FromString(captured)]) == [7]
    assert store.stored_seqs(host_b) == [7]


@settings(max_examples=FUZZ or 200, deadline=None)
@given(data=st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_any_csr_bytes_are_accepted_or_refused_clearly(data: bytes) -> None:
    try:
        check_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n" + data)
    except CertificateError as error:
        assert str(error)


_TEXT = st.text(max_size=40)
_ROWS = st.lists(st.dictionaries(_TEXT, _TEXT, max_size=4), max_size=4)


@settings(max_examples=FUZZ or 300, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    collected_at_ms=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    tables=st.dictionaries(_TEXT, _ROWS, max_size=4),
    digests=st.dictionaries(_TEXT, _TEXT, max_size=4),
)
def test_any_batch_message_converts_or_is_refused_clearly(
    seq: int, collected_at_ms: int, tables: dict[str, Any], digests: dict[str, str]
) -> None:
    message = _batch(1, tables).batch
    message.seq, message.collected_at_ms = seq, collected_at_ms
    message.digests.update(digests)
    try:
        batch = batch_from_proto(message, datetime.now(UTC))
    except InvalidMessage as error:
        assert str(error)
    else:
        assert batch.seq == seq >= 1
        assert [table.name for table in batch.changed] == list(tables)


_YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=FUZZ or 150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    document=st.dictionaries(
        st.sampled_from(["name", "version", "description", "checks", "x"]), _YAML_VALUES
    )
)
def test_any_pack_file_loads_or_fails_with_policy_error(tmp_path: Path, document: Any) -> None:
    pack = tmp_path / "fuzzed"
    pack.mkdir(exist_ok=True)
    (pack / "pack.yaml").write_text(yaml.safe_dump(document))
    try:
        load_pack(pack)
    except PolicyError as error:
        assert all(problem for problem in error.problems)

"""The agent's gRPC client: the only agent module that imports grpc or the stubs.

Converts between the wire messages and the agent's own records, so the daemon deals in
acks, plans and requests, never in protobuf.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.plan import CollectionPlan
from agent.sources.base import TableRequest
from agent.spool import SpooledBatch
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

__all__ = [
    "Ack",
    "AgentStream",
    "CollectRequest",
    "PlanUpdate",
    "ResendRequest",
    "TransportError",
    "batch_to_proto",
    "enroll",
    "open_channel",
]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


class TransportError(Exception):
    """A call failed; ``code`` is the gRPC status so callers can tell retryable from fatal."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @property
    def retryable(self) -> bool:
        return self.code not in {
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.INVALID_ARGUMENT,
        }


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class PlanUpdate:
    plan: CollectionPlan


@dataclass(frozen=True)
class CollectRequest:
    reason: str


@dataclass(frozen=True)
class ResendRequest:
    tables: list[str]
    reason: str


CollectorEvent = Ack | PlanUpdate | CollectRequest | ResendRequest


def open_channel(
    collector: str, ca_cert: Path | bytes, *, own_connection: bool = False
) -> grpc.aio.Channel:
    """A TLS channel to the collector. gRPC shares one connection among a process's channels
    to the same address; ``own_connection`` gives this channel its own, as each agent has
    on its own laptop (the load generator simulates thousands of agents in one process)."""
    root = ca_cert if isinstance(ca_cert, bytes) else ca_cert.read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    options: list[tuple[str, int]] = list(_CHANNEL_OPTIONS)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.secure_channel(collector, credentials, options=options)


def _error(error: grpc.aio.AioRpcError) -> TransportError:
    return TransportError(error.code(), error.details() or "")


def plan_from_proto(plan: pb.CollectionPlan) -> CollectionPlan:
    tables = tuple(
        TableRequest(table.name, tuple(table.paths), tuple(table.columns)) for table in plan.tables
    )
    return CollectionPlan(plan.version, plan.interval_seconds, tables)


async def enroll(
    channel: grpc.aio.Channel, secret: str, identity: dict[str, str], timeout: float = 30.0
) -> tuple[str, str, CollectionPlan]:
    """Enroll this machine; returns (host id, credential, first plan)."""
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    request = pb.EnrollRequest(enroll_secret=secret, identity=pb.HostIdentity(**identity))
    try:
        response = await stub.Enroll(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        raise _error(error) from error
    return response.host_id, response.agent_credential, plan_from_proto(response.plan)


def batch_to_proto(batch: SpooledBatch, spooled_batches: int = 0) -> pb.Batch:
    """The wire form of a spooled batch (public so benchmarks measure the real bytes)."""
    return pb.Batch(
        seq=batch.seq,
        collected_at_ms=batch.collected_at_ms,
        changed=[
            pb.Table(name=name, rows=[pb.Row(columns=row) for row in table.rows], error=table.error)
            for name, table in batch.changed.items()
        ],
        digests=batch.digests,
        plan_version=batch.plan_version,
        full=batch.full,
        spooled_batches=spooled_batches,
    )


def _event(message: pb.CollectorMessage) -> CollectorEvent | None:
    kind = message.WhichOneof("message")
    if kind == "ack":
        return Ack(message.ack.seq)
    if kind == "plan":
        return PlanUpdate(plan_from_proto(message.plan))
    if kind == "collect_now":
        return CollectRequest(message.collect_now.reason)
    if kind == "resend_full":
        return ResendRequest(list(message.resend_full.tables), message.resend_full.reason)
    return None


class AgentStream:
    """One open Connect stream, authenticated by the agent credential.

    The agent's messages are gzip-compressed: fact tables are repetitive text (every row
    repeats its column names), so a first report shrinks about six times and a typical delta
    about seven (docs/performance.md), for a few milliseconds of the agent's CPU. Laptops
    report over VPNs and hotel Wi-Fi; the collector's CPU goes to storing, not inflating.
    """

    def __init__(self, channel: grpc.aio.Channel, credential: str) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        self._call = stub.Connect(
            metadata=(("authorization", f"Bearer {credential}"),),
            compression=grpc.Compression.Gzip,
        )

    async def hello(self, agent_version: str, plan_version: str, spooled_batches: int) -> None:
        hello = pb.Hello(
            agent_version=agent_version,
            plan_version=plan_version,
            spooled_batches=spooled_batches,
        )
        await self._write(pb.AgentMessage(hello=hello))

    async def send(self, batch: SpooledBatch, spooled_batches: int) -> int:
        """Write one batch; ``spooled_batches`` says how many wait behind it, for operators.

        Returns the message's size in bytes (its protobuf encoding, before gRPC framing).
        """
        message = pb.AgentMessage(batch=batch_to_proto(batch, spooled_batches))
        await self._write(message)
        return message.ByteSize()

    async def _write(self, message: pb.AgentMessage) -> None:
        try:
            await self._call.write(message)
        except grpc.aio.AioRpcError as error:
            raise _error(error) from error
        except asyncio.InvalidStateError as error:  # the collector already closed the call
            raise await self._final_error() from error

    async def receive(self) -> CollectorEvent:
        """The next event from the collector; the collector ending the stream is an error."""
        while True:
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as error:
                raise _error(error) from error
            if message is grpc.aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lag
                raise await self._final_error()
            event = _event(message)
            if event is not None:
                return event

    async def _final_error(self) -> TransportError:
        code = await self._call.code()
        return TransportError(code, await self._call.details() or "stream closed")

    async def finish(self, timeout: float = 5.0) -> None:
        """End the stream cleanly: say we are done writing and let the collector close it,
        so it ends with OK rather than CANCELLED in the collector's logs and metrics.
        Messages still unread (a collection request nobody waits for) are drained: the
        call cannot complete while they are pending."""
        try:
            await self._call.done_writing()
            await asyncio.wait_for(self._drain(), timeout)
        except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
            self._call.cancel()

    async def _drain(self) -> None:
        while await self._call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
            pass

    async def close(self) -> None:
        self._call.cancel()

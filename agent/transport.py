"""The agent's gRPC client: the only agent module that imports grpc or the stubs.

Converts between the wire messages and the agent's own records, so the daemon deals in
acks, plans and requests, never in protobuf.

**mTLS.** A channel presents a client certificate when the CA file it is given sits in a
directory that also holds the agent's ``client.pem`` (``agent.identity.ClientTls``; the
enroll command puts both in ``STATE_DIR/tls``). Every stream then renews that certificate
when two thirds of its lifetime have passed, over the same connection and before its
hello, so a daemon renews without any code of its own.

**TLS session resumption.** The daemon opens a connection per report (an idle stream costs
the collector memory), so without help every report pays a full TLS 1.3 handshake with
certificate verification on both ends. Channels share a process-wide ``TlsSessions``: the
second connection to a collector resumes the first one's session (a ticket, no
certificate exchange or signature). What that saves the collector is its verification of
the client's certificate, so under mTLS only: about 0.5 ms of CPU per connection, a fifth
of what a connection costs it (TLS 1.3 resumption still makes a fresh key exchange;
``python -m benchmarks.handshake``). gRPC keys its cache by the server name only, and a
resumed session carries the certificate of the connection that created it, whatever
certificate the new channel holds; so a cache belongs to **one client certificate**, and a
channel with another certificate (after renewal or re-enrollment) gets a fresh cache and a
full handshake that presents the new certificate. gRPC sends no server name for an IP
address target, so a collector addressed by IP is never resumed: address it by DNS name
(or ``server_name``). The collector still authenticates every stream and checks the
certificate's validity itself (``collector.transport.peer``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc.experimental import session_cache  # type: ignore[attr-defined]  # grpc-stubs lag

from agent.identity import ClientTls, new_key, renewal_due, signing_request
from agent.plan import CollectionPlan
from agent.sources.base import TableRequest
from agent.spool import SpooledBatch
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

__all__ = [
    "Ack",
    "AgentStream",
    "CollectRequest",
    "Enrolled",
    "PlanUpdate",
    "ResendRequest",
    "TlsSessions",
    "TransportError",
    "batch_to_proto",
    "enroll",
    "enroll_agent",
    "open_channel",
    "renew_certificate",
]

log = logging.getLogger("posture.agent")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


class TransportError(Exception):
    """A call failed; ``code`` is the gRPC status so callers can tell retryable from fatal.

    ``retry_after`` is the collector's hint (seconds) when it refused for a rate limit:
    waiting less only gets the agent refused again.
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.retry_after = retry_after

    @property
    def pending(self) -> bool:
        """A re-enrollment request waits for an administrator: try again later."""
        return self.code == grpc.StatusCode.FAILED_PRECONDITION

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


#: Channels that present a client certificate, and where it is kept (for renewal).
_CLIENT_TLS: weakref.WeakKeyDictionary[grpc.aio.Channel, ClientTls] = weakref.WeakKeyDictionary()


class TlsSessions:
    """TLS sessions to resume, for one client identity at a time (see the module docstring).

    ``cache_for(certificate)`` returns the cache of that certificate (``b""`` for none); a
    different certificate replaces the cache, so a session made with an old certificate is
    never offered again. One daemon is one identity: the process shares ``SESSIONS``. The
    load generator gives each simulated agent its own, as each laptop has its own process.
    """

    #: Sessions kept per identity: one per collector name the agent talks to.
    CAPACITY = 4

    def __init__(self) -> None:
        self._identity: bytes | None = None
        #: A ``grpc.experimental.session_cache.SSLSessionCache`` (untyped in grpc-stubs).
        self._cache: object | None = None

    def cache_for(self, certificate: bytes) -> object:
        if self._cache is None or self._identity != certificate:
            self._identity = certificate
            self._cache = session_cache.ssl_session_cache_lru(self.CAPACITY)
        return self._cache

    def clear(self) -> None:
        """Forget every session: the next connection makes a full handshake."""
        self._identity, self._cache = None, None


#: The process's sessions: a daemon's reconnects resume (``open_channel``).
SESSIONS = TlsSessions()


def open_channel(
    collector: str,
    ca_cert: Path | bytes,
    *,
    own_connection: bool = False,
    sessions: TlsSessions | None = SESSIONS,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """A TLS channel to the collector, with the agent's client certificate if it has one
    beside ``ca_cert`` (see the module docstring). gRPC shares one connection among a
    process's channels to the same address; ``own_connection`` gives this channel its own,
    as each agent has on its own laptop (the load generator simulates thousands of agents
    in one process). ``sessions`` resumes TLS sessions (None: a full handshake every
    time); ``server_name`` is the name the collector's certificate is checked against (and
    sessions are kept under) when it differs from ``collector``'s host."""
    root = ca_cert if isinstance(ca_cert, bytes) else ca_cert.read_bytes()
    tls = None if isinstance(ca_cert, bytes) else ClientTls(ca_cert.parent)
    certificate = b""
    if tls is not None and tls.exists():
        certificate, key = tls.load()
        credentials = grpc.ssl_channel_credentials(root, key, certificate)
    else:
        tls, credentials = None, grpc.ssl_channel_credentials(root_certificates=root)
    options: list[tuple[str, object]] = list(_CHANNEL_OPTIONS)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if sessions is not None:
        options.append(("grpc.ssl_session_cache", sessions.cache_for(certificate)))
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    channel = grpc.aio.secure_channel(collector, credentials, options=options)
    if tls is not None:
        _CLIENT_TLS[channel] = tls
    return channel


def _retry_after(metadata: object) -> float | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "retry-after-ms" and str(value).isdigit():
            return int(str(value)) / 1000
    return None


def _error(error: grpc.aio.AioRpcError) -> TransportError:
    retry = _retry_after(error.trailing_metadata())
    return TransportError(error.code(), error.details() or "", retry)


def plan_from_proto(plan: pb.CollectionPlan) -> CollectionPlan:
    tables = tuple(
        TableRequest(table.name, tuple(table.paths), tuple(table.columns)) for table in plan.tables
    )
    return CollectionPlan(plan.version, plan.interval_seconds, tables)


@dataclass(frozen=True)
class Enrolled:
    host_id: str
    credential: str
    plan: CollectionPlan
    #: With mTLS: the client certificate for the CSR's key, and the CA that signed it.
    certificate_pem: bytes = b""
    ca_pem: bytes = b""


async def enroll_agent(
    channel: grpc.aio.Channel,
    secret: str,
    identity: dict[str, str],
    *,
    csr_pem: bytes = b"",
    token: str = "",
    timeout: float = 30.0,
) -> Enrolled:
    """Enroll this machine. A collector that knows this identity already answers
    FAILED_PRECONDITION until an administrator approves the request bound to ``token``."""
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    request = pb.EnrollRequest(
        enroll_secret=secret,
        identity=pb.HostIdentity(**identity),
        csr_pem=csr_pem,
        request_token=token,
    )
    try:
        response = await stub.Enroll(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        raise _error(error) from error
    return Enrolled(
        response.host_id,
        response.agent_credential,
        plan_from_proto(response.plan),
        response.client_certificate_pem,
        response.ca_certificate_pem,
    )


async def enroll(
    channel: grpc.aio.Channel, secret: str, identity: dict[str, str], timeout: float = 30.0
) -> tuple[str, str, CollectionPlan]:
    """Enroll this machine without mTLS; returns (host id, credential, first plan)."""
    enrolled = await enroll_agent(channel, secret, identity, timeout=timeout)
    return enrolled.host_id, enrolled.credential, enrolled.plan


async def renew_certificate(
    channel: grpc.aio.Channel, tls: ClientTls, timeout: float = 30.0
) -> None:
    """Trade the current certificate (presented by ``channel``) for one on a new key; the
    new pair replaces the old on disk only once the collector has signed it."""
    key = new_key()
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        response = await stub.RenewCertificate(
            pb.RenewRequest(csr_pem=signing_request(key, "renewal")), timeout=timeout
        )
    except grpc.aio.AioRpcError as error:
        raise _error(error) from error
    await asyncio.to_thread(tls.save, response.client_certificate_pem, key)
    # Sessions are kept per certificate already; forgetting them also drops the old key's.
    SESSIONS.clear()


async def _renew_if_due(channel: grpc.aio.Channel) -> None:
    """Renew this channel's client certificate past two thirds of its life; a failure is
    logged and retried on the next stream (the certificate is still valid until then)."""
    tls = _CLIENT_TLS.get(channel)
    if tls is None:
        return
    try:
        certificate, _ = await asyncio.to_thread(tls.load)
        if renewal_due(certificate, datetime.now(UTC)):
            await renew_certificate(channel, tls)
            log.info("renewed the client certificate in %s", tls.bundle_path)
    except (TransportError, OSError, ValueError) as error:
        log.warning("could not renew the client certificate: %s", error)


def batch_to_proto(batch: SpooledBatch, spooled_batches: int = 0) -> pb.Batch:
    """The wire form of a spooled batch (public so benchmarks measure the real bytes), with
    the spool's id and the gaps a full spool left before it."""
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
        gaps=[
            pb.Gap(
                first_seq=gap.first_seq,
                last_seq=gap.last_seq,
                batches=gap.batches,
                first_collected_at_ms=gap.first_collected_at_ms,
                last_collected_at_ms=gap.last_collected_at_ms,
            )
            for gap in batch.gaps
        ],
        spool_id=batch.spool_id,
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
        self._channel = channel
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        self._call = stub.Connect(
            metadata=(("authorization", f"Bearer {credential}"),),
            compression=grpc.Compression.Gzip,
        )

    async def hello(self, agent_version: str, plan_version: str, spooled_batches: int) -> None:
        """Open the stream (renewing the client certificate first when it is due)."""
        await _renew_if_due(self._channel)
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
        details = await self._call.details() or "stream closed"
        return TransportError(code, details, _retry_after(await self._call.trailing_metadata()))

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

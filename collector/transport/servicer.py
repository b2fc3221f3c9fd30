"""The AgentService servicer: thin; proto in, domain call in the worker thread, proto out.

Every blocking call (SQLite, policy evaluation) runs in the service's single worker thread,
so the event loop only moves bytes; batches reach it through ``GroupIngest``, which stores
those that arrive together with one commit. The host identity comes from the credential in the
call's metadata, or with mTLS from the client certificate the TLS handshake verified
(``context.auth_context()``), never from a message body; that certificate's validity is
checked again here, since a resumed TLS session is not re-verified (``peer``). Each call
records what operators watch (``collector.metrics``): reports, ack and ingest latency, open
streams and how their TLS sessions began, errors by status, and what the limits refused.

A report costs the writer thread one commit, not two: a hello that announces spooled
batches leaves the host's ``last_seen_at`` to the batch's grouped commit (``_Seen``).

On an open stream, every message is first checked against the deny list (a revoked host
is cut at its next message) and the host's token buckets (``collector.limits``), before any
conversion, storage or evaluation work is spent on it. A host over its rate is paused (the
stream is simply not read for the short wait, so HTTP/2 flow control pushes back onto the
agent); a wait longer than ``LimitConfig.pause_up_to`` ends the stream with
RESOURCE_EXHAUSTED and a ``retry-after-ms`` hint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from collector.collect_requests import registry_for
from collector.delivery import StaleSpoolError
from collector.errors import (
    AlreadyEnrolledError,
    AuthenticationError,
    PendingApprovalError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
)
from collector.limits import HostLimiter, LimitConfig, StreamRegistry, StreamSlot, TokenBucket
from collector.metrics import CollectorMetrics
from collector.model import Host, HostIdentity
from collector.service import Enrollment, PostureService
from collector.transport.convert import (
    InvalidMessage,
    batch_from_proto,
    identity_from_proto,
    plan_to_proto,
)
from collector.transport.group_commit import GroupIngest
from collector.transport.peer import AuthContext, peer_certificate, session_resumed
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

__all__ = ["AgentServicer"]

log = logging.getLogger("posture.collector")
T = TypeVar("T")
Context = grpc.aio.ServicerContext[object, object]
#: How long and how much of a refused stream is read before the refusal (``_settle``).
_SETTLE_SECONDS, _SETTLE_PAUSE, _SETTLE_MESSAGES = 2.0, 0.25, 8

#: Domain refusals and the status each is answered with (first match wins).
_STATUS: tuple[tuple[type[ServiceError], grpc.StatusCode], ...] = (
    (PendingApprovalError, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (AlreadyEnrolledError, grpc.StatusCode.ALREADY_EXISTS),
    (RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServiceError, grpc.StatusCode.INVALID_ARGUMENT),
)


def _status(error: ServiceError) -> grpc.StatusCode:
    return next(code for kind, code in _STATUS if isinstance(error, kind))


def _credential(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return ""


def _wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """Set ``event`` from any thread (collect requests arrive from the web layer's)."""
    loop.call_soon_threadsafe(event.set)


async def _settle(messages: AsyncIterator[pb.AgentMessage]) -> None:
    """Read what the agent has already written (briefly, boundedly) before refusing it.

    An agent writes its hello and then its spooled batches as soon as the call starts; if
    the refusal reaches it while a write is in flight, grpcio reports INTERNAL instead of
    the collector's status, and the agent cannot tell "revoked" from a glitch. Reading until
    the agent pauses (it then waits for acks) lets its writes complete, so it hears the real
    status. At most ``_SETTLE_MESSAGES`` messages and ``_SETTLE_SECONDS``: a refused peer
    gets no more of the collector's time than that.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SETTLE_SECONDS
    for count in range(_SETTLE_MESSAGES):
        wait = _SETTLE_SECONDS if count == 0 else _SETTLE_PAUSE
        remaining = min(wait, deadline - loop.time())
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(anext(messages), timeout=remaining)
        except Exception:  # the agent paused, finished or went away: refuse now
            return


@dataclass(frozen=True)
class _Peer:
    """Who is on the other end of a stream: the host, and with mTLS its certificate."""

    host: Host
    fingerprint: str | None


@dataclass
class _Seen:
    """Whether the stream still owes the host's ``last_seen_at`` an update.

    Storing a batch sets it in the batch's own (grouped) commit, so a hello announcing
    spooled batches leaves it to them instead of paying a commit of its own (an fsync per
    report, on the one writer thread); a stream that ends without storing one marks the
    host seen as it closes.
    """

    due: bool = False


async def _messages(
    iterator: AsyncIterator[pb.AgentMessage], wake: asyncio.Event
) -> AsyncIterator[pb.AgentMessage | None]:
    """The stream's messages, with a None whenever ``wake`` is set (the stream was replaced,
    or someone asked the host to collect now) so the handler can act between messages."""
    reader: asyncio.Future[pb.AgentMessage] = asyncio.ensure_future(anext(iterator))
    waiter: asyncio.Future[bool] = asyncio.ensure_future(wake.wait())
    try:
        while True:
            pending: set[asyncio.Future[object]] = {reader, waiter}  # type: ignore[arg-type]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                wake.clear()
                yield None
                waiter = asyncio.ensure_future(wake.wait())
            if reader.done():
                try:
                    message = reader.result()
                except StopAsyncIteration:
                    return
                yield message
                reader = asyncio.ensure_future(anext(iterator))
    finally:
        reader.cancel()
        waiter.cancel()


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        service: PostureService,
        worker: ThreadPoolExecutor,
        metrics: CollectorMetrics,
        *,
        mtls: bool = False,
        limits: LimitConfig | None = None,
    ) -> None:
        self.service = service
        self.worker = worker
        self.metrics = metrics
        self.mtls = mtls
        self.limits = limits or LimitConfig()
        self.hosts = HostLimiter(self.limits)
        self.enrollments = TokenBucket(
            self.limits.enroll_rate, self.limits.enroll_burst, time.monotonic
        )
        self.streams = StreamRegistry(self.limits.max_streams)
        self.requests = registry_for(service)
        #: Batches go to the writer thread grouped, one commit per group (group_commit).
        self.writer = GroupIngest(service, worker, metrics.ingest_latency.observe)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    async def _abort(
        self,
        context: Context,
        method: str,
        code: grpc.StatusCode,
        details: str,
        retry_after: float | None = None,
    ) -> NoReturn:
        self.metrics.errors.labels(method, code.name).inc()
        trailers: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            trailers = (("retry-after-ms", str(max(1, round(retry_after * 1000)))),)
        await context.abort(code, details, trailing_metadata=trailers)

    async def _refuse(self, context: Context, method: str, error: ServiceError) -> NoReturn:
        retry = error.retry_after if isinstance(error, RateLimitedError) else None
        await self._abort(context, method, _status(error), str(error), retry)

    # Enrollment and certificates -----------------------------------------------------------

    async def Enroll(self, request: pb.EnrollRequest, context: Context) -> pb.EnrollResponse:
        if wait := self.enrollments.take():
            self.metrics.limited.labels("enrollments").inc()
            error = RateLimitedError(f"too many enrollments; retry in {wait:.1f} s", wait)
            await self._refuse(context, "Enroll", error)
        try:
            identity = identity_from_proto(request.identity)
            enrollment = await self._call(self._enroll, request, identity, context.peer())
        except InvalidMessage as error:
            await self._abort(context, "Enroll", grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ServiceError as error:
            log.warning("enroll refused for %s: %s", context.peer(), error)
            await self._refuse(context, "Enroll", error)
        log.info("enrolled host %s (%s)", enrollment.host.id, identity.hostname)
        self.metrics.enrollments.inc()
        return pb.EnrollResponse(
            host_id=str(enrollment.host.id),
            agent_credential=enrollment.credential,
            plan=plan_to_proto(enrollment.plan),
            client_certificate_pem=enrollment.certificate_pem,
            ca_certificate_pem=enrollment.ca_pem,
        )

    def _enroll(self, request: pb.EnrollRequest, identity: HostIdentity, peer: str) -> Enrollment:
        return self.service.enroll(
            request.enroll_secret,
            identity,
            csr_pem=request.csr_pem,
            token=request.request_token,
            peer=peer,
        )

    async def RenewCertificate(
        self, request: pb.RenewRequest, context: Context
    ) -> pb.RenewResponse:
        try:
            peer = peer_certificate(context.auth_context(), self.service.clock())
        except AuthenticationError as error:
            log.warning("renewal refused for %s: %s", context.peer(), error)
            await self._refuse(context, "RenewCertificate", error)
        if not self.mtls or peer is None:
            details = "RenewCertificate needs the client certificate to renew (mTLS)"
            await self._abort(context, "RenewCertificate", grpc.StatusCode.UNAUTHENTICATED, details)
        try:
            renew = self.service.identity.renew
            issued = await self._call(renew, peer.fingerprint, request.csr_pem)
        except ServiceError as error:
            log.warning("renewal refused for %s: %s", context.peer(), error)
            await self._refuse(context, "RenewCertificate", error)
        self.metrics.renewals.inc()
        return pb.RenewResponse(client_certificate_pem=issued.pem)

    # The stream ------------------------------------------------------------------------------

    async def _authenticate(
        self, context: Context, auth: AuthContext, messages: AsyncIterator[pb.AgentMessage]
    ) -> _Peer:
        try:
            if not self.mtls:
                host = await self._call(self.service.authenticate, _credential(context))
                return _Peer(host, None)
            peer = peer_certificate(auth, self.service.clock())
            if peer is None:
                raise AuthenticationError(
                    "this collector requires a client certificate (mTLS): connect to its main"
                    " listener with the certificate issued at enrollment"
                )
            authenticate = self.service.identity.authenticate_certificate
            return _Peer(await self._call(authenticate, peer.fingerprint), peer.fingerprint)
        except AuthenticationError as error:
            log.warning("stream refused for %s: %s", context.peer(), error)
            await _settle(messages)
            await self._refuse(context, "Connect", error)

    def _open(self, host: Host) -> StreamSlot | None:
        slot, replaced = self.streams.open(host.id)
        if replaced is not None:
            self.metrics.replaced_streams.inc()
            log.info("host %s opened a new stream; its older stream ends", host.id)
        return slot

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: Context
    ) -> AsyncIterator[pb.CollectorMessage]:
        auth = context.auth_context()
        self.metrics.tls_sessions.labels("resumed" if session_resumed(auth) else "full").inc()
        peer = await self._authenticate(context, auth, request_iterator)
        host = peer.host
        slot = self._open(host)
        if slot is None:
            self.metrics.limited.labels("streams").inc()
            error = RateLimitedError(
                f"the collector has {self.limits.max_streams} streams open; retry later", 30.0
            )
            await self._refuse(context, "Connect", error)
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        slot.on_replaced(wake.set)
        handle = self.requests.stream_opened(host.id, lambda: _wake(loop, wake))
        self.metrics.streams.inc()
        self.metrics.open_streams.inc()
        seen = _Seen()
        try:
            async for message in _messages(request_iterator, wake):
                for reply in await self._handle(peer, slot, message, context, seen):
                    yield reply
        except DecodeError as error:  # gRPC decodes as it reads: not an AgentMessage, or bad UTF-8
            log.warning("host %s sent bytes that are not an AgentMessage: %s", host.id, error)
            await self._abort(
                context, "Connect", grpc.StatusCode.INVALID_ARGUMENT, f"malformed message: {error}"
            )
        finally:
            self.requests.stream_closed(host.id, handle)
            self.streams.close(slot)
            self.metrics.open_streams.dec()
            if seen.due:
                self._mark_seen_later(host.id)

    def _mark_seen_later(self, host_id: int) -> None:
        """Mark the host seen in the writer thread without waiting (the stream is over)."""

        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and (error := future.exception()) is not None:
                log.warning("could not mark host %s seen: %s", host_id, error)

        loop = asyncio.get_running_loop()
        mark = self.service.store.mark_seen
        try:
            loop.run_in_executor(self.worker, mark, host_id, datetime.now(UTC)).add_done_callback(
                done
            )
        except RuntimeError as error:  # the collector is shutting down: the worker is gone
            log.warning("could not mark host %s seen: %s", host_id, error)

    async def _handle(
        self,
        peer: _Peer,
        slot: StreamSlot,
        message: pb.AgentMessage | None,
        context: Context,
        seen: _Seen,
    ) -> list[pb.CollectorMessage]:
        host = peer.host
        if slot.replaced:
            details = f"a newer stream of host {host.id} replaced this one"
            await self._abort(context, "Connect", grpc.StatusCode.ABORTED, details)
        if refusal := self.service.identity.deny.refusal(host.id, peer.fingerprint):
            log.warning("ending the stream of host %s: %s", host.id, refusal)
            await self._abort(context, "Connect", grpc.StatusCode.UNAUTHENTICATED, refusal)
        replies = [] if message is None else await self._message(host, message, context, seen)
        if (asked := self.requests.take(host.id)) is not None:
            replies.append(pb.CollectorMessage(collect_now=pb.CollectNow(reason=asked.reason)))
        return replies

    async def _message(
        self, host: Host, message: pb.AgentMessage, context: Context, seen: _Seen
    ) -> list[pb.CollectorMessage]:
        received = time.perf_counter()
        kind = message.WhichOneof("message")
        if kind == "hello":
            self.metrics.agent_spool(host.id, message.hello.spooled_batches)
            return await self._hello(host, message.hello, seen)
        if kind == "batch":
            await self._limit(host, message, context)
            self.metrics.agent_spool(host.id, message.batch.spooled_batches)
            replies = await self._batch(host, message.batch, context, seen)
            self.metrics.ack_latency.observe(time.perf_counter() - received)
            return replies
        await self._abort(
            context, "Connect", grpc.StatusCode.INVALID_ARGUMENT, "empty agent message"
        )

    async def _limit(self, host: Host, message: pb.AgentMessage, context: Context) -> None:
        """Pause a host over its rate for a short wait; refuse it for a long one."""
        while (over := self.hosts.check(host.id, message.ByteSize())) is not None:
            limit, wait = over
            self.metrics.limited.labels(limit).inc()
            if wait > self.limits.pause_up_to:
                details = f"host {host.id} is over its {limit.replace('_', ' ')} rate"
                error = RateLimitedError(f"{details}; retry in {wait:.1f} s", wait)
                await self._refuse(context, "Connect", error)
            await asyncio.sleep(wait)

    async def _hello(self, host: Host, hello: pb.Hello, seen: _Seen) -> list[pb.CollectorMessage]:
        if hello.spooled_batches > 0:
            seen.due = True  # the batches mark the host seen (``_Seen``)
        else:
            await self._call(self.service.store.mark_seen, host.id, datetime.now(UTC))
        replies = []
        plan = self.service.plan_for(host.identity.platform)
        if hello.plan_version != plan.version:
            replies.append(pb.CollectorMessage(plan=plan_to_proto(plan)))
        if self.service.is_stale(host):
            reason = "facts are stale" if host.last_collected_at else "first report"
            replies.append(pb.CollectorMessage(collect_now=pb.CollectNow(reason=reason)))
        return replies

    async def _batch(
        self, host: Host, message: pb.Batch, context: Context, seen: _Seen
    ) -> list[pb.CollectorMessage]:
        try:
            batch = batch_from_proto(message, datetime.now(UTC))
        except InvalidMessage as error:
            log.warning("host %s sent an invalid batch: %s", host.id, error)
            await self._abort(context, "Connect", grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            outcome = await self.writer.ingest(host, batch)
        except StaleSpoolError as error:  # a replaced spool's late batch: refused, never acked
            log.warning("host %s: %s", host.id, error)
            await self._abort(context, "Connect", grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except Exception as error:  # storage failure (disk full...): nothing is acked
            log.exception("could not store batch %s of host %s", batch.seq, host.id)
            await self._abort(
                context, "Connect", grpc.StatusCode.UNAVAILABLE, f"could not store batch: {error}"
            )
        self.metrics.reports.labels("duplicate" if outcome.duplicate else "stored").inc()
        seen.due = seen.due and outcome.duplicate  # a stored batch set last_seen_at
        replies = [pb.CollectorMessage(ack=pb.Ack(seq=outcome.seq))]
        if outcome.mismatched_tables and not outcome.duplicate:
            log.info("host %s: digests differ for %s", host.id, sorted(outcome.mismatched_tables))
            resend = pb.ResendFull(
                tables=sorted(outcome.mismatched_tables),
                reason="the collector's copy differs from the agent's digests",
            )
            replies.append(pb.CollectorMessage(resend_full=resend))
        return replies

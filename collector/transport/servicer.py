"""The AgentService servicer: thin; proto in, domain call in the worker thread, proto out.

Every blocking call (SQLite, policy evaluation) runs in the service's single worker thread,
so the event loop only moves bytes. The host identity comes from the credential in the
call's metadata, never from a message body. Each call records what operators watch
(``collector.metrics``): reports, ack and ingest latency, open streams, errors by status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from collector.metrics import CollectorMetrics
from collector.model import Host
from collector.service import (
    AlreadyEnrolledError,
    AuthenticationError,
    PostureService,
    ServiceError,
)
from collector.transport.convert import (
    InvalidMessage,
    batch_from_proto,
    identity_from_proto,
    plan_to_proto,
)
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

__all__ = ["AgentServicer"]

log = logging.getLogger("posture.collector")
T = TypeVar("T")


def _credential(context: grpc.aio.ServicerContext[object, object]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return ""


def _timed(function: Callable[..., T], *args: object) -> tuple[T, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self, service: PostureService, worker: ThreadPoolExecutor, metrics: CollectorMetrics
    ) -> None:
        self.service = service
        self.worker = worker
        self.metrics = metrics

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    async def _abort(
        self,
        context: grpc.aio.ServicerContext[object, object],
        method: str,
        code: grpc.StatusCode,
        details: str,
    ) -> NoReturn:
        self.metrics.errors.labels(method, code.name).inc()
        await context.abort(code, details)

    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EnrollResponse:
        try:
            identity = identity_from_proto(request.identity)
            enrollment = await self._call(self.service.enroll, request.enroll_secret, identity)
        except AuthenticationError as error:
            log.warning("enroll refused for %s: %s", context.peer(), error)
            await self._abort(context, "Enroll", grpc.StatusCode.UNAUTHENTICATED, str(error))
        except AlreadyEnrolledError as error:
            await self._abort(context, "Enroll", grpc.StatusCode.ALREADY_EXISTS, str(error))
        except (ServiceError, InvalidMessage) as error:
            await self._abort(context, "Enroll", grpc.StatusCode.INVALID_ARGUMENT, str(error))
        log.info("enrolled host %s (%s)", enrollment.host.id, identity.hostname)
        self.metrics.enrollments.inc()
        return pb.EnrollResponse(
            host_id=str(enrollment.host.id),
            agent_credential=enrollment.credential,
            plan=plan_to_proto(enrollment.plan),
        )

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[pb.CollectorMessage]:
        try:
            host = await self._call(self.service.authenticate, _credential(context))
        except AuthenticationError as error:
            log.warning("stream refused for %s: %s", context.peer(), error)
            await self._abort(context, "Connect", grpc.StatusCode.UNAUTHENTICATED, str(error))
        self.metrics.streams.inc()
        self.metrics.open_streams.inc()
        try:
            async for message in request_iterator:
                received = time.perf_counter()
                kind = message.WhichOneof("message")
                if kind == "hello":
                    self.metrics.agent_spool(host.id, message.hello.spooled_batches)
                    for reply in await self._hello(host, message.hello):
                        yield reply
                elif kind == "batch":
                    self.metrics.agent_spool(host.id, message.batch.spooled_batches)
                    for reply in await self._batch(host, message.batch, context):
                        yield reply
                    self.metrics.ack_latency.observe(time.perf_counter() - received)
                else:
                    await self._abort(
                        context, "Connect", grpc.StatusCode.INVALID_ARGUMENT, "empty agent message"
                    )
        except DecodeError as error:  # gRPC decodes as it reads: not an AgentMessage, or bad UTF-8
            log.warning("host %s sent bytes that are not an AgentMessage: %s", host.id, error)
            await self._abort(
                context, "Connect", grpc.StatusCode.INVALID_ARGUMENT, f"malformed message: {error}"
            )
        finally:
            self.metrics.open_streams.dec()

    async def _hello(self, host: Host, hello: pb.Hello) -> list[pb.CollectorMessage]:
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
        self, host: Host, message: pb.Batch, context: grpc.aio.ServicerContext[object, object]
    ) -> list[pb.CollectorMessage]:
        try:
            batch = batch_from_proto(message, datetime.now(UTC))
        except InvalidMessage as error:
            log.warning("host %s sent an invalid batch: %s", host.id, error)
            await self._abort(context, "Connect", grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            outcome, seconds = await self._call(_timed, self.service.ingest, host, batch)
        except Exception as error:  # storage failure (disk full...): nothing is acked
            log.exception("could not store batch %s of host %s", batch.seq, host.id)
            await self._abort(
                context, "Connect", grpc.StatusCode.UNAVAILABLE, f"could not store batch: {error}"
            )
        self.metrics.ingest_latency.observe(seconds)
        self.metrics.reports.labels("duplicate" if outcome.duplicate else "stored").inc()
        replies = [pb.CollectorMessage(ack=pb.Ack(seq=outcome.seq))]
        if outcome.mismatched_tables and not outcome.duplicate:
            log.info("host %s: digests differ for %s", host.id, sorted(outcome.mismatched_tables))
            resend = pb.ResendFull(
                tables=sorted(outcome.mismatched_tables),
                reason="the collector's copy differs from the agent's digests",
            )
            replies.append(pb.CollectorMessage(resend_full=resend))
        return replies

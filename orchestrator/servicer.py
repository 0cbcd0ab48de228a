"""gRPC face of the orchestrator: decode, hand to the pipeline/session, encode, map errors."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence
from typing import NoReturn

import grpc

from sentinel.errors import REJECTED_BATCH_HEADER, BatchConflict, InvalidArgument, Overloaded
from sentinel.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from .alert_hub import AlertHub, SubscriberTooSlow
from .batches import COUNT_FIRST_BYTES, DecodedBatch, Limits, count_readings, parse_batch
from .budget import InflightBudget, ScoringBudget
from .encode import encode_open_incident
from .identity import CLIENT_ID_HEADER, ClientIdentity, Unauthenticated, resolve
from .pipeline import ScoringPipeline
from .session import Refused, StreamOptions, StreamSession

log = logging.getLogger(__name__)

__all__ = ["CLIENT_ID_HEADER", "OrchestratorServicer", "forwarded_headers"]
# Inbound headers copied onto every fan-out call: request correlation and canary routing.
FORWARDED_HEADERS = ("x-request-id", "x-sentinel-canary")


def forwarded_headers(metadata: Sequence[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in metadata if k in FORWARDED_HEADERS and isinstance(v, str)]


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(
        self,
        pipeline: ScoringPipeline,
        hub: AlertHub,
        options: StreamOptions,
        max_streams: int,
        max_streams_per_client: int,
        max_concurrent_detect: int,
        propagator,
        client_identity: str = "header",
        max_client_id_length: int = 128,
        max_anonymous_streams: int = 64,
        max_detect_readings: int = 2_000,
        write_timeout_seconds: float = 30.0,
        inflight: InflightBudget | None = None,
        scoring: ScoringBudget | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._hub = hub
        self._options = options
        self._limits: Limits = options.limits
        self._max_streams = max_streams
        self._max_streams_per_client = max_streams_per_client
        self._max_detect = max_concurrent_detect
        self._propagator = propagator
        self._identity_mode = client_identity
        self._max_client_id_length = max_client_id_length
        self._max_anonymous_streams = max_anonymous_streams
        self._max_detect_readings = max_detect_readings
        self.sessions: set[StreamSession] = set()
        self._streams_by_client: Tally[str] = Tally()
        self._detect_active = 0
        self._closing = False
        self._write_timeout = write_timeout_seconds
        self.inflight = inflight or InflightBudget.unlimited()
        self.scoring = scoring or ScoringBudget.unlimited()

    # -- state read by metrics -------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return sum(s.queue_depth for s in self.sessions)

    @property
    def active_streams(self) -> int:
        return len(self.sessions)

    # -- RPCs --------------------------------------------------------------------------------
    async def StreamTelemetry(self, request_iterator, context):  # noqa: N802
        metadata = tuple(context.invocation_metadata() or ())
        # Refusals happen before the first message, so proxies see a trailers-only status.
        identity = await self._identify(context, metadata)
        principal = identity.principal
        if self._closing:
            self._pipeline.metrics.rejected.labels("UNAVAILABLE").inc()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "orchestrator is shutting down; reconnect"
            )
        if len(self.sessions) >= self._max_streams:
            self._pipeline.metrics.rejected.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many streams (limit {self._max_streams})"
            )
        if identity.anonymous:
            if self._streams_by_client[""] >= self._max_anonymous_streams:
                self._pipeline.metrics.rejected.labels("RESOURCE_EXHAUSTED").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many streams without a client id (limit {self._max_anonymous_streams});"
                    f" send {CLIENT_ID_HEADER}",
                )
        elif self._streams_by_client[principal] >= self._max_streams_per_client:
            self._pipeline.metrics.rejected.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams for client {principal!r} (limit {self._max_streams_per_client})",
            )
        session = StreamSession(
            self._pipeline,
            self._options,
            identity.scope,
            forwarded_headers(metadata),
            self._propagator.extract(dict(metadata)),
            self.inflight,
            self.scoring,
        )
        self.sessions.add(session)
        self._streams_by_client[principal] += 1
        handler = asyncio.current_task()
        assert handler is not None  # grpc.aio runs every handler in a task
        loop = asyncio.get_running_loop()

        def give_up() -> None:
            # The client has taken no event for `write_timeout` seconds (it stopped reading):
            # cancel the call, so that it stops pinning memory and the queue-depth signal.
            self._pipeline.metrics.stalled_streams.inc()
            log.warning(
                "stream ended: the client stopped reading",
                extra={"client_id": identity.scope, "write_timeout_s": self._write_timeout},
            )
            handler.cancel()

        try:
            async for event in session.events(request_iterator):
                deadline = loop.call_later(self._write_timeout, give_up)
                try:
                    yield event
                finally:
                    deadline.cancel()
        finally:
            self.sessions.discard(session)
            self._streams_by_client[principal] -= 1
            if self._streams_by_client[principal] <= 0:
                del self._streams_by_client[principal]
        if session.failure is not None:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"scoring failed ({type(session.failure).__name__}); unacked batches may be resent",
            )
        if session.error is not None:
            code = _code_of(session.error)
            self._pipeline.metrics.rejected.labels(code.name).inc()
            batch_id = getattr(session.error, "batch_id", None)  # a refused batch, if one
            trailer = () if batch_id is None else ((REJECTED_BATCH_HEADER, str(batch_id)),)
            await context.abort(code, str(session.error), trailing_metadata=trailer)

    async def Detect(self, request: DecodedBatch | Refused, context):  # noqa: N802
        if self._detect_active >= self._max_detect:
            await self._refuse(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many Detect calls (limit {self._max_detect})",
            )
        metadata = tuple(context.invocation_metadata() or ())
        identity = await self._identify(context, metadata)
        if isinstance(request, Refused):
            await self._refuse(context, _code_of(request.error), str(request.error))
        # The response carries a verdict per reading: refused up front, not after scoring.
        if request.rows > self._max_detect_readings:
            await self._refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"readings: {request.rows} readings exceeds the limit of "
                f"{self._max_detect_readings} per Detect call (its response has a verdict "
                "per reading); send larger batches with StreamTelemetry",
            )
        cost = self.inflight.cost(request)
        if not self.inflight.try_take(cost):
            await self._refuse(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(self.inflight.refusal(cost))
            )
        working = self.scoring.round_cost([request])
        try:
            await self.scoring.take(working)
            try:
                return await self._detect(request, identity, metadata, context)
            finally:
                self.scoring.give(working)
        finally:
            self.inflight.give(cost)

    async def _detect(
        self, batch: DecodedBatch, identity: ClientIdentity, metadata, context
    ) -> orchestrator_pb2.DetectResponse:
        parent = (
            self._pipeline.parent_from_traceparent(batch.traceparent)
            if batch.traceparent
            else self._propagator.extract(dict(metadata))
        )
        self._detect_active += 1
        try:
            (result,) = await self._pipeline.process(
                [batch],
                # Batch id 0 (the default) is "no id": never deduplicated.
                client_id=identity.scope if batch.batch_id else "",
                forwarded=forwarded_headers(metadata),
                parent=parent,
                all_verdicts=True,
            )
        except BatchConflict as error:
            self._pipeline.metrics.rejected.labels("ALREADY_EXISTS").inc()
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(error))
        except Exception as error:
            self._pipeline.metrics.internal_errors.inc()
            log.error("Detect failed", exc_info=error, extra={"batch_ids": [batch.batch_id]})
            await context.abort(
                grpc.StatusCode.INTERNAL, f"scoring failed ({type(error).__name__}); retry"
            )
        finally:
            self._detect_active -= 1
        return orchestrator_pb2.DetectResponse(
            batch_id=result.batch_id,
            verdicts=result.verdicts,
            alerts=result.alerts,
            duplicate=result.duplicate,
            readings_accepted=result.readings_accepted,
        )

    async def WatchAlerts(self, request, context):  # noqa: N802
        prefix = request.sensor_id_prefix
        incidents = self._pipeline.incidents
        try:
            async for alert in self._hub.subscribe(
                prefix, lambda: [encode_open_incident(i) for i in incidents.open_incidents(prefix)]
            ):
                yield alert
        except SubscriberTooSlow:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "alert watcher too slow: its queue overflowed"
            )

    async def ListAlerts(self, request, context):  # noqa: N802
        incidents = self._pipeline.incidents.open_incidents(request.sensor_id_prefix)
        return orchestrator_pb2.ListAlertsResponse(
            alerts=[encode_open_incident(incident) for incident in incidents]
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def end_streams(
        self, reason: str = "orchestrator shutting down; reconnect", wait_seconds: float = 5.0
    ) -> None:
        """Refuse new streams, end open ones with a reconnect hint once their work is acked
        (waiting at most `wait_seconds` for that work)."""
        self._closing = True
        for session in list(self.sessions):
            session.end(reason)
        self._hub.close()
        if self.sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.done.wait()) for s in list(self.sessions)],
                timeout=wait_seconds,
            )

    def parse_request(self, data: bytes) -> DecodedBatch | Refused:
        """gRPC's request deserializer of both ingest RPCs: bytes → DecodedBatch, or a Refused
        that the RPC turns into its status and counts (never gRPC's UNKNOWN and a logged
        traceback). The protobuf message lives only in here, and a message is not parsed
        while the in-flight budget has no room for the least a batch of its size costs."""
        try:
            counted = None
            if len(data) > COUNT_FIRST_BYTES:
                counted = count_readings(data, self._limits.max_batch_readings)
            least = self.inflight.least_cost(len(data), counted)
            if not self.inflight.has_room(least):
                return Refused(self.inflight.refusal(least))
            return parse_batch(data, self._limits, counted=counted)
        except InvalidArgument as error:
            return Refused(error)

    async def _refuse(self, context, code: grpc.StatusCode, details: str) -> NoReturn:
        self._pipeline.metrics.rejected.labels(code.name).inc()
        await context.abort(code, details)
        raise AssertionError("unreachable: abort raises")

    async def _identify(self, context, metadata) -> ClientIdentity:
        """The caller's identity (see identity.py), or the call ends with a clear status."""
        try:
            peers = context.peer_identities() if self._identity_mode == "mtls" else None
            return resolve(self._identity_mode, metadata, peers, self._max_client_id_length)
        except InvalidArgument as error:
            self._pipeline.metrics.rejected.labels("INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Unauthenticated as error:
            self._pipeline.metrics.rejected.labels("UNAUTHENTICATED").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        raise AssertionError("unreachable: abort raises")


def _code_of(error: Exception) -> grpc.StatusCode:
    if isinstance(error, BatchConflict):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


def add_to_server(servicer: OrchestratorServicer, server) -> None:
    """`add_OrchestratorServicer_to_server`, with TelemetryBatch requests decoded as they are
    received (see `OrchestratorServicer.parse_request`)."""
    pb = orchestrator_pb2
    batch = servicer.parse_request
    handlers: dict[str, grpc.RpcMethodHandler] = {
        "StreamTelemetry": grpc.stream_stream_rpc_method_handler(
            servicer.StreamTelemetry,
            request_deserializer=batch,
            response_serializer=pb.StreamEvent.SerializeToString,
        ),
        "Detect": grpc.unary_unary_rpc_method_handler(
            servicer.Detect,
            request_deserializer=batch,
            response_serializer=pb.DetectResponse.SerializeToString,
        ),
        "WatchAlerts": grpc.unary_stream_rpc_method_handler(
            servicer.WatchAlerts,
            request_deserializer=pb.WatchAlertsRequest.FromString,
            response_serializer=pb.Alert.SerializeToString,
        ),
        "ListAlerts": grpc.unary_unary_rpc_method_handler(
            servicer.ListAlerts,
            request_deserializer=pb.ListAlertsRequest.FromString,
            response_serializer=pb.ListAlertsResponse.SerializeToString,
        ),
    }
    service = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name
    assert set(handlers) == set(pb.DESCRIPTOR.services_by_name["Orchestrator"].methods_by_name)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)

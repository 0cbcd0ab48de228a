"""gRPC face of the orchestrator: decode, hand to the pipeline/session, encode, map errors."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence

import grpc

from sentinel.errors import InvalidArgument
from sentinel.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from .alert_hub import AlertHub, SubscriberTooSlow
from .batches import Limits, decode_batch
from .encode import encode_open_incident
from .pipeline import ScoringPipeline
from .session import StreamOptions, StreamSession

log = logging.getLogger(__name__)

CLIENT_ID_HEADER = "x-sentinel-client-id"
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
    ) -> None:
        self._pipeline = pipeline
        self._hub = hub
        self._options = options
        self._limits: Limits = options.limits
        self._max_streams = max_streams
        self._max_streams_per_client = max_streams_per_client
        self._max_detect = max_concurrent_detect
        self._propagator = propagator
        self.sessions: set[StreamSession] = set()
        self._streams_by_client: Tally[str] = Tally()
        self._detect_active = 0
        self._closing = False

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
        client_id = _header(metadata, CLIENT_ID_HEADER)
        # Refusals happen before the first message, so proxies see a trailers-only status.
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
        if client_id and self._streams_by_client[client_id] >= self._max_streams_per_client:
            self._pipeline.metrics.rejected.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams for client {client_id!r} (limit {self._max_streams_per_client})",
            )
        session = StreamSession(
            self._pipeline,
            self._options,
            client_id,
            forwarded_headers(metadata),
            self._propagator.extract(dict(metadata)),
        )
        self.sessions.add(session)
        self._streams_by_client[client_id] += 1
        try:
            async for event in session.events(request_iterator):
                yield event
        finally:
            self.sessions.discard(session)
            self._streams_by_client[client_id] -= 1
            if self._streams_by_client[client_id] <= 0:
                del self._streams_by_client[client_id]
        if session.failure is not None:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"scoring failed ({type(session.failure).__name__}); unacked batches may be resent",
            )
        if session.error is not None:
            self._pipeline.metrics.rejected.labels("INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(session.error))

    async def Detect(self, request, context):  # noqa: N802
        if self._detect_active >= self._max_detect:
            self._pipeline.metrics.rejected.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many Detect calls (limit {self._max_detect})",
            )
        try:
            batch = decode_batch(request, self._limits)
        except InvalidArgument as error:
            self._pipeline.metrics.rejected.labels("INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        metadata = tuple(context.invocation_metadata() or ())
        parent = (
            self._pipeline.parent_from_traceparent(batch.traceparent)
            if batch.traceparent
            else self._propagator.extract(dict(metadata))
        )
        self._detect_active += 1
        try:
            (result,) = await self._pipeline.process(
                [batch],
                client_id=_header(metadata, CLIENT_ID_HEADER),
                forwarded=forwarded_headers(metadata),
                parent=parent,
                all_verdicts=True,
            )
        except Exception as error:
            self._pipeline.metrics.internal_errors.inc()
            log.error("Detect failed", exc_info=error, extra={"batch_ids": [batch.batch_id]})
            await context.abort(
                grpc.StatusCode.INTERNAL, f"scoring failed ({type(error).__name__}); retry"
            )
        finally:
            self._detect_active -= 1
        return orchestrator_pb2.DetectResponse(
            batch_id=result.batch_id, verdicts=result.verdicts, alerts=result.alerts
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


def _header(metadata: Sequence[tuple[str, str | bytes]], name: str) -> str:
    for key, value in metadata:
        if key == name and isinstance(value, str):
            return value
    return ""

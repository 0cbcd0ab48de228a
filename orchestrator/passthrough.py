"""A pass-through orchestrator: the real transport with none of the detection (for `bench`).

`sentinel bench --baseline` runs this next to the real orchestrator to show what the machine
and the gRPC stack alone allow: the same server scaffold, the same StreamTelemetry contract
(ordered acks, bounded in-flight batches per stream), the same batch decoding and validation,
and one unary Score per batch to every specialist, encoded once and shared. What it leaves out
is everything that makes a verdict: windows, history and views, calibration, combining votes,
incidents, alerts, dedup. It is internal (a hidden `--pass-through` flag of `serve`), not a
deployable role.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from sentinel.allocator import keep_freed_memory
from sentinel.errors import InvalidArgument
from sentinel.server import GrpcServer, drain_and_stop, parse_bind, serve_until_signalled
from sentinel.telemetry import configure_logging
from sentinel.v1 import orchestrator_pb2, orchestrator_pb2_grpc, specialist_pb2

from .batches import DecodedBatch, Limits, decode_batch
from .settings import OrchestratorSettings
from .specialist_pool import SCORE_METHOD, channel_options, parse_targets

log = logging.getLogger(__name__)

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name


class PassThroughServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    """StreamTelemetry only: decode → fan out → ack. Other RPCs answer UNIMPLEMENTED."""

    def __init__(
        self,
        channels: dict[str, grpc.aio.Channel],
        limits: Limits,
        inflight_batches: int,
        timeout_seconds: float,
    ) -> None:
        self._score: dict[
            str, grpc.aio.UnaryUnaryMultiCallable[bytes, specialist_pb2.ScoreResponse]
        ] = {
            name: channel.unary_unary(
                SCORE_METHOD,
                request_serializer=None,
                response_deserializer=specialist_pb2.ScoreResponse.FromString,
            )
            for name, channel in channels.items()
        }
        self._limits = limits
        self._inflight = inflight_batches
        self._timeout = timeout_seconds

    async def _fan_out(self, batch: DecodedBatch) -> None:
        rows = batch.rows
        # What the real orchestrator sends a specialist that reads no row columns (as the
        # pass-through specialists declare): values and fills, no ids or timestamps, and
        # sparse reasons allowed, so the baseline pays for the same wire as the real mesh.
        payload = specialist_pb2.ScoreRequest(
            values=batch.values.tolist(), window_fill=[0] * rows, sparse_reasons=True
        ).SerializeToString()
        responses = await asyncio.gather(
            *(score(payload, timeout=self._timeout) for score in self._score.values())
        )
        for name, response in zip(self._score, responses, strict=True):
            if len(response.scores) != rows:
                raise RuntimeError(f"{name} answered {len(response.scores)} rows for {rows}")

    async def StreamTelemetry(self, request_iterator, context):  # noqa: N802
        # Bounded like the real session: at most `inflight` batches fanned out and unacked.
        inflight: asyncio.Queue = asyncio.Queue(self._inflight)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    batch = decode_batch(request, self._limits)
                    task = asyncio.create_task(self._fan_out(batch))
                    await inflight.put((batch.batch_id, batch.rows, task))
            finally:
                await inflight.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await inflight.get()) is not None:
                batch_id, rows, task = item
                await task
                yield orchestrator_pb2.StreamEvent(
                    ack=orchestrator_pb2.BatchAck(batch_id=batch_id, readings_accepted=rows)
                )
            await reader
        except InvalidArgument as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        finally:
            reader.cancel()
            while not inflight.empty():
                item = inflight.get_nowait()
                if item is not None:
                    item[2].cancel()


class PassThroughOrchestratorProcess:
    """The pass-through orchestrator's server and specialist channels; start/stop awaitable."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        options = channel_options(settings.client_retries, settings.max_message_bytes)
        self.channels = {
            t.name: grpc.aio.insecure_channel(t.target, options=options)
            for t in parse_targets(settings.specialists)
        }
        servicer = PassThroughServicer(
            self.channels,
            settings.ingest_limits(),
            settings.stream_inflight_batches,
            settings.specialist_timeout_seconds,
        )
        self.server = GrpcServer(
            bind_address=parse_bind(settings.host, settings.port),
            service_names=(SERVICE_NAME,),
            add_servicers=lambda s: orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
                servicer, s
            ),
            max_message_bytes=settings.max_message_bytes,
        )

    async def start(self) -> int:
        port = await self.server.start()
        log.info("pass-through orchestrator serving", extra={"port": port})
        return port

    async def stop(self) -> None:
        await drain_and_stop(
            self.server, self.settings.drain_delay_seconds, self.settings.shutdown_grace_seconds
        )
        for channel in self.channels.values():
            await channel.close()


async def serve(settings: OrchestratorSettings, ready_file: str | None = None) -> None:
    # Built inside the running loop: grpc.aio channels bind to the loop they are made in.
    await serve_until_signalled(PassThroughOrchestratorProcess(settings), ready_file, lambda: None)


def main(settings: OrchestratorSettings, ready_file: str | None = None) -> None:
    configure_logging(settings.log_level, settings.log_format)
    # The same allocator as the real roles, so the comparison is of the work alone.
    keep_freed_memory(settings.allocator_keep_bytes)
    asyncio.run(serve(settings, ready_file))

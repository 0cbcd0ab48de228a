"""A pass-through specialist: a valid ScoreResponse of the right row count, no engine.

For `sentinel bench --baseline` only (a hidden `--pass-through` flag of `serve`): the same
server scaffold and gRPC stack as a real specialist, so the baseline mesh pays for transport,
protobuf decoding and encoding, and nothing else. Every row is scored 0, not anomalous.
"""

from __future__ import annotations

import asyncio

from sentinel.allocator import keep_freed_memory
from sentinel.server import GrpcServer, drain_and_stop, parse_bind, serve_until_signalled
from sentinel.telemetry import configure_logging
from sentinel.v1 import specialist_pb2, specialist_pb2_grpc

from .settings import SpecialistSettings

SERVICE_NAME = specialist_pb2.DESCRIPTOR.services_by_name["Specialist"].full_name
VERSION = "pass-through"


class PassThroughSpecialistServicer(specialist_pb2_grpc.SpecialistServicer):
    def __init__(self, name: str) -> None:
        self._name = name

    async def Describe(self, request, context):  # noqa: N802 (gRPC method name)
        return specialist_pb2.DescribeResponse(
            engine=self._name,
            engine_version=VERSION,
            window_length=0,
            row_columns=[specialist_pb2.ROW_COLUMN_NONE],
        )

    async def Score(self, request, context):  # noqa: N802
        return score_nothing(request, self._name)


def score_nothing(request: specialist_pb2.ScoreRequest, name: str) -> specialist_pb2.ScoreResponse:
    """Scores 0, no anomalies, no reasons, not warming up: one entry per row of `request`
    (and no reason at all where the request allows sparse reasons, as a real engine would)."""
    rows = len(request.values)
    response = specialist_pb2.ScoreResponse(engine=name, engine_version=VERSION)
    response.scores.extend([0.0] * rows)
    response.anomalies.extend([False] * rows)
    if not request.sparse_reasons:
        response.reasons.extend([""] * rows)
    response.warming_up.extend([False] * rows)
    return response


class PassThroughSpecialistProcess:
    def __init__(self, settings: SpecialistSettings) -> None:
        self.settings = settings
        servicer = PassThroughSpecialistServicer(settings.engine)
        self.server = GrpcServer(
            bind_address=parse_bind(settings.host, settings.port),
            service_names=(SERVICE_NAME,),
            add_servicers=lambda s: specialist_pb2_grpc.add_SpecialistServicer_to_server(
                servicer, s
            ),
            max_message_bytes=settings.max_message_bytes,
        )

    async def start(self) -> int:
        return await self.server.start()

    async def stop(self) -> None:
        await drain_and_stop(
            self.server, self.settings.drain_delay_seconds, self.settings.shutdown_grace_seconds
        )


async def serve(settings: SpecialistSettings, ready_file: str | None = None) -> None:
    # Built inside the running loop: grpc.aio channels bind to the loop they are made in.
    await serve_until_signalled(PassThroughSpecialistProcess(settings), ready_file, lambda: None)


def main(settings: SpecialistSettings, ready_file: str | None = None) -> None:
    configure_logging(settings.log_level, settings.log_format)
    # The same allocator as the real roles, so the comparison is of the work alone.
    keep_freed_memory(settings.allocator_keep_bytes)
    asyncio.run(serve(settings, ready_file))

"""gRPC face of an engine: decode, call the engine, encode. No detection logic here."""

from __future__ import annotations

import time

import grpc
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator

from sentinel.errors import InvalidArgument
from sentinel.v1 import specialist_pb2, specialist_pb2_grpc

from .codec import (
    check_declared_inputs,
    decode_score_request,
    encode_channel_spec,
    encode_row_columns,
    encode_score_response,
    encode_view_spec,
)
from .engine import Engine
from .metrics import SpecialistMetrics

_RPC_ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": specialist_pb2.DESCRIPTOR.services_by_name["Specialist"].full_name,
    "rpc.method": "Score",
}


class SpecialistServicer(specialist_pb2_grpc.SpecialistServicer):
    def __init__(
        self,
        engine: Engine,
        metrics: SpecialistMetrics,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._tracer = tracer
        self._propagator = propagator

    async def Describe(self, request, context):  # noqa: N802 (gRPC method name)
        return specialist_pb2.DescribeResponse(
            engine=self._engine.name,
            engine_version=self._engine.version,
            window_length=self._engine.window_length,
            parameters=dict(self._engine.parameters()),
            views=[encode_view_spec(v) for v in self._engine.views],
            channels=[encode_channel_spec(c) for c in self._engine.channels],
            row_columns=encode_row_columns(self._engine.row_columns),
        )

    async def Score(self, request, context):  # noqa: N802
        started = time.perf_counter()
        parent = self._propagator.extract(dict(context.invocation_metadata() or ()))
        with self._tracer.start_as_current_span(
            "sentinel.v1.Specialist/Score",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=_RPC_ATTRIBUTES,
        ) as span:
            try:
                batch = decode_score_request(request)
                check_declared_inputs(self._engine, batch)
                output = self._engine.score(batch)
            except InvalidArgument as error:
                self._metrics.rejected()
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            anomalies = int(output.anomalies.sum())
            warming = int(output.warming_up.sum())
            span.set_attribute("sentinel.rows", batch.rows)
            span.set_attribute("sentinel.anomalies", anomalies)
            span.set_attribute("sentinel.rows_warming_up", warming)
            span.set_attribute("sentinel.engine", self._engine.name)
            span.set_attribute("sentinel.engine_version", self._engine.version)
            response = encode_score_response(
                output, self._engine.name, self._engine.version, request.sparse_reasons
            )
        self._metrics.scored(batch.rows, anomalies, warming, time.perf_counter() - started)
        return response

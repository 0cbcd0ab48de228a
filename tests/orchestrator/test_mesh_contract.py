"""What the orchestrator does for the mesh: heartbeats, stream age, drain, header forwarding,
one retry layer, refusals before the first message."""

from __future__ import annotations

import asyncio
import json
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mesh_fixtures import no_tracing, running_mesh
from readings import batch, collect
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.orchestrator.specialist_pool import channel_options
from sentinel.specialists.main import SpecialistProcess, build_engine
from sentinel.specialists.servicer import SpecialistServicer
from sentinel.specialists.settings import SpecialistSettings

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc, specialist_pb2_grpc


async def _idle_then(queue: asyncio.Queue):
    while (item := await queue.get()) is not None:
        yield item


async def test_idle_stream_gets_heartbeats() -> None:
    async with running_mesh(engines=("threshold",), heartbeat_seconds=0.2) as mesh:
        queue: asyncio.Queue = asyncio.Queue()
        call = mesh.stub.StreamTelemetry(_idle_then(queue))
        first = await asyncio.wait_for(call.read(), 5)
        second = await asyncio.wait_for(call.read(), 5)
        assert first.WhichOneof("event") == second.WhichOneof("event") == "heartbeat"
        assert second.heartbeat.server_time_unix_nanos >= first.heartbeat.server_time_unix_nanos
        await queue.put(batch(1, [1.0], mode=pb.VERDICT_MODE_NONE))
        await queue.put(None)
        rest = await collect(call)
        assert [a.batch_id for a in rest["ack"]] == [1]


async def test_old_stream_is_ended_with_a_reconnect_hint_after_its_acks() -> None:
    async with running_mesh(engines=("threshold",), max_stream_age_seconds=0.5) as mesh:
        queue: asyncio.Queue = asyncio.Queue()
        call = mesh.stub.StreamTelemetry(_idle_then(queue))
        await queue.put(batch(1, [1.0, 2.0], mode=pb.VERDICT_MODE_NONE))
        events = await asyncio.wait_for(collect(call), 10)
        assert [a.batch_id for a in events["ack"]] == [1]
        assert len(events["reconnect"]) == 1 and "age" in events["reconnect"][0].reason
        assert await call.code() == grpc.StatusCode.OK


async def test_shutdown_reports_not_serving_then_ends_streams_cleanly() -> None:
    async with running_mesh(engines=("threshold",)) as mesh:
        health = health_pb2_grpc.HealthStub(mesh.channel)
        queue: asyncio.Queue = asyncio.Queue()
        call = mesh.stub.StreamTelemetry(_idle_then(queue))
        await queue.put(batch(1, [1.0], mode=pb.VERDICT_MODE_NONE))
        first = await asyncio.wait_for(call.read(), 5)
        assert first.WhichOneof("event") == "ack"
        stopping = asyncio.create_task(mesh.orchestrator.stop(drain_delay=0.5, grace=2))
        await asyncio.sleep(0.2)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="sentinel.v1.Orchestrator")
        )
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        rest = await asyncio.wait_for(collect(call), 10)
        assert len(rest["reconnect"]) == 1
        assert await call.code() == grpc.StatusCode.OK
        await stopping


async def test_too_many_streams_refused_before_any_message() -> None:
    async with running_mesh(engines=("threshold",), max_streams_per_client=1) as mesh:
        metadata = (("x-sentinel-client-id", "gateway-1"),)
        queue: asyncio.Queue = asyncio.Queue()
        first = mesh.stub.StreamTelemetry(_idle_then(queue), metadata=metadata)
        await queue.put(batch(1, [1.0], mode=pb.VERDICT_MODE_NONE))
        assert (await first.read()).WhichOneof("event") == "ack"
        second = mesh.stub.StreamTelemetry(_idle_then(asyncio.Queue()), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await second.read()
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "gateway-1" in error.value.details()
        await queue.put(None)
        await collect(first)


class RecordingServicer(SpecialistServicer):
    """A real specialist that also records the metadata of every Score call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, str]] = []

    async def Score(self, request, context):  # noqa: N802
        self.seen.append(dict(context.invocation_metadata()))
        return await super().Score(request, context)


async def test_routing_and_trace_headers_are_forwarded_to_specialists() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from sentinel.telemetry import Tracing, build_propagator

    settings = SpecialistSettings(engine="threshold", port=0)
    process = SpecialistProcess(settings, build_engine(settings), no_tracing())
    recorder = RecordingServicer(
        process.engine, process.metrics, no_tracing().tracer("t"), build_propagator()
    )
    server = grpc.aio.server()
    specialist_pb2_grpc.add_SpecialistServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tracing = Tracing(TracerProvider(), build_propagator())
    orchestrator = OrchestratorProcess(
        OrchestratorSettings(
            port=0, specialists=f"threshold=127.0.0.1:{port}", drain_delay_seconds=0
        ),
        tracing,
    )
    await orchestrator.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            inbound = (
                ("x-sentinel-canary", "true"),
                ("x-request-id", "req-42"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            )
            await collect(
                stub.StreamTelemetry(
                    _idle_from([batch(1, [1.0], mode=pb.VERDICT_MODE_NONE)]), metadata=inbound
                )
            )
            await stub.Detect(batch(2, [1.0], mode=pb.VERDICT_MODE_NONE), metadata=inbound)
        assert len(recorder.seen) == 2
        client_trace = "0af7651916cd43dd8448eb211c80319c"
        for headers in recorder.seen:
            assert headers["x-sentinel-canary"] == "true"
            assert headers["x-request-id"] == "req-42"
            # W3C and B3 (what Envoy reads) both travel on every fan-out call, naming one trace.
            assert headers["traceparent"].split("-")[1] == headers["x-b3-traceid"]
        # A unary call continues the client's trace; a long-lived stream's batches get their
        # own traces (linked to the stream), so a stream is never one giant trace.
        stream_headers, detect_headers = recorder.seen
        assert detect_headers["x-b3-traceid"] == client_trace
        assert stream_headers["x-b3-traceid"] != client_trace
    finally:
        await orchestrator.stop(drain_delay=0, grace=0)
        await server.stop(0)


async def _idle_from(items):
    for item in items:
        yield item


@pytest.mark.parametrize("retries", [True, False])
def test_one_retry_layer_setting_controls_grpc_retries(retries: bool) -> None:
    options = dict(channel_options(retries, 1 << 20))
    config = json.loads(options["grpc.service_config"])
    assert options["grpc.enable_retries"] == int(retries)
    assert ("methodConfig" in config) is retries
    if retries:
        policy = config["methodConfig"][0]["retryPolicy"]
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
        assert config["methodConfig"][0]["name"] == [{"service": "sentinel.v1.Specialist"}]


def test_client_retries_setting_comes_from_env(monkeypatch) -> None:
    monkeypatch.setenv("SENTINEL_CLIENT_RETRIES", "false")
    assert OrchestratorSettings().client_retries is False


async def test_specialist_asking_for_too_long_a_window_is_left_out(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="sentinel.orchestrator.specialist_pool")
    async with running_mesh(
        engines=("threshold", "statistical"),
        # statistical window = short - 1 + reference = 529 values
        specialist_overrides={"statistical": {"statistical_reference": 500}},
        max_window_length=300,
    ) as mesh:
        assert mesh.orchestrator.windows.length == 0  # the store did not grow to 529
        response = await mesh.stub.Detect(batch(1, [1.0, 95.0], mode=pb.VERDICT_MODE_ALL))
        assert [list(v.missing) for v in response.verdicts] == [["statistical"], ["statistical"]]
        assert [v.status for v in response.verdicts] == [pb.VERDICT_STATUS_DEGRADED] * 2
        assert [v.anomaly for v in response.verdicts] == [False, True]  # threshold still votes
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and "window_length 529 exceeds max_window_length 300" in refusals[0]

"""An orchestrator without its specialists is not silent: a rate-limited warning per unreachable
specialist, `sentinel_orchestrator_specialist_up{specialist}` at 0, and still SERVING (a
downstream outage must not fail readiness: that would turn one sick specialist into a total
outage)."""

from __future__ import annotations

import asyncio
import logging
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mesh_fixtures import no_tracing, start_specialist
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

UP = "sentinel_orchestrator_specialist_up"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_specialist_is_warned_about_and_gauged_but_serving(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="sentinel.orchestrator.specialist_pool")
    threshold = await start_specialist("threshold")
    ghost = f"127.0.0.1:{closed_port()}"
    settings = OrchestratorSettings(
        port=0,
        drain_delay_seconds=0,
        specialist_timeout_seconds=0.3,
        specialists=f"threshold=127.0.0.1:{threshold.server.port},ghost={ghost}",
    )
    orchestrator = OrchestratorProcess(settings, no_tracing())
    registry = orchestrator.registry
    try:
        await orchestrator.start()
        assert registry.get_sample_value(UP, {"specialist": "threshold"}) == 1.0
        assert registry.get_sample_value(UP, {"specialist": "ghost"}) == 0.0
        await asyncio.sleep(2.5)  # a few rediscovery ticks: still one warning
        warnings = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and getattr(r, "specialist", "") == "ghost"
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "unreachable" in warnings[0].getMessage() and warnings[0].target == ghost
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="sentinel.v1.Orchestrator")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # The threshold specialist going away too: its Score fails, its gauge drops.
            await threshold.stop(drain_delay=0, grace=0)
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            response = await stub.Detect(
                pb.TelemetryBatch(batch_id=1, readings=[pb.Reading(sensor_id="s", value=1.0)])
            )
            assert response.verdicts[0].status == pb.VERDICT_STATUS_DEGRADED
        assert registry.get_sample_value(UP, {"specialist": "threshold"}) == 0.0
    finally:
        await orchestrator.stop(drain_delay=0, grace=0)
        await threshold.stop(drain_delay=0, grace=0)

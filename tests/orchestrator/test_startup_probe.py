"""The orchestrator's startup signal (health service `sentinel.startup`, Kubernetes'
startupProbe) waits for the first Describe of every configured specialist; its readiness does
not wait for them, before or after (one sick specialist must not take it out of service).

Real processes: `sentinel serve orchestrator` and specialists on loopback (a LocalMesh)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from readings import batch
from sentinel.orchestrator.main import SERVICE_NAME, STARTUP_SERVICE

from sentinel.app.local_mesh import LocalMesh
from sentinel.v1 import orchestrator_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(health: health_pb2_grpc.HealthStub, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return (await health.Check(request, timeout=10)).status


async def _assert_ready(health: health_pb2_grpc.HealthStub) -> None:
    assert await _status(health, "") == SERVING
    assert await _status(health, SERVICE_NAME) == SERVING


async def test_startup_waits_for_every_specialist_and_readiness_never_does() -> None:
    async with LocalMesh(engines=("threshold", "statistical"), log_level="ERROR") as mesh:
        down = mesh.specialists["statistical"]
        await down.stop()  # its port is known; nothing answers on it
        orchestrator = await mesh.start_orchestrator_child(wait_described=False)
        async with grpc.aio.insecure_channel(orchestrator.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # The first Describe round ran before the server started: threshold answered,
            # statistical did not.
            await _assert_ready(health)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=STARTUP_SERVICE))
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING

            await down.start()  # on the same port: the next rediscovery describes it
            assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
            await _assert_ready(health)

            # Started stays started: losing a specialist later changes neither signal.
            await down.stop()
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            detected = await stub.Detect(batch(1, [50.0]), timeout=30)
            assert "statistical" in detected.verdicts[0].missing  # the loss was noticed
            await _assert_ready(health)
            assert await _status(health, STARTUP_SERVICE) == SERVING
            watch.cancel()

"""Every server registers grpc.health.v1 and reflection, and drains on stop."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mesh_fixtures import start_specialist


async def _list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def request():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(request()):
        return {s.name for s in response.list_services_response.service}
    raise AssertionError("no reflection response")


async def _health(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def test_orchestrator_reports_serving_and_lists_services(mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.target) as channel:
        assert (
            await _health(channel, "sentinel.v1.Orchestrator")
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert await _health(channel, "") == health_pb2.HealthCheckResponse.SERVING
        assert await _list_services(channel) >= {
            "sentinel.v1.Orchestrator",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }


@pytest.mark.parametrize("engine", ["threshold", "statistical", "model"])
async def test_specialists_report_serving_and_list_services(engine: str) -> None:
    process = await start_specialist(engine)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
            assert (
                await _health(channel, "sentinel.v1.Specialist")
                == health_pb2.HealthCheckResponse.SERVING
            )
            assert "sentinel.v1.Specialist" in await _list_services(channel)
    finally:
        await process.stop(drain_delay=0, grace=0)


async def test_drain_flips_health_to_not_serving_before_stopping() -> None:
    process = await start_specialist("threshold")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
        stopping = asyncio.create_task(process.stop(drain_delay=0.5, grace=0))
        await asyncio.sleep(0.2)
        assert (
            await _health(channel, "sentinel.v1.Specialist")
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _health(channel, "sentinel.v1.Specialist")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE

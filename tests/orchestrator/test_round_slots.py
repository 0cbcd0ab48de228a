"""RoundSlots: a stream pipelines alone, keeps to one round while the mesh is busy."""

import asyncio

import grpc
import pytest
from mesh_fixtures import HeldSpecialist, no_tracing
from readings import batch
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.round_slots import RoundSlots
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.v1 import orchestrator_pb2, orchestrator_pb2_grpc, specialist_pb2_grpc


class Mesh:
    """Rounds open in the whole orchestrator, as the pipeline would count them."""

    def __init__(self) -> None:
        self.rounds = 0


async def test_first_slot_is_always_free_even_when_the_mesh_is_busy() -> None:
    mesh = Mesh()
    mesh.rounds = 50
    slots = RoundSlots(limit=2, busy=2, rounds_open=lambda: mesh.rounds)
    await asyncio.wait_for(slots.acquire(), 1)
    assert slots.held == 1


async def test_a_lone_stream_pipelines_up_to_its_limit() -> None:
    mesh = Mesh()
    slots = RoundSlots(limit=2, busy=2, rounds_open=lambda: mesh.rounds)
    await slots.acquire()
    mesh.rounds = 1  # its own round
    await asyncio.wait_for(slots.acquire(), 1)
    mesh.rounds = 2
    assert slots.held == 2
    third = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.01)
    assert not third.done()  # the per-stream limit holds
    slots.release()
    mesh.rounds = 1
    await asyncio.wait_for(third, 1)
    assert slots.held == 2


async def test_a_second_round_waits_for_the_first_while_the_mesh_is_busy() -> None:
    mesh = Mesh()
    slots = RoundSlots(limit=4, busy=2, rounds_open=lambda: mesh.rounds)
    await slots.acquire()
    mesh.rounds = 2  # its round and another stream's
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()
    slots.release()  # its own round ends: the next is its first again
    mesh.rounds = 1
    await asyncio.wait_for(second, 1)
    assert slots.held == 1


async def test_a_second_round_is_taken_when_the_mesh_has_room_at_the_next_release() -> None:
    mesh = Mesh()
    slots = RoundSlots(limit=3, busy=3, rounds_open=lambda: mesh.rounds)
    await slots.acquire()
    await slots.acquire()
    mesh.rounds = 3
    third = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.01)
    assert not third.done()
    slots.release()  # one of its two rounds ends; the other stream's round did too
    mesh.rounds = 1
    await asyncio.wait_for(third, 1)
    assert slots.held == 2


def test_release_without_a_slot_is_an_error() -> None:
    slots = RoundSlots(limit=1, busy=1, rounds_open=lambda: 0)
    with pytest.raises(RuntimeError):
        slots.release()


@pytest.mark.parametrize(("limit", "busy"), [(0, 1), (1, 0)])
def test_limits_must_be_positive(limit: int, busy: int) -> None:
    with pytest.raises(ValueError):
        RoundSlots(limit=limit, busy=busy, rounds_open=lambda: 0)


async def _rounds_in_flight(streams: int, busy: int) -> int:
    """Score calls waiting once `streams` streams have each sent 6 batches."""
    held = HeldSpecialist()
    specialist = grpc.aio.server()
    specialist_pb2_grpc.add_SpecialistServicer_to_server(held, specialist)
    port = specialist.add_insecure_port("127.0.0.1:0")
    await specialist.start()
    settings = OrchestratorSettings(
        port=0,
        specialists=f"held=127.0.0.1:{port}",
        specialist_timeout_seconds=60,
        stream_inflight_batches=4,
        busy_rounds=busy,
        coalesce_max_readings=1,
        drain_delay_seconds=0,
    )
    orchestrator = OrchestratorProcess(settings, no_tracing())
    await orchestrator.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}")
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    calls = []
    try:
        for s in range(streams):
            sent = [
                batch(i, [1.0], sensor=f"stream{s}-{i}", mode=orchestrator_pb2.VERDICT_MODE_NONE)
                for i in range(1, 7)
            ]
            calls.append(stub.StreamTelemetry(iter(sent)))
        settled = -1
        for _ in range(50):  # until the count stops moving
            await asyncio.sleep(0.1)
            if held.waiting == settled and settled > 0:
                break
            settled = held.waiting
        return held.waiting
    finally:
        held.release.set()
        for call in calls:
            call.cancel()
        await channel.close()
        await orchestrator.stop(drain_delay=0, grace=0)
        await specialist.stop(0)


async def test_a_lone_stream_has_rounds_in_flight_up_to_busy_rounds() -> None:
    assert await _rounds_in_flight(streams=1, busy=2) == 2
    assert await _rounds_in_flight(streams=1, busy=3) == 3


async def test_busy_streams_keep_to_one_round_each() -> None:
    # The first stream may take its second round before the others have arrived.
    assert 3 <= await _rounds_in_flight(streams=3, busy=2) <= 4
    # Without the mesh-wide bound every stream pipelines up to stream_inflight_batches.
    assert await _rounds_in_flight(streams=3, busy=12) == 12

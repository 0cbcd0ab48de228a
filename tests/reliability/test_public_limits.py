"""Configurable limits of the public port, each enforced with the documented status.

- MAX_STREAMS_PER_CLIENT: RESOURCE_EXHAUSTED before the first message (per x-sentinel-client-id)
- MAX_STREAMS: RESOURCE_EXHAUSTED before the first message
- MAX_BATCH_READINGS: INVALID_ARGUMENT "readings: N readings exceeds the limit of M per batch"
- MAX_SENSOR_ID_LENGTH: INVALID_ARGUMENT "readings[i].sensor_id: ... exceeds the limit of M"
- MAX_SENSORS: the least recently seen sensor's window is evicted, counted in
  sentinel_orchestrator_sensors_evicted_total (the sensor warms up again when it returns)
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from mesh_fixtures import running_mesh
from prometheus_client import generate_latest
from readings import batch, collect

from sentinel.client import CLIENT_ID_HEADER
from sentinel.v1 import orchestrator_pb2 as pb

# The same readings every time: a resend of batch 1 (other readings under batch id 1 would be
# refused with ALREADY_EXISTS).
_FIRST = batch(1, [1.0], mode=pb.VERDICT_MODE_NONE, start_ns=1_700_000_000 * 1_000_000_000)


class _Open:
    """A stream that stays open after its first batch was acked."""

    def __init__(self, stub, client_id: str) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = stub.StreamTelemetry(
            self._requests(), metadata=((CLIENT_ID_HEADER, client_id),)
        )

    async def _requests(self):
        while (item := await self.queue.get()) is not None:
            yield item

    async def opened(self) -> _Open:
        await self.queue.put(_FIRST)
        while True:
            event = await asyncio.wait_for(self.call.read(), 10)
            if event.WhichOneof("event") == "ack":
                break
        return self

    async def close(self) -> None:
        await self.queue.put(None)
        await collect(self.call)


async def _refused_before_first_message(stub, client_id: str) -> grpc.aio.AioRpcError:
    call = stub.StreamTelemetry(
        _one(batch(1, [1.0], mode=pb.VERDICT_MODE_NONE)), metadata=((CLIENT_ID_HEADER, client_id),)
    )
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for event in call:
            events.append(event)
    assert events == []  # not one event: the status comes before anything is read
    return refused.value


async def _one(item):
    yield item


async def test_stream_limits_refuse_with_resource_exhausted_before_the_first_message() -> None:
    async with running_mesh(
        engines=("threshold",), max_streams_per_client=2, max_streams=4
    ) as mesh:
        a1, a2 = (
            await (_Open(mesh.stub, "gw-a")).opened(),
            await (_Open(mesh.stub, "gw-a")).opened(),
        )
        refused = await _refused_before_first_message(mesh.stub, "gw-a")
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many streams for client 'gw-a' (limit 2)" in refused.details()
        b1 = await (_Open(mesh.stub, "gw-b")).opened()  # other clients are not affected
        await a2.close()
        a3 = await (_Open(mesh.stub, "gw-a")).opened()  # a freed slot is usable again
        c1 = await (_Open(mesh.stub, "gw-c")).opened()  # 4 streams now: the global limit
        refused = await _refused_before_first_message(mesh.stub, "gw-d")
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many streams (limit 4)" in refused.details()
        for stream in (a1, b1, a3, c1):
            await stream.close()
        rejected = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_batches_rejected_total", {"code": "RESOURCE_EXHAUSTED"}
        )
        assert rejected == 2
        scored = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_readings_received_total"
        )
        # Five streams opened, each with a batch 1; gw-a's three are one batch (client id, batch
        # id) -> scored once, acked twice more as duplicates. Refused streams scored nothing.
        assert scored == 3
        duplicates = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_duplicate_batches_total"
        )
        assert duplicates == 2


async def test_batch_size_and_sensor_id_length_limits_are_invalid_argument() -> None:
    async with running_mesh(
        engines=("threshold",), max_batch_readings=100, max_sensors=1000, max_sensor_id_length=16
    ) as mesh:
        assert len((await mesh.stub.Detect(batch(1, [1.0] * 100))).verdicts) == 100
        assert len((await mesh.stub.Detect(batch(2, [1.0], sensor="x" * 16))).verdicts) == 1
        cases = [
            (batch(3, [1.0] * 101), "readings: 101 readings exceeds the limit of 100 per batch"),
            (
                batch(4, [1.0], sensor="x" * 17),
                "readings[0].sensor_id: 17 characters exceeds the limit of 16",
            ),
        ]
        for bad, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await mesh.stub.Detect(bad)
            assert (unary.value.code(), unary.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
            )
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                await collect(mesh.stub.StreamTelemetry(_one(bad)))
            assert (streamed.value.code(), streamed.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
            )
        scored = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_readings_received_total"
        )
        assert scored == 101


async def test_sensors_tracked_limit_evicts_least_recently_seen_and_counts_it() -> None:
    async with running_mesh(
        engines=("threshold", "statistical"), max_batch_readings=100, max_sensors=100
    ) as mesh:

        def sensors(first: int, count: int) -> pb.TelemetryBatch:
            return pb.TelemetryBatch(
                batch_id=first,
                verdicts=pb.VERDICT_MODE_NONE,
                readings=[
                    pb.Reading(sensor_id=f"evict-{i}", value=1.0)
                    for i in range(first, first + count)
                ],
            )

        events = await collect(mesh.stub.StreamTelemetry(_one(sensors(0, 100))))
        assert [a.readings_accepted for a in events["ack"]] == [100]
        for first in (100, 200):
            await collect(mesh.stub.StreamTelemetry(_one(sensors(first, 50))))
        value = mesh.orchestrator.registry.get_sample_value
        assert value("sentinel_orchestrator_sensors_evicted_total") == 100
        assert value("sentinel_orchestrator_sensors_tracked") == 100
        text = generate_latest(mesh.orchestrator.registry).decode()
        assert "sentinel_orchestrator_sensors_evicted_total 100.0" in text
        # The evicted sensors start over: their window is empty again (warming up).
        response = await mesh.stub.Detect(
            pb.TelemetryBatch(readings=[pb.Reading(sensor_id="evict-0", value=1.0)])
        )
        assert response.verdicts[0].status == pb.VERDICT_STATUS_WARMING_UP
        assert value("sentinel_orchestrator_readings_received_total") == 201

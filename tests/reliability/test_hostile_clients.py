"""Hostile and careless clients (issue 13): real servers on loopback, real gRPC clients.

Each test reproduces one finding of the adversarial pass and checks the fix: no batch is lost
or acked without being scored, one client cannot silence another, and what a client is refused
comes with a clear status.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from mesh_fixtures import running_mesh
from pydantic import ValidationError
from readings import batch, collect
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.client import CLIENT_ID_HEADER
from sentinel.v1 import orchestrator_pb2 as pb


def wide(batch_id: int, sensors: int, prefix: str) -> pb.TelemetryBatch:
    """One reading each of `sensors` distinct sensors."""
    now = time.time_ns() - 60 * 1_000_000_000
    return pb.TelemetryBatch(
        batch_id=batch_id,
        verdicts=pb.VERDICT_MODE_NONE,
        readings=[
            pb.Reading(sensor_id=f"{prefix}-{i}", value=1.0, timestamp_unix_nanos=now)
            for i in range(sensors)
        ],
    )


class Feed:
    """A stream whose requests the test hands over one by one."""

    def __init__(self, stub, metadata=()) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = stub.StreamTelemetry(self._requests(), metadata=metadata)

    async def _requests(self):
        while (item := await self.queue.get()) is not None:
            yield item

    async def send(self, *batches: pb.TelemetryBatch) -> None:
        for item in batches:
            await self.queue.put(item)

    async def close(self) -> dict[str, list]:
        await self.queue.put(None)
        return await collect(self.call)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- 1. a round never grows past what the window store can hold ----------------------------------


async def test_queued_batches_are_never_coalesced_past_max_sensors() -> None:
    async with running_mesh(engines=("threshold",), max_sensors=10_000) as mesh:
        pipeline = mesh.orchestrator.pipeline
        feed = Feed(mesh.stub, ((CLIENT_ID_HEADER, "gw-wide"),))
        # Rounds are held back while both wide batches queue up behind a first one, so the
        # processor finds them queued together (as a fast client makes it find them).
        async with pipeline.quiesced(timeout=5):
            await feed.send(wide(1, 10, "a"), wide(2, 4_000, "b"), wide(3, 10_000, "c"))
            await _until(lambda: mesh.orchestrator.servicer.queue_depth >= 2)
        out = await feed.close()
        assert [(a.batch_id, a.readings_accepted, a.duplicate) for a in out["ack"]] == [
            (1, 10, False),
            (2, 4_000, False),
            (3, 10_000, False),
        ]
        internal = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_internal_errors_total"
        )
        assert not internal


def test_settings_that_contradict_each_other_are_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match=r"max_sensors \(5000\).*coalesce_max_readings"):
        OrchestratorSettings(
            max_sensors=5_000, max_batch_readings=1_000, coalesce_max_readings=8_000
        )
    with pytest.raises(ValidationError, match=r"max_sensors \(500\).*max_batch_readings"):
        OrchestratorSettings(max_sensors=500, max_batch_readings=1_000, coalesce_max_readings=100)

"""Message size limits: SENTINEL_MAX_MESSAGE_BYTES configures them, gRPC enforces them.

A message over the limit is refused with RESOURCE_EXHAUSTED ("Received message larger than
max (N vs. M)") before it is decoded; on a stream the batches acked before it stay accepted;
other streams are unaffected. TelemetryClient refuses such a batch locally (ValueError), and if
it meets the server's refusal anyway (its own limit set higher) it fails with StreamFailed
instead of resending the same oversized batch forever. Verdicts of a big ALL-mode batch are
split over several events, so answers stay under the limits too.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from mesh_fixtures import running_mesh
from pydantic import ValidationError
from readings import batch, collect, noise
from sentinel.orchestrator.session import VERDICTS_PER_EVENT
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.app.soak import Producer
from sentinel.client import StreamFailed, TelemetryClient
from sentinel.v1 import orchestrator_pb2 as pb

LIMIT = 256 * 1024


def _readings(n: int, sensor: str = "size-1") -> list[pb.Reading]:
    return list(batch(0, noise(n), sensor=sensor).readings)


async def _requests(items):
    for item in items:
        yield item


async def test_max_message_bytes_is_configured_from_the_environment_and_enforced(
    monkeypatch,
) -> None:
    monkeypatch.setenv("SENTINEL_MAX_MESSAGE_BYTES", str(LIMIT))
    assert OrchestratorSettings().max_message_bytes == LIMIT
    with pytest.raises(ValidationError):
        OrchestratorSettings(max_message_bytes=100)  # below 1 KiB: refused at startup

    async with running_mesh(engines=("threshold",)) as mesh:
        assert mesh.orchestrator.settings.max_message_bytes == LIMIT
        target = mesh.target
        steady = Producer(target, "steady", [f"steady-{i}" for i in range(4)], seed=3)
        steady.client.start()
        stop = asyncio.Event()
        streaming = asyncio.create_task(steady.run(stop, interval=0.02, per_sensor=5))

        small, big = batch(1, noise(200)), batch(2, noise(9900))
        assert small.ByteSize() < LIMIT < big.ByteSize()
        assert pb.TelemetryBatch(readings=_readings(9900)).ByteSize() > LIMIT
        assert len((await mesh.stub.Detect(small)).verdicts) == 200
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Detect(big)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"larger than max ({big.ByteSize()} vs. {LIMIT})" in refused.value.details()

        call = mesh.stub.StreamTelemetry(_requests([small, big, batch(3, [1.0])]))
        acks = []
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for event in call:
                if event.WhichOneof("event") == "ack":
                    acks.append(event.ack.batch_id)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in refused.value.details()
        assert acks in ([], [1])  # batch 1 may or may not be acked before the stream fails

        # TelemetryClient: refused locally given its limit; else StreamFailed (no resend loop).
        async with TelemetryClient(target, max_message_bytes=LIMIT) as careful:
            with pytest.raises(ValueError, match="max_message_bytes"):
                await careful.send(_readings(9900))
            await careful.send(_readings(200))
        assert careful.stats.batches_acked == 1
        unaware = TelemetryClient(target)  # default 16 MiB: it does not know the server's limit
        unaware.start()
        await unaware.send(_readings(9900))
        with pytest.raises(StreamFailed) as failed:
            await asyncio.wait_for(unaware.flush(), 30)
        assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert unaware.stats.reconnects == 0

        stop.set()
        await streaming
        await asyncio.wait_for(steady.client.flush(), 30)
        await steady.client.close()
        scored = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_readings_received_total"
        )

    assert steady.acked_readings == steady.sent_readings > 0
    # steady + Detect(small) + careful's batch + possibly batch 1 of the failed stream
    assert scored - steady.sent_readings - 200 - 200 in (0, 200)


async def test_verdicts_of_a_big_batch_are_split_over_events_under_the_limit() -> None:
    async with running_mesh(engines=("threshold",), max_message_bytes=LIMIT) as mesh:
        big = batch(1, noise(5000), mode=pb.VERDICT_MODE_ALL)
        assert big.ByteSize() < LIMIT
        call = mesh.stub.StreamTelemetry(_requests([big]))
        sizes = []
        while (event := await call.read()) is not grpc.aio.EOF:
            if event.WhichOneof("event") == "verdicts":
                sizes.append((len(event.verdicts.verdicts), event.ByteSize()))
        assert [n for n, _ in sizes] == [VERDICTS_PER_EVENT] * (5000 // VERDICTS_PER_EVENT)
        assert max(size for _, size in sizes) < LIMIT
        # The same through TelemetryClient: one verdict per reading, in order.
        seen: list[int] = []
        async with TelemetryClient(
            mesh.target,
            verdicts=pb.VERDICT_MODE_ALL,
            on_verdicts=lambda b, vs: seen.extend([b] * len(vs)),
        ) as client:
            batch_id = await client.send(_readings(2500, sensor="size-2"))
        assert seen == [batch_id] * 2500
        events = await collect(mesh.stub.StreamTelemetry(_requests([batch(9, [1.0])])))
        assert [a.batch_id for a in events["ack"]] == [9]

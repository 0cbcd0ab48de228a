"""TelemetryClient resume details: sends after a reconnect, a producer restarted under its id.

Counting as everywhere in the fault matrix: sent, acked, scored (orchestrator counter).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from faultkit import in_process_orchestrator, readings_received, wait_until
from mesh_fixtures import running_mesh
from readings import batch

from sentinel.app.soak import SoakReport
from sentinel.client import StreamFailed, TelemetryClient
from sentinel.v1 import orchestrator_pb2 as pb


def _readings(n: int = 10) -> list[pb.Reading]:
    return list(batch(0, [1.0] * n, mode=pb.VERDICT_MODE_NONE).readings)


async def test_batches_sent_after_a_reconnect_go_out_on_the_new_stream() -> None:
    """Regression: gRPC keeps consuming a finished call's request iterator, so the dead
    stream's generator used to take the next batch from the outbox; the live stream never sent
    it and flush() waited until some later reconnect."""
    async with running_mesh(engines=("threshold",)) as mesh:
        port = mesh.orchestrator.port
        client = TelemetryClient(mesh.target, verdicts=pb.VERDICT_MODE_NONE)
        client.start()
        for _ in range(3):
            await client.send(_readings())
        await asyncio.wait_for(client.flush(), 10)
        first = mesh.orchestrator
        await first.stop(drain_delay=0, grace=1)  # ends the stream with a reconnect hint
        second = in_process_orchestrator(first.settings.specialists, port=port)
        await second.start()
        try:
            await wait_until(lambda: second.servicer.sessions, 15, "the client reconnecting")
            await asyncio.sleep(
                0.3
            )  # idle on the new stream; the dead stream's generator is parked
            assert client.stats.reconnects >= 1
            for _ in range(5):
                await client.send(_readings())
            await asyncio.wait_for(client.flush(), 10)  # used to hang here
            await client.close()
            assert readings_received(first) + readings_received(second) == 80
        finally:
            await second.stop(drain_delay=0, grace=0.5)
    assert client.stats.batches_acked == 8 and client.stats.readings_acked == 80


async def test_a_producer_restarted_under_the_same_client_id_is_not_taken_for_duplicates() -> None:
    """Batch ids start at the clock, so a new process with a stable client id (say the
    gateway's name) does not reuse ids the orchestrator remembers: reused ids would be acked as
    duplicates and silently never scored."""
    async with running_mesh(engines=("threshold",)) as mesh:
        for _ in range(2):  # the same gateway, before and after a restart
            async with TelemetryClient(
                mesh.target, client_id="gateway-7", verdicts=pb.VERDICT_MODE_NONE
            ) as client:
                for _ in range(4):
                    await client.send(_readings())
            assert client.stats.readings_acked == 40 and client.stats.duplicates == 0
        assert readings_received(mesh.orchestrator) == 80


def test_soak_verdict_flags_loss_and_double_scoring() -> None:
    """The soak's pass/fail logic, on made-up counts."""
    clean = SoakReport(60, 8, 1, sent_readings=100, acked_readings=100, scored_readings=100)
    assert clean.ok and clean.lost == 0 and clean.scored_twice == 0
    assert "OK: no reading lost" in clean.render()
    twice = SoakReport(60, 8, 1, sent_readings=100, acked_readings=100, scored_readings=110)
    assert not twice.ok and twice.scored_twice == 10
    lost = SoakReport(
        60, 8, 1, sent_readings=100, acked_readings=90, scored_readings=90, unacked_batches=1
    )
    assert not lost.ok and lost.lost == 10
    unknown = SoakReport(60, 8, 1, sent_readings=100, acked_readings=100, scored_readings=None)
    assert not unknown.ok and "FAILED" in unknown.render()
    verdicts_twice = SoakReport(
        60,
        8,
        1,
        sent_readings=100,
        acked_readings=100,
        scored_readings=100,
        batches_verdicts_twice=1,
    )
    assert not verdicts_twice.ok


async def test_send_raises_the_failure_instead_of_waiting_for_room_forever() -> None:
    """A client whose stream failed for good (here: a client id the server refuses, a fault of
    the stream, not of one batch) must not leave a producer blocked in send() waiting for acks
    that will never come."""
    async with running_mesh(engines=("threshold",)) as mesh:
        client = TelemetryClient(mesh.target, client_id="c" * 1000, max_unacked=1)
        client.start()
        await client.send(_readings())
        with pytest.raises(StreamFailed) as failed:
            await asyncio.wait_for(client.send(_readings()), 10)  # used to wait forever
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-sentinel-client-id" in failed.value.details


async def test_a_refused_batch_is_handed_back_and_the_client_goes_on() -> None:
    """Batch 5 of 10 holds a NaN: it is refused (INVALID_ARGUMENT naming the field), handed
    back to the caller, and the other nine are delivered and scored."""
    async with running_mesh(engines=("threshold",)) as mesh:
        handed_back = []
        client = TelemetryClient(mesh.target, on_rejected=handed_back.append, max_unacked=4)
        async with client:
            ids = []
            for index in range(10):
                readings = _readings()
                if index == 4:
                    readings[1].value = float("nan")
                ids.append(await client.send(readings))
            await asyncio.wait_for(client.flush(), 20)
        (rejected,) = handed_back
        assert client.rejected == handed_back
        assert rejected.batch.batch_id == ids[4]
        assert rejected.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "readings[1].value" in rejected.details
        assert client.stats.batches_acked == 9 and client.stats.batches_rejected == 1
        assert readings_received(mesh.orchestrator) == 9 * len(_readings())

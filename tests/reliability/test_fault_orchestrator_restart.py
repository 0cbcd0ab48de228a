"""Fault matrix, orchestrator: SIGTERM mid-stream, started again on the same port.

Every role is its own process (`sentinel serve orchestrator` + specialists, a LocalMesh). The
TelemetryClient resumes on its own. "Scored" is counted by each orchestrator process itself
(its lifetime totals, logged when it stops), so a batch scored by the first process and
scored again by the second — possible only if an ack was lost — would show as scored > sent.

Why none is scored twice although the new process's dedup window is empty: on SIGTERM the
orchestrator stops reading, scores and acks every batch it has read, and only then ends the
stream with a reconnect hint. The client therefore resends only batches that were never read.
"""

from __future__ import annotations

import asyncio
import signal

from faultkit import (
    RecordingProducer,
    in_process_orchestrator,
    process_mesh,
    readings_received,
    specialists_and_orchestrator,
    wait_until,
)

from sentinel.app.soak import lifetime_totals_of


async def test_orchestrator_sigterm_mid_stream_and_restart_on_the_same_port() -> None:
    async with process_mesh() as (_specialists, orchestrator):
        port = orchestrator.port
        producer = RecordingProducer(
            orchestrator.target, "resume", [f"resume-{i}" for i in range(8)], seed=21
        )
        producer.client.start()
        stop = asyncio.Event()
        streaming = asyncio.create_task(producer.run(stop, interval=0.01, per_sensor=5))
        for _ in range(2):
            acked = len(producer.ack_times)
            await wait_until(
                lambda n=acked: len(producer.ack_times) > n + 20, 20, "acks before SIGTERM"
            )
            code = await orchestrator.stop(signal.SIGTERM)  # batches are in flight right now
            assert code == 0
            await orchestrator.start()
            assert orchestrator.port == port
            acked = len(producer.ack_times)
            await wait_until(
                lambda n=acked: len(producer.ack_times) > n + 20, 30, "acks after the restart"
            )
        stop.set()
        await streaming
        await asyncio.wait_for(producer.client.flush(), 30)
        await producer.client.close()
        assert await orchestrator.stop(signal.SIGTERM) == 0
        totals = lifetime_totals_of(orchestrator)

    assert totals is not None, "every orchestrator process writes its metrics on a graceful stop"
    stats = producer.client.stats
    assert stats.reconnects >= 2
    producer.assert_exact(totals["readings_received"])
    # Nothing the old process had read was resent to the new one (no ack was lost).
    assert totals["duplicate_batches"] == 0
    print(
        f"\nsigterm x2: sent={producer.sent_readings} acked={producer.acked_readings} "
        f"scored={totals['readings_received']} batches={len(producer.rows)} "
        f"resent={stats.batches_resent} "
        f"reconnects={stats.reconnects} duplicates={totals['duplicate_batches']}"
    )


async def test_orchestrator_crash_without_drain_is_at_least_once() -> None:
    """The contrast: an orchestrator that dies without draining (here its server is stopped
    with no grace and no end_streams, like SIGKILL or OOM) loses acks of batches it had
    scored. The client resends them, the new process does not remember them, so nothing is
    lost but some readings are scored twice: at-least-once, not exactly-once."""
    async with specialists_and_orchestrator() as (mesh, first):
        port = first.port
        producer = RecordingProducer(
            f"127.0.0.1:{port}", "crash", [f"crash-{i}" for i in range(8)], seed=22
        )
        producer.client.start()
        stop = asyncio.Event()
        streaming = asyncio.create_task(producer.run(stop, interval=0.005, per_sensor=20))
        await wait_until(lambda: len(producer.ack_times) > 50, 20, "acks before the crash")
        await first.server.stop(0)  # no drain: streams are cut with batches in flight
        await first.pool.close()
        second = in_process_orchestrator(mesh.specialist_targets, port=port)
        await second.start()
        try:
            acked = len(producer.ack_times)
            await wait_until(
                lambda: len(producer.ack_times) > acked + 50, 20, "acks after the crash"
            )
            stop.set()
            await streaming
            await asyncio.wait_for(producer.client.flush(), 30)
            await producer.client.close()
        finally:
            await second.stop(drain_delay=0, grace=0.5)
        scored = readings_received(first) + readings_received(second)

    assert producer.client.unacked == 0
    assert all(producer.acks[b] == 1 for b in producer.rows)
    assert producer.acked_readings == producer.sent_readings  # none lost
    assert scored >= producer.sent_readings  # but possibly some twice
    print(
        f"\ncrash: sent={producer.sent_readings} acked={producer.acked_readings} scored={scored} "
        f"scored twice={scored - producer.sent_readings}"
    )

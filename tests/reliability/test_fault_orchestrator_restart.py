"""Fault matrix, orchestrator: SIGTERM mid-stream, started again on the same port.

Every role is its own process (`sentinel serve orchestrator` + LocalSpecialists). The
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

from faultkit import RecordingProducer, process_mesh, wait_until


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
        totals = orchestrator.totals()

    assert totals is not None, "every orchestrator process logs its totals on a graceful stop"
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

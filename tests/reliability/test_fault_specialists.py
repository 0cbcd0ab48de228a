"""Fault matrix, specialists: SIGKILL + restart of each engine, and a hung engine (SIGSTOP).

Specialists are real child processes (a LocalMesh) on loopback ports; the orchestrator
runs in the test process so its counters can be read directly. Every test counts readings
sent, acked and scored (the orchestrator's own counter) and asserts none lost, none twice.
"""

from __future__ import annotations

import asyncio
import signal
import time

from faultkit import (
    ENGINES,
    RecordingProducer,
    readings_received,
    specialists_and_orchestrator,
    wait_until,
)

from sentinel.v1 import orchestrator_pb2 as pb

OK = pb.VERDICT_STATUS_OK
DEGRADED = pb.VERDICT_STATUS_DEGRADED


def _full(v) -> bool:
    return v.status == OK and v.voters == frozenset(ENGINES) and not v.missing


async def test_each_specialist_sigkilled_mid_stream_then_restarted() -> None:
    async with specialists_and_orchestrator() as (mesh, orchestrator):
        producer = RecordingProducer(
            f"127.0.0.1:{orchestrator.port}", "kill", [f"kill-{i}" for i in range(6)], seed=11
        )
        producer.client.start()
        await producer.warm_up()
        stop = asyncio.Event()
        streaming = asyncio.create_task(producer.run(stop, interval=0.02, per_sensor=2))
        await wait_until(
            lambda: any(_full(v) for v in producer.seen), 15, "full verdicts before faults"
        )

        phases: dict[str, tuple[int, int, int]] = {}
        for name in ENGINES:
            killed_at = len(producer.seen)
            await mesh.specialists[name].stop(signal.SIGKILL)  # mid-stream: batches keep flowing
            await wait_until(
                lambda name=name, i=killed_at: any(v.missing == (name,) for v in producer.seen[i:]),
                15,
                f"degraded verdicts naming {name}",
            )
            await asyncio.sleep(0.3)  # stream on while it is down
            restarted_at = len(producer.seen)
            await mesh.specialists[name].start()  # on the same port
            await wait_until(
                lambda i=restarted_at: any(_full(v) for v in producer.seen[i:]),
                20,
                f"full verdicts after {name} returned",
            )
            phases[name] = (killed_at, restarted_at, len(producer.seen))

        stop.set()
        await streaming
        await producer.client.flush()
        await producer.client.close()
        scored = readings_received(orchestrator)

    producer.assert_exact(scored)
    assert producer.client.stats.duplicates == 0 and producer.client.stats.reconnects == 0
    for name, (killed_at, restarted_at, recovered_at) in phases.items():
        phase = producer.seen[killed_at:recovered_at]
        # Only the killed engine is ever missing, and a degraded verdict names exactly it.
        assert {v.missing for v in phase} <= {(), (name,)}
        degraded = [v for v in phase if v.status == DEGRADED]
        assert degraded
        assert all(v.voters == frozenset(ENGINES) - {name} for v in degraded)
        # While it is down (first degraded verdict until the restart) every verdict is degraded.
        first = (
            next(i for i, v in enumerate(producer.seen[killed_at:restarted_at]) if v.missing)
            + killed_at
        )
        assert all(v.status == DEGRADED for v in producer.seen[first:restarted_at])
    assert _full(producer.seen[-1])
    print(
        f"\nsigkill: sent={producer.sent_readings} acked={producer.acked_readings} scored={scored} "
        f"degraded={producer.degraded}"
    )


async def test_hung_specialist_hits_its_deadline_and_the_stream_keeps_flowing() -> None:
    async with specialists_and_orchestrator(specialist_timeout_seconds=0.3) as (
        mesh,
        orchestrator,
    ):
        producer = RecordingProducer(
            f"127.0.0.1:{orchestrator.port}", "hang", [f"hang-{i}" for i in range(6)], seed=12
        )
        producer.client.start()
        await producer.warm_up()
        stop = asyncio.Event()
        streaming = asyncio.create_task(producer.run(stop, interval=0.02, per_sensor=2))
        await wait_until(
            lambda: any(_full(v) for v in producer.seen), 15, "full verdicts before the hang"
        )

        hung = mesh.specialists["statistical"]
        stopped_at = len(producer.seen)
        hung.send_signal(signal.SIGSTOP)  # the process is alive, its port open, it never answers
        try:
            await wait_until(
                lambda: any(v.missing == ("statistical",) for v in producer.seen[stopped_at:]),
                10,
                "degraded verdicts naming the hung engine",
            )
            window_start = time.monotonic()
            acked_before = len(producer.ack_times)
            await asyncio.sleep(1.5)  # five deadlines' worth of hang
            during = [t for t in producer.ack_times[acked_before:] if t >= window_start]
        finally:
            hung.send_signal(signal.SIGCONT)
        continued_at = len(producer.seen)
        await wait_until(
            lambda: any(_full(v) for v in producer.seen[continued_at:]),
            15,
            "full verdicts after SIGCONT",
        )
        stop.set()
        await streaming
        await producer.client.flush()
        await producer.client.close()
        scored = readings_received(orchestrator)
        deadline_errors = sum(
            sample.value
            for family in orchestrator.registry.collect()
            for sample in family.samples
            if sample.name == "sentinel_orchestrator_specialist_errors_total"
            and sample.labels.get("specialist") == "statistical"
            and sample.labels.get("code") == "DEADLINE_EXCEEDED"
        )

    producer.assert_exact(scored)
    assert deadline_errors > 0  # it was the deadline that fired, not a connection error
    # The stream did not stall: batches were acked all through the hang (gap = hang guard only).
    assert len(during) > 3
    gaps = [b - a for a, b in zip([window_start, *during], during, strict=False)]
    assert max(gaps) < 3.0
    hang_phase = producer.seen[stopped_at:continued_at]
    assert {v.missing for v in hang_phase} <= {(), ("statistical",)}
    assert sum(1 for v in hang_phase if v.status == DEGRADED) > 0
    assert _full(producer.seen[-1])
    print(
        f"\nhang: sent={producer.sent_readings} acked={producer.acked_readings} scored={scored} "
        f"acks during hang={len(during)} deadline errors={deadline_errors:g}"
    )

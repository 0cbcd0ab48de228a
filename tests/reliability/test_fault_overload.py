"""Fault matrix, overload: producers much faster than the mesh.

Every role is its own process. The mesh is made slow on purpose: one specialist hangs
(SIGSTOP), so every scoring round waits for its 0.3 s deadline, and the orchestrator scores one
round of at most 500 readings per stream at a time. Four producers push 500-reading batches as
fast as they are allowed to. Expected: the orchestrator stops reading when its per-stream
queues are full, HTTP/2 flow control holds the rest in the transport, the producers' send()
blocks (their unacked window is full), the queue-depth gauge on /metrics rises, the
orchestrator's memory stays under a ceiling, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
from faultkit import process_mesh, wait_until

from sentinel.app.soak import Producer, lifetime_totals_of, proc_status_kib
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

# Peak RSS (VmHWM) allowed for the orchestrator process under this overload. It idles at
# ~75 MiB; queues are bounded per stream, so overload must not add more than a few MiB per stream.
ORCHESTRATOR_CEILING_MIB = 200
PRODUCERS = 4
BATCH_READINGS = 500
RAW_SENSOR = "raw-%02d-" + "x" * 200


class _RawFlood:
    """A raw stream whose request generator yields as fast as gRPC pulls from it."""

    def __init__(self, stub_call) -> None:
        self.yielded = 0
        self.acked = 0
        self.max_in_flight = 0
        self._call_factory = stub_call
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async def requests():  # unbounded on purpose: only the transport can slow it
            batch_id = 0
            # Long ids: many bytes per reading, so the transport's backlog drains quickly later.
            readings = [
                pb.Reading(sensor_id=RAW_SENSOR % (i % 50), value=50.0)
                for i in range(BATCH_READINGS)
            ]
            while not self.stop.is_set():
                batch_id += 1
                self.yielded += 1
                self.max_in_flight = max(self.max_in_flight, self.yielded - self.acked)
                yield pb.TelemetryBatch(
                    batch_id=batch_id, readings=readings, verdicts=pb.VERDICT_MODE_NONE
                )
                await asyncio.sleep(0)

        call = self._call_factory(requests())
        async for event in call:
            if event.WhichOneof("event") == "ack":
                self.acked += 1


async def test_overload_is_pushed_back_to_producers_and_nothing_is_dropped() -> None:
    async with process_mesh(
        SENTINEL_SPECIALIST_TIMEOUT_SECONDS="0.3",
        SENTINEL_STREAM_INFLIGHT_BATCHES="1",
        SENTINEL_COALESCE_MAX_READINGS=str(BATCH_READINGS),
    ) as (mesh, orchestrator):
        producers = [
            Producer(
                orchestrator.target,
                f"flood{i}",
                [f"flood-{i}-{s}" for s in range(50)],
                seed=30 + i,
                max_unacked=16,
                verdicts=pb.VERDICT_MODE_NONE,
            )  # fmt: skip
            for i in range(PRODUCERS)
        ]
        for producer in producers:
            producer.client.start()
        hung = mesh.specialists["model"]
        hung.send_signal(signal.SIGSTOP)
        stop = asyncio.Event()
        depth: list[float] = []
        peak_kib = 0

        async def watch() -> None:
            nonlocal peak_kib
            while not stop.is_set():
                value = await asyncio.to_thread(
                    orchestrator.sample, "sentinel_orchestrator_queue_depth"
                )
                if value is not None:
                    depth.append(value)
                peak_kib = max(peak_kib, proc_status_kib(orchestrator.process.pid) or 0)
                await asyncio.sleep(0.1)

        channel = grpc.aio.insecure_channel(orchestrator.target)
        flood = _RawFlood(orchestrator_pb2_grpc.OrchestratorStub(channel).StreamTelemetry)
        try:
            watcher = asyncio.create_task(watch())
            raw = asyncio.create_task(flood.run())
            running = [
                asyncio.create_task(p.run(stop, interval=0.0, per_sensor=BATCH_READINGS // 50))
                for p in producers
            ]
            await wait_until(
                lambda: all(p.send_blocked_seconds > 0.5 for p in producers),
                30,
                "producers blocked",
            )
            await wait_until(
                lambda: any(d > 0 for d in depth), 10, "queue depth above 0 on /metrics"
            )
            await asyncio.sleep(2.0)  # sustained overload
            in_flight_raw = flood.yielded - flood.acked
        finally:
            hung.send_signal(signal.SIGCONT)
        stop.set()
        flood.stop.set()
        await asyncio.gather(*running)
        await asyncio.wait_for(raw, 30)
        await channel.close()
        for producer in producers:
            await asyncio.wait_for(producer.client.flush(), 60)
            await producer.client.close()
        watcher.cancel()
        peak_kib = max(peak_kib, proc_status_kib(orchestrator.process.pid) or 0)
        assert await orchestrator.stop(signal.SIGTERM) == 0
        totals = lifetime_totals_of(orchestrator)

    assert totals is not None
    sent = sum(p.sent_readings for p in producers) + flood.yielded * BATCH_READINGS
    acked = sum(p.acked_readings for p in producers) + flood.acked * BATCH_READINGS
    for producer in producers:
        assert all(producer.acks[b] == 1 for b in producer.rows)
    assert flood.acked == flood.yielded
    assert acked == sent and totals["readings_received"] == sent, (sent, acked, totals)
    assert max(depth) > 0
    assert peak_kib / 1024 < ORCHESTRATOR_CEILING_MIB
    # HTTP/2 flow control, not a client-side window, bounds the raw stream: gRPC pulls the next
    # request only when the transport has room, so at most a few flow-control windows' worth
    # (measured: ~4-6 MiB) is ever in flight, however long the overload lasts.
    batch_bytes = pb.TelemetryBatch(
        batch_id=1, readings=[pb.Reading(sensor_id=RAW_SENSOR % 0, value=50.0)] * BATCH_READINGS
    ).ByteSize()
    assert flood.max_in_flight * batch_bytes < 16 * 1024 * 1024, flood.max_in_flight
    blocked = [round(p.send_blocked_seconds, 1) for p in producers]
    print(
        f"\noverload: sent={sent} acked={acked} scored={totals['readings_received']} "
        f"queue depth max={max(depth):g} orchestrator VmHWM={peak_kib / 1024:.0f} MiB "
        f"producers blocked {blocked} s; raw stream in flight max={flood.max_in_flight} "
        f"(at the end {in_flight_raw})"
    )

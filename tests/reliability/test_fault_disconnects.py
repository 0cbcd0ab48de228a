"""Fault matrix, clients: a producer that disconnects abruptly a hundred times.

The orchestrator runs in this process so its asyncio tasks and Python heap can be measured
(asyncio.all_tasks and tracemalloc). The flaky client cancels its call mid-stream, with
batches in flight, then reconnects under the same client id and resends what was not acked —
as TelemetryClient does — so every batch must end up acked, scored once, and the resent
copies of batches scored before the cancel must be acked as duplicates.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections import OrderedDict

import grpc
from readings import batch, noise
from sentinel.orchestrator.batches import Limits, decode_batch
from sentinel.orchestrator.session import StreamOptions, StreamSession

from sentinel.client import CLIENT_ID_HEADER
from sentinel.v1 import orchestrator_pb2 as pb


def _session_tasks() -> int:
    return sum(1 for t in asyncio.all_tasks() if (t.get_name() or "").startswith("stream-"))


async def _settled(mesh, guard: float = 10.0) -> None:
    deadline = time.monotonic() + guard
    while mesh.orchestrator.servicer.sessions or _session_tasks():
        assert time.monotonic() < deadline, "hang guard: stream sessions did not finish"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    gc.collect()


async def test_a_hundred_abrupt_disconnects_leak_no_tasks_or_memory(mesh) -> None:
    client_id = "flaky-gateway"
    metadata = ((CLIENT_ID_HEADER, client_id),)
    unacked: OrderedDict[int, pb.TelemetryBatch] = OrderedDict()
    rows: dict[int, int] = {}
    acks: dict[int, int] = {}
    duplicate_acks = 0
    next_id = 1

    async def one_connection(new_batches: int, cancel_after_acks: int) -> None:
        nonlocal next_id, duplicate_acks
        outgoing: asyncio.Queue = asyncio.Queue()
        for resend in unacked.values():
            outgoing.put_nowait(resend)
        for _ in range(new_batches):
            fresh = batch(
                next_id,
                noise(20, seed=next_id),
                sensor=f"flaky-{next_id % 5}",
                mode=pb.VERDICT_MODE_NONE,
            )
            unacked[next_id] = fresh
            rows[next_id] = 20
            outgoing.put_nowait(fresh)
            next_id += 1

        async def requests():
            while True:  # never half-closes: the client just vanishes
                yield await outgoing.get()

        call = mesh.stub.StreamTelemetry(requests(), metadata=metadata)
        seen = 0
        try:
            while seen < cancel_after_acks:
                event = await asyncio.wait_for(call.read(), 10)
                assert event is not grpc.aio.EOF
                if event.WhichOneof("event") == "ack":
                    seen += 1
                    acks[event.ack.batch_id] = acks.get(event.ack.batch_id, 0) + 1
                    duplicate_acks += event.ack.duplicate
                    unacked.pop(event.ack.batch_id, None)
        finally:
            call.cancel()  # abrupt: RST_STREAM with batches still in flight

    for _ in range(10):  # warm-up: imports, caches, gRPC internals
        await one_connection(new_batches=4, cancel_after_acks=1)
    await _settled(mesh)
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        heap_before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            await one_connection(new_batches=4, cancel_after_acks=1 + i % 3)
        await _settled(mesh)
        heap_after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    tasks_after = len(asyncio.all_tasks())

    # Then the client comes back for good and resends the rest.
    while unacked:
        await one_connection(new_batches=0, cancel_after_acks=len(unacked))
    await _settled(mesh)
    servicer = mesh.orchestrator.servicer
    assert not servicer.sessions and not servicer._streams_by_client
    assert tasks_after <= tasks_before + 2, (tasks_before, tasks_after)
    assert heap_after - heap_before < 2 * 1024 * 1024, (
        f"heap grew by {heap_after - heap_before} bytes"
    )

    value = mesh.orchestrator.registry.get_sample_value
    sent = sum(rows.values())
    scored = value("sentinel_orchestrator_readings_received_total")
    acked = sum(rows[b] for b in acks)
    assert set(acks) == set(rows), "every batch acked"
    assert acked == sent and scored == sent, (sent, acked, scored)
    # Batches scored before a cancel but not acked were resent: acked again, as duplicates
    # only (the server also acked resends whose acks the client cancelled before reading).
    assert duplicate_acks > 0
    assert value("sentinel_orchestrator_duplicate_batches_total") >= duplicate_acks
    assert sum(acks.values()) - len(acks) <= duplicate_acks
    print(
        f"\ndisconnects: sent={sent} acked={acked} scored={scored:g} duplicates={duplicate_acks} "
        f"tasks {tasks_before}->{tasks_after} heap +{(heap_after - heap_before) / 1024:.0f} KiB"
    )


class _SlowPipeline:
    """Enough of ScoringPipeline for a session: scoring waits until the test releases it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def parent_from_traceparent(self, traceparent):
        return None

    async def admit(self):
        return None

    def abandon(self, prepared):
        return None

    def prepare(self, batches, client_id="", parent=None, links=()):
        return list(batches)

    def shadow_slots(self):
        return None  # no shadow engines

    async def score(self, prepared, forwarded=(), shadow_slots=None):
        await self.release.wait()
        return prepared

    def finish(self, prepared, all_verdicts=False):
        from sentinel.orchestrator.pipeline import BatchResult

        return [BatchResult(b.batch_id, b.rows) for b in prepared]


async def test_session_ended_then_abandoned_with_full_queues_still_finishes() -> None:
    """end() (shutdown or max stream age) while the reader is blocked on a full queue, then the
    client vanishes: the session must still wind down (it used to cancel the reader twice,
    losing its terminal marker, so the processor waited forever and the tasks leaked)."""
    pipeline = _SlowPipeline()
    options = StreamOptions(limits=Limits(), queue_batches=1, inflight_batches=1)
    session = StreamSession(pipeline, options, "c", (), None)

    async def requests():  # decoded as the server's deserializer hands them over
        for i in range(1, 100):
            yield decode_batch(batch(i, [1.0]), Limits())

    events = session.events(requests())
    pending = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.2)  # queues full, the reader blocked on put
    assert session.queue_depth == 2
    session.end("max stream age reached; reconnect to rebalance")
    await asyncio.sleep(0.05)
    pending.cancel()  # the client is gone before anything was acked
    await asyncio.gather(pending, return_exceptions=True)
    await events.aclose()
    pipeline.release.set()
    await asyncio.wait_for(session.done.wait(), 5)


async def test_transport_failure_with_a_full_queue_then_client_gone_still_finishes() -> None:
    """The request stream breaks while the ingest queue is full (rounds in flight hold every
    slot), then the call is cancelled: the reader is cancelled while it hands over its
    terminal, and the processor must still get it (a terminal put that had to wait for room
    was cancelled and lost, so the processor waited forever and the session's tasks leaked)."""
    pipeline = _SlowPipeline()
    options = StreamOptions(limits=Limits(), queue_batches=1, inflight_batches=1)
    session = StreamSession(pipeline, options, "c", (), None)

    async def requests():
        for i in range(1, 5):
            yield batch(i, [1.0])
        raise ConnectionResetError("transport failed")

    events = session.events(requests())
    pending = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.2)  # a round in flight, a batch queued, the reader ended
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await events.aclose()
    pipeline.release.set()
    await asyncio.wait_for(session.done.wait(), 5)

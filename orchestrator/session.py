"""One StreamTelemetry stream: bounded ingest, pipelined scoring, ordered acks.

    reader ──ingest queue (bounded)──▶ processor ──in-flight queue (bounded)──▶ finisher ──▶ events
            window update + fan-out start         await votes, combine, incidents

Every queue is bounded (the events in bytes, see below), so a slow mesh stops the reader, and
HTTP/2 flow control then slows the producer (nothing is buffered without limit). The processor
coalesces queued batches into one scoring round; acks still go out one per batch, in order. A
batch that reached the window store is always finished (incidents and alerts), even if its
client disconnects; batches that were only queued are dropped unacked, so the client resends
them.

Bounded in bytes (budget.py): a batch takes its cost (columns, ids, verdicts) from the
process's in-flight budget when it is read and gives it back once its last event is sent (or it
is dropped); a stream holding `stream_budget_bytes` is not read further until some of it is
answered; a batch the in-flight budget cannot take ends the stream with RESOURCE_EXHAUSTED after
the batches before it are acked (the client backs off and resends from there). A round waits
for room in the process's scoring budget for its working memory, and gives it back as soon as
it is finished, whatever the client's reading speed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace

from sentinel.errors import BatchConflict, InvalidArgument, Overloaded
from sentinel.v1 import orchestrator_pb2

from .batches import DecodedBatch, Limits
from .budget import MIB, InflightBudget, ScoringBudget
from .pipeline import BatchResult, Prepared, ScoringPipeline
from .round_slots import RoundSlots

log = logging.getLogger(__name__)

_END = object()
_DONE = object()
# Verdicts per stream event: keeps events of big ALL-mode batches well under message limits
# (a client's default receive limit is 4 MiB; a verdict with three votes is ~100-600 bytes).
VERDICTS_PER_EVENT = 1000


@dataclass(frozen=True, slots=True)
class StreamOptions:
    limits: Limits
    queue_batches: int = 8
    inflight_batches: int = 2
    busy_rounds: int = 2  # rounds open (all streams) beyond which a stream keeps to one
    coalesce_max_readings: int = 8192
    heartbeat_seconds: float = 30.0
    max_age_seconds: float = 1800.0
    budget_bytes: int = 16 * MIB  # received bytes after which the stream is not read further


@dataclass(frozen=True, slots=True)
class Refused:
    """A request refused as it was received (servicer.parse_request): the RPC ends with the
    error's status once the batches before it are answered."""

    error: InvalidArgument | Overloaded


@dataclass(frozen=True, slots=True)
class _Release:
    """Queued after a round's events: once the events before it are sent, give back `size`."""

    size: int


@dataclass(slots=True)
class _Round:
    """A round being scored, and what it holds of the two budgets."""

    prepared: Prepared | None
    scoring: asyncio.Task
    received: int  # in-flight bytes of its batches, given back once their events are sent
    working: int  # scoring bytes, given back as soon as the round is finished


class StreamSession:
    def __init__(
        self,
        pipeline: ScoringPipeline,
        options: StreamOptions,
        client_id: str,
        forwarded: Sequence[tuple[str, str]],
        stream_context: otel_context.Context | None,
        inflight: InflightBudget | None = None,
        scoring: ScoringBudget | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._options = options
        self._budget = inflight or InflightBudget.unlimited()
        self._scoring = scoring or ScoringBudget.unlimited()
        self.held_bytes = 0  # taken from the in-flight budget and not yet given back
        self._room = asyncio.Event()  # set while held_bytes is below the stream's budget
        self._room.set()
        self._client_id = client_id
        self._forwarded = tuple(forwarded)
        self._shadow_slots = pipeline.shadow_slots()
        stream_span = trace.get_current_span(stream_context) if stream_context else None
        link_context = stream_span.get_span_context() if stream_span else None
        self._links = (trace.Link(link_context),) if link_context and link_context.is_valid else ()
        # Batches waiting for a round, bounded by `_ingest_room`; the queue itself is not, so
        # the reader's terminal always goes in without waiting (a put that waits can be
        # cancelled, and a processor that never sees the terminal never ends).
        self._ingest: asyncio.Queue = asyncio.Queue()
        self._ingest_room = asyncio.Semaphore(options.queue_batches)
        self._inflight: asyncio.Queue = asyncio.Queue()
        # Rounds being scored: the processor takes a slot *before* it takes batches off the
        # ingest queue, so that while the mesh is busy, arriving batches wait there and
        # coalesce into the next, larger round (per-round costs are most of the cost).
        self._slots = RoundSlots(
            options.inflight_batches, options.busy_rounds, lambda: pipeline.rounds_open
        )
        self._batches_queued = 0
        self._rounds_open = 0
        # Not bounded in count but in bytes: every verdict in it was reserved with its batch
        # (InflightBudget.cost), and a stream holding its budget is not read further. So a
        # client that reads slowly never keeps a finished round's working memory (the
        # process's scoring budget) from being given back.
        self._events: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._terminal: object = _END  # what ends the ingest queue once the reader is done
        self._tasks: list[asyncio.Task] = []
        self._detached = False
        # Bad input from the client, or no room for its batch: the stream ends with
        # INVALID_ARGUMENT / ALREADY_EXISTS / RESOURCE_EXHAUSTED once the batches before are acked.
        self.error: InvalidArgument | BatchConflict | Overloaded | None = None
        self._refusal: BatchConflict | None = None
        self.failure: Exception | None = None  # unexpected: the stream ends with INTERNAL
        self.end_reason: str | None = None
        self.done = asyncio.Event()

    @property
    def queue_depth(self) -> int:
        """Batches waiting for a round plus rounds being scored (the autoscaling signal)."""
        return self._batches_queued + self._rounds_open

    def end(self, reason: str) -> None:
        """Stop reading; finish what was read; then the stream ends with a reconnect hint."""
        if self.end_reason is None:
            self.end_reason = reason
            self._stop_reader()

    def _stop_reader(self) -> None:
        # Cancel once only: a second cancel could hit the reader's final put of its terminal,
        # and a processor that never sees a terminal keeps the session's tasks alive forever.
        if self._reader is not None and not self._reader.done() and not self._reader.cancelling():
            self._reader.cancel()

    async def events(self, requests: AsyncIterator[DecodedBatch | Refused]):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.max_age_seconds
        self._reader = asyncio.create_task(self._read(requests), name="stream-reader")
        # From a done callback, so the processor gets a terminal however the reader ended
        # (even cancelled before its first step, when its `finally` never runs).
        self._reader.add_done_callback(lambda _: self._ingest.put_nowait(self._terminal))
        self._tasks = [
            self._reader,
            asyncio.create_task(self._process(), name="stream-processor"),
            asyncio.create_task(self._finish(), name="stream-finisher"),
        ]
        try:
            while True:
                if loop.time() >= deadline:
                    self.end("max stream age reached; reconnect to rebalance")
                    deadline = float("inf")
                wait = min(self._options.heartbeat_seconds, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(self._events.get(), timeout=wait)
                except TimeoutError:
                    if loop.time() >= deadline:
                        continue
                    yield orchestrator_pb2.StreamEvent(
                        heartbeat=orchestrator_pb2.Heartbeat(server_time_unix_nanos=time.time_ns())
                    )
                    continue
                if item is _DONE:
                    break
                if isinstance(item, _Release):
                    self._give(item.size)  # the events before it have been sent
                    continue
                yield item
            if self.error is None and self.failure is None and self.end_reason is not None:
                yield orchestrator_pb2.StreamEvent(
                    reconnect=orchestrator_pb2.ReconnectHint(reason=self.end_reason)
                )
        finally:
            # The client is gone or the stream is over: stop reading, let what reached the
            # window store finish in the background without emitting events.
            self._detached = True
            self._stop_reader()
            while not self._events.empty():  # events nobody will read
                item = self._events.get_nowait()
                if isinstance(item, _Release):
                    self._give(item.size)
            asyncio.get_running_loop().create_task(self._wait_tasks())

    async def _wait_tasks(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Whatever is still held (a batch the reader had not queued, a release queued after
        # the client left) is given back once nothing of this stream runs any more.
        self._give(self.held_bytes)
        self.done.set()

    def _take(self, size: int) -> bool:
        if not self._budget.try_take(size):
            return False
        self.held_bytes += size
        if self.held_bytes >= self._options.budget_bytes:
            self._room.clear()
        return True

    def _give(self, size: int) -> None:
        if size <= 0:
            return
        self._budget.give(size)
        self.held_bytes -= size
        if self.held_bytes < self._options.budget_bytes:
            self._room.set()

    def _cost(self, batches: Sequence[DecodedBatch]) -> int:
        return sum(self._budget.cost(b) for b in batches)

    async def _read(self, requests: AsyncIterator[DecodedBatch | Refused]) -> None:
        """`requests`: batches as the servicer's deserializer decoded them, or its refusals."""
        terminal: object = _END
        incoming = aiter(requests)
        try:
            while True:
                # Not read further while this stream holds its budget: HTTP/2 flow control
                # then holds the client back.
                await self._room.wait()
                try:
                    request = await anext(incoming)
                except StopAsyncIteration:
                    return
                if isinstance(request, Refused):
                    terminal = request.error
                    return
                cost = self._budget.cost(request)
                if not self._take(cost):
                    terminal = self._budget.refusal(cost)
                    return
                await self._ingest_room.acquire()
                self._ingest.put_nowait(request)
                self._batches_queued += 1
        except asyncio.CancelledError:
            pass
        except Exception as error:  # the transport failed: treat like a disconnect
            log.info("stream read ended", extra={"error": repr(error)})
        finally:
            self._terminal = terminal

    async def _process(self) -> None:
        terminal: object | None = None
        held: object | None = None  # taken from the queue, but belongs to the next round
        limit = self._options.coalesce_max_readings
        while terminal is None:
            await self._slots.acquire()
            first = held if held is not None else self._took(await self._ingest.get())
            held = None
            if not isinstance(first, DecodedBatch):
                terminal = first
                break
            batches = [first]
            readings = first.rows
            # A round never grows past `coalesce_max_readings` (unless one batch alone is
            # larger): the settings check keeps that within what the window store can hold.
            while readings < limit and not self._ingest.empty():
                more = self._took(self._ingest.get_nowait())
                if not isinstance(more, DecodedBatch):
                    terminal = more
                    break
                if readings + more.rows > limit:
                    held = more
                    break
                batches.append(more)
                readings += more.rows
            if self._detached or self.failure is not None or self._refusal is not None:
                self._slots.release()
                self._give(self._cost(batches))
                continue  # never acked: the client resends these after reconnecting
            started = False
            try:
                try:
                    started = await self._start_round(batches)
                except BatchConflict as conflict:
                    # The batches before the conflicting one are scored and acked; the stream
                    # then ends with ALREADY_EXISTS naming the batch id (later ones unacked).
                    self._refusal = conflict
                    self._stop_reader()
                    self._give(self._cost(batches[conflict.index :]))
                    batches = batches[: conflict.index]
                    if batches:
                        started = await self._start_round(batches)
            except Exception as error:
                self._fail(batches, error)
            if not started:
                self._slots.release()
                self._give(self._cost(batches))  # no round took them
        self._inflight.put_nowait(self._refusal or terminal)

    def _took(self, item: object) -> object:
        """An item just taken off the ingest queue: a batch frees room for the reader."""
        if isinstance(item, DecodedBatch):
            self._batches_queued -= 1
            self._ingest_room.release()
        return item

    async def _start_round(self, batches: list[DecodedBatch]) -> bool:
        """Start scoring `batches` as one round; True once it is queued for the finisher
        (which then owns the round's slot)."""
        parent = None
        if batches[0].traceparent:
            parent = self._pipeline.parent_from_traceparent(batches[0].traceparent)
        working = self._scoring.round_cost(batches)
        # A round waiting for room is work the mesh has to do: it counts in the queue depth.
        self._rounds_open += 1
        try:
            # Room for the round's working memory first (waiting here holds this stream's
            # queue back), then at once into the window store: no checkpoint in between.
            await self._scoring.take(working)
            try:
                await self._pipeline.admit()
                prepared = self._pipeline.prepare(batches, self._client_id, parent, self._links)
            except BaseException:
                self._scoring.give(working)
                raise
        except BaseException:
            self._rounds_open -= 1
            raise
        scoring = asyncio.create_task(
            self._pipeline.score(prepared, self._forwarded, self._shadow_slots)
        )
        self._inflight.put_nowait(_Round(prepared, scoring, self._cost(batches), working))
        return True

    async def _finish(self) -> None:
        while True:
            item = await self._inflight.get()
            if isinstance(item, _Round):
                try:
                    await self._finish_round(item)
                finally:
                    self._rounds_open -= 1
                    self._slots.release()
                continue
            refused = isinstance(item, InvalidArgument | BatchConflict | Overloaded)
            if refused and self.failure is None:
                self.error = item
            await self._emit(_DONE)
            return

    async def _finish_round(self, round_: _Round) -> None:
        prepared = round_.prepared
        assert prepared is not None
        try:
            if self.failure is not None:
                # The stream is failing: later rounds are not acked, so they are resent.
                round_.scoring.cancel()
                self._pipeline.abandon(prepared)
                self._give(round_.received)
                return
            try:
                results = self._pipeline.finish(await round_.scoring)
            except Exception as error:
                self._pipeline.abandon(prepared)
                self._give(round_.received)
                self._fail(prepared.batches, error)
                return
        finally:
            # The round's windows and votes are gone with it: only its verdicts are left.
            round_.prepared = prepared = None
            self._scoring.give(round_.working)
        for result in results:
            for event in _events_of(result):
                await self._emit(event)
        if self._detached:
            self._give(round_.received)
        else:
            await self._events.put(_Release(round_.received))

    def _fail(self, batches: Sequence[DecodedBatch], error: Exception) -> None:
        """An unexpected error in a round: end this stream with INTERNAL, others carry on."""
        if self.failure is not None:
            return
        self.failure = error
        batch_ids = [b.batch_id for b in batches]
        self._pipeline.metrics.internal_errors.inc()
        log.error(
            "scoring round failed; ending the stream with INTERNAL",
            exc_info=error,
            extra={"batch_ids": batch_ids, "client_id": self._client_id},
        )
        self._stop_reader()

    async def _emit(self, item: object) -> None:
        if not self._detached:
            await self._events.put(item)


def _events_of(result: BatchResult) -> list[orchestrator_pb2.StreamEvent]:
    chunk = VERDICTS_PER_EVENT
    events = [
        orchestrator_pb2.StreamEvent(
            verdicts=orchestrator_pb2.VerdictBatch(verdicts=result.verdicts[i : i + chunk])
        )
        for i in range(0, len(result.verdicts), chunk)
    ]
    events.append(
        orchestrator_pb2.StreamEvent(
            ack=orchestrator_pb2.BatchAck(
                batch_id=result.batch_id,
                readings_accepted=result.readings_accepted,
                duplicate=result.duplicate,
            )
        )
    )
    events.extend(orchestrator_pb2.StreamEvent(alert=a) for a in result.alerts)
    return events

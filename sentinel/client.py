"""Async producer client: batches readings, keeps unacked batches, reconnects and resends.

Delivery: every batch stays in memory until the orchestrator acks it. When the stream fails
with a transient status (UNAVAILABLE, or the server's reconnect hint) the client reconnects
with exponential backoff and jitter and resends every unacked batch, in order, under the same
client id and batch ids, so the orchestrator acks them again without scoring them twice.

Ownership: every stream carries a partition key (`x-sentinel-partition`; by default the client
id, so one gateway's sensors share one key). The mesh routes each key to one orchestrator
replica (Istio consistent hashing on that header, see docs/deploy.md), which owns the history
and incidents of the sensors sent under it: send a sensor under the same key every time.
Without Istio, `shard_target` maps a key to one of several per-shard addresses itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from urllib.parse import quote

import grpc
import numpy as np

from sentinel.errors import REJECTED_BATCH_HEADER
from sentinel.v1 import orchestrator_pb2, orchestrator_pb2_grpc

log = logging.getLogger(__name__)

CLIENT_ID_HEADER = "x-sentinel-client-id"
# The key the mesh hashes to pick the orchestrator replica that owns a stream's sensors
# (istio/destination-rules.yaml reads this name; a manifest test checks they agree).
PARTITION_HEADER = "x-sentinel-partition"
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
_CLOSE = object()
# gRPC's own status when a message exceeds a peer's size limit: resending cannot help.
_TOO_LARGE = "larger than max"
# What grpc.aio reports (as INTERNAL) when writing to a stream whose connection just broke:
# a transport failure like UNAVAILABLE, not a server's verdict, so it is retried too.
_LOCAL_WRITE_FAILURE = "Internal error from Core"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def reading_columns(
    sensor_ids: Sequence[str],
    values: Sequence[float] | np.ndarray,
    timestamps: Sequence[int] | np.ndarray,
) -> orchestrator_pb2.ReadingColumns:
    """Readings as columns for `TelemetryClient.send` (row i: sensor_ids[i], values[i],
    timestamps[i] in Unix nanoseconds, 0 = now); numpy arrays are converted whole."""
    return orchestrator_pb2.ReadingColumns(
        sensor_ids=list(sensor_ids),
        values=np.asarray(values, dtype=np.float64).tolist(),
        timestamps_unix_nanos=np.asarray(timestamps, dtype=np.int64).tolist(),
    )


def partition_header_value(partition: str) -> str:
    """`partition` as a gRPC header value: printable ASCII as is, anything else
    percent-encoded (deterministic, so a key always hashes the same)."""
    if partition.isascii() and partition.isprintable():
        return partition
    return quote(partition, safe="")


def shard_target(partition: str, shards: Sequence[str]) -> str:
    """The one of `shards` (per-shard addresses, e.g. the StatefulSet's
    `orchestrator-0.orchestrator-headless...:50051`) that owns `partition`: rendezvous
    (highest random weight) hashing on the address, so the order of `shards` does not matter,
    and adding a shard moves only the keys the new shard wins (about 1/(N+1) of them, all to it);
    removing one moves only its keys. For clusters without Istio's consistent hashing."""
    if not shards:
        raise ValueError("shard_target needs at least one shard address")
    key = partition.encode()

    def weight(shard: str) -> bytes:
        return blake2b(shard.encode() + b"\0" + key, digest_size=8).digest()

    return max(shards, key=weight)


# Statuses that refuse one batch (named in the trailers) rather than the stream.
_BATCH_REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS})


@dataclass(frozen=True, slots=True)
class RejectedBatch:
    """A batch the orchestrator refused (bad input, or a batch id reused with other readings):
    handed back to the caller; resending it unchanged cannot succeed."""

    batch: orchestrator_pb2.TelemetryBatch
    code: grpc.StatusCode
    details: str


class StreamFailed(RuntimeError):
    """The orchestrator rejected the stream for a reason a resend cannot fix."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass
class ClientStats:
    batches_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    duplicates: int = 0
    batches_rejected: int = 0  # refused by the orchestrator, handed back (see `rejected`)
    reconnects: int = 0
    alerts: int = 0
    verdicts: int = 0


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    _attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.multiplier**self._attempt)
        self._attempt += 1
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self._attempt = 0


class TelemetryClient:
    """Stream batches to an orchestrator with at-least-once delivery.

    `partition` is the ownership key sent on every stream (`x-sentinel-partition`; default: the
    client id): the mesh sends all streams with one key to the same orchestrator replica. A
    sensor must always be sent under the same key, by whichever client sends it.
    `on_verdicts(batch_id, verdicts)`, `on_alert(alert)` and `on_ack(ack)` are called from the
    client's receive task in arrival order.
    """

    def __init__(
        self,
        target: str,
        *,
        client_id: str | None = None,
        partition: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        verdicts: orchestrator_pb2.VerdictMode = orchestrator_pb2.VERDICT_MODE_ANOMALIES,
        max_unacked: int = 64,
        backoff: Backoff | None = None,
        on_verdicts: Callable[[int, list[orchestrator_pb2.Verdict]], None] | None = None,
        on_alert: Callable[[orchestrator_pb2.Alert], None] | None = None,
        on_ack: Callable[[orchestrator_pb2.BatchAck], None] | None = None,
        on_rejected: Callable[[RejectedBatch], None] | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        channel_options: Iterable[tuple[str, object]] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.client_id = client_id or uuid.uuid4().hex
        self.partition = partition or self.client_id
        self._credentials = credentials
        self._verdict_mode = verdicts
        self._unacked: OrderedDict[int, orchestrator_pb2.TelemetryBatch] = OrderedDict()
        self._room = asyncio.Semaphore(max_unacked)
        # Batches to send, then _CLOSE once the client is closing.
        self._outbox: asyncio.Queue[object] = asyncio.Queue()
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        # Ids start at the clock (microseconds), not at 1: a producer restarted under the same
        # client id must not reuse ids the orchestrator still remembers — a reused id is acked
        # as a duplicate and never scored.
        self._next_batch_id = time.time_ns() // 1000
        self._backoff = backoff or Backoff()
        self._on_verdicts = on_verdicts
        self._on_alert = on_alert
        self._on_ack = on_ack
        self._on_rejected = on_rejected
        # Batches the orchestrator refused, oldest first (also given to `on_rejected`).
        self.rejected: list[RejectedBatch] = []
        self._metadata = (
            (CLIENT_ID_HEADER, self.client_id),
            (PARTITION_HEADER, partition_header_value(self.partition)),
            *((k, v) for k, v in metadata if k.lower() != PARTITION_HEADER),
        )
        self._options = tuple(channel_options)
        self.max_message_bytes = max_message_bytes
        self._runner: asyncio.Task | None = None
        self._closing = False
        self.stats = ClientStats()

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    async def __aenter__(self) -> TelemetryClient:
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="telemetry-client")

    async def send(
        self,
        readings: Sequence[orchestrator_pb2.Reading] | orchestrator_pb2.ReadingColumns,
        verdicts: orchestrator_pb2.VerdictMode | None = None,
    ) -> int:
        """Queue one batch; waits while `max_unacked` batches are unacknowledged.

        `readings`: Reading messages, or the same readings as columns (`reading_columns`),
        which cost less to build and to decode at the orchestrator.
        `verdicts` overrides the client's verdict mode for this batch (e.g. NONE for history).
        A batch larger than `max_message_bytes` (the server's limit, default 16 MiB) raises
        ValueError: the server would refuse it with RESOURCE_EXHAUSTED on every resend.
        """
        self._raise_if_failed()
        batch = orchestrator_pb2.TelemetryBatch(
            batch_id=self._next_batch_id,
            verdicts=self._verdict_mode if verdicts is None else verdicts,
        )
        if isinstance(readings, orchestrator_pb2.ReadingColumns):
            batch.columns.CopyFrom(readings)
            count = len(readings.sensor_ids)
        else:
            batch.readings.extend(readings)
            count = len(batch.readings)
        size = batch.ByteSize()
        if size > self.max_message_bytes:
            raise ValueError(
                f"batch of {count} readings is {size} bytes, more than "
                f"max_message_bytes={self.max_message_bytes}; send smaller batches"
            )
        await self._acquire_room()
        batch_id = batch.batch_id = self._next_batch_id
        self._next_batch_id += 1
        self._unacked[batch_id] = batch
        self._all_acked.clear()
        self._outbox.put_nowait(batch)
        return batch_id

    async def _acquire_room(self) -> None:
        if self._runner is None or not self._room.locked():
            await self._room.acquire()
            return
        # Wait for room, but not on a client that has failed: raise its error instead.
        acquiring = asyncio.ensure_future(self._room.acquire())
        await asyncio.wait({acquiring, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            self._raise_if_failed()
            raise RuntimeError("the client is closed")

    async def flush(self) -> None:
        """Wait until every sent batch is acked (or the client failed)."""
        if self._runner is None:
            raise RuntimeError("the client is not started (use `async with` or start())")
        waiter = asyncio.ensure_future(self._all_acked.wait())
        try:
            await asyncio.wait({waiter, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        self._raise_if_failed()

    async def close(self) -> None:
        """Flush, then end the stream cleanly."""
        try:
            if self._runner is not None and not self._runner.done():
                await self.flush()
        finally:
            self._closing = True
            self._outbox.put_nowait(_CLOSE)
            if self._runner is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._runner), timeout=5)
                except TimeoutError:
                    self._runner.cancel()
                    await asyncio.gather(self._runner, return_exceptions=True)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._runner is not None and self._runner.done() and not self._runner.cancelled():
            error = self._runner.exception()
            if error is not None:
                raise error

    def _channel(self) -> grpc.aio.Channel:
        options = (
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            *self._options,
        )
        if self._credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        return grpc.aio.secure_channel(self.target, self._credentials, options=options)

    async def _run(self) -> None:
        async with self._channel() as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            while True:
                outcome = await self._one_stream(stub)
                if outcome == "closed":
                    return
                self.stats.reconnects += 1
                if outcome == "hint":
                    self._backoff.reset()
                    continue
                delay = self._backoff.next_delay()
                log.info("stream lost; reconnecting", extra={"delay_s": round(delay, 3)})
                await asyncio.sleep(delay)

    async def _requests(
        self, ended: asyncio.Event
    ) -> AsyncIterator[orchestrator_pb2.TelemetryBatch]:
        # Everything in the outbox is also in _unacked: resend from _unacked, in order.
        while not self._outbox.empty():
            if self._outbox.get_nowait() is _CLOSE:
                return
        for unacked in list(self._unacked.values()):
            self.stats.batches_resent += 1
            yield unacked
        while True:
            batch = await self._next_outgoing(ended)
            if batch is None:
                return
            self.stats.batches_sent += 1
            yield batch

    async def _next_outgoing(self, ended: asyncio.Event) -> orchestrator_pb2.TelemetryBatch | None:
        """The next batch in the outbox, or None once this generator's stream has ended or the
        client is closing.

        gRPC does not stop consuming a request iterator when the call finishes, so without
        this a dead stream's generator would still take the next batch from the outbox and
        the live stream would never send it (it stayed unacked until the next reconnect).
        """
        getter = asyncio.ensure_future(self._outbox.get())
        stopper = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
        if not getter.done() or getter.cancelled():
            return None
        item = getter.result()
        if ended.is_set():
            # The batch is still in _unacked: the next stream resends it. Keep a close request.
            if item is _CLOSE:
                self._outbox.put_nowait(_CLOSE)
            return None
        return item if isinstance(item, orchestrator_pb2.TelemetryBatch) else None

    async def _one_stream(self, stub: orchestrator_pb2_grpc.OrchestratorStub) -> str:
        if self._closing and not self._unacked:
            return "closed"
        ended = asyncio.Event()
        call = stub.StreamTelemetry(
            self._requests(ended), metadata=self._metadata, wait_for_ready=True
        )
        hinted = False
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "ack":
                    self._backoff.reset()
                    self._acked(event.ack)
                elif kind == "verdicts":
                    self.stats.verdicts += len(event.verdicts.verdicts)
                    if self._on_verdicts is not None and event.verdicts.verdicts:
                        self._on_verdicts(
                            event.verdicts.verdicts[0].batch_id, list(event.verdicts.verdicts)
                        )
                elif kind == "alert":
                    self.stats.alerts += 1
                    if self._on_alert is not None:
                        self._on_alert(event.alert)
                elif kind == "reconnect":
                    hinted = True
        except grpc.aio.AioRpcError as error:
            details = error.details() or ""
            if error.code() in RETRYABLE and _TOO_LARGE not in details:
                return "retry"
            if error.code() in _BATCH_REFUSALS and self._reject(error):
                return "hint"  # the rest goes on at once, on a new stream
            if error.code() == grpc.StatusCode.INTERNAL and details == _LOCAL_WRITE_FAILURE:
                return "retry"
            raise StreamFailed(error.code(), error.details() or "") from error
        finally:
            ended.set()
        if hinted:
            return "hint"
        return "closed" if self._closing and not self._unacked else "retry"

    def _reject(self, error: grpc.aio.AioRpcError) -> bool:
        """Hand the batch named in the trailers back to the caller; False if none is named
        (the refusal concerns the stream, e.g. a bad header: it fails the client)."""
        named = dict(error.trailing_metadata() or ()).get(REJECTED_BATCH_HEADER)
        if named is None or not str(named).isdigit():
            return False
        batch = self._unacked.pop(int(named), None)
        if batch is None:
            return False
        self._room.release()
        if not self._unacked:
            self._all_acked.set()
        rejected = RejectedBatch(batch, error.code(), error.details() or "")
        self.rejected.append(rejected)
        self.stats.batches_rejected += 1
        log.warning(
            "batch refused by the orchestrator; going on with the rest",
            extra={
                "batch_id": batch.batch_id,
                "code": error.code().name,
                "details": rejected.details,
            },
        )
        if self._on_rejected is not None:
            self._on_rejected(rejected)
        return True

    def _acked(self, ack: orchestrator_pb2.BatchAck) -> None:
        if self._unacked.pop(ack.batch_id, None) is None:
            return  # an ack for a batch already acked on an earlier stream
        self._room.release()
        self.stats.batches_acked += 1
        self.stats.readings_acked += ack.readings_accepted
        if ack.duplicate:
            self.stats.duplicates += 1
        if not self._unacked:
            self._all_acked.set()
        if self._on_ack is not None:
            self._on_ack(ack)

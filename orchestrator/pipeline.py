"""The transport-free data plane: batches in, verdicts and alerts out.

`prepare` (synchronous, so batches enter the window store in arrival order) → `score`
(concurrent fan-out, awaitable, may overlap with later batches' prepare) → `finish`
(synchronous: combine, incidents, encode). gRPC servicers only decode/encode around it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator

from sentinel.errors import BatchConflict
from sentinel.v1 import orchestrator_pb2

from .alert_hub import AlertHub
from .batches import DecodedBatch
from .combine import STATUS_CODES, Combined, Combiner, EngineVotes, Status
from .dedup import DedupWindow
from .encode import encode_alert, encode_verdicts
from .history import History
from .incidents import AlertEvent, IncidentTracker
from .metrics import OrchestratorMetrics
from .shadows import FinishedRound, InFlight, ShadowCall, Shadows
from .specialist_pool import CompactWindows, DistinctSensors, SpecialistPool
from .windows import BatchWindows

log = logging.getLogger(__name__)

_STATUS_NAMES = {code: status.value for status, code in STATUS_CODES.items()}


@dataclass(slots=True)
class BatchResult:
    batch_id: int
    readings_accepted: int
    duplicate: bool = False
    verdicts: list[orchestrator_pb2.Verdict] = field(default_factory=list)
    alerts: list[orchestrator_pb2.Alert] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """Batches whose readings are in the window store and await their votes."""

    batches: list[DecodedBatch]
    duplicates: dict[int, int]  # index in `batches` -> readings accepted the first time
    sensor_ids: list[str]
    values: np.ndarray
    timestamps: np.ndarray
    stored: BatchWindows
    views: dict[str, np.ndarray]
    batch_starts: list[tuple[int, int]]  # (first row, batch id) of each scored batch

    def reading_of(self, row: int) -> tuple[int, int]:
        """(batch id, index in that batch) of a row of this round."""
        index = bisect.bisect_right(self.batch_starts, (row, math.inf)) - 1
        start, batch_id = self.batch_starts[index]
        return batch_id, row - start

    span: trace.Span
    started: float
    client_id: str = ""
    votes: list[EngineVotes] = field(default_factory=list)
    shadow_calls: list[ShadowCall] = field(default_factory=list)
    closed: bool = False  # finished or abandoned

    @property
    def windows(self) -> np.ndarray:
        return self.stored.windows

    @property
    def fill(self) -> np.ndarray:
        return self.stored.fill


class ScoringPipeline:
    def __init__(
        self,
        history: History,
        pool: SpecialistPool,
        combiner: Combiner,
        incidents: IncidentTracker,
        hub: AlertHub,
        dedup: DedupWindow,
        metrics: OrchestratorMetrics,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
        shadows: Shadows | None = None,
    ) -> None:
        self.history = history
        self.shadows = shadows
        self.windows = history.windows
        self.pool = pool
        self.combiner = combiner
        self.incidents = incidents
        self.hub = hub
        self.dedup = dedup
        self.metrics = metrics
        self._tracer = tracer
        self._propagator = propagator
        # Called with every alert event after the watchers (e.g. the Alertmanager sender).
        self.sinks: list[Callable[[AlertEvent], None]] = []
        # Rounds between prepare and finish/abandon; checkpoints wait for none (`quiesced`).
        self._rounds_open = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._admitting = asyncio.Event()
        self._admitting.set()

    def parent_from_traceparent(self, traceparent: str) -> otel_context.Context:
        """Context of a client's per-batch W3C traceparent (parents that batch's span)."""
        return self._propagator.extract({"traceparent": traceparent})

    def prepare(
        self,
        batches: Sequence[DecodedBatch],
        client_id: str = "",
        parent: otel_context.Context | None = None,
        links: Sequence[trace.Link] = (),
    ) -> Prepared:
        duplicates: dict[int, int] = {}
        fresh: list[DecodedBatch] = []
        for index, batch in enumerate(batches):
            try:
                first = self.dedup.seen(client_id, batch.batch_id, batch.digest)
            except BatchConflict as conflict:
                # Nothing of this group is prepared: the caller may prepare batches[:index].
                for begun in fresh:
                    self.dedup.abandon(client_id, begun.batch_id)
                raise BatchConflict(batch.batch_id, index) from conflict
            if first is not None:
                duplicates[index] = first
            else:
                fresh.append(batch)
                self.dedup.begin(client_id, batch.batch_id, batch.rows, batch.digest)
        if len(fresh) == 1:
            sensor_ids, values, timestamps = (
                fresh[0].sensor_ids,
                fresh[0].values,
                fresh[0].timestamps,
            )
        else:
            sensor_ids = [s for b in fresh for s in b.sensor_ids]
            values = np.concatenate([b.values for b in fresh]) if fresh else np.empty(0)
            timestamps = (
                np.concatenate([b.timestamps for b in fresh]) if fresh else np.empty(0, np.int64)
            )
        span = self._tracer.start_span(
            "sentinel.batch",
            context=parent,
            kind=trace.SpanKind.SERVER if parent is not None else trace.SpanKind.INTERNAL,
            links=[*links, *self._coalesced_links(batches, parent)],
            attributes={
                "sentinel.batch_ids": [b.batch_id for b in batches],
                "sentinel.readings": len(sensor_ids),
                "sentinel.duplicates": len(duplicates),
            },
        )
        try:
            stored, views = self.history.append(sensor_ids, values, timestamps)
        except BaseException as error:
            for batch in fresh:
                self.dedup.abandon(client_id, batch.batch_id)
            span.set_status(trace.Status(trace.StatusCode.ERROR, repr(error)))
            span.end()
            raise
        self._rounds_open += 1
        self._quiet.clear()
        if stored.evicted:
            self.metrics.evicted_sensors.inc(stored.evicted)
        self.metrics.batches.inc(len(fresh))
        self.metrics.duplicate_batches.inc(len(duplicates))
        self.metrics.readings.inc(len(sensor_ids))
        return Prepared(
            batches=list(batches),
            duplicates=duplicates,
            sensor_ids=sensor_ids,
            values=values,
            timestamps=timestamps,
            stored=stored,
            views=views,
            batch_starts=_starts(fresh),
            span=span,
            started=time.perf_counter(),
            client_id=client_id,
        )

    def _coalesced_links(
        self, batches: Sequence[DecodedBatch], parent: otel_context.Context | None
    ) -> list[trace.Link]:
        """Batches scored together whose own traceparent is not the span's parent: link them."""
        parent_context = trace.get_current_span(parent).get_span_context() if parent else None
        links = []
        for batch in batches:
            if batch.traceparent:
                context = trace.get_current_span(
                    self.parent_from_traceparent(batch.traceparent)
                ).get_span_context()
                if context.is_valid and context != parent_context:
                    links.append(trace.Link(context, {"sentinel.batch_id": batch.batch_id}))
        return links

    def shadow_slots(self) -> InFlight | None:
        """A stream's bound on its shadow calls (None without shadows)."""
        return self.shadows.stream_slots() if self.shadows is not None else None

    async def score(
        self,
        prepared: Prepared,
        forwarded: Sequence[tuple[str, str]] = (),
        shadow_slots: InFlight | None = None,
    ) -> Prepared:
        if prepared.sensor_ids:
            token = otel_context.attach(trace.set_span_in_context(prepared.span))
            try:
                rows = len(prepared.sensor_ids)
                requests = self.pool.requests(
                    prepared.sensor_ids,
                    prepared.values,
                    prepared.timestamps,
                    prepared.windows,
                    prepared.fill,
                    lambda name: self.history.views_for(name, prepared.views),
                    _compact(prepared.stored),
                    DistinctSensors(prepared.stored.sensors, prepared.stored.group),
                    self.shadows.row_columns() if self.shadows is not None else None,
                )
                if self.shadows is not None:
                    # Beside the specialists' calls, on the same request bytes; never awaited
                    # here unless verdicts are to carry the shadows' votes.
                    prepared.shadow_calls = self.shadows.launch(
                        requests, rows, forwarded, prepared.span, shadow_slots
                    )
                prepared.votes = await self.pool.score(requests, rows, forwarded)
                if self.shadows is not None:
                    await self.shadows.wait(prepared.shadow_calls)
            finally:
                otel_context.detach(token)
        return prepared

    def finish(self, prepared: Prepared, all_verdicts: bool = False) -> list[BatchResult]:
        try:
            results = self._finish(prepared, all_verdicts)
        except BaseException:
            self.abandon(prepared)
            raise
        self._close(prepared, scored=True)
        return results

    def abandon(self, prepared: Prepared) -> None:
        """A round that cannot finish: its batches are forgotten by dedup (a resend is scored;
        their readings stay in the history) and its span ends with an error."""
        if not prepared.closed:
            prepared.span.set_status(trace.Status(trace.StatusCode.ERROR, "round abandoned"))
        if self.shadows is not None:
            self.shadows.abandon(prepared.shadow_calls)
        self._close(prepared, scored=False)

    def _close(self, prepared: Prepared, scored: bool) -> None:
        if prepared.closed:
            return
        prepared.closed = True
        for index, batch in enumerate(prepared.batches):
            if index not in prepared.duplicates:
                if scored:
                    self.dedup.commit(prepared.client_id, batch.batch_id)
                else:
                    self.dedup.abandon(prepared.client_id, batch.batch_id)
        if not scored:
            prepared.span.end()
        self._rounds_open -= 1
        if self._rounds_open == 0:
            self._quiet.set()

    @property
    def rounds_open(self) -> int:
        """Rounds prepared and not yet finished or abandoned (all streams and Detect calls)."""
        return self._rounds_open

    async def admit(self) -> None:
        """Wait while a checkpoint is being taken (called before `prepare`)."""
        await self._admitting.wait()

    @contextlib.asynccontextmanager
    async def quiesced(self, timeout: float) -> AsyncIterator[bool]:
        """Hold new rounds back and wait (up to `timeout`) for open rounds to finish, so that
        history, incidents and dedup agree; yields whether that was reached in time."""
        self._admitting.clear()
        try:
            try:
                await asyncio.wait_for(self._quiet.wait(), timeout)
                quiet = True
            except TimeoutError:
                quiet = False
            yield quiet
        finally:
            self._admitting.set()

    def _finish(self, prepared: Prepared, all_verdicts: bool) -> list[BatchResult]:
        span = prepared.span
        rows = len(prepared.sensor_ids)
        votes = self.history.calibrate(prepared.stored, prepared.votes)
        prepared.votes = votes
        combined = self.combiner.combine(rows, votes, self.pool.names)
        trace_id = _trace_id(span)
        # Incidents of sensors evicted to make room for this round resolve before it counts.
        events = self.incidents.resolve_evicted(prepared.stored.evicted_ids)
        shadows = []
        if self.shadows is not None:
            self.shadows.forget(prepared.stored.evicted_ids)
            shadows = self.shadows.finished(
                prepared.shadow_calls,
                FinishedRound(
                    prepared.sensor_ids,
                    prepared.timestamps,
                    prepared.values,
                    prepared.stored,
                    votes,
                    self.pool.names,
                ),
            )
        events += self.incidents.update(
            prepared.sensor_ids,
            prepared.timestamps,
            prepared.values,
            combined.anomaly,
            combined.score,
            explain=lambda row: _explain(votes, row),
            trace_id=trace_id,
            group=prepared.stored.group,
        )
        # ... and so do the oldest incidents beyond the incident budget (update).
        evicted = sum(e.incident.resolve_reason == "evicted" for e in events)
        self.metrics.incidents_evicted.inc(evicted)
        alerts = [
            encode_alert(e) if e.row is None else encode_alert(e, *prepared.reading_of(e.row))
            for e in events
        ]
        # Published inside the batch span, so each log line carries this batch's trace_id.
        with trace.use_span(span):
            self.publish(events, alerts)
        self._count_verdicts(combined)

        results: list[BatchResult] = []
        offset = 0
        for index, batch in enumerate(prepared.batches):
            if index in prepared.duplicates:
                results.append(
                    BatchResult(batch.batch_id, prepared.duplicates[index], duplicate=True)
                )
                continue
            rows_of_batch = np.arange(offset, offset + batch.rows)
            offset += batch.rows
            if all_verdicts or batch.verdict_mode == orchestrator_pb2.VERDICT_MODE_ALL:
                chosen = rows_of_batch
            elif batch.verdict_mode == orchestrator_pb2.VERDICT_MODE_ANOMALIES:
                chosen = rows_of_batch[combined.anomaly[rows_of_batch]]
            else:
                chosen = rows_of_batch[:0]
            verdicts = encode_verdicts(
                chosen,
                batch.batch_id,
                prepared.sensor_ids,
                prepared.timestamps,
                prepared.values,
                combined,
                votes,
                shadows,
            )
            results.append(BatchResult(batch.batch_id, batch.rows, verdicts=verdicts))
        if results:
            # Alerts travel with the last batch of the group: they are known only now.
            results[-1].alerts = alerts
        span.set_attribute("sentinel.anomalies", int(combined.anomaly.sum()))
        span.set_attribute("sentinel.alerts", len(alerts))
        if combined.missing:
            span.set_attribute("sentinel.missing_specialists", list(combined.missing))
        span.end()
        self.metrics.batch_latency.observe(time.perf_counter() - prepared.started)
        return results

    async def process(
        self,
        batches: Sequence[DecodedBatch],
        client_id: str = "",
        forwarded: Sequence[tuple[str, str]] = (),
        parent: otel_context.Context | None = None,
        all_verdicts: bool = False,
    ) -> list[BatchResult]:
        await self.admit()
        prepared = self.prepare(batches, client_id, parent)
        try:
            scored = await self.score(prepared, forwarded, self.shadow_slots())
        except BaseException:
            self.abandon(prepared)
            raise
        return self.finish(scored, all_verdicts)

    def publish(
        self, events: Sequence[AlertEvent], alerts: Sequence[orchestrator_pb2.Alert]
    ) -> None:
        """Alert events to watchers, sinks (e.g. Alertmanager), metrics and the log."""
        for alert, event in zip(alerts, events, strict=True):
            self.metrics.alerts.labels(event.state).inc()
            self.hub.publish(alert)
            for sink in self.sinks:
                sink(event)
            incident = event.incident
            # alert_trace_id is the trace of the batch that opened the incident (Alert.trace_id).
            log.info(
                "alert %s",
                event.state,
                extra={
                    "sensor_id": incident.sensor_id,
                    "alert_id": incident.alert_id,
                    "state": event.state,
                    "resolve_reason": incident.resolve_reason,
                    "alert_trace_id": incident.trace_id,
                    "peak_value": incident.peak_value,
                    "peak_score": incident.peak_score,
                    "anomalous_readings": incident.anomalous_readings,
                    "reasons": incident.reasons,
                },
            )

    def sweep_stale(self, stale_after_seconds: float) -> int:
        """Resolve the incidents of sensors silent for `stale_after_seconds`; returns how many."""
        events = self.incidents.sweep_stale(stale_after_seconds)
        if self.shadows is not None:
            self.shadows.sweep_stale(stale_after_seconds)
        self.publish(events, [encode_alert(event) for event in events])
        return len(events)

    def _count_verdicts(self, combined: Combined) -> None:
        if combined.status.size == 0:
            return
        counts = np.bincount(combined.status.astype(np.int64), minlength=len(_STATUS_NAMES))
        for code, count in enumerate(counts.tolist()):
            if count:
                self.metrics.verdicts.labels(_STATUS_NAMES[code]).inc(count)
        self.metrics.anomalies.inc(int(combined.anomaly.sum()))


def _explain(votes: Sequence[EngineVotes], row: int) -> tuple[list[str], list[str]]:
    reasons, versions = [], []
    for vote in votes:
        if vote.anomalies[row] and not vote.warming_up[row]:
            reason = vote.reasons.get(row)
            if reason:
                reasons.append(f"{vote.name}: {reason}")
            versions.append(f"{vote.name}@{vote.version}")
    return reasons, versions


def _compact(stored: BatchWindows) -> CompactWindows | None:
    if stored.extended is None:
        return None
    return CompactWindows(stored.extended, stored.group, stored.rank)


def _starts(batches: Sequence[DecodedBatch]) -> list[tuple[int, int]]:
    starts, row = [], 0
    for batch in batches:
        starts.append((row, batch.batch_id))
        row += batch.rows
    return starts


def _trace_id(span: trace.Span) -> str:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


__all__ = ["BatchResult", "Prepared", "ScoringPipeline", "Status"]

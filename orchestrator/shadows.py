"""Shadow engines: scored on their specialist's own Score requests, compared, never voting.

`SENTINEL_SHADOWS` names, per specialist, a second engine (a retrained model, another version).
Every Score request built for that specialist (the same bytes) also goes to its shadow, beside
the specialists' calls. The shadow's answer is calibrated as the specialist's would be (with
calibration state of its own, kept within `max_shadow_bytes_per_sensor` and apart from the
history's budget, so a shadow never crowds a specialist out), compared row by row with the
specialist's vote (agreement metrics), and fed to a verdict with the shadow in the specialist's
place and to incidents of that verdict: the alerts the shadow would have opened, counted and
never sent. A shadow must read what its specialist reads (same window length and views);
otherwise it sits out (counted as `mismatch`). Row columns (sensor ids, timestamps) may differ:
the specialist's request then carries those its shadow reads too.

What a shadow can never do: vote, make a verdict degraded, delay a verdict or an ack. Its calls
run beside the specialists' and nothing waits for them; a stream has at most `inflight` shadow
calls in flight or waiting to be compared (more are skipped and counted). Answers are compared
after the round's verdicts are out, in the order the rounds finished, so that the shadow's
calibration advances exactly as its specialist's does; a skipped or failed call leaves its rows
uncompared (and out of the shadow's calibration). Only with `in_verdicts` (for replay and
evaluate) does a round wait for its shadows and carry their votes in its verdicts.

Shadow state (calibration, incidents) is not checkpointed: after a restart it warms up again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import grpc
import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator

from sentinel.v1 import specialist_pb2

from .agreement import compare
from .calibration import CalibrationParams
from .combine import Combined, Combiner, EngineVotes
from .history import Declaration, DeclarationRefused, History
from .incidents import IncidentTracker
from .metrics import OrchestratorMetrics
from .specialist_pool import (
    SPECIALIST_SERVICE,
    RowColumns,
    SpecialistClient,
    SpecialistPool,
    SpecialistTarget,
    engine_votes,
)
from .windows import BatchWindows, WindowStore

log = logging.getLogger(__name__)

# Alert events of a shadow verdict, per row (ShadowVote.alert).
NO_ALERT, ALERT_OPENED, ALERT_RESOLVED = 0, 1, 2


class InFlight:
    """The shadow calls of one stream that are in flight or waiting to be compared."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def acquire(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1


@dataclass(frozen=True, slots=True)
class FinishedRound:
    """What a round's comparison needs once its verdicts are out (no windows: they are big)."""

    sensor_ids: Sequence[str]
    timestamps: np.ndarray
    values: np.ndarray
    stored: BatchWindows
    votes: Sequence[EngineVotes]  # the specialists', calibrated
    expected: Sequence[str]  # configured specialists (the combiner's `expected`)


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    """One shadow on one round: its calibrated vote and the verdict with it in place."""

    name: str
    vote: EngineVotes
    verdict: Combined
    alerts: np.ndarray  # int8 [rows]: NO_ALERT, ALERT_OPENED or ALERT_RESOLVED


@dataclass(slots=True)
class ShadowCall:
    shadow: Shadow
    task: asyncio.Task[specialist_pb2.ScoreResponse | None]
    slots: InFlight | None
    round: FinishedRound | None = None  # set when the round's verdicts are out
    outcome: ShadowOutcome | None = None
    released: bool = False
    on_release: Callable[[], None] = lambda: None

    def release(self) -> None:
        """Compared or dropped: its stream may start another shadow call."""
        if self.released:
            return
        self.released = True
        if self.slots is not None:
            self.slots.release()
        self.on_release()


@dataclass(slots=True)
class Shadow:
    client: SpecialistClient
    incidents: IncidentTracker
    # Calls of finished rounds, in the order the rounds finished, waiting for their answer.
    pending: deque[ShadowCall] = field(default_factory=deque)
    mismatch_logged: bool = False

    @property
    def name(self) -> str:
        return self.client.name


class Shadows:
    def __init__(
        self,
        targets: Sequence[SpecialistTarget],
        options: Sequence[tuple[str, object]],
        credentials: grpc.ChannelCredentials | None,
        primaries: SpecialistPool,
        windows: WindowStore,
        calibration: CalibrationParams,
        flag_below: dict[str, float],
        combiner: Combiner,
        new_incidents: Callable[[], IncidentTracker],
        metrics: OrchestratorMetrics,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
        timeout_seconds: float,
        inflight: int,
        max_bytes_per_sensor: int,
        in_verdicts: bool = False,
    ) -> None:
        self._primaries = {c.name: c for c in primaries.clients}
        # Calibration only (no window, no views): the shadows read the specialists' history.
        self._calibration = History(windows, calibration=calibration, flag_below=flag_below)
        self._max_bytes = max_bytes_per_sensor
        clients = [
            SpecialistClient(t, options, credentials, self._check, shadow=True) for t in targets
        ]
        self.shadows = [Shadow(c, new_incidents()) for c in clients]
        self.pool = SpecialistPool(
            clients,
            timeout_seconds=timeout_seconds,
            observe=metrics.observe_shadow_call,
            on_declared=self._declare,
            tracer=tracer,
            propagator=propagator,
        )
        self._combiner = combiner
        self._metrics = metrics
        self._tracer = tracer
        self._propagator = propagator
        self._timeout = timeout_seconds
        self.inflight = inflight
        self.in_verdicts = in_verdicts
        self.outstanding = 0
        """Shadow calls launched and not yet compared or dropped."""
        metrics.bind_shadows([s.name for s in self.shadows], lambda name: self._up(name))

    def _up(self, name: str) -> bool:
        return next(s.client.up for s in self.shadows if s.name == name)

    async def start(self) -> None:
        await self.pool.start()

    async def close(self) -> None:
        for shadow in self.shadows:
            for call in shadow.pending:
                call.task.cancel()
        await self.pool.close()

    def _released(self) -> None:
        self.outstanding -= 1

    def stream_slots(self) -> InFlight:
        return InFlight(self.inflight)

    # -- declarations -------------------------------------------------------------------------
    def _check(self, name: str, declaration: Declaration) -> None:
        """A shadow's channels must fit the shadow calibration budget (all shadows together)."""
        for index, (channel, spec) in enumerate(declaration.channels.items()):
            if not 0.0 < spec.flag_below < 1.0:
                raise DeclarationRefused(
                    f"channels[{index}] {channel!r}: flag_below must be in (0, 1), "
                    f"got {spec.flag_below}"
                )
        others = sum(
            len(s.client.declaration.channels)
            for s in self.shadows
            if s.name != name and s.client.declaration is not None
        )
        needed = self._calibration.calibration.bytes_per_channel * (
            others + len(declaration.channels)
        )
        if needed > self._max_bytes:
            raise DeclarationRefused(
                f"shadow calibration needs {needed} bytes per sensor, over the budget of "
                f"{self._max_bytes} (max_shadow_bytes_per_sensor)"
            )

    def _declare(self, name: str, declaration: Declaration) -> None:
        self._calibration.declare(name, Declaration(0, {}, declaration.channels))
        primary = self._primaries[name]
        shadow = next(s for s in self.shadows if s.name == name)
        if primary.engine_version:
            self._metrics.touch_shadow(name, primary.engine_version, shadow.client.engine_version)

    def _unready(self, shadow: Shadow) -> str | None:
        """Why `shadow` cannot score its specialist's request of this round (None: it can)."""
        primary = self._primaries[shadow.name]
        mine = shadow.client.declaration
        if not shadow.client.described or mine is None:
            return "not_ready"
        theirs = primary.declaration
        if theirs is None or (mine.window_length, mine.views) != (
            theirs.window_length,
            theirs.views,
        ):
            if not shadow.mismatch_logged:
                shadow.mismatch_logged = True
                log.error(
                    "shadow reads another window or views than its specialist; not used",
                    extra={
                        "specialist": shadow.name,
                        "shadow_window_length": mine.window_length,
                        "window_length": theirs.window_length if theirs else None,
                    },
                )
            return "mismatch"
        shadow.mismatch_logged = False
        return None

    # -- one round ----------------------------------------------------------------------------
    def row_columns(self) -> dict[str, RowColumns]:
        """By specialist, the row columns its (described) shadow reads: its specialist's
        requests carry them too, since the shadow scores the same bytes."""
        return {
            s.name: s.client.row_columns()
            for s in self.shadows
            if s.client.described and s.client.declaration is not None
        }

    def launch(
        self,
        requests: dict[str, bytes],
        rows: int,
        metadata: Sequence[tuple[str, str]],
        batch_span: trace.Span,
        slots: InFlight | None,
    ) -> list[ShadowCall]:
        """Start each ready shadow's call on its specialist's request; returns at once."""
        calls = []
        for shadow in self.shadows:
            request = requests.get(shadow.name)
            reason = "not_ready" if request is None else self._unready(shadow)
            held = None
            if reason is None and not self.in_verdicts and slots is not None:
                if slots.acquire():
                    held = slots
                else:
                    reason = "busy"
            if reason is not None or request is None:
                self._metrics.shadow_skipped.labels(shadow.name, reason or "not_ready").inc()
                continue
            task = asyncio.create_task(
                self._traced_call(shadow, request, rows, metadata, batch_span.get_span_context()),
                name=f"shadow-{shadow.name}",
            )
            self.outstanding += 1
            calls.append(ShadowCall(shadow, task, held, on_release=self._released))
        return calls

    async def wait(self, calls: Sequence[ShadowCall]) -> None:
        """With `in_verdicts`: until every call of the round has answered or failed."""
        if self.in_verdicts and calls:
            await asyncio.wait([c.task for c in calls])

    def finished(self, calls: Sequence[ShadowCall], finished: FinishedRound) -> list[ShadowOutcome]:
        """The round's verdicts are out: queue its calls for comparison (after the earlier
        rounds'). With `in_verdicts` they are compared now and their outcomes returned."""
        if not calls:
            return []
        # Windows are not needed to compare; dropping them bounds what waiting calls hold.
        finished = replace(
            finished, stored=replace(finished.stored, windows=_EMPTY, extended=_EMPTY)
        )
        for call in calls:
            call.round = finished
            call.shadow.pending.append(call)
            if not self.in_verdicts:
                call.task.add_done_callback(functools.partial(self._answered, call.shadow))
        if self.in_verdicts:
            for shadow in {id(c.shadow): c.shadow for c in calls}.values():
                self._drain(shadow)
            return [c.outcome for c in calls if c.outcome is not None]
        loop = asyncio.get_running_loop()
        for shadow in {id(c.shadow): c.shadow for c in calls}.values():
            loop.call_soon(self._drain, shadow)  # after the verdicts, never before them
        return []

    def abandon(self, calls: Sequence[ShadowCall]) -> None:
        """The round will not finish: its calls are cancelled and nothing is compared."""
        for call in calls:
            call.task.cancel()
            if call.round is None:
                call.release()

    def forget(self, sensor_ids: Sequence[str]) -> None:
        """Sensors evicted from the history: their shadow incidents end too (unsent)."""
        for shadow in self.shadows:
            shadow.incidents.resolve_evicted(sensor_ids)

    def sweep_stale(self, stale_after_seconds: float) -> None:
        for shadow in self.shadows:
            shadow.incidents.sweep_stale(stale_after_seconds)

    # -- calls and comparisons ----------------------------------------------------------------
    async def _traced_call(
        self,
        shadow: Shadow,
        request: bytes,
        rows: int,
        metadata: Sequence[tuple[str, str]],
        batch: trace.SpanContext,
    ) -> specialist_pb2.ScoreResponse | None:
        if batch.trace_flags.sampled:
            # A trace of its own, linked to the batch: the call may outlive the batch's span.
            parent = otel_context.Context()
            links = [trace.Link(batch, {"sentinel.link": "batch"})]
        else:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(batch))  # unsampled too
            links = []
        span = self._tracer.start_span(
            "sentinel.v1.Specialist/Score shadow",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            links=links,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": SPECIALIST_SERVICE,
                "rpc.method": "Score",
                "sentinel.specialist": shadow.name,
                "sentinel.shadow": True,
                "sentinel.rows": rows,
            },
        )
        with trace.use_span(span, end_on_exit=True):
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            try:
                response = await shadow.client.score(
                    request,
                    rows,
                    (*metadata, *carrier.items()),
                    self._timeout,
                    self._metrics.observe_shadow_call,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.observe_shadow_call(
                    shadow.name, shadow.client.engine_version, 0.0, "INTERNAL"
                )
                log.exception("shadow call raised", extra={"specialist": shadow.name})
                response = None
            if response is None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "no answer"))
            else:
                span.set_attribute("sentinel.engine_version", response.engine_version)
            return response

    def _answered(self, shadow: Shadow, task: asyncio.Task) -> None:
        self._drain(shadow)

    def _drain(self, shadow: Shadow) -> None:
        """Compare the waiting calls whose answer is in, oldest round first."""
        while shadow.pending and shadow.pending[0].task.done():
            call = shadow.pending.popleft()
            try:
                response = None if call.task.cancelled() else call.task.result()
                if response is not None and call.round is not None:
                    call.outcome = self._compare(shadow, response, call.round)
            except Exception:  # never into the verdict path: log, count, go on
                self._metrics.observe_shadow_call(
                    shadow.name, shadow.client.engine_version, 0.0, "INTERNAL"
                )
                log.exception("shadow comparison failed", extra={"specialist": shadow.name})
            finally:
                call.release()

    def _compare(
        self, shadow: Shadow, response: specialist_pb2.ScoreResponse, round_: FinishedRound
    ) -> ShadowOutcome:
        (vote,) = self._calibration.calibrate(round_.stored, [engine_votes(shadow.name, response)])
        primary = next((v for v in round_.votes if v.name == shadow.name), None)
        if primary is not None:
            self._metrics.count_agreement(
                shadow.name, primary.version, vote.version, compare(primary, vote)
            )
        votes = [vote if v.name == shadow.name else v for v in round_.votes]
        if primary is None:
            votes.append(vote)
        rows = len(round_.sensor_ids)
        verdict = self._combiner.combine(rows, votes, round_.expected)
        events = shadow.incidents.update(
            round_.sensor_ids,
            round_.timestamps,
            round_.values,
            verdict.anomaly,
            verdict.score,
            explain=_unexplained,
            group=round_.stored.group,
        )
        alerts = np.zeros(rows, dtype=np.int8)
        opened = 0
        for event in events:
            if event.row is not None:
                alerts[event.row] = ALERT_OPENED if event.state == "open" else ALERT_RESOLVED
            opened += event.state == "open"
        self._metrics.shadow_incidents.labels(shadow.name, vote.version or "unknown").inc(opened)
        return ShadowOutcome(shadow.name, vote, verdict, alerts)


_EMPTY = np.empty((0, 0), dtype=np.float32)


def _unexplained(row: int) -> tuple[Sequence[str], Sequence[str]]:
    return (), ()  # shadow incidents are only counted: no reasons to collect


__all__ = ["FinishedRound", "InFlight", "ShadowCall", "ShadowOutcome", "Shadows"]

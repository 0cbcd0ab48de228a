"""Clients of the configured specialists: discovery by Describe, scoring with a deadline.

A specialist that fails, times out or has never described itself simply has no votes for the
batch; the combiner turns that into `degraded` verdicts naming it. Nothing here raises into
the ingest path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator

from sentinel.tensors import distinct_sensors, encode_views, encode_windows
from sentinel.v1 import specialist_pb2, specialist_pb2_grpc

from .combine import EngineVotes
from .history import ChannelDecl, Declaration, DeclarationRefused, RowColumn
from .views import RangeSpec, SeasonalSpec

log = logging.getLogger(__name__)

SPECIALIST_SERVICE = specialist_pb2.DESCRIPTOR.services_by_name["Specialist"].full_name
SCORE_METHOD = f"/{SPECIALIST_SERVICE}/Score"
INVALID_RESPONSE = "INVALID_RESPONSE"
"""The `code` of a call whose answer was unusable (wrong number of rows, reasons of rows that
do not exist), in the metrics."""
WARN_EVERY_SECONDS = 60.0
"""An unreachable specialist is logged as a warning at most this often (and when it is back)."""


def channel_options(client_retries: bool, max_message_bytes: int) -> list[tuple[str, object]]:
    """Channel settings; gRPC-level retries only outside a mesh (Istio retries inside it)."""
    service_config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if client_retries:
        service_config["methodConfig"] = [
            {
                "name": [{"service": SPECIALIST_SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.02s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1 if client_retries else 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # Reconnect quickly after a specialist restarts, so verdicts recover fast.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.min_reconnect_backoff_ms", 200),
    ]


@dataclass(frozen=True, slots=True)
class SpecialistTarget:
    name: str
    target: str


def parse_targets(spec: str) -> list[SpecialistTarget]:
    """`name=target,name=target` → targets; names unique and non-empty."""
    targets: list[SpecialistTarget] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, target = part.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"specialist {part!r}: expected name=target")
        if any(t.name == name.strip() for t in targets):
            raise ValueError(f"specialist {name.strip()!r} configured twice")
        targets.append(SpecialistTarget(name.strip(), target.strip()))
    return targets


@dataclass(frozen=True, slots=True)
class DistinctSensors:
    """The round's sensor ids, each once in order of first appearance: row i's is
    ids[row_index[i]] (the window store groups rows so already: BatchWindows.sensors/group)."""

    ids: Sequence[str]
    row_index: np.ndarray  # int64 [rows]

    @classmethod
    def of(cls, sensor_ids: Sequence[str]) -> DistinctSensors:
        """From per-row ids, for callers without the window store's grouping at hand."""
        return cls(*distinct_sensors(sensor_ids))


# What a request carries of the row columns: None = every one, in per-row form (for engines
# predating the declaration), else the declared ones (sensor ids in distinct form).
RowColumns = frozenset[RowColumn] | None
# After a refused request with only the declared row columns: how long every column is sent.
EVERY_COLUMN_SECONDS = 300.0


def columns_for(*declared: RowColumns) -> RowColumns:
    """The row columns one request must carry for every engine that reads it (a specialist and
    its shadow score the same bytes): every one if one of them predates the declaration."""
    union: set[RowColumn] = set()
    for columns in declared:
        if columns is None:
            return None
        union |= columns
    return frozenset(union)


class SharedColumns:
    """A round's columns that every engine reading them gets alike: each encoded at most once
    (when the first request needing it is built), then concatenated into each request that
    needs it (concatenated protobuf encodings merge)."""

    def __init__(
        self,
        sensor_ids: Sequence[str],
        values: np.ndarray,
        timestamps: np.ndarray,
        sensors: DistinctSensors | None,
    ) -> None:
        self._sensor_ids = sensor_ids
        self._values = values
        self._timestamps = timestamps
        self._sensors = sensors

    @functools.cached_property
    def values(self) -> bytes:
        # Every request says that this orchestrator reads sparse reasons (2 bytes; engines
        # predating the field ignore it and answer one reason per row).
        return specialist_pb2.ScoreRequest(
            values=self._values.tolist(), sparse_reasons=True
        ).SerializeToString()

    @functools.cached_property
    def per_row_ids(self) -> bytes:
        return specialist_pb2.ScoreRequest(sensor_ids=self._sensor_ids).SerializeToString()

    @functools.cached_property
    def distinct_ids(self) -> bytes:
        sensors = self._sensors or DistinctSensors.of(self._sensor_ids)
        return specialist_pb2.ScoreRequest(
            sensors=sensors.ids, sensor_rows=sensors.row_index.tolist()
        ).SerializeToString()

    @functools.cached_property
    def timestamps(self) -> bytes:
        return specialist_pb2.ScoreRequest(
            timestamps_unix_nanos=self._timestamps.tolist()
        ).SerializeToString()

    def carrying(self, columns: RowColumns) -> bytes:
        """Values plus the row columns `columns` says (see `columns_for`)."""
        if columns is None:
            return self.values + self.per_row_ids + self.timestamps
        request = self.values
        if RowColumn.SENSOR_IDS in columns:
            request += self.distinct_ids
        if RowColumn.TIMESTAMPS in columns:
            request += self.timestamps
        return request


@dataclass(frozen=True, slots=True)
class CompactWindows:
    """Windows as one row per sensor: row i's window of length L (the full store length) is
    extended[group[i], rank[i] : rank[i] + L]."""

    extended: np.ndarray
    group: np.ndarray
    rank: np.ndarray


def _window_fields(
    windows: np.ndarray, length: int, compact: CompactWindows | None
) -> dict[str, Any]:
    """ScoreRequest window fields for an engine reading the last `length` values: per row, or
    per sensor when a batch holds several readings per sensor and that is smaller."""
    rows = windows.shape[0]
    if compact is not None and length:
        store = windows.shape[1]
        runs, width = compact.extended.shape
        sent = width - (store - length)
        if runs * sent < rows * length:
            return {
                "windows": encode_windows(compact.extended[:, store - length :]),
                "window_rows": compact.group.tolist(),
                "window_offsets": compact.rank.tolist(),
                "window_length": length,
            }
    return {"windows": encode_windows(windows[:, windows.shape[1] - length :])}


# Observes (specialist, engine version, seconds, grpc status name) after every Score call.
CallObserver = Callable[[str, str, float, str], None]
# Checks a specialist's declaration (raises DeclarationRefused) / starts keeping it.
DeclarationCheck = Callable[[str, Declaration], None]


_ROW_COLUMNS = {
    specialist_pb2.ROW_COLUMN_SENSOR_IDS: RowColumn.SENSOR_IDS,
    specialist_pb2.ROW_COLUMN_TIMESTAMPS: RowColumn.TIMESTAMPS,
}


def parse_row_columns(info: specialist_pb2.DescribeResponse) -> RowColumns:
    """The row columns a DescribeResponse declares; None for an engine predating the field."""
    if not info.row_columns:
        return None
    columns = set()
    for index, column in enumerate(info.row_columns):
        if column in _ROW_COLUMNS:
            columns.add(_ROW_COLUMNS[column])
        elif column != specialist_pb2.ROW_COLUMN_NONE:
            # Sending the engine requests without a column it reads would fail every call.
            raise DeclarationRefused(f"row_columns[{index}]: unknown column {column}")
    return frozenset(columns)


def parse_declaration(info: specialist_pb2.DescribeResponse) -> Declaration:
    """The per-sensor history a DescribeResponse asks for and the row columns it reads;
    DeclarationRefused names the field."""
    views: dict[str, RangeSpec | SeasonalSpec] = {}
    for index, view in enumerate(info.views):
        where = f"views[{index}] {view.name!r}"
        if not view.name or view.name in views:
            raise DeclarationRefused(f"{where}: empty or repeated name")
        if view.kind == specialist_pb2.VIEW_KIND_RANGE:
            views[view.name] = RangeSpec(readings=view.readings, block=view.block)
        elif view.kind == specialist_pb2.VIEW_KIND_SEASONAL:
            views[view.name] = SeasonalSpec(
                period_seconds=view.period_seconds,
                bucket_seconds=view.bucket_seconds,
                smoothing=view.smoothing,
                tolerance=view.tolerance_buckets,
            )
        else:
            raise DeclarationRefused(f"{where}: unknown kind {view.kind}")
    channels: dict[str, ChannelDecl] = {}
    for index, channel in enumerate(info.channels):
        where = f"channels[{index}] {channel.name!r}"
        if not channel.name or channel.name in channels:
            raise DeclarationRefused(f"{where}: empty or repeated name")
        if channel.calibration not in (
            specialist_pb2.CALIBRATION_LIKELIHOOD,
            specialist_pb2.CALIBRATION_STANDARDIZED_LIKELIHOOD,
        ):
            raise DeclarationRefused(f"{where}: unknown calibration {channel.calibration}")
        channels[channel.name] = ChannelDecl(
            standardize=channel.calibration == specialist_pb2.CALIBRATION_STANDARDIZED_LIKELIHOOD,
            flag_below=channel.flag_below,
        )
    return Declaration(
        window_length=info.window_length,
        views=views,
        channels=channels,
        row_columns=parse_row_columns(info),
    )


def answer_problem(response: specialist_pb2.ScoreResponse, rows: int) -> str | None:
    """What makes a ScoreResponse to a request of `rows` rows unusable (None: nothing)."""
    columns: list[tuple[str, Sized]] = [
        ("scores", response.scores),
        ("anomalies", response.anomalies),
        ("warming_up", response.warming_up),
        *((f"channel {c.name!r}", c.values) for c in response.channels),
    ]
    for name, column in columns:
        if len(column) != rows:
            return f"{name} has {len(column)} entries for {rows} rows"
    reasons, reason_rows = response.reasons, response.reason_rows
    if not reason_rows:
        # Dense (one per row, engines predating reason_rows) or none at all.
        if reasons and len(reasons) != rows:
            return f"reasons has {len(reasons)} entries for {rows} rows"
        return None
    if len(reasons) != len(reason_rows):
        return f"reasons has {len(reasons)} entries for {len(reason_rows)} reason_rows"
    at = np.asarray(reason_rows, dtype=np.int64)
    if int(at[-1]) >= rows or (at.size > 1 and not (np.diff(at) > 0).all()):
        return f"reason_rows must be ascending rows below {rows}"
    return None


class DenseReasons(Mapping[int, str]):
    """The reasons of an engine predating reason_rows (one per row, mostly empty) as {row:
    reason} of the rows that have one, read where asked: verdicts and incidents look up
    flagged rows only, so the empty ones are never made into a dict (0.11 ms per 3,000 rows)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self._reasons = reasons

    def __getitem__(self, row: int) -> str:
        reason = self._reasons[row] if 0 <= row < len(self._reasons) else ""
        if not reason:
            raise KeyError(row)
        return reason

    def __iter__(self) -> Iterator[int]:
        return (row for row, reason in enumerate(self._reasons) if reason)

    def __len__(self) -> int:
        return sum(1 for reason in self._reasons if reason)


def engine_votes(name: str, response: specialist_pb2.ScoreResponse) -> EngineVotes:
    """A (checked: `answer_problem`) ScoreResponse as the columns the combiner and
    calibration read."""
    reasons: Mapping[int, str]
    if response.reason_rows:
        reasons = dict(zip(response.reason_rows, response.reasons, strict=True))
    else:
        reasons = DenseReasons(response.reasons)
    return EngineVotes(
        name=name,
        version=response.engine_version,
        scores=np.asarray(response.scores, dtype=np.float64),
        anomalies=np.asarray(response.anomalies, dtype=bool),
        warming_up=np.asarray(response.warming_up, dtype=bool),
        reasons=reasons,
        channels={c.name: np.asarray(c.values, dtype=np.float64) for c in response.channels},
    )


class SpecialistClient:
    def __init__(
        self,
        target: SpecialistTarget,
        options: Sequence[tuple[str, object]],
        credentials: grpc.ChannelCredentials | None = None,
        check: DeclarationCheck | None = None,
        shadow: bool = False,
    ) -> None:
        self.name = target.name
        self._check = check
        # A shadow's trouble never touches verdicts: its log lines say so.
        self._role = "shadow" if shadow else "specialist"
        self.target = target.target
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target.target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target.target, credentials, options=options)
        self._stub = specialist_pb2_grpc.SpecialistStub(self._channel)
        # Score requests arrive pre-serialised: the columns every specialist shares are
        # encoded once per batch, not once per specialist (see SpecialistPool.fan_out).
        self._score: grpc.aio.UnaryUnaryMultiCallable[bytes, specialist_pb2.ScoreResponse]
        self._score = self._channel.unary_unary(
            SCORE_METHOD,
            request_serializer=None,
            response_deserializer=specialist_pb2.ScoreResponse.FromString,
        )
        self.window_length: int | None = None
        self.declaration: Declaration | None = None
        self.engine_version = ""
        self.engine = ""
        self.up = False
        """Whether the last Describe or Score succeeded (the `specialist_up` gauge)."""
        self._warned_at: float | None = None
        self._call_warned_at: float | None = None
        # Until then (time.monotonic), requests carry every row column in per-row form: a
        # replica refused one without them (see `row_columns`).
        self._every_column_until = 0.0

    @property
    def described(self) -> bool:
        return self.window_length is not None

    def row_columns(self) -> RowColumns:
        """The row columns this specialist's requests carry: what it declared, or every one
        (None) if it predates the declaration, or while a replica that does lately refused a
        request without them. One target may be served by replicas of two revisions (a
        rolling update, a rollback, a v1/v2 split): the Describe answered by a current one
        does not speak for the others."""
        if self.declaration is None or time.monotonic() < self._every_column_until:
            return None
        return self.declaration.row_columns

    async def describe(self, timeout: float) -> bool:
        try:
            info = await self._stub.Describe(specialist_pb2.DescribeRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            self.up = False
            self._warn_unreachable(error)
            return False
        try:
            declaration = parse_declaration(info)
        except DeclarationRefused as refused:
            self.up = False
            self._log_refused(refused)
            return False
        if not self._fits(declaration):
            self.up = False
            return False
        if self._warned_at is not None:
            log.warning(f"{self._role} reachable again", extra={"specialist": self.name})
            self._warned_at = None
        self.up = True
        changed = (declaration, info.engine_version) != (self.declaration, self.engine_version)
        self.declaration = declaration
        self.window_length = info.window_length
        self.engine_version = info.engine_version
        self.engine = info.engine
        if changed:
            log.info(
                f"{self._role} described",
                extra={
                    "specialist": self.name,
                    "engine": info.engine,
                    "version": info.engine_version,
                    "window_length": info.window_length,
                },
            )
        return True

    def recheck(self) -> bool:
        """Check the declaration again (others may have been declared since); on refusal the
        specialist is left out until it describes itself again."""
        if self.declaration is None or self._fits(self.declaration):
            return True
        self.window_length = None
        self.declaration = None
        return False

    def _fits(self, declaration: Declaration) -> bool:
        """Whether the history can keep what `declaration` asks for (refusals are logged)."""
        if self._check is None:
            return True
        try:
            self._check(self.name, declaration)
        except DeclarationRefused as refused:
            self._log_refused(refused)
            return False
        return True

    def _warn_unreachable(self, error: grpc.aio.AioRpcError) -> None:
        # Retried every rediscovery tick: one warning per WARN_EVERY_SECONDS, not one per second.
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_SECONDS:
            log.debug("describe failed", extra={"specialist": self.name, "code": error.code().name})
            return
        self._warned_at = now
        log.warning(
            "shadow unreachable; nothing is compared until it answers (verdicts unaffected)"
            if self._role == "shadow"
            else "specialist unreachable; its votes are missing and verdicts are degraded",
            extra={
                "specialist": self.name,
                "target": self.target,
                "code": error.code().name,
                "detail": error.details(),
            },
        )

    def _call_failure_level(self) -> int:
        """A specialist's failed call is a warning every time (its rows are degraded); a
        shadow's at most once per WARN_EVERY_SECONDS (it only counts, and a hung one fails
        every call), debug otherwise."""
        if self._role != "shadow":
            return logging.WARNING
        now = time.monotonic()
        if self._call_warned_at is not None and now - self._call_warned_at < WARN_EVERY_SECONDS:
            return logging.DEBUG
        self._call_warned_at = now
        return logging.WARNING

    def _log_refused(self, refused: DeclarationRefused) -> None:
        # Every sensor's history grows with what the engines ask for: refuse, stay missing.
        log.error(
            f"{self._role} declaration refused; not used: %s",
            refused,
            extra={"specialist": self.name, "refused": str(refused)},
        )

    async def score(
        self,
        request: bytes,
        rows: int,
        metadata: Sequence[tuple[str, str]],
        timeout: float,
        observe: CallObserver,
    ) -> specialist_pb2.ScoreResponse | None:
        started = time.perf_counter()
        try:
            # None when the answer is no ScoreResponse (grpc logs the decode error).
            response: specialist_pb2.ScoreResponse | None = await self._score(
                request, timeout=timeout, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            observe(
                self.name, self.engine_version, time.perf_counter() - started, error.code().name
            )
            self.up = False
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                # Possibly a different pod or version next time: learn it again.
                self.window_length = None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT and self.row_columns() is not None:
                # Likely a replica of the previous revision, which needs every row column.
                self._every_column_until = time.monotonic() + EVERY_COLUMN_SECONDS
                log.warning(
                    f"{self._role} refused a request with only its declared row columns; "
                    f"sending every column for {EVERY_COLUMN_SECONDS:g} s",
                    extra={"specialist": self.name, "detail": error.details()},
                )
            log.log(
                self._call_failure_level(),
                f"{self._role} call failed",
                extra={
                    "specialist": self.name,
                    "code": error.code().name,
                    "detail": error.details(),
                },
            )
            return None
        except asyncio.CancelledError:
            raise
        seconds = time.perf_counter() - started
        if response is None:
            # grpc hands back None for an answer that is no ScoreResponse (and logs it).
            observe(self.name, self.engine_version, seconds, INVALID_RESPONSE)
            log.log(
                self._call_failure_level(),
                f"{self._role} answered something that is not a ScoreResponse",
                extra={"specialist": self.name},
            )
            return None
        self.up = True
        problem = answer_problem(response, rows)
        if problem is not None:
            # Counted as a failed call: its votes are missing as if it had not answered.
            observe(self.name, response.engine_version, seconds, INVALID_RESPONSE)
            log.error(
                f"{self._role} answered a ScoreResponse that does not fit the request: %s",
                problem,
                extra={"specialist": self.name, "problem": problem},
            )
            return None
        observe(self.name, response.engine_version, seconds, "OK")
        if response.engine_version:
            self.engine_version = response.engine_version
        return response

    async def close(self) -> None:
        await self._channel.close()


class SpecialistPool:
    """All configured specialists; re-describes lost ones in the background."""

    def __init__(
        self,
        clients: Sequence[SpecialistClient],
        timeout_seconds: float,
        observe: CallObserver,
        on_declared: DeclarationCheck,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
        rediscover_seconds: float = 1.0,
    ) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self.clients = list(clients)
        self.names = tuple(c.name for c in self.clients)
        self._timeout = timeout_seconds
        self._observe = observe
        self._on_declared = on_declared
        self._rediscover_seconds = rediscover_seconds
        self._task: asyncio.Task[None] | None = None
        self._described_once: set[str] = set()
        self.all_described = asyncio.Event()
        """Set once every configured specialist has described itself (each at least once)."""

    async def start(self) -> None:
        await self.describe_missing()
        self._task = asyncio.create_task(self._rediscover_loop(), name="specialist-rediscovery")

    async def describe_missing(self) -> None:
        pending = [c for c in self.clients if not c.described]
        if pending:
            await asyncio.gather(*(c.describe(self._timeout) for c in pending))
            # Described concurrently, each was checked against the history without the others:
            # check again one by one, so together they stay within the budget.
            for client in pending:
                if client.declaration is not None and client.described and client.recheck():
                    self._on_declared(client.name, client.declaration)
                    self._described_once.add(client.name)
        if len(self._described_once) == len(self.clients):
            self.all_described.set()

    async def _rediscover_loop(self) -> None:
        while True:
            await asyncio.sleep(self._rediscover_seconds)
            try:
                await self.describe_missing()
            except Exception:  # never let discovery die; it is retried next tick
                log.exception("specialist rediscovery failed")

    async def fan_out(
        self,
        sensor_ids: Sequence[str],
        values: np.ndarray,
        timestamps: np.ndarray,
        windows: np.ndarray,
        fill: np.ndarray,
        metadata: Sequence[tuple[str, str]],
        views_for: Callable[[str], dict[str, np.ndarray]] = lambda name: {},
        compact: CompactWindows | None = None,
        sensors: DistinctSensors | None = None,
    ) -> list[EngineVotes]:
        """Score the rows on every described specialist concurrently; failures are left out.
        `compact`: the same windows as one row per sensor (sent instead when smaller)."""
        requests = self.requests(
            sensor_ids, values, timestamps, windows, fill, views_for, compact, sensors
        )
        return await self.score(requests, len(sensor_ids), metadata)

    def requests(
        self,
        sensor_ids: Sequence[str],
        values: np.ndarray,
        timestamps: np.ndarray,
        windows: np.ndarray,
        fill: np.ndarray,
        views_for: Callable[[str], dict[str, np.ndarray]] = lambda name: {},
        compact: CompactWindows | None = None,
        sensors: DistinctSensors | None = None,
        shadow_columns: Mapping[str, RowColumns] | None = None,
    ) -> dict[str, bytes]:
        """The encoded Score request of every specialist ready for this batch, by name. Each
        carries the row columns its specialist declared; `sensors`: the ids in distinct form
        (computed from `sensor_ids` if not given); `shadow_columns`: by specialist, the row
        columns its shadow reads (which scores the same request, so it carries those too)."""
        # Concatenated protobuf encodings merge: shared columns + per-engine windows.
        shared = SharedColumns(sensor_ids, values, timestamps, sensors)
        shadow_columns = shadow_columns or {}
        requests = {}
        for client in self.clients:
            if not client.described or client.window_length > windows.shape[1]:
                continue
            length = client.window_length or 0
            views = views_for(client.name)
            if client.declaration is not None and set(views) != set(client.declaration.views):
                continue  # described after this batch's history was taken: next batch
            own = specialist_pb2.ScoreRequest(
                window_fill=np.minimum(fill, length).tolist(),
                views=encode_views(views),
                **_window_fields(windows, length, compact),
            ).SerializeToString()
            declared = client.row_columns()
            columns = (
                columns_for(declared, shadow_columns[client.name])
                if client.name in shadow_columns
                else declared
            )
            requests[client.name] = shared.carrying(columns) + own
        return requests

    async def score(
        self, requests: dict[str, bytes], rows: int, metadata: Sequence[tuple[str, str]]
    ) -> list[EngineVotes]:
        """Send each specialist its request (see `requests`) concurrently; failures are left
        out of the votes."""
        ready = [c for c in self.clients if c.name in requests]
        calls = [self._traced_score(c, requests[c.name], rows, metadata) for c in ready]
        # return_exceptions: an unexpected error in one specialist's call is logged and counted
        # for that specialist (its votes are missing: degraded), not raised for the first one
        # only while the others' are lost.
        responses = await asyncio.gather(*calls, return_exceptions=True)
        votes = []
        for client, response in zip(ready, responses, strict=True):
            if isinstance(response, BaseException) and not isinstance(response, Exception):
                raise response  # cancellation, interpreter exit
            if isinstance(response, Exception):
                self._observe(client.name, client.engine_version, 0.0, "INTERNAL")
                log.error(
                    "specialist call raised; its votes are missing",
                    exc_info=response,
                    extra={"specialist": client.name},
                )
                continue
            if response is not None:
                votes.append(engine_votes(client.name, response))
        return votes

    async def _traced_score(
        self,
        client: SpecialistClient,
        request: bytes,
        rows: int,
        forwarded: Sequence[tuple[str, str]],
    ) -> specialist_pb2.ScoreResponse | None:
        with self._tracer.start_as_current_span(
            "sentinel.v1.Specialist/Score",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": SPECIALIST_SERVICE,
                "rpc.method": "Score",
                "sentinel.specialist": client.name,
                "sentinel.rows": rows,
            },
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            response = await client.score(
                request, rows, (*forwarded, *carrier.items()), self._timeout, self._observe
            )
            if response is None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "no answer"))
            else:
                span.set_attribute("sentinel.engine_version", response.engine_version)
            return response

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients))

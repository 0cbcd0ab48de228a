"""Decode and validate a TelemetryBatch into numpy columns (transport-free).

Handling of questionable input, as documented in the README:
- NaN / +-inf values, empty, over-long or non-printable sensor ids, negative timestamps,
  timestamps further in the future than `max_future_seconds`, and batches over
  `max_batch_readings` are rejected whole with InvalidArgument naming the field
  (`readings[17].value`).
- Nonzero timestamps before `min_timestamp_unix_nanos` (default 1973-03-03) are rejected too:
  as nanoseconds they are implausibly old, and they are what seconds, milliseconds or
  microseconds look like (the message says which). 0 turns the check off.
- timestamp 0 means "now": stamped with the arrival time.
- Out-of-order timestamps are accepted: windows follow arrival order, which is the order the
  sensor produced them in on one stream.
- An empty batch is valid and acked with 0 readings.

Size before content: gRPC refuses a message larger than `largest_batch_bytes` (the widest
batch these limits accept) before any of it is read, and `parse_batch` counts the readings of a
big message before parsing it: parsing makes an object of every reading however small it is on
the wire (~64 bytes per 2-byte empty reading), so 10 MB of empty readings would take ~330 MB
before the reading limit could be checked.
"""

from __future__ import annotations

import hashlib
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from sentinel.errors import InvalidArgument
from sentinel.v1 import orchestrator_pb2

NANOS = 1_000_000_000
MAX_TRACEPARENT = 128  # characters (a W3C traceparent is 55)
# Messages up to this size are parsed without counting their readings first: even if all of
# them were empty, parsing costs at most ~16 MiB, once at a time (deserializing runs on the
# event loop). Larger ones are counted first (a loop bounded by the reading limit).
COUNT_FIRST_BYTES = 512 * 1024
# Memory of a decoded reading beside its sensor-id string: a list slot, a float64, an int64.
READING_COLUMNS_BYTES = 24
# A CPython str object's header and allocator rounding (the payload is counted apart).
STR_OBJECT_BYTES = 80


@dataclass(frozen=True, slots=True)
class Limits:
    max_batch_readings: int = 10_000
    max_sensor_id_length: int = 256
    max_future_seconds: float = 86_400.0
    min_timestamp_unix_nanos: int = 10**17


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    batch_id: int
    sensor_ids: list[str]
    values: np.ndarray  # float64
    timestamps: np.ndarray  # int64 Unix nanoseconds
    verdict_mode: int  # orchestrator_pb2.VerdictMode, UNSPECIFIED resolved to ANOMALIES
    traceparent: str
    digest: bytes = b""  # of the readings as sent (see readings_digest)
    nbytes: int = 0  # memory of the columns and id strings (estimate, see decode_batch)
    sensors: int = 0  # distinct sensor ids (0: not counted; take it as one per reading)
    deepest: int = 0  # the most readings of one sensor (0: not counted; take it as all)

    @property
    def rows(self) -> int:
        return len(self.sensor_ids)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def largest_batch_bytes(limits: Limits) -> int:
    """Wire size of the largest batch `limits` accept: `max_batch_readings` readings, each with
    the longest sensor id in 4-byte UTF-8 characters, a value and a 10-byte timestamp varint,
    plus the longest traceparent and the widest batch id and verdict mode. No valid batch is
    larger, so a server that refuses larger messages refuses only invalid ones."""
    id_bytes = 4 * limits.max_sensor_id_length
    reading = (1 + _varint_size(id_bytes) + id_bytes) + (1 + 8) + (1 + 10)
    trace = 4 * MAX_TRACEPARENT
    header = (1 + 10) + (1 + 10) + (1 + _varint_size(trace) + trace)
    return limits.max_batch_readings * (1 + _varint_size(reading) + reading) + header


@dataclass(frozen=True, slots=True)
class WireCount:
    """What `count_readings` read of a serialized TelemetryBatch without parsing it."""

    readings: int  # counted up to one past the limit
    batch_id: int | None = None
    verdict_mode: int = 0  # as sent (0 = unspecified: anomalies)
    columnar: bool = False  # the readings came as `columns`


def parse_batch(
    data: bytes, limits: Limits, now_ns: int | None = None, counted: WireCount | None = None
) -> DecodedBatch:
    """A serialized TelemetryBatch → DecodedBatch (InvalidArgument carries its batch id).

    A message big enough to hold more readings than allowed has them counted before it is
    parsed (`counted`, if the caller did it already), so one with too many is refused at the
    cost of that count, not of a parse."""
    if counted is None and len(data) > COUNT_FIRST_BYTES:
        counted = count_readings(data, limits.max_batch_readings)
    if counted is not None and counted.readings > limits.max_batch_readings:
        raise InvalidArgument(
            "columns" if counted.columnar else "readings",
            f"more than {limits.max_batch_readings} readings; the limit is "
            f"{limits.max_batch_readings} per batch",
            counted.batch_id,
        )
    try:
        message = orchestrator_pb2.TelemetryBatch.FromString(data)
    except DecodeError as error:  # e.g. a string field that is not valid UTF-8
        raise InvalidArgument("request", f"not a valid TelemetryBatch: {error}") from None
    try:
        return decode_batch(message, limits, now_ns)
    except InvalidArgument as error:
        error.batch_id = message.batch_id
        raise


def count_readings(data: bytes, stop_after: int) -> WireCount:
    """Readings, batch id and verdict mode of a serialized TelemetryBatch, read from the wire
    format without parsing the readings; stops once more than `stop_after` readings are found.
    ~0.1 µs per reading (each is skipped by its length prefix)."""
    position, end, count, batch_id, mode, columnar = 0, len(data), 0, None, 0, False
    try:
        while position < end:
            key = data[position]
            if key == 0x12:  # field 2 (readings), length-delimited: the common case inline
                size = data[position + 1]
                if size < 0x80:
                    position += 2 + size
                elif data[position + 2] < 0x80:  # readings of 128 bytes to 16 KiB
                    position += 3 + (size & 0x7F) + (data[position + 2] << 7)
                else:
                    size, position = _varint(data, position + 1)
                    position += size
                count += 1
                if count > stop_after:
                    return WireCount(count, batch_id, mode, columnar)
                continue
            key, position = _varint(data, position)
            field, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value, position = _varint(data, position)
                if field == 1:
                    batch_id = value
                elif field == 3:
                    mode = value
            elif wire_type == 2:
                size, position = _varint(data, position)
                if field == 5:  # columns: as many readings as its longest column
                    rows = _column_rows(data, position, position + size, stop_after - count)
                    count, columnar = count + rows, True
                    if count > stop_after:
                        return WireCount(count, batch_id, mode, columnar)
                position += size
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            else:  # groups (3, 4) are no field of a TelemetryBatch; 6 and 7 do not exist
                raise InvalidArgument(
                    "request", f"not a valid TelemetryBatch: wire type {wire_type}", batch_id
                )
    except IndexError:
        position = end + 1
    if position > end:
        raise InvalidArgument("request", "not a valid TelemetryBatch: truncated", batch_id)
    return WireCount(count, batch_id, mode, columnar)


def _column_rows(data: bytes, start: int, end: int, stop_after: int) -> int:
    """Rows of a serialized ReadingColumns (its longest column, as `reading_count` counts):
    sensor ids one by one (stopping past `stop_after`), packed values by their length, packed
    timestamps by their varints' last bytes (numpy, no copy)."""
    ids = values = stamps = 0
    position = start
    while position < end:
        key, position = _varint(data, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 2:
            size, position = _varint(data, position)
            if field == 1:
                ids += 1
                if ids > stop_after:
                    return ids
            elif field == 2:
                values += size // 8
            elif field == 3:
                window = np.frombuffer(data, np.uint8, size, position)
                stamps += int(np.count_nonzero(window < 0x80))
            position += size
        elif wire_type == 0:  # a timestamp sent unpacked
            _, position = _varint(data, position)
            stamps += field == 3
        elif wire_type == 1:  # a value sent unpacked
            position += 8
            values += field == 2
        elif wire_type == 5:
            position += 4
        else:
            raise InvalidArgument("request", f"not a valid TelemetryBatch: wire type {wire_type}")
    if position > end:
        raise IndexError("a column runs past its message")
    return max(ids, values, stamps)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it (IndexError past the end)."""
    value = shift = 0
    for index in range(position, position + 10):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    raise InvalidArgument("request", "not a valid TelemetryBatch: malformed varint")


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


@dataclass(frozen=True, slots=True)
class _Fields:
    """How an error names row i's fields: `readings[i].value` or `columns.values[i]`."""

    container: str
    columnar: bool

    def of(self, row: int, name: str) -> str:
        if self.columnar:
            return f"{self.container}.{_COLUMN_OF[name]}[{row}]"
        return f"{self.container}[{row}].{name}"


_COLUMN_OF = {
    "sensor_id": "sensor_ids",
    "value": "values",
    "timestamp_unix_nanos": "timestamps_unix_nanos",
}
_ROWS = _Fields("readings", columnar=False)
_COLUMNS = _Fields("columns", columnar=True)


def decode_batch(
    batch: orchestrator_pb2.TelemetryBatch, limits: Limits, now_ns: int | None = None
) -> DecodedBatch:
    columnar = batch.HasField("columns")
    if columnar and batch.readings:
        raise InvalidArgument("columns", "a batch carries readings or columns, not both")
    count = reading_count(batch)
    if count > limits.max_batch_readings:
        raise InvalidArgument(
            "columns" if columnar else "readings",
            f"{count} readings exceeds the limit of {limits.max_batch_readings} per batch",
        )
    if batch.verdicts not in orchestrator_pb2.VerdictMode.values():
        raise InvalidArgument("verdicts", f"unknown verdict mode {batch.verdicts}")
    if columnar:
        fields = _COLUMNS
        sensor_ids, values, timestamps = _from_columns(batch.columns)
    else:
        fields = _ROWS
        sensor_ids, values, timestamps = _columns(batch.readings)
    joined_ids = "\0".join(sensor_ids)
    digest = readings_digest(sensor_ids, values, timestamps, joined_ids)

    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InvalidArgument(fields.of(bad[0], "value"), f"must be finite, got {values[bad[0]]}")
    # History is kept in float32: a value beyond its range would turn into inf there.
    bad = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if bad.size:
        raise InvalidArgument(
            fields.of(bad[0], "value"),
            f"must be within +/-{FLOAT32_MAX:.4g} (kept as float32), got {values[bad[0]]}",
        )
    sensors, deepest = _check_sensor_ids(sensor_ids, limits, fields)
    now_ns = time.time_ns() if now_ns is None else now_ns
    bad = np.flatnonzero(timestamps < 0)
    if bad.size:
        raise InvalidArgument(
            fields.of(bad[0], "timestamp_unix_nanos"), "must be >= 0 (Unix nanoseconds; 0 = now)"
        )
    _check_plausibly_nanoseconds(timestamps, limits.min_timestamp_unix_nanos, fields)
    horizon = now_ns + int(limits.max_future_seconds * NANOS)
    bad = np.flatnonzero(timestamps > horizon)
    if bad.size:
        raise InvalidArgument(
            fields.of(bad[0], "timestamp_unix_nanos"),
            f"{timestamps[bad[0]]} is more than {limits.max_future_seconds:g}s in the future",
        )
    timestamps = np.where(timestamps == 0, now_ns, timestamps)
    mode = batch.verdicts or orchestrator_pb2.VERDICT_MODE_ANOMALIES
    if batch.traceparent and len(batch.traceparent) > MAX_TRACEPARENT:
        raise InvalidArgument("traceparent", f"longer than {MAX_TRACEPARENT} characters")
    # Each id is its own str at most (parsing makes one per reading); the joined ids have the
    # widest character size of them, so this is an upper bound without a loop over the ids.
    nbytes = count * (READING_COLUMNS_BYTES + STR_OBJECT_BYTES) + sys.getsizeof(joined_ids)
    return DecodedBatch(
        batch.batch_id,
        sensor_ids,
        values,
        timestamps,
        mode,
        batch.traceparent,
        digest,
        nbytes,
        sensors,
        deepest,
    )


def reading_count(batch: orchestrator_pb2.TelemetryBatch) -> int:
    """Readings in a batch of either form (for columns: the longest column, so a limit check
    on it cannot be dodged by mismatched lengths)."""
    if batch.HasField("columns"):
        columns = batch.columns
        return max(len(columns.sensor_ids), len(columns.values), len(columns.timestamps_unix_nanos))
    return len(batch.readings)


def _from_columns(
    columns: orchestrator_pb2.ReadingColumns,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = len(columns.sensor_ids)
    for name, column in (
        ("values", columns.values),
        ("timestamps_unix_nanos", columns.timestamps_unix_nanos),
    ):
        if len(column) != rows:
            raise InvalidArgument(
                f"columns.{name}", f"has {len(column)} entries for {rows} sensor_ids"
            )
    # Whole-column conversions in C: no per-reading Python work.
    return (
        list(columns.sensor_ids),
        np.array(columns.values, dtype=np.float64),
        np.array(columns.timestamps_unix_nanos, dtype=np.int64),
    )


def readings_digest(
    sensor_ids: list[str], values: np.ndarray, timestamps: np.ndarray, joined_ids: str = ""
) -> bytes:
    """16-byte BLAKE2b of a batch's readings as sent (timestamp 0 stays 0): a resend has the
    same digest, a batch id reused for other readings does not. Costs ~0.3 ms per 10,000
    readings. Sensor ids are printable, so NUL separates them unambiguously (`joined_ids`:
    the ids joined so, when the caller has them)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(sensor_ids).to_bytes(8, "little"))
    joined = joined_ids or "\0".join(sensor_ids)
    digest.update(joined.encode("utf-8", "surrogatepass"))
    digest.update(values.astype("<f8", copy=False).tobytes())
    digest.update(timestamps.astype("<i8", copy=False).tobytes())
    return digest.digest()


# Unix time now is ~1.7e9 s, ~1.7e12 ms, ~1.7e15 us: each below 1e11 / 1e14 / 1e17 until
# the year 5138. Nanoseconds below 1e17 are dates before March 1973.
_UNITS = ((10**11, "seconds"), (10**14, "milliseconds"), (10**17, "microseconds"))


def _check_plausibly_nanoseconds(timestamps: np.ndarray, minimum: int, fields: _Fields) -> None:
    bad = np.flatnonzero((timestamps > 0) & (timestamps < minimum))
    if not bad.size:
        return
    value = int(timestamps[bad[0]])
    unit = next((name for bound, name in _UNITS if value < bound), None)
    looks = f"looks like {unit}, " if unit else ""
    raise InvalidArgument(
        fields.of(bad[0], "timestamp_unix_nanos"),
        f"{value} is before {minimum} ({looks}expected Unix nanoseconds; "
        "SENTINEL_MIN_TIMESTAMP_UNIX_NANOS=0 accepts old dates)",
    )


def _columns(readings) -> tuple[list[str], np.ndarray, np.ndarray]:
    # One pass over the repeated field: each pass materialises a wrapper per reading, which
    # costs more than the three field reads together.
    # Each read of `sensor_id` makes a new str: a batch keeps one per distinct id (`first`), so
    # 10,000 readings of a few sensors hold a few strings, not 10,000 copies.
    sensor_ids: list[str] = []
    values: list[float] = []
    timestamps: list[int] = []
    first: dict[str, str] = {}
    add_id, add_value, add_timestamp = sensor_ids.append, values.append, timestamps.append
    keep = first.setdefault
    for reading in readings:
        sensor_id = reading.sensor_id
        add_id(keep(sensor_id, sensor_id))
        add_value(reading.value)
        add_timestamp(reading.timestamp_unix_nanos)
    return sensor_ids, np.array(values, dtype=np.float64), np.array(timestamps, dtype=np.int64)


def _check_sensor_ids(
    sensor_ids: list[str], limits: Limits, fields: _Fields = _ROWS
) -> tuple[int, int]:
    """(distinct ids, the most readings of one), once each id is checked: what a scoring
    round's working memory depends on (ScoringBudget.cost)."""
    # Checks run once per distinct id (batches usually repeat a few sensors many times); the
    # index of an offending id is looked up only to name it.
    readings_of = Counter(sensor_ids)
    for sensor_id in readings_of:
        problem = _id_problem(sensor_id, limits)
        if problem is not None:
            raise InvalidArgument(fields.of(sensor_ids.index(sensor_id), "sensor_id"), problem)
    return len(readings_of), max(readings_of.values(), default=0)


def _id_problem(sensor_id: str, limits: Limits) -> str | None:
    if not sensor_id:
        return "must not be empty"
    if len(sensor_id) > limits.max_sensor_id_length:
        return f"{len(sensor_id)} characters exceeds the limit of {limits.max_sensor_id_length}"
    if not sensor_id.isprintable():
        return "must contain only printable characters"
    if _blank(sensor_id):
        return "must not be blank (only spaces or combining marks)"
    return None


def _blank(sensor_id: str) -> bool:
    """Nothing visible: spaces, combining marks (Mn/Me) and format characters (Cf) only."""
    return all(c.isspace() or unicodedata.category(c) in ("Mn", "Me", "Cf") for c in sensor_id)

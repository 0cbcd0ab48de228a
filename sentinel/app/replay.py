"""`sentinel replay`: stream a CSV through the mesh, write one verdict row per input row."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sentinel.client import TelemetryClient
from sentinel.v1 import orchestrator_pb2

NANOS = 1_000_000_000


@dataclass
class Series:
    timestamps_text: list[str]
    timestamps: np.ndarray  # int64 Unix nanoseconds
    values: np.ndarray  # float64
    sensor_ids: list[str]


class InputError(ValueError):
    """A CSV the replay cannot use; the message names the file, row (its line) and column."""


def parse_timestamp(text: str) -> int:
    """ISO-8601 (`2014-07-01 00:00:00`, optional zone; naive = UTC) or Unix seconds."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    try:
        number = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text!r} is neither an ISO-8601 date (2014-07-01 00:00:00) nor Unix seconds"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp()) * NANOS + moment.microsecond * 1000
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not finite")
    if abs(number) >= 2**63 / NANOS:
        raise ValueError(f"{text} is out of range as Unix seconds ({_unit_hint(number)})")
    return int(number * NANOS)


def _unit_hint(seconds: float) -> str:
    """What a number read as Unix seconds probably was."""
    now = time.time()
    for factor, unit in ((1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds")):
        if now * factor / 100 < abs(seconds) < now * factor * 100:
            return f"looks like {unit}"
    return "numbers are read as Unix seconds"


def check_timestamps(
    timestamps: np.ndarray,
    texts: Sequence[str],
    where: Callable[[int], str],
    max_future_seconds: float = 86_400.0,
    min_unix_nanos: int | None = None,
) -> None:
    """The orchestrator's timestamp checks, made before sending: InputError naming the row."""
    if min_unix_nanos is None:
        min_unix_nanos = int(os.environ.get("SENTINEL_MIN_TIMESTAMP_UNIX_NANOS", 10**17))
    horizon = time.time_ns() + int(max_future_seconds * NANOS)
    late = np.flatnonzero(timestamps > horizon)
    if late.size:
        i = int(late[0])
        raise InputError(
            f"{where(i)}: {texts[i]!r} is more than {max_future_seconds:g}s in the future"
            + (f" ({_unit_hint(float(texts[i]))})" if _is_number(texts[i]) else "")
        )
    early = np.flatnonzero(timestamps < min_unix_nanos)
    if early.size:
        i = int(early[0])
        raise InputError(
            f"{where(i)}: {texts[i]!r} is before "
            f"{datetime.fromtimestamp(min_unix_nanos / NANOS, UTC):%Y-%m-%d}, which the "
            "orchestrator refuses (SENTINEL_MIN_TIMESTAMP_UNIX_NANOS=0 accepts old dates)"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(path: Path, line: int, row: dict, fields: dict[str, str], column: str) -> str:
    text = row.get(fields[column])
    if text is None:
        raise InputError(f"{path}, row {line}, column {column!r}: missing")
    return text.strip()


def read_series(path: Path) -> Series:
    """Read `timestamp,value[,sensor_id]`; InputError names the file, row and column.

    The sensor id defaults to the file stem. Rows are counted as lines (the header is row 1)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = {name.strip().lower(): name for name in reader.fieldnames or [] if name}
        if "timestamp" not in fields or "value" not in fields:
            raise InputError(
                f"{path}, row 1 (header): need columns timestamp,value[,sensor_id], "
                f"got {','.join(reader.fieldnames or []) or 'nothing'}"
            )
        stamps_text, stamps, values, sensors = [], [], [], []
        lines: list[int] = []
        for row in reader:
            line = reader.line_num
            text = _cell(path, line, row, fields, "timestamp")
            try:
                stamp = parse_timestamp(text)
            except ValueError as error:
                raise InputError(f"{path}, row {line}, column 'timestamp': {error}") from None
            raw = _cell(path, line, row, fields, "value")
            try:
                value = float(raw) if raw else None
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                problem = "empty" if not raw else f"{raw!r} is not a finite number"
                raise InputError(f"{path}, row {line}, column 'value': {problem}")
            stamps_text.append(text)
            stamps.append(min(stamp, 2**63 - 1))  # beyond int64: far in the future anyway
            values.append(value)
            lines.append(line)
            sensor = (row.get(fields["sensor_id"]) or "").strip() if "sensor_id" in fields else ""
            sensors.append(sensor or path.stem)
    timestamps = np.array(stamps, dtype=np.int64)
    check_timestamps(
        timestamps, stamps_text, lambda i: f"{path}, row {lines[i]}, column 'timestamp'"
    )
    return Series(stamps_text, timestamps, np.array(values), sensors)


def default_partition(series: Series) -> str:
    """The partition key a replay streams under: the sensor id of a one-sensor file (so every
    replay of a sensor reaches the orchestrator replica that owns it), else the smallest sensor
    id (one stream has one key: all of a file's sensors go to one replica)."""
    return min(series.sensor_ids) if series.sensor_ids else "replay"


ALERT_EVENTS = {
    orchestrator_pb2.ALERT_STATE_OPEN: "open",
    orchestrator_pb2.ALERT_STATE_RESOLVED: "resolved",
}

SHADOW_COLUMNS = ("flag", "shadow_score", "shadow_flag", "shadow_verdict", "shadow_alert")
"""Per shadowed specialist NAME, the columns `NAME_<column>` (see `write_verdicts`)."""


def shadow_mesh_settings(shadows: Sequence[str]) -> dict[str, object]:
    """Settings of an embedded orchestrator whose verdicts carry the shadows' votes, for
    `replay --shadow` / `evaluate --shadow` (NAME=TARGET each, TARGET a running specialist)."""
    if not shadows:
        return {}
    for shadow in shadows:
        name, sep, target = shadow.partition("=")
        if not (sep and name.strip() and target.strip()):
            raise ValueError(
                f"--shadow {shadow!r}: expected NAME=TARGET, e.g. model=127.0.0.1:50071"
            )
    return {
        "shadows": ",".join(shadows),
        "shadow_verdicts": True,
        # Offline, a few files' sensors: room for any shadows' calibration. The memory plan
        # reckons with 100,000 sensors of it (6.7 GiB), which a replay never comes near.
        "max_shadow_bytes_per_sensor": 65_536,
        "memory_budget_bytes": 8 * 1024**3,
    }


class VerdictCollector:
    """Collects verdicts and alert events by (batch id, position), so that rows are written
    back in input order.

    Alerts name the reading whose verdict emitted them (`Alert.batch_id`, `reading_index`);
    an alert for a batch this collector did not send, an index outside it, or a sensor other
    than that row's is ignored (counted in `ignored_alerts`). A row's `alerts` cell is the
    events in arrival order joined by ";" (normally one: "open" or "resolved").
    """

    def __init__(self, rows: int, sensor_ids: Sequence[str] | None = None) -> None:
        self.by_row: list[orchestrator_pb2.Verdict | None] = [None] * rows
        self.alerts: list[str] = [""] * rows
        self.batch_rows: dict[int, range] = {}
        self.ignored_alerts = 0
        self._sensor_ids = sensor_ids
        self._seen_alerts: set[tuple[str, int]] = set()

    def expect(self, batch_id: int, rows: range) -> None:
        self.batch_rows[batch_id] = rows

    def on_verdicts(self, batch_id: int, verdicts: list[orchestrator_pb2.Verdict]) -> None:
        rows = self.batch_rows[batch_id]
        # The orchestrator sends a batch's verdicts in reading order, possibly in several events.
        filled = next((i for i in rows if self.by_row[i] is None), None)
        if filled is None:
            return
        for offset, verdict in enumerate(verdicts):
            self.by_row[filled + offset] = verdict

    def on_alert(self, alert: orchestrator_pb2.Alert) -> None:
        rows = self.batch_rows.get(alert.batch_id)
        event = ALERT_EVENTS.get(alert.state)
        if rows is None or event is None or alert.reading_index >= len(rows):
            self.ignored_alerts += 1
            return
        row = rows[alert.reading_index]
        if self._sensor_ids is not None and self._sensor_ids[row] != alert.sensor_id:
            self.ignored_alerts += 1
            return
        key = (alert.alert_id, alert.state)
        if alert.alert_id and key in self._seen_alerts:
            return  # the same event delivered twice
        self._seen_alerts.add(key)
        self.alerts[row] = f"{self.alerts[row]};{event}" if self.alerts[row] else event


async def replay(
    series: Series,
    target: str,
    out: Path,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
    credentials=None,
    partition: str | None = None,
) -> dict[str, int]:
    """Stream `series` to the orchestrator at `target`; write `out` (see `write_verdicts`).

    `partition` is the stream's ownership key (default: `default_partition(series)`)."""
    rows = len(series.values)
    collector = VerdictCollector(rows, series.sensor_ids)
    client = TelemetryClient(
        target,
        partition=partition or default_partition(series),
        verdicts=orchestrator_pb2.VERDICT_MODE_ALL,
        on_verdicts=collector.on_verdicts,
        on_alert=collector.on_alert,
        on_ack=lambda ack: progress(ack.readings_accepted) if progress else None,
        credentials=credentials,
    )
    async with client:
        for start in range(0, rows, batch_size):
            stop = min(rows, start + batch_size)
            readings = [
                orchestrator_pb2.Reading(sensor_id=s, value=v, timestamp_unix_nanos=t)
                for s, v, t in zip(
                    series.sensor_ids[start:stop],
                    series.values[start:stop].tolist(),
                    series.timestamps[start:stop].tolist(),
                    strict=True,
                )
            ]
            # send() returns before any answer can be processed, so expect() is never late.
            collector.expect(await client.send(readings), range(start, stop))
    # Leaving the block closed the client: every batch was acked and the stream ended, so the
    # alerts that follow the last acks have arrived too.
    return write_verdicts(out, series, collector.by_row, collector.alerts)


def _status_name(status: int) -> str:
    return orchestrator_pb2.VerdictStatus.Name(status).removeprefix("VERDICT_STATUS_").lower()


def write_verdicts(
    out: Path,
    series: Series,
    verdicts: Sequence[orchestrator_pb2.Verdict | None],
    alerts: Sequence[str] | None = None,
) -> dict[str, int]:
    """One row per input row, in file order: timestamp, sensor_id, value, anomaly, score,
    status, alert (`open` / `resolved` on the row whose verdict emitted that alert event, else
    empty), then `<specialist>_score` and `<specialist>_likelihood` per specialist (empty while
    it warms up or when it did not answer). A row without a verdict has status `missing`.

    When the verdicts carry shadow votes (an orchestrator with SENTINEL_SHADOW_VERDICTS), then
    per shadowed specialist NAME: `NAME_flag` (NAME's own vote, 0/1), `NAME_shadow_score` and
    `NAME_shadow_flag` (the shadow's vote; all three empty while that engine warms up),
    `NAME_shadow_verdict` (0/1: the verdict with the shadow in NAME's place) and
    `NAME_shadow_alert` (`open` / `resolved`: what that verdict's incidents did at this row);
    the shadow's four are empty on rows it did not answer.

    Returns counts: rows, anomalies, missing, alerts_opened, alerts_resolved."""
    if alerts is None:
        alerts = [""] * len(verdicts)
    if len(alerts) != len(verdicts) or len(verdicts) != len(series.values):
        raise ValueError("verdicts, alerts and series must have one entry per row")
    specialists = sorted({v.specialist for verdict in verdicts if verdict for v in verdict.votes})
    shadowed = sorted(
        {s.vote.specialist for verdict in verdicts if verdict for s in verdict.shadows}
    )
    counts = {"rows": 0, "anomalies": 0, "missing": 0, "alerts_opened": 0, "alerts_resolved": 0}
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "timestamp",
                "sensor_id",
                "value",
                "anomaly",
                "score",
                "status",
                "alert",
                *(f"{s}_{column}" for s in specialists for column in ("score", "likelihood")),
                *(f"{s}_{column}" for s in shadowed for column in SHADOW_COLUMNS),
            ]
        )
        for i, verdict in enumerate(verdicts):
            counts["rows"] += 1
            events = alerts[i].split(";") if alerts[i] else []
            counts["alerts_opened"] += events.count("open")
            counts["alerts_resolved"] += events.count("resolved")
            if verdict is None:
                # Resent after a reconnect and already scored: acked as a duplicate, verdict gone.
                counts["missing"] += 1
                writer.writerow(
                    [
                        series.timestamps_text[i],
                        series.sensor_ids[i],
                        repr(float(series.values[i])),
                        "",
                        "",
                        "missing",
                        alerts[i],
                        *([""] * (2 * len(specialists) + len(SHADOW_COLUMNS) * len(shadowed))),
                    ]
                )
                continue
            votes = {v.specialist: v for v in verdict.votes}
            counts["anomalies"] += verdict.anomaly
            cells: list[str] = []
            for name in specialists:
                vote = votes.get(name)
                if vote is None or vote.warming_up:
                    cells += ["", ""]
                else:
                    cells += [f"{vote.score:.6f}", f"{vote.likelihood:.6g}"]
            writer.writerow(
                [
                    series.timestamps_text[i],
                    series.sensor_ids[i],
                    repr(float(series.values[i])),
                    int(verdict.anomaly),
                    f"{verdict.score:.6f}",
                    _status_name(verdict.status),
                    alerts[i],
                    *cells,
                    *_shadow_cells(verdict, votes, shadowed),
                ]
            )
    return counts


def _shadow_cells(
    verdict: orchestrator_pb2.Verdict,
    votes: dict[str, orchestrator_pb2.Vote],
    shadowed: Sequence[str],
) -> list[str]:
    shadows = {s.vote.specialist: s for s in verdict.shadows}
    cells: list[str] = []
    for name in shadowed:
        shadow, own = shadows.get(name), votes.get(name)
        cells.append("" if own is None or own.warming_up else str(int(own.anomaly)))
        if shadow is None:
            cells += [""] * (len(SHADOW_COLUMNS) - 1)
            continue
        if shadow.vote.warming_up:
            cells += ["", ""]
        else:
            cells += [f"{shadow.vote.score:.6f}", str(int(shadow.vote.anomaly))]
        cells += [str(int(shadow.verdict_anomaly)), ALERT_EVENTS.get(shadow.alert, "")]
    return cells

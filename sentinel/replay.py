"""`sentinel replay`: stream a CSV through the mesh, write one verdict row per input row."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
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


def parse_timestamp(text: str) -> int:
    """ISO-8601 (`2014-07-01 00:00:00`, optional zone; naive = UTC) or Unix seconds."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp()) * NANOS + moment.microsecond * 1000
    if not math.isfinite(number):
        raise ValueError(f"timestamp {text!r} is not finite")
    return int(number * NANOS)


def read_series(path: Path) -> Series:
    """Read `timestamp,value[,sensor_id]`; errors name the line. Sensor id defaults to the file stem."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "timestamp" not in fields or "value" not in fields:
            raise ValueError(f"{path}: need columns timestamp,value (got {reader.fieldnames})")
        stamps_text, stamps, values, sensors = [], [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                stamps_text.append(row[fields["timestamp"]].strip())
                stamps.append(parse_timestamp(row[fields["timestamp"]]))
                value = float(row[fields["value"]])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line}: {error}") from error
            if not math.isfinite(value):
                raise ValueError(f"{path}:{line}: value {value} is not finite")
            values.append(value)
            sensor = (
                (row.get(fields.get("sensor_id", ""), "") or "").strip()
                if "sensor_id" in fields
                else ""
            )
            sensors.append(sensor or path.stem)
    return Series(stamps_text, np.array(stamps, dtype=np.int64), np.array(values), sensors)


class VerdictCollector:
    """Collects verdicts by (batch id, position) so rows are written back in input order."""

    def __init__(self, rows: int) -> None:
        self.by_row: list[orchestrator_pb2.Verdict | None] = [None] * rows
        self.batch_rows: dict[int, range] = {}

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


async def replay(
    series: Series,
    target: str,
    out: Path,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
    credentials=None,
) -> dict[str, int]:
    rows = len(series.values)
    collector = VerdictCollector(rows)
    client = TelemetryClient(
        target,
        verdicts=orchestrator_pb2.VERDICT_MODE_ALL,
        on_verdicts=collector.on_verdicts,
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
    return write_verdicts(out, series, collector.by_row)


def write_verdicts(out: Path, series: Series, verdicts: list) -> dict[str, int]:
    specialists = sorted({v.specialist for verdict in verdicts if verdict for v in verdict.votes})
    counts = {"rows": 0, "anomalies": 0, "missing": 0}
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
                *(f"{s}_score" for s in specialists),
            ]
        )
        for i, verdict in enumerate(verdicts):
            counts["rows"] += 1
            if verdict is None:
                # Resent after a reconnect and already scored: acked as a duplicate, verdict gone.
                counts["missing"] += 1
                writer.writerow(
                    [
                        series.timestamps_text[i],
                        series.sensor_ids[i],
                        series.values[i],
                        "",
                        "",
                        "missing",
                    ]
                )
                continue
            scores = {v.specialist: v for v in verdict.votes}
            counts["anomalies"] += verdict.anomaly
            writer.writerow(
                [
                    series.timestamps_text[i],
                    series.sensor_ids[i],
                    repr(float(series.values[i])),
                    int(verdict.anomaly),
                    f"{verdict.score:.6f}",
                    orchestrator_pb2.VerdictStatus.Name(verdict.status)
                    .removeprefix("VERDICT_STATUS_")
                    .lower(),
                    *(
                        (
                            ""
                            if s not in scores or scores[s].warming_up
                            else f"{scores[s].score:.6f}"
                        )
                        for s in specialists
                    ),
                ]
            )
    return counts

"""Decode ScoreRequest into numpy columns and encode ScoreOutput, validating shapes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentinel.errors import InvalidArgument
from sentinel.tensors import decode_windows, distinct_sensors
from sentinel.v1 import specialist_pb2

from .engine import (
    ChannelSpec,
    Engine,
    RangeViewSpec,
    RowColumn,
    ScoreInput,
    ScoreOutput,
    ViewSpec,
)

_ROW_COLUMNS = {
    RowColumn.SENSOR_IDS: specialist_pb2.ROW_COLUMN_SENSOR_IDS,
    RowColumn.TIMESTAMPS: specialist_pb2.ROW_COLUMN_TIMESTAMPS,
}
# What a request lacking a row column is missing, named as the field to send.
_ROW_COLUMN_FIELDS = {
    RowColumn.SENSOR_IDS: "sensors",
    RowColumn.TIMESTAMPS: "timestamps_unix_nanos",
}


def encode_row_columns(columns: frozenset[RowColumn]) -> list[specialist_pb2.RowColumn]:
    """DescribeResponse.row_columns: the columns read, or NONE (an empty list would mean an
    engine predating the declaration, which is sent every column)."""
    declared = sorted(_ROW_COLUMNS[c] for c in columns)
    return declared or [specialist_pb2.ROW_COLUMN_NONE]


def encode_view_spec(spec: ViewSpec) -> specialist_pb2.ViewSpec:
    if isinstance(spec, RangeViewSpec):
        return specialist_pb2.ViewSpec(
            name=spec.name, kind=specialist_pb2.VIEW_KIND_RANGE, readings=spec.readings,
            block=spec.block,
        )  # fmt: skip
    return specialist_pb2.ViewSpec(
        name=spec.name,
        kind=specialist_pb2.VIEW_KIND_SEASONAL,
        period_seconds=spec.period_seconds,
        bucket_seconds=spec.bucket_seconds,
        smoothing=spec.smoothing,
        tolerance_buckets=spec.tolerance_buckets,
    )


def encode_channel_spec(spec: ChannelSpec) -> specialist_pb2.ChannelSpec:
    calibration = (
        specialist_pb2.CALIBRATION_STANDARDIZED_LIKELIHOOD
        if spec.standardize
        else specialist_pb2.CALIBRATION_LIKELIHOOD
    )
    return specialist_pb2.ChannelSpec(
        name=spec.name, calibration=calibration, flag_below=spec.flag_below
    )


def _decode_row_windows(request: specialist_pb2.ScoreRequest, rows: int) -> np.ndarray:
    """[rows, window_length] windows, from the per-row or the compact (per-sensor) form."""
    if not request.window_rows:
        return decode_windows(request.windows, rows)
    if len(request.window_rows) != rows or len(request.window_offsets) != rows:
        raise InvalidArgument("window_rows", f"window_rows and window_offsets need {rows} entries")
    runs = request.windows.shape[0] if request.windows.shape else 0
    extended = decode_windows(request.windows, runs)
    length = request.window_length
    index = np.asarray(request.window_rows, dtype=np.int64)
    offsets = np.asarray(request.window_offsets, dtype=np.int64)
    if (index >= runs).any():
        raise InvalidArgument("window_rows", f"refers to a row beyond the {runs} sent")
    if length > extended.shape[1] or (offsets + length > extended.shape[1]).any():
        raise InvalidArgument("window_offsets", "a window reaches past its row")
    sliding = np.lib.stride_tricks.sliding_window_view(extended, length, axis=1)
    return sliding[index, offsets]


def _decode_sensors(
    request: specialist_pb2.ScoreRequest, rows: int
) -> tuple[Sequence[str] | None, np.ndarray | None]:
    """(distinct ids, row -> index into them) from the distinct form (`sensors`/`sensor_rows`),
    the per-row form of orchestrators predating it (`sensor_ids`), or (None, None) if neither
    was sent."""
    if request.sensor_ids:
        if request.sensors or request.sensor_rows:
            raise InvalidArgument("sensors", "sent together with sensor_ids; send one form")
        if len(request.sensor_ids) != rows:
            raise InvalidArgument(
                "sensor_ids", f"has {len(request.sensor_ids)} entries for {rows} values"
            )
        return distinct_sensors(request.sensor_ids)
    if not request.sensors and not request.sensor_rows:
        return None, None
    if len(request.sensor_rows) != rows:
        raise InvalidArgument(
            "sensor_rows", f"has {len(request.sensor_rows)} entries for {rows} values"
        )
    sensors = list(request.sensors)
    index = np.asarray(request.sensor_rows, dtype=np.int64)
    if rows and int(index.max()) >= len(sensors):
        bad = int(np.flatnonzero(index >= len(sensors))[0])
        raise InvalidArgument(
            f"sensor_rows[{bad}]", f"refers to a sensor beyond the {len(sensors)} sent"
        )
    return sensors, index


def decode_score_request(request: specialist_pb2.ScoreRequest) -> ScoreInput:
    """The request's columns; a row column that was not sent (see DescribeResponse.row_columns)
    is None. INVALID_ARGUMENT names the first inconsistent field."""
    rows = len(request.values)
    sensors, sensor_index = _decode_sensors(request, rows)
    stamps = request.timestamps_unix_nanos
    if stamps and len(stamps) != rows:
        raise InvalidArgument(
            "timestamps_unix_nanos", f"has {len(stamps)} entries for {rows} values"
        )
    if len(request.window_fill) != rows:
        raise InvalidArgument(
            "window_fill", f"has {len(request.window_fill)} entries for {rows} values"
        )
    values = np.asarray(request.values, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidArgument(f"values[{bad}]", "must be finite")
    windows = _decode_row_windows(request, rows)
    fill = np.asarray(request.window_fill, dtype=np.int64)
    if rows and (fill > windows.shape[1]).any():
        bad = int(np.flatnonzero(fill > windows.shape[1])[0])
        raise InvalidArgument(f"window_fill[{bad}]", "exceeds the window length")
    views: dict[str, np.ndarray] = {}
    for index, view in enumerate(request.views):
        if not view.name or view.name in views:
            raise InvalidArgument(f"views[{index}].name", "empty or repeated view name")
        views[view.name] = decode_windows(view.values, rows, f"views[{index}].values")
    return ScoreInput(
        values=values,
        windows=windows,
        window_fill=fill,
        views=views,
        sensors=sensors,
        sensor_index=sensor_index,
        timestamps=np.asarray(stamps, dtype=np.int64) if stamps else None,
    )


def check_declared_inputs(engine: Engine, batch: ScoreInput) -> None:
    """INVALID_ARGUMENT naming what a (non-empty) request lacks of what `engine` declared it
    reads: window columns, views, row columns."""
    if not batch.rows:
        return
    needed = engine.window_length
    if batch.windows.shape[1] < needed:
        raise InvalidArgument(
            "windows.shape", f"{batch.windows.shape[1]} columns, {engine.name} needs {needed}"
        )
    for view in engine.views:
        if view.name not in batch.views:
            raise InvalidArgument("views", f"view {view.name!r} is missing")
    for column in sorted(engine.row_columns, key=lambda c: c.value):
        if not batch.has(column):
            raise InvalidArgument(
                _ROW_COLUMN_FIELDS[column], f"{engine.name} reads {column.value}; none were sent"
            )


def encode_score_response(
    output: ScoreOutput, engine: str, version: str, sparse_reasons: bool = False
) -> specialist_pb2.ScoreResponse:
    """`sparse_reasons` (the request allowed it): reasons of the rows that have one only, with
    their rows; otherwise one per row, as orchestrators predating reason_rows read them."""
    response = specialist_pb2.ScoreResponse(engine=engine, engine_version=version)
    response.scores.extend(output.scores.tolist())
    response.anomalies.extend(output.anomalies.tolist())
    if sparse_reasons:
        rows = sorted(output.reasons)
        response.reason_rows.extend(rows)
        response.reasons.extend(output.reasons[row] for row in rows)
    else:
        dense = [""] * output.scores.shape[0]
        for row, reason in output.reasons.items():
            dense[row] = reason
        response.reasons.extend(dense)
    response.warming_up.extend(output.warming_up.tolist())
    for name, values in output.channels.items():
        response.channels.add(name=name, values=values.tolist())
    return response

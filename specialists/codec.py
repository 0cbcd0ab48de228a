"""Decode ScoreRequest into numpy columns and encode ScoreOutput, validating shapes."""

from __future__ import annotations

import numpy as np

from sentinel.errors import InvalidArgument
from sentinel.tensors import decode_windows
from sentinel.v1 import specialist_pb2

from .engine import ChannelSpec, RangeViewSpec, ScoreInput, ScoreOutput, ViewSpec


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


def decode_score_request(request: specialist_pb2.ScoreRequest) -> ScoreInput:
    rows = len(request.values)
    for name, column in (
        ("sensor_ids", request.sensor_ids),
        ("timestamps_unix_nanos", request.timestamps_unix_nanos),
        ("window_fill", request.window_fill),
    ):
        if len(column) != rows:
            raise InvalidArgument(name, f"has {len(column)} entries for {rows} values")
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
        sensor_ids=list(request.sensor_ids),
        values=values,
        timestamps=np.asarray(request.timestamps_unix_nanos, dtype=np.int64),
        windows=windows,
        window_fill=fill,
        views=views,
    )


def encode_score_response(
    output: ScoreOutput, engine: str, version: str
) -> specialist_pb2.ScoreResponse:
    response = specialist_pb2.ScoreResponse(engine=engine, engine_version=version)
    response.scores.extend(output.scores.tolist())
    response.anomalies.extend(output.anomalies.tolist())
    response.reasons.extend(output.reasons)
    response.warming_up.extend(output.warming_up.tolist())
    for name, values in output.channels.items():
        response.channels.add(name=name, values=values.tolist())
    return response

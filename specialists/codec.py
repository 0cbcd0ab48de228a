"""Decode ScoreRequest into numpy columns and encode ScoreOutput, validating shapes."""

from __future__ import annotations

import numpy as np

from sentinel.errors import InvalidArgument
from sentinel.v1 import specialist_pb2

from .engine import ScoreInput, ScoreOutput

_DTYPES = {
    specialist_pb2.TENSOR_D_TYPE_FLOAT32: np.dtype("<f4"),
    specialist_pb2.TENSOR_D_TYPE_FLOAT64: np.dtype("<f8"),
}


def encode_windows(windows: np.ndarray) -> specialist_pb2.Tensor:
    """A [rows, length] float array as a little-endian tensor (float32 if given float32)."""
    if windows.dtype == np.float32:
        dtype, kind = np.dtype("<f4"), specialist_pb2.TENSOR_D_TYPE_FLOAT32
    else:
        dtype, kind = np.dtype("<f8"), specialist_pb2.TENSOR_D_TYPE_FLOAT64
    data = np.ascontiguousarray(windows, dtype=dtype)
    return specialist_pb2.Tensor(dtype=kind, shape=list(windows.shape), data=data.tobytes())


def decode_windows(tensor: specialist_pb2.Tensor, rows: int) -> np.ndarray:
    shape = tuple(tensor.shape)
    if rows == 0 and not shape and not tensor.data:
        # No rows and no tensor at all (an empty request): nothing to check.
        return np.empty((0, 0), dtype=_DTYPES.get(tensor.dtype, np.dtype("<f8")))
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidArgument("windows.dtype", f"unsupported tensor dtype {tensor.dtype}")
    if len(shape) != 2 or shape[0] != rows:
        raise InvalidArgument(
            "windows.shape", f"expected [{rows}, window_length], got {list(shape)}"
        )
    expected = shape[0] * shape[1] * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidArgument(
            "windows.data", f"{len(tensor.data)} bytes for shape {list(shape)} (want {expected})"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


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
    windows = decode_windows(request.windows, rows)
    fill = np.asarray(request.window_fill, dtype=np.int64)
    if rows and (fill > windows.shape[1]).any():
        bad = int(np.flatnonzero(fill > windows.shape[1])[0])
        raise InvalidArgument(f"window_fill[{bad}]", "exceeds the window length")
    return ScoreInput(
        sensor_ids=list(request.sensor_ids),
        values=values,
        timestamps=np.asarray(request.timestamps_unix_nanos, dtype=np.int64),
        windows=windows,
        window_fill=fill,
    )


def encode_score_response(
    output: ScoreOutput, engine: str, version: str
) -> specialist_pb2.ScoreResponse:
    response = specialist_pb2.ScoreResponse(engine=engine, engine_version=version)
    response.scores.extend(output.scores.tolist())
    response.anomalies.extend(output.anomalies.tolist())
    response.reasons.extend(output.reasons)
    response.warming_up.extend(output.warming_up.tolist())
    return response

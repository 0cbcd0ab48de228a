"""The window and view tensors of the Specialist contract, as numpy arrays, and its distinct
form of sensor ids.

Part of the contract, so both sides use this one codec: the orchestrator encodes windows and
views, specialists decode them (`sentinel.specialists.codec` builds on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentinel.errors import InvalidArgument
from sentinel.v1 import specialist_pb2

_DTYPES: dict[int, np.dtype] = {
    specialist_pb2.TENSOR_D_TYPE_FLOAT32: np.dtype("<f4"),
    specialist_pb2.TENSOR_D_TYPE_FLOAT64: np.dtype("<f8"),
}


def encode_windows(windows: np.ndarray) -> specialist_pb2.Tensor:
    """A [rows, length] float array as a little-endian tensor (float32 if given float32)."""
    kind = (
        specialist_pb2.TENSOR_D_TYPE_FLOAT32
        if windows.dtype == np.float32
        else specialist_pb2.TENSOR_D_TYPE_FLOAT64
    )
    dtype = _DTYPES[kind]
    data = np.ascontiguousarray(windows, dtype=dtype)
    return specialist_pb2.Tensor(dtype=kind, shape=list(windows.shape), data=data.tobytes())


def decode_windows(tensor: specialist_pb2.Tensor, rows: int, field: str = "windows") -> np.ndarray:
    shape = tuple(tensor.shape)
    if rows == 0 and not shape and not tensor.data:
        # No rows and no tensor at all (an empty request): nothing to check.
        return np.empty((0, 0), dtype=_DTYPES.get(tensor.dtype, np.dtype("<f8")))
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidArgument(f"{field}.dtype", f"unsupported tensor dtype {tensor.dtype}")
    if len(shape) != 2 or shape[0] != rows:
        raise InvalidArgument(f"{field}.shape", f"expected [{rows}, width], got {list(shape)}")
    expected = shape[0] * shape[1] * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidArgument(
            f"{field}.data", f"{len(tensor.data)} bytes for shape {list(shape)} (want {expected})"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def encode_views(views: dict[str, np.ndarray]) -> list[specialist_pb2.View]:
    return [specialist_pb2.View(name=n, values=encode_windows(v)) for n, v in views.items()]


def distinct_sensors(sensor_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Per-row sensor ids as (each distinct id once, in order of first appearance; every row's
    int64 index into those): ScoreRequest.sensors and sensor_rows."""
    # Through a dict: sorting the ids (np.unique on an object array) costs more than this.
    position = {sensor_id: i for i, sensor_id in enumerate(dict.fromkeys(sensor_ids))}
    index = np.fromiter(map(position.__getitem__, sensor_ids), np.int64, len(sensor_ids))
    return list(position), index


__all__ = ["decode_windows", "distinct_sensors", "encode_views", "encode_windows"]

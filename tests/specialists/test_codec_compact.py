"""Compact (per-sensor) windows in Score requests decode to exactly the per-row windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.specialist_pool import CompactWindows, _window_fields
from sentinel.orchestrator.windows import WindowStore
from sentinel.specialists.codec import decode_score_request

from sentinel.errors import InvalidArgument
from sentinel.v1 import specialist_pb2


def request_for(stored, values, length, compact: bool) -> specialist_pb2.ScoreRequest:
    fields = _window_fields(
        stored.windows,
        length,
        CompactWindows(stored.extended, stored.group, stored.rank) if compact else None,
    )
    rows = values.shape[0]
    return specialist_pb2.ScoreRequest(
        sensor_ids=["s"] * rows,
        values=values.tolist(),
        timestamps_unix_nanos=[0] * rows,
        window_fill=np.minimum(stored.fill, length).tolist(),
        **fields,
    )


@settings(max_examples=60, deadline=None)
@given(
    sensors=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    history=st.integers(0, 30),
    length=st.integers(1, 12),
)
def test_compact_and_per_row_windows_decode_identically(sensors, history, length):
    store = WindowStore(12, 10)
    rng = np.random.default_rng(len(sensors) + history)
    for _ in range(history):
        store.append([f"s{i}" for i in range(5)], rng.standard_normal(5))
    ids = [f"s{i}" for i in sensors]
    values = rng.standard_normal(len(ids))
    stored = store.append(ids, values)
    compact = decode_score_request(request_for(stored, values, length, compact=True))
    per_row = decode_score_request(request_for(stored, values, length, compact=False))
    np.testing.assert_array_equal(compact.windows, per_row.windows)
    np.testing.assert_array_equal(compact.window_fill, per_row.window_fill)


def test_repeated_sensors_travel_compactly():
    store = WindowStore(200, 10)
    values = np.arange(1000, dtype=np.float64)
    stored = store.append([f"s{i % 10}" for i in range(1000)], values)
    compact = request_for(stored, values, 200, compact=True)
    per_row = request_for(stored, values, 200, compact=False)
    assert compact.window_rows and not per_row.window_rows
    assert compact.ByteSize() * 5 < per_row.ByteSize()


def test_a_compact_window_reaching_past_its_row_is_refused():
    request = specialist_pb2.ScoreRequest(
        sensor_ids=["s"], values=[1.0], timestamps_unix_nanos=[0], window_fill=[0],
        windows=specialist_pb2.Tensor(dtype=specialist_pb2.TENSOR_D_TYPE_FLOAT64, shape=[1, 3],
                                      data=np.zeros(3).tobytes()),
        window_rows=[0], window_offsets=[2], window_length=3,
    )  # fmt: skip
    with pytest.raises(InvalidArgument, match="window_offsets"):
        decode_score_request(request)

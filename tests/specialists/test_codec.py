"""specialists.codec: ScoreRequest / ScoreResponse <-> numpy columns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sentinel.specialists.codec import decode_score_request, encode_score_response
from sentinel.specialists.engine import ScoreOutput

from sentinel.errors import InvalidArgument
from sentinel.tensors import decode_windows, encode_windows
from sentinel.v1 import specialist_pb2 as pb


def request(rows=2, length=3, dtype=np.float32, **overrides) -> pb.ScoreRequest:
    windows = np.arange(rows * length, dtype=dtype).reshape(rows, length)
    fields = dict(
        sensor_ids=[f"s{i}" for i in range(rows)],
        values=[float(i) for i in range(rows)],
        timestamps_unix_nanos=list(range(rows)),
        windows=encode_windows(windows),
        window_fill=[length] * rows,
    )
    fields.update(overrides)
    return pb.ScoreRequest(**fields)


def error_field(req) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_score_request(req)
    return caught.value.field


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [(np.float32, pb.TENSOR_D_TYPE_FLOAT32), (np.float64, pb.TENSOR_D_TYPE_FLOAT64)],
)
def test_window_round_trip(dtype, kind):
    windows = np.array([[np.nan, 1.5, -2.25], [3.0, np.nan, 1e-3]], dtype=dtype)
    tensor = encode_windows(windows)
    assert tensor.dtype == kind
    assert list(tensor.shape) == [2, 3]
    assert len(tensor.data) == windows.size * np.dtype(dtype).itemsize
    assert tensor.data == windows.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    back = decode_windows(tensor, rows=2)
    assert back.dtype == dtype
    assert np.array_equal(back, windows, equal_nan=True)


def test_other_dtypes_travel_as_float64_and_views_are_made_contiguous():
    tensor = encode_windows(np.array([[1, 2], [3, 4]], dtype=np.int32))
    assert tensor.dtype == pb.TENSOR_D_TYPE_FLOAT64
    wide = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = wide[:, ::2]
    assert np.array_equal(decode_windows(encode_windows(view), rows=3), view)


def test_zero_length_windows_round_trip():
    tensor = encode_windows(np.empty((4, 0), dtype=np.float32))
    assert decode_windows(tensor, rows=4).shape == (4, 0)


def test_decode_score_request():
    decoded = decode_score_request(request(rows=2, length=3))
    assert decoded.sensors == ["s0", "s1"] and decoded.sensor_index.tolist() == [0, 1]
    assert decoded.values.dtype == np.float64 and decoded.values.tolist() == [0.0, 1.0]
    assert decoded.timestamps.dtype == np.int64 and decoded.timestamps.tolist() == [0, 1]
    assert decoded.windows.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert decoded.window_fill.tolist() == [3, 3]
    assert decoded.rows == 2


def test_empty_request_decodes_to_no_rows():
    # Regression: an empty ScoreRequest (no windows tensor at all) was rejected as windows.dtype.
    decoded = decode_score_request(pb.ScoreRequest())
    assert decoded.rows == 0
    assert decoded.windows.shape == (0, 0)
    empty = decode_score_request(request(rows=0, length=5))
    assert empty.windows.shape == (0, 5)


@pytest.mark.parametrize("shape", [[3, 3], [1, 3], [6], [2, 3, 1], []])
def test_wrong_shape_is_named(shape):
    req = request(rows=2, length=3)
    req.windows.ClearField("shape")
    req.windows.shape.extend(shape)
    assert error_field(req) == "windows.shape"


@pytest.mark.parametrize("cut", [1, 4, -1])
def test_wrong_byte_count_is_named(cut):
    req = request(rows=2, length=3)
    data = req.windows.data
    req.windows.data = data[:-cut] if cut > 0 else data + b"\x00" * 4
    assert error_field(req) == "windows.data"


def test_unsupported_dtype_is_named():
    req = request()
    req.windows.dtype = pb.TENSOR_D_TYPE_UNSPECIFIED
    assert error_field(req) == "windows.dtype"


def test_fill_longer_than_the_window_is_named():
    req = request(rows=3, length=3, window_fill=[3, 0, 4])
    assert error_field(req) == "window_fill[2]"


@pytest.mark.parametrize("column", ["sensor_ids", "timestamps_unix_nanos", "window_fill"])
def test_mismatched_column_lengths_are_named(column):
    req = request(rows=2, length=3)
    getattr(req, column).append(getattr(req, column)[0])
    assert error_field(req) == column


def test_a_row_column_that_was_not_sent_is_none():
    # Engines that do not declare a row column are not sent it (DescribeResponse.row_columns).
    req = request(rows=2, length=3)
    req.ClearField("timestamps_unix_nanos")
    req.ClearField("sensor_ids")
    decoded = decode_score_request(req)
    assert decoded.timestamps is None and decoded.sensors is None
    assert decoded.sensor_index is None and decoded.rows == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_named(bad):
    req = request(rows=3, length=2)
    req.values[1] = bad
    assert error_field(req) == "values[1]"


@pytest.mark.parametrize("sparse", [False, True])
def test_encode_score_response(sparse):
    output = ScoreOutput(
        scores=np.array([0.1, 0.9]),
        anomalies=np.array([False, True]),
        reasons={1: "too high"},
        warming_up=np.array([True, False]),
    )
    response = encode_score_response(output, "threshold", "1.2.3", sparse_reasons=sparse)
    assert response.engine == "threshold" and response.engine_version == "1.2.3"
    assert list(response.scores) == [0.1, 0.9]
    assert list(response.anomalies) == [False, True]
    if sparse:  # the request allowed sparse reasons: only the row that has one
        assert list(response.reasons) == ["too high"] and list(response.reason_rows) == [1]
    else:  # as orchestrators predating reason_rows read them: one per row
        assert list(response.reasons) == ["", "too high"] and not response.reason_rows
    assert list(response.warming_up) == [True, False]
    again = pb.ScoreResponse.FromString(response.SerializeToString())
    assert again == response


def test_reasons_of_rows_outside_the_batch_are_refused():
    with pytest.raises(ValueError, match="reasons"):
        ScoreOutput(np.zeros(2), np.zeros(2, bool), {2: "no such row"}, np.zeros(2, bool))


# ---------------------------------------------------------------- properties


@st.composite
def window_arrays(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    elements = st.floats(width=32 if dtype is np.float32 else 64)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(window_arrays())
def test_windows_round_trip_exactly(windows):
    tensor = pb.Tensor.FromString(encode_windows(windows).SerializeToString())
    back = decode_windows(tensor, rows=windows.shape[0])
    assert back.dtype == windows.dtype
    assert back.shape == windows.shape
    assert back.tobytes() == windows.tobytes()  # bit-exact, NaN payloads included


@settings(max_examples=100, deadline=None)
@given(window_arrays(), st.data())
def test_request_round_trip(windows, data):
    rows, length = windows.shape
    finite = st.floats(allow_nan=False, allow_infinity=False)
    values = data.draw(st.lists(finite, min_size=rows, max_size=rows))
    fill = data.draw(st.lists(st.integers(0, length), min_size=rows, max_size=rows))
    stamps = data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows))
    req = pb.ScoreRequest(
        sensor_ids=[f"s{i}" for i in range(rows)],
        values=values,
        timestamps_unix_nanos=stamps,
        windows=encode_windows(windows),
        window_fill=fill,
    )
    decoded = decode_score_request(pb.ScoreRequest.FromString(req.SerializeToString()))
    assert decoded.values.tolist() == values
    # An empty column is one that was not sent (with no rows, nothing is).
    assert (decoded.timestamps.tolist() if rows else decoded.timestamps) == (stamps or None)
    assert decoded.window_fill.tolist() == fill
    assert decoded.windows.tobytes() == windows.tobytes()

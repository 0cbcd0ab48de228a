"""The row columns of a ScoreRequest in each form an orchestrator may send them, and the two
forms of reasons in a ScoreResponse.

- Sensor ids: distinct (`sensors` + `sensor_rows`, this revision), per row (`sensor_ids`,
  orchestrators of the previous one) or not at all: the first two decode to the same
  ScoreInput, the third to None; bad lengths and rows are INVALID_ARGUMENT naming the field.
- Reasons: sparse (`reason_rows`, when the request set `sparse_reasons`) or dense (one per row,
  for orchestrators of the previous revision): the orchestrator reads both as the same votes
  and refuses (as an unusable answer) reasons that do not fit the rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.specialist_pool import answer_problem, engine_votes
from sentinel.specialists.codec import decode_score_request, encode_score_response
from sentinel.specialists.engine import ScoreOutput

from sentinel.errors import InvalidArgument
from sentinel.tensors import encode_windows
from sentinel.v1 import specialist_pb2 as pb

sensor_lists = st.lists(st.sampled_from(["a", "b", "c-1", "ä", "", "b "]), max_size=30)


def base(rows: int) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        values=[float(i) for i in range(rows)],
        windows=encode_windows(np.zeros((rows, 2))),
        window_fill=[2] * rows,
    )


def per_row(ids: list[str]) -> pb.ScoreRequest:
    request = base(len(ids))
    request.sensor_ids.extend(ids)
    return request


def distinct(ids: list[str], order: list[str] | None = None) -> pb.ScoreRequest:
    """The distinct form; `order`: the distinct ids in another order, or with unused ones."""
    sensors = list(dict.fromkeys(ids)) if order is None else order
    request = base(len(ids))
    request.sensors.extend(sensors)
    request.sensor_rows.extend(sensors.index(s) for s in ids)
    return request


def decoded_fields(request: pb.ScoreRequest) -> dict:
    batch = decode_score_request(pb.ScoreRequest.FromString(request.SerializeToString()))
    return {
        "values": batch.values.tolist(),
        "windows": batch.windows.tolist(),
        "fill": batch.window_fill.tolist(),
        "sensors": None if batch.sensors is None else list(batch.sensors),
        "index": None if batch.sensor_index is None else batch.sensor_index.tolist(),
        "per_row": (
            None
            if batch.sensors is None or batch.sensor_index is None
            else [batch.sensors[i] for i in batch.sensor_index]
        ),
        "timestamps": batch.timestamps,
    }


@settings(max_examples=150, deadline=None)
@given(sensor_lists)
def test_distinct_and_per_row_ids_decode_to_the_same_input(ids):
    one, other = decoded_fields(per_row(ids)), decoded_fields(distinct(ids))
    if ids:
        assert one == other
        assert one["per_row"] == ids
        assert one["sensors"] == list(dict.fromkeys(ids))
        assert np.asarray(one["index"]).dtype == np.int64
    else:  # no rows: nothing was sent in either form
        assert one["sensors"] is other["sensors"] is None


@settings(max_examples=100, deadline=None)
@given(sensor_lists.filter(bool), st.randoms(use_true_random=False), st.integers(0, 3))
def test_distinct_ids_in_any_order_with_unused_ones_name_the_same_rows(ids, rng, unused):
    order = list(dict.fromkeys(ids)) + [f"unused-{i}" for i in range(unused)]
    rng.shuffle(order)
    assert decoded_fields(distinct(ids, order))["per_row"] == ids


def test_a_request_without_ids_or_timestamps_decodes_them_as_none():
    fields = decoded_fields(base(3))
    assert fields["sensors"] is fields["index"] is fields["timestamps"] is None
    assert fields["values"] == [0.0, 1.0, 2.0]


def error_field(request: pb.ScoreRequest) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_score_request(request)
    return caught.value.field


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.sensor_rows.append(0), "sensor_rows"),
        (lambda r: r.sensor_rows.pop(), "sensor_rows"),
        (lambda r: r.ClearField("sensor_rows"), "sensor_rows"),
        (lambda r: r.sensor_rows.__setitem__(2, 2), "sensor_rows[2]"),  # 2 sensors sent
        (lambda r: r.ClearField("sensors"), "sensor_rows[0]"),
        (lambda r: r.sensor_ids.extend(["a", "b", "a"]), "sensors"),  # both forms at once
        (lambda r: r.timestamps_unix_nanos.extend([1, 2]), "timestamps_unix_nanos"),
    ],
)
def test_inconsistent_distinct_form_is_invalid_argument_naming_the_field(mutate, field):
    request = distinct(["a", "b", "a"])
    mutate(request)
    assert error_field(request) == field


@settings(max_examples=100, deadline=None)
@given(sensor_lists.filter(bool), st.data())
def test_a_row_pointing_past_the_sensors_sent_is_named(ids, data):
    request = distinct(ids)
    row = data.draw(st.integers(0, len(ids) - 1))
    request.sensor_rows[row] = len(request.sensors) + data.draw(st.integers(0, 1000))
    assert error_field(request) == f"sensor_rows[{row}]"


def test_per_row_ids_of_another_length_are_named():
    request = per_row(["a", "b"])
    request.sensor_ids.append("c")
    assert error_field(request) == "sensor_ids"


# ---------------------------------------------------------------- reasons


@st.composite
def outputs(draw) -> ScoreOutput:
    rows = draw(st.integers(0, 40))
    reasons = draw(
        st.dictionaries(st.integers(0, rows - 1), st.text(min_size=1, max_size=8), max_size=rows)
        if rows
        else st.just({})
    )
    anomalies = np.zeros(rows, dtype=bool)
    anomalies[list(reasons)] = True
    return ScoreOutput(np.where(anomalies, 0.9, 0.1), anomalies, reasons, np.zeros(rows, bool))


def votes_of(output: ScoreOutput, sparse: bool):
    wire = encode_score_response(output, "e", "1", sparse_reasons=sparse).SerializeToString()
    response = pb.ScoreResponse.FromString(wire)
    assert answer_problem(response, output.scores.shape[0]) is None
    return response, engine_votes("e", response)


@settings(max_examples=150, deadline=None)
@given(outputs())
def test_sparse_and_dense_reasons_decode_to_the_same_votes(output):
    sparse_response, sparse = votes_of(output, sparse=True)
    dense_response, dense = votes_of(output, sparse=False)
    assert sparse.reasons == dense.reasons == output.reasons
    assert len(sparse_response.reasons) == len(output.reasons)  # only the rows that have one
    assert len(dense_response.reasons) == output.scores.shape[0]
    np.testing.assert_array_equal(sparse.scores, dense.scores)
    np.testing.assert_array_equal(sparse.anomalies, dense.anomalies)


def response(rows: int, reasons: list[str], reason_rows: list[int]) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        scores=[0.0] * rows,
        anomalies=[False] * rows,
        warming_up=[False] * rows,
        reasons=reasons,
        reason_rows=reason_rows,
    )


@pytest.mark.parametrize(
    ("reasons", "reason_rows", "problem"),
    [
        (["x"], [3], "reason_rows"),  # row 3 of 3
        (["x", "y"], [0], "reasons has 2 entries for 1 reason_rows"),
        (["x"], [0, 1], "reasons has 1 entries for 2 reason_rows"),
        (["x", "y"], [2, 1], "reason_rows"),  # not ascending
        (["x", "y"], [1, 1], "reason_rows"),  # twice
        (["", ""], [], "reasons has 2 entries for 3 rows"),  # dense, one short
        (["", "", "", ""], [], "reasons has 4 entries for 3 rows"),
    ],
)
def test_reasons_that_do_not_fit_the_rows_are_an_unusable_answer(reasons, reason_rows, problem):
    found = answer_problem(response(3, reasons, reason_rows), 3)
    assert found is not None and problem in found


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.data())
def test_a_reason_row_beyond_the_request_is_never_accepted(rows, data):
    at = sorted(data.draw(st.sets(st.integers(0, 2 * rows), min_size=1, max_size=5)))
    found = answer_problem(response(rows, ["r"] * len(at), at), rows)
    assert (found is None) == (at[-1] < rows)


def test_no_reasons_at_all_is_no_reason_for_any_row():
    assert answer_problem(response(3, [], []), 3) is None
    assert engine_votes("e", response(3, [], [])).reasons == {}

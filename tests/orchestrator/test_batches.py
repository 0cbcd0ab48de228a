"""decode_batch: TelemetryBatch protobuf → validated numpy columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.batches import NANOS, Limits, decode_batch

from sentinel.errors import InvalidArgument
from sentinel.v1 import orchestrator_pb2 as pb

NOW = 1_750_000_000 * NANOS
LIMITS = Limits()


def reading(sensor="s-1", value=1.0, ts=NOW - NANOS) -> pb.Reading:
    return pb.Reading(sensor_id=sensor, value=value, timestamp_unix_nanos=ts)


def make(*readings: pb.Reading, **fields) -> pb.TelemetryBatch:
    return pb.TelemetryBatch(readings=list(readings), **fields)


def field_of(batch, limits=LIMITS) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_batch(batch, limits, now_ns=NOW)
    assert caught.value.field in str(caught.value)
    return caught.value.field


def test_decodes_columns_in_order():
    batch = make(
        reading("a", 1.5, NOW - 3),
        reading("b", -2.0, NOW - 2),
        reading("a", 3.0, NOW - 1),
        batch_id=7,
        verdicts=pb.VERDICT_MODE_ALL,
        traceparent="00-abc-def-01",
    )
    decoded = decode_batch(batch, LIMITS, now_ns=NOW)
    assert decoded.batch_id == 7
    assert decoded.sensor_ids == ["a", "b", "a"]
    assert decoded.values.dtype == np.float64
    assert decoded.values.tolist() == [1.5, -2.0, 3.0]
    assert decoded.timestamps.dtype == np.int64
    assert decoded.timestamps.tolist() == [NOW - 3, NOW - 2, NOW - 1]
    assert decoded.verdict_mode == pb.VERDICT_MODE_ALL
    assert decoded.traceparent == "00-abc-def-01"
    assert decoded.rows == 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_value_names_the_reading(bad):
    batch = make(reading(value=1.0), reading(value=2.0), reading(value=bad), reading(value=bad))
    assert field_of(batch) == "readings[2].value"


@pytest.mark.parametrize(
    ("sensor", "why"),
    [
        ("", "empty"),
        ("x" * 257, "too long"),
        ("bad\nid", "newline"),
        ("nul\x00", "NUL"),
        ("\x7f", "DEL"),
    ],
)
def test_bad_sensor_id_names_the_reading(sensor, why):
    batch = make(reading("ok"), reading("ok"), reading(sensor))
    assert field_of(batch) == "readings[2].sensor_id", why


def test_sensor_id_at_the_length_limit_is_accepted():
    limits = Limits(max_sensor_id_length=8)
    assert decode_batch(make(reading("x" * 8)), limits, now_ns=NOW).sensor_ids == ["x" * 8]
    assert field_of(make(reading("x" * 9)), limits) == "readings[0].sensor_id"


def test_unicode_printable_sensor_ids_are_accepted():
    decoded = decode_batch(make(reading("kessel-ü-温度 1")), LIMITS, now_ns=NOW)
    assert decoded.sensor_ids == ["kessel-ü-温度 1"]


def test_negative_timestamp_is_rejected():
    assert field_of(make(reading(), reading(ts=-1))) == "readings[1].timestamp_unix_nanos"


def test_far_future_timestamp_is_rejected():
    limits = Limits(max_future_seconds=60)
    ok = decode_batch(make(reading(ts=NOW + 60 * NANOS)), limits, now_ns=NOW)
    assert ok.timestamps.tolist() == [NOW + 60 * NANOS]
    batch = make(reading(), reading(), reading(), reading(ts=NOW + 61 * NANOS))
    assert field_of(batch, limits) == "readings[3].timestamp_unix_nanos"


def test_zero_timestamp_means_now():
    decoded = decode_batch(make(reading(ts=0), reading(ts=NOW - 5)), LIMITS, now_ns=NOW)
    assert decoded.timestamps.tolist() == [NOW, NOW - 5]


def test_zero_timestamp_without_explicit_now_uses_the_clock():
    import time

    before = time.time_ns()
    decoded = decode_batch(make(reading(ts=0)), LIMITS)
    assert before <= decoded.timestamps[0] <= time.time_ns()


def test_out_of_order_timestamps_are_accepted_in_arrival_order():
    stamps = [NOW - 10, NOW - 30, NOW - 20]
    decoded = decode_batch(make(*(reading(ts=t) for t in stamps)), LIMITS, now_ns=NOW)
    assert decoded.timestamps.tolist() == stamps


def test_too_many_readings():
    limits = Limits(max_batch_readings=3)
    assert decode_batch(make(*[reading()] * 3), limits, now_ns=NOW).rows == 3
    assert field_of(make(*[reading()] * 4), limits) == "readings"


def test_empty_batch_is_valid():
    decoded = decode_batch(pb.TelemetryBatch(batch_id=3), LIMITS, now_ns=NOW)
    assert decoded.rows == 0
    assert decoded.batch_id == 3
    assert decoded.values.shape == decoded.timestamps.shape == (0,)


def test_verdict_mode_defaults_to_anomalies():
    default = decode_batch(make(reading()), LIMITS, now_ns=NOW)
    assert default.verdict_mode == pb.VERDICT_MODE_ANOMALIES
    for mode in (pb.VERDICT_MODE_NONE, pb.VERDICT_MODE_ANOMALIES, pb.VERDICT_MODE_ALL):
        assert decode_batch(make(reading(), verdicts=mode), LIMITS, now_ns=NOW).verdict_mode == mode


def test_unknown_verdict_mode_is_rejected():
    assert field_of(make(reading(), verdicts=99)) == "verdicts"


def test_overlong_traceparent_is_rejected():
    assert field_of(make(reading(), traceparent="x" * 129)) == "traceparent"


def test_error_is_a_value_error_with_field_and_problem():
    with pytest.raises(ValueError) as caught:
        decode_batch(make(reading(value=math.nan)), LIMITS, now_ns=NOW)
    error = caught.value
    assert isinstance(error, InvalidArgument)
    assert error.field == "readings[0].value"
    assert error.problem and error.problem in str(error)


# ---------------------------------------------------------------- properties

SENSOR_IDS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/",
    min_size=1,
    max_size=40,
)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# What the orchestrator accepts: finite and within float32 range (history is float32).
FINITE = st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX)
TIMESTAMPS = st.one_of(st.just(0), st.integers(10**17, NOW + 86_400 * NANOS))
READINGS = st.lists(st.tuples(SENSOR_IDS, FINITE, TIMESTAMPS), max_size=50)


@settings(max_examples=100, deadline=None)
@given(READINGS)
def test_finite_readings_round_trip_in_order(rows):
    batch = make(*(reading(s, v, t) for s, v, t in rows))
    decoded = decode_batch(batch, LIMITS, now_ns=NOW)
    assert decoded.sensor_ids == [s for s, _, _ in rows]
    assert decoded.values.tolist() == [v for _, v, _ in rows]
    assert decoded.timestamps.tolist() == [t or NOW for _, _, t in rows]


@settings(max_examples=100, deadline=None)
@given(READINGS.filter(bool), st.data())
def test_one_bad_value_is_named_by_index(rows, data):
    index = data.draw(st.integers(0, len(rows) - 1))
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    readings = [reading(s, bad if i == index else v, t) for i, (s, v, t) in enumerate(rows)]
    assert field_of(make(*readings)) == f"readings[{index}].value"


@pytest.mark.parametrize("value", [1e39, -3.5e38])
def test_a_value_beyond_float32_range_is_refused_naming_it(value):
    batch = make(reading("a", 1.0, 0), reading("b", value, 0))
    with pytest.raises(InvalidArgument, match=r"readings\[1\]\.value.*float32"):
        decode_batch(batch, LIMITS, now_ns=NOW)


@pytest.mark.parametrize(
    ("stamp", "unit"),
    [
        (1_750_000_000, "seconds"),
        (1_750_000_000_000, "milliseconds"),
        (1_750_000_000_000_000, "microseconds"),
        (1, "seconds"),
    ],
)
def test_timestamps_in_coarser_units_are_refused_naming_the_unit(stamp, unit):
    # They used to be accepted silently as dates in January 1970.
    with pytest.raises(InvalidArgument) as caught:
        decode_batch(make(reading(ts=NOW - NANOS), reading(ts=stamp)), LIMITS, now_ns=NOW)
    assert caught.value.field == "readings[1].timestamp_unix_nanos"
    assert f"looks like {unit}" in caught.value.problem
    assert "SENTINEL_MIN_TIMESTAMP_UNIX_NANOS" in caught.value.problem


def test_old_timestamps_are_accepted_when_the_setting_allows_them():
    old = make(reading(ts=1_750_000_000_000), reading(ts=10**17 - 1))
    decoded = decode_batch(old, Limits(min_timestamp_unix_nanos=0), now_ns=NOW)
    assert decoded.timestamps.tolist() == [1_750_000_000_000, 10**17 - 1]
    # The default boundary: March 1973 in nanoseconds is fine, and 0 still means now.
    decoded = decode_batch(make(reading(ts=10**17), reading(ts=0)), LIMITS, now_ns=NOW)
    assert decoded.timestamps.tolist() == [10**17, NOW]


# ---------------------------------------------------------------- columnar form


def columns(rows, **fields) -> pb.TelemetryBatch:
    return pb.TelemetryBatch(
        columns=pb.ReadingColumns(
            sensor_ids=[s for s, _, _ in rows],
            values=[v for _, v, _ in rows],
            timestamps_unix_nanos=[t for _, _, t in rows],
        ),
        **fields,
    )


@settings(max_examples=100, deadline=None)
@given(READINGS)
def test_columns_decode_exactly_as_the_same_readings_do(rows):
    as_rows = decode_batch(make(*(reading(s, v, t) for s, v, t in rows)), LIMITS, now_ns=NOW)
    as_columns = decode_batch(columns(rows), LIMITS, now_ns=NOW)
    assert as_columns.sensor_ids == as_rows.sensor_ids
    assert as_columns.values.tolist() == as_rows.values.tolist()
    assert as_columns.timestamps.tolist() == as_rows.timestamps.tolist()
    # A resend in the other form is the same batch to dedup.
    assert as_columns.digest == as_rows.digest


@settings(max_examples=100, deadline=None)
@given(READINGS.filter(bool), st.data())
def test_one_bad_column_value_is_named_by_index(rows, data):
    index = data.draw(st.integers(0, len(rows) - 1))
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    rows = [(s, bad if i == index else v, t) for i, (s, v, t) in enumerate(rows)]
    assert field_of(columns(rows)) == f"columns.values[{index}]"


def test_column_sensor_ids_and_timestamps_are_named_by_index():
    rows = [("a", 1.0, NOW - 2), ("", 2.0, NOW - 1)]
    assert field_of(columns(rows)) == "columns.sensor_ids[1]"
    rows = [("a", 1.0, NOW - 2), ("b", 2.0, 1_750_000_000_000)]
    assert field_of(columns(rows)) == "columns.timestamps_unix_nanos[1]"


@pytest.mark.parametrize("short", ["values", "timestamps_unix_nanos"])
def test_columns_of_different_lengths_are_refused_naming_the_column(short):
    batch = columns([("a", 1.0, NOW - 2), ("b", 2.0, NOW - 1)])
    del getattr(batch.columns, short)[-1]
    assert field_of(batch) == f"columns.{short}"


def test_a_batch_with_readings_and_columns_is_refused():
    batch = columns([("a", 1.0, NOW - 1)])
    batch.readings.append(reading("b"))
    assert field_of(batch) == "columns"


def test_too_many_column_readings_counts_the_longest_column():
    batch = columns([("a", 1.0, NOW - 1)] * 3)
    batch.columns.values.extend([1.0] * 10)
    assert field_of(batch, Limits(max_batch_readings=5)) == "columns"


def test_an_empty_columns_message_is_an_empty_batch():
    batch = pb.TelemetryBatch(batch_id=3, columns=pb.ReadingColumns())
    decoded = decode_batch(batch, LIMITS, now_ns=NOW)
    assert decoded.rows == 0 and decoded.batch_id == 3

"""decode_batch: TelemetryBatch protobuf → validated numpy columns; parse_batch and the wire
size bounds that come before it."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.batches import (
    COUNT_FIRST_BYTES,
    NANOS,
    Limits,
    WireCount,
    count_readings,
    decode_batch,
    largest_batch_bytes,
    parse_batch,
)

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
    assert decoded.sensors == 2  # distinct ids: what a scoring round is charged by


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


# -- sizes before content (issue 13: bytes, not counts) ---------------------------------------

LONGEST = "\U0001f525" * 256  # 256 characters of 4 UTF-8 bytes: the widest id the limits accept


def test_the_largest_valid_batch_fits_the_receive_bound_and_is_accepted():
    limits = Limits(max_batch_readings=50)
    widest = make(
        *(reading(chr(0x1F300 + i) + LONGEST[1:], value=-3e38, ts=2**62) for i in range(50)),
        batch_id=2**64 - 1,
        verdicts=pb.VERDICT_MODE_ALL,
        traceparent=LONGEST[:128],
    )
    data = widest.SerializeToString()
    bound = largest_batch_bytes(limits)
    # The bound allows a 10-byte timestamp varint and an 11-byte verdict mode, which a valid
    # batch does not use: within a few bytes per reading of the widest real batch, never below.
    assert len(data) <= bound <= len(data) + 50 * 2 + 10
    assert parse_batch(data, limits, now_ns=2**62).rows == 50
    one_more = make(*widest.readings, reading(sensor=LONGEST), batch_id=1)
    assert one_more.ByteSize() > bound - 1000  # what gRPC refuses is not far above it


def test_readings_are_counted_on_the_wire_as_protobuf_parses_them():
    batch = make(reading("a"), reading(LONGEST), reading("b" * 200), batch_id=99, verdicts=1)
    data = batch.SerializeToString()
    assert count_readings(data, 10) == WireCount(3, 99, 1)
    assert count_readings(data, 1) == WireCount(2, 99, 0)  # stops past the limit
    # Unknown fields and field order do not matter (a hand-made or newer client).
    shuffled = (
        b"\x1a\x00" + b"\x20\x05" + pb.TelemetryBatch(readings=batch.readings).SerializeToString()
    )
    assert count_readings(shuffled + b"\x08\x07", 10).readings == 3
    with pytest.raises(InvalidArgument, match="truncated"):
        count_readings(data[:-3], 10)
    with pytest.raises(InvalidArgument, match="wire type 3"):
        count_readings(b"\x0b" + data, 10)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=40), max_size=30),
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2, 3]),
)
def test_counting_agrees_with_parsing(ids, batch_id, mode):
    batch = make(*(reading(sensor_id) for sensor_id in ids), batch_id=batch_id, verdicts=mode)
    counted = count_readings(batch.SerializeToString(), 1_000)
    assert counted == WireCount(len(ids), batch_id or None, mode)


def test_a_big_message_of_too_many_readings_is_refused_without_being_parsed():
    empty = b"\x12\x00" * 300_000  # 600 KB of empty readings: 300,000 of them
    not_utf8 = b"\x12\x03\x0a\x01\xff"  # a reading protobuf refuses to parse
    data = b"\x08\x2a" + empty + not_utf8
    assert len(data) > COUNT_FIRST_BYTES
    with pytest.raises(InvalidArgument) as refused:
        parse_batch(data, LIMITS)
    # Parsed, it would have been refused as not valid (and cost ~20 MB first); counted, it is
    # refused for its count before the parser gets to it.
    assert str(refused.value) == "readings: more than 10000 readings; the limit is 10000 per batch"
    assert refused.value.batch_id == 42


def test_small_messages_are_parsed_at_once_and_refusals_carry_the_batch_id():
    data = make(*[reading()] * 3, batch_id=5).SerializeToString()
    assert len(data) < COUNT_FIRST_BYTES
    assert parse_batch(data, LIMITS, now_ns=NOW).rows == 3
    with pytest.raises(InvalidArgument) as refused:
        parse_batch(data, Limits(max_batch_readings=2), now_ns=NOW)
    assert refused.value.batch_id == 5 and refused.value.field == "readings"
    with pytest.raises(InvalidArgument, match="not a valid TelemetryBatch"):
        parse_batch(b"\x12\x03\x0a\x01\xff", LIMITS)  # a sensor id that is not UTF-8


def test_a_batch_keeps_one_string_per_distinct_sensor_id():
    decoded = decode_batch(make(*[reading("pump-7")] * 1000), LIMITS, now_ns=NOW)
    assert len({id(s) for s in decoded.sensor_ids}) == 1


def test_decoded_size_is_an_upper_bound_of_the_columns_and_ids():
    for sensor in ("a", "x" * 256, LONGEST):
        ids = [f"{i:04d}{sensor}"[:256] for i in range(2_000)]
        decoded = decode_batch(make(*(reading(s) for s in ids)), LIMITS, now_ns=NOW)
        held = sum(map(sys.getsizeof, decoded.sensor_ids)) + 2 * 8 * 2_000 + 8 * 2_000
        assert held <= decoded.nbytes <= 1.3 * held + 100_000


def test_columns_are_counted_on_the_wire_by_their_longest_column():
    batch = columns([("a", 1.0, NOW - 1)] * 3, batch_id=4, verdicts=pb.VERDICT_MODE_NONE)
    batch.columns.timestamps_unix_nanos.extend([NOW] * 4)  # 7: refused as decode refuses it
    assert count_readings(batch.SerializeToString(), 100) == WireCount(7, 4, 1, columnar=True)
    empty_ids = pb.TelemetryBatch(columns=pb.ReadingColumns(sensor_ids=[""] * 300_000))
    with pytest.raises(InvalidArgument) as refused:
        parse_batch(empty_ids.SerializeToString(), LIMITS)
    assert str(refused.value).startswith("columns: more than 10000 readings")

"""Fault matrix, bad input: hypothesis over the proto fields against a running orchestrator.

The orchestrator is its own process (`sentinel serve orchestrator`, batch limit 100). While
each test throws bad input at it, a well-behaved producer streams on another connection; it
must get every batch acked, and the orchestrator's readings counter must grow by exactly the
readings that were accepted (none lost, none scored twice, nothing rejected scored).

Handling, as documented in orchestrator/batches.py and the README:
- NaN / +-inf values, empty, over-long (characters) or non-printable sensor ids, negative
  timestamps or ones more than max_future_seconds ahead, unknown verdict modes, traceparents
  over 128 characters, batches over max_batch_readings: INVALID_ARGUMENT naming the field
  (`readings[3].value`); the whole batch is rejected; on a stream, batches before it stay acked.
- a message over max_message_bytes: RESOURCE_EXHAUSTED from gRPC ("Received message larger
  than max (N vs. M)"), before any of it is decoded.
- strings that are not UTF-8 (only non-protobuf or hand-made clients can send them): a stream
  ends with INVALID_ARGUMENT "request: not a valid TelemetryBatch", and so does unary Detect
  (the orchestrator decodes leniently and refuses, counted, instead of gRPC logging a traceback).
- timestamp 0 = now; out-of-order timestamps are accepted (windows follow arrival order).
- duplicate batch id under the same x-sentinel-client-id: acked again with duplicate=true and
  the first readings_accepted, not scored again; without a client id every batch is scored.
- an empty batch: acked with 0 readings.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
import uuid

import grpc
import pytest
from faultkit import BackgroundProducer, process_mesh
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sentinel.client import CLIENT_ID_HEADER
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

NANOS = 1_000_000_000
BATCH_LIMIT = 100
MAX_FUTURE_S = 86_400
READINGS = "sentinel_orchestrator_readings_received_total"


@pytest.fixture(scope="module")
def orchestrator():
    context = process_mesh(
        engines=("threshold",),
        SENTINEL_MAX_BATCH_READINGS=str(BATCH_LIMIT),
        SENTINEL_MAX_SENSORS="10000",
    )
    loop = asyncio.new_event_loop()
    _specialists, child = loop.run_until_complete(context.__aenter__())
    try:
        yield child
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


@pytest.fixture
def stub(orchestrator):
    with grpc.insecure_channel(orchestrator.target) as channel:
        yield orchestrator_pb2_grpc.OrchestratorStub(channel)


def _scored(orchestrator) -> int:
    value = orchestrator.sample(READINGS)
    assert value is not None
    return int(value)


FLOAT32_MAX = 3.4028234663852886e38


def problems(batch: pb.TelemetryBatch, now_ns: int) -> set[str]:
    """Independent oracle: the fields the orchestrator must refuse this batch for."""
    found = set()
    if len(batch.readings) > BATCH_LIMIT:
        found.add("readings")
    if batch.verdicts not in pb.VerdictMode.values():
        found.add("verdicts")
    if len(batch.traceparent) > 128:
        found.add("traceparent")
    for i, r in enumerate(batch.readings):
        # Not finite, or beyond float32 (the orchestrator keeps history in float32).
        if not math.isfinite(r.value) or abs(r.value) > FLOAT32_MAX:
            found.add(f"readings[{i}].value")
        if not r.sensor_id or len(r.sensor_id) > 256 or not r.sensor_id.isprintable():
            found.add(f"readings[{i}].sensor_id")
        stamp = r.timestamp_unix_nanos
        # Negative, too far ahead, or so old it must be seconds/ms/us rather than nanoseconds.
        if stamp < 0 or stamp > now_ns + MAX_FUTURE_S * NANOS or 0 < stamp < 10**17:
            found.add(f"readings[{i}].timestamp_unix_nanos")
    return found


NOW = time.time_ns()
HORIZON = NOW + MAX_FUTURE_S * NANOS
sensor_ids = st.one_of(
    st.sampled_from(["pump-1", "fan-2", "Ünïcødé-3", "a b"]),
    st.text(max_size=12),
    st.just(""),
    st.text(min_size=250, max_size=270),
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=4),
)
timestamps = st.one_of(
    st.just(0),
    st.integers(NOW - 10 * 365 * 86_400 * NANOS, NOW + 3600 * NANOS),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(HORIZON + 3600 * NANOS, HORIZON + 365 * 86_400 * NANOS),
    st.integers(1, 2 * 10**17),  # seconds, milliseconds, microseconds, the 1970s
).filter(
    lambda t: abs(t - HORIZON) > 600 * NANOS
)  # clocks of two processes never disagree by 10 min
reading = st.builds(
    pb.Reading,
    sensor_id=sensor_ids,
    value=st.floats(allow_nan=True, allow_infinity=True),
    timestamp_unix_nanos=timestamps,
)
good_reading = st.builds(
    pb.Reading,
    sensor_id=st.sampled_from(["pump-1", "fan-2"]),
    value=st.floats(-1e6, 1e6),
    timestamp_unix_nanos=st.just(0),
)
batches = st.builds(
    pb.TelemetryBatch,
    batch_id=st.integers(0, 2**64 - 1),
    readings=st.one_of(
        st.lists(reading, max_size=6),
        st.lists(good_reading, min_size=BATCH_LIMIT - 2, max_size=BATCH_LIMIT + 3),
    ),
    verdicts=st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(-3, 9)),
    traceparent=st.one_of(st.just(""), st.text(max_size=140)),
)


def test_hypothesis_bad_input_gets_a_clear_status_and_others_keep_streaming(
    orchestrator, stub
) -> None:
    before = _scored(orchestrator)
    accepted = 0
    cases = {"ok": 0, "invalid": 0}

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(candidate=batches)
    def check(candidate: pb.TelemetryBatch) -> None:
        nonlocal accepted
        expected = problems(candidate, time.time_ns())
        assume(len(candidate.readings) <= BATCH_LIMIT + 3)
        # Unary.
        try:
            response = stub.Detect(candidate, timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            field = error.details().split(":")[0]
            assert field in expected, (error.details(), expected)
            cases["invalid"] += 1
        else:
            assert not expected, expected
            assert len(response.verdicts) == len(candidate.readings)
            assert [v.value for v in response.verdicts] == [r.value for r in candidate.readings]
            accepted += len(candidate.readings)
            cases["ok"] += 1
        # The same batch between two good ones on a stream (its own client id).
        first = pb.TelemetryBatch(
            batch_id=candidate.batch_id ^ 1, readings=[pb.Reading(sensor_id="pump-1", value=1.0)]
        )
        after = pb.TelemetryBatch(
            batch_id=candidate.batch_id ^ 2, readings=[pb.Reading(sensor_id="pump-1", value=2.0)]
        )
        call = stub.StreamTelemetry(
            iter([first, candidate, after]),
            metadata=((CLIENT_ID_HEADER, uuid.uuid4().hex),),
            timeout=10,
        )
        acks = []
        try:
            for event in call:
                if event.WhichOneof("event") == "ack":
                    acks.append(
                        (event.ack.batch_id, event.ack.readings_accepted, event.ack.duplicate)
                    )
        except grpc.RpcError as error:
            assert expected, error
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details().split(":")[0] in expected
            assert acks == [(first.batch_id, 1, False)]  # acked before the bad one; nothing after
            accepted += 1
        else:
            assert not expected
            assert acks == [
                (first.batch_id, 1, False),
                (candidate.batch_id, len(candidate.readings), False),
                (after.batch_id, 1, False),
            ]
            accepted += 2 + len(candidate.readings)

    with BackgroundProducer(orchestrator.target) as steady:
        check()
        producer = steady.finish()
    assert producer.acked_readings == producer.sent_readings > 0
    assert all(producer.acks[b] == 1 for b in producer.rows)
    assert _scored(orchestrator) - before == producer.sent_readings + accepted
    assert cases["ok"] > 0 and cases["invalid"] > 0
    print(
        f"\nhypothesis: {cases}, scored {accepted} accepted "
        f"+ {producer.sent_readings} steady readings"
    )


def _raw_batch(readings: int, with_timestamps: bool) -> bytes:
    """A TelemetryBatch serialised by hand (building a million Reading objects takes seconds)."""
    body = b"\x0a\x01a" + b"\x11" + struct.pack("<d", 1.0)  # sensor_id "a", value 1.0
    if with_timestamps:
        stamp = time.time_ns() - 3600 * NANOS
        varint = bytearray()
        while True:
            byte, stamp = stamp & 0x7F, stamp >> 7
            varint.append(byte | (0x80 if stamp else 0))
            if not stamp:
                break
        body += b"\x18" + bytes(varint)
    reading = b"\x12" + bytes([len(body)]) + body
    return b"\x08\x2a" + reading * readings


def test_a_million_reading_batch_is_refused_with_a_clear_status(orchestrator, stub) -> None:
    before = _scored(orchestrator)
    compact, stamped = _raw_batch(1_000_000, False), _raw_batch(1_000_000, True)
    assert len(pb.TelemetryBatch.FromString(compact).readings) == 1_000_000
    assert len(compact) < 16 * 1024 * 1024 < len(stamped)
    with grpc.insecure_channel(orchestrator.target) as channel:
        detect = channel.unary_unary(
            "/sentinel.v1.Orchestrator/Detect",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.DetectResponse.FromString,
        )
        stream = channel.stream_stream(
            "/sentinel.v1.Orchestrator/StreamTelemetry",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.StreamEvent.FromString,
        )
        with BackgroundProducer(orchestrator.target) as steady:
            # Under the 16 MiB message limit: decoded, then refused by the batch limit.
            for call in (
                lambda: detect(compact, timeout=60),
                lambda: list(stream(iter([compact]), timeout=60)),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert refused.value.details() == (
                    f"readings: 1000000 readings exceeds the limit of {BATCH_LIMIT} per batch"
                )
            # Over it: refused by gRPC before anything is decoded.
            for call in (
                lambda: detect(stamped, timeout=60),
                lambda: list(stream(iter([stamped]), timeout=60)),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "larger than max" in refused.value.details()
            producer = steady.finish()
    assert producer.acked_readings == producer.sent_readings > 0
    assert _scored(orchestrator) - before == producer.sent_readings  # nothing of the big ones


def _events(
    stub, batches, client_id: str | None = None
) -> tuple[list[pb.BatchAck], list[pb.Verdict], grpc.RpcError | None]:
    metadata = ((CLIENT_ID_HEADER, client_id),) if client_id else ()
    acks, verdicts, error = [], [], None
    try:
        for event in stub.StreamTelemetry(iter(batches), metadata=metadata, timeout=10):
            kind = event.WhichOneof("event")
            if kind == "ack":
                acks.append(event.ack)
            elif kind == "verdicts":
                verdicts.extend(event.verdicts.verdicts)
    except grpc.RpcError as failure:
        error = failure
    return acks, verdicts, error


def _batch(batch_id: int, values, stamps=None, sensor: str = "dup-1") -> pb.TelemetryBatch:
    stamps = stamps or [0] * len(values)
    return pb.TelemetryBatch(
        batch_id=batch_id,
        verdicts=pb.VERDICT_MODE_ALL,
        readings=[
            pb.Reading(sensor_id=sensor, value=v, timestamp_unix_nanos=t)
            for v, t in zip(values, stamps, strict=True)
        ],
    )


def test_duplicates_timestamps_empty_and_undecodable_batches(orchestrator, stub) -> None:
    before = _scored(orchestrator)
    expected_scored = 0
    with BackgroundProducer(orchestrator.target) as steady:
        # Duplicate batch ids under one client id: acked again as duplicates, scored once. A
        # batch id reused for other readings is no resend: refused, never acked as duplicate.
        client = f"gateway-{uuid.uuid4().hex[:6]}"
        acks, verdicts, error = _events(
            stub, [_batch(7, [1.0, 2.0, 3.0]), _batch(7, [1.0, 2.0, 3.0]), _batch(7, [9.0])], client
        )
        assert error is not None and error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "batch_id 7: already accepted" in error.details()
        assert [(a.batch_id, a.readings_accepted, a.duplicate) for a in acks] == [
            (7, 3, False),
            (7, 3, True),
        ]
        assert len(verdicts) == 3
        acks, verdicts, error = _events(
            stub, [_batch(7, [1.0, 2.0, 3.0])], client
        )  # a resend after reconnect
        assert [(a.batch_id, a.readings_accepted, a.duplicate) for a in acks] == [
            (7, 3, True)
        ] and not verdicts
        expected_scored += 3
        # Another client's batch 7 is a different batch; without a client id, no deduplication.
        acks, _, _ = _events(stub, [_batch(7, [1.0])], f"other-{uuid.uuid4().hex[:6]}")
        assert not acks[0].duplicate
        acks, _, _ = _events(stub, [_batch(7, [1.0]), _batch(7, [1.0])])
        assert [a.duplicate for a in acks] == [False, False]
        expected_scored += 3

        # Out-of-order timestamps are accepted as sent; 0 means now.
        base = time.time_ns() - 3600 * NANOS
        stamps = [base + 5 * NANOS, base, base + 2 * NANOS, 0]
        acks, verdicts, error = _events(
            stub, [_batch(1, [1.0, 2.0, 3.0, 4.0], stamps)], uuid.uuid4().hex
        )
        assert error is None and acks[0].readings_accepted == 4
        assert [v.timestamp_unix_nanos for v in verdicts[:3]] == stamps[:3]
        assert abs(verdicts[3].timestamp_unix_nanos - time.time_ns()) < 600 * NANOS
        expected_scored += 4

        # Absurd timestamps: INVALID_ARGUMENT naming the reading.
        seconds = time.time_ns() // NANOS
        for absurd in (
            -1,
            -(2**63),
            time.time_ns() + 2 * MAX_FUTURE_S * NANOS,
            2**63 - 1,
            seconds,
            seconds * 1000,
        ):
            acks, _, error = _events(
                stub, [_batch(1, [1.0]), _batch(2, [1.0, 1.0], [0, absurd])], uuid.uuid4().hex
            )
            assert [a.batch_id for a in acks] == [1]
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details().startswith("readings[1].timestamp_unix_nanos:")
            expected_scored += 1

        # Empty batch: acked with 0.
        acks, verdicts, error = _events(stub, [pb.TelemetryBatch(batch_id=5)], uuid.uuid4().hex)
        assert (
            error is None
            and [(a.batch_id, a.readings_accepted) for a in acks] == [(5, 0)]
            and not verdicts
        )

        # Not UTF-8 (a hand-made client): the stream and Detect end with INVALID_ARGUMENT.
        reading = b"\x0a\x02\xff\xfe" + b"\x11" + struct.pack("<d", 1.0)  # sensor_id b"\xff\xfe"
        bad = b"\x08\x05" + b"\x12" + bytes([len(reading)]) + reading
        with grpc.insecure_channel(orchestrator.target) as channel:
            raw_stream = channel.stream_stream(
                "/sentinel.v1.Orchestrator/StreamTelemetry",
                request_serializer=lambda raw: raw,
                response_deserializer=pb.StreamEvent.FromString,
            )
            with pytest.raises(grpc.RpcError) as refused:
                list(raw_stream(iter([bad]), timeout=10))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith("request: not a valid TelemetryBatch")
            raw_detect = channel.unary_unary(
                "/sentinel.v1.Orchestrator/Detect",
                request_serializer=lambda raw: raw,
                response_deserializer=pb.DetectResponse.FromString,
            )
            rejected = orchestrator.sample(
                "sentinel_orchestrator_batches_rejected_total", {"code": "INVALID_ARGUMENT"}
            )
            with pytest.raises(grpc.RpcError) as refused:
                raw_detect(bad, timeout=10)
            assert (
                orchestrator.sample(
                    "sentinel_orchestrator_batches_rejected_total", {"code": "INVALID_ARGUMENT"}
                )
                == (rejected or 0) + 1
            )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith("request: not a valid TelemetryBatch")
            assert "UTF-8" in refused.value.details()
        producer = steady.finish()
    assert producer.acked_readings == producer.sent_readings > 0
    assert _scored(orchestrator) - before == producer.sent_readings + expected_scored

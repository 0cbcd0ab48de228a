"""StreamTelemetry against a real mesh on loopback: acks, verdicts, alerts, degraded mode."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from readings import NANOS, batch, collect, noise
from sentinel.specialists.threshold import ENGINE_VERSION as THRESHOLD_VERSION

from sentinel.v1 import orchestrator_pb2 as pb

# Readings of one sensor before every engine votes: the statistical level needs 89 values, then
# each calibrated channel 150 more (the threshold engine of the test mesh votes at once: limit 90).
WARM_READINGS = 300


async def _requests(batches):
    for item in batches:
        yield item


async def test_every_batch_is_acked_once_in_order(mesh) -> None:
    sent = [
        batch(i, noise(25, seed=i), sensor=f"s{i % 4}", mode=pb.VERDICT_MODE_NONE)
        for i in range(1, 121)
    ]
    events = await collect(mesh.stub.StreamTelemetry(_requests(sent)))
    assert [a.batch_id for a in events["ack"]] == list(range(1, 121))
    assert sum(a.readings_accepted for a in events["ack"]) == 120 * 25
    assert not any(a.duplicate for a in events["ack"])
    assert events["verdicts"] == []  # VERDICT_MODE_NONE


async def test_all_mode_returns_one_verdict_per_reading_with_votes(mesh) -> None:
    sent = [
        batch(
            i,
            noise(WARM_READINGS // 3, seed=i),
            mode=pb.VERDICT_MODE_ALL,
            start_ns=time.time_ns() - (10 - i) * WARM_READINGS * NANOS,
        )
        for i in range(1, 5)
    ]
    events = await collect(mesh.stub.StreamTelemetry(_requests(sent)))
    verdicts = events["verdicts"]
    per_batch = WARM_READINGS // 3
    assert len(verdicts) == 4 * per_batch
    assert [v.batch_id for v in verdicts] == [b for b in range(1, 5) for _ in range(per_batch)]
    assert [v.value for v in verdicts] == [r.value for b in sent for r in b.readings]
    first, last = verdicts[0], verdicts[-1]
    # No history yet: window engines warm up while the threshold engine already votes.
    assert first.status == pb.VERDICT_STATUS_WARMING_UP
    assert {v.specialist for v in first.votes if v.warming_up} == {"statistical", "model"}
    assert last.status == pb.VERDICT_STATUS_OK
    assert {v.specialist for v in last.votes} == {"threshold", "statistical", "model"}
    assert not any(v.warming_up for v in last.votes)
    assert all(0.0 <= v.score <= 1.0 for v in verdicts)
    assert {v.engine_version for v in last.votes} >= {THRESHOLD_VERSION, "iforest-1.2.0"}
    # Calibrated engines carry a likelihood in [0, 1]; the threshold engine has none (1).
    likelihood = {v.specialist: v.likelihood for v in last.votes}
    assert likelihood["threshold"] == 1.0
    assert all(0.0 <= q <= 1.0 for q in likelihood.values())


async def test_spike_opens_one_alert_and_quiet_readings_resolve_it(mesh) -> None:
    values = list(noise(120, seed=3))
    values[100:103] = [150.0, 160.0, 155.0]  # one stretch of anomalous points
    sent = [
        batch(1, values[:60], mode=pb.VERDICT_MODE_ANOMALIES),
        batch(
            2, values[60:], start_ns=time.time_ns() - 1800 * NANOS, mode=pb.VERDICT_MODE_ANOMALIES
        ),
    ]
    events = await collect(mesh.stub.StreamTelemetry(_requests(sent)))
    alerts = events["alert"]
    assert [a.state for a in alerts] == [pb.ALERT_STATE_OPEN, pb.ALERT_STATE_RESOLVED]
    opened, resolved = alerts
    assert opened.alert_id == resolved.alert_id and opened.sensor_id == "sensor-1"
    assert resolved.peak_value >= 150.0 and resolved.anomalous_readings == 3
    assert any("above high limit 90" in r for r in opened.reasons)
    assert f"threshold@{THRESHOLD_VERSION}" in opened.engine_versions
    # The alert names the reading that opened it, and the one that resolved it.
    assert (opened.batch_id, opened.reading_index) == (2, 40)
    assert (resolved.batch_id, resolved.reading_index) == (2, 47)  # 5 quiet readings (fixture)
    assert resolved.resolved_timestamp_unix_nanos >= resolved.last_timestamp_unix_nanos
    # Anomalies-only mode: exactly the spike readings come back as verdicts.
    assert sorted(v.value for v in events["verdicts"]) == [150.0, 155.0, 160.0]


async def test_alert_watchers_receive_alerts_filtered_by_prefix(mesh) -> None:
    everything = mesh.stub.WatchAlerts(pb.WatchAlertsRequest())
    only_pumps = mesh.stub.WatchAlerts(pb.WatchAlertsRequest(sensor_id_prefix="pump-"))
    await asyncio.sleep(0.2)  # let both subscriptions register
    await mesh.stub.Detect(batch(1, [200.0], sensor="pump-7"))
    await mesh.stub.Detect(batch(2, [200.0], sensor="fan-2"))
    first = await asyncio.wait_for(everything.read(), 5)
    second = await asyncio.wait_for(everything.read(), 5)
    assert {first.sensor_id, second.sensor_id} == {"pump-7", "fan-2"}
    pump = await asyncio.wait_for(only_pumps.read(), 5)
    assert pump.sensor_id == "pump-7" and pump.state == pb.ALERT_STATE_OPEN
    everything.cancel()
    only_pumps.cancel()


async def test_detect_returns_a_verdict_for_every_reading(mesh) -> None:
    request = batch(9, [10.0, 20.0, 95.0], mode=pb.VERDICT_MODE_NONE)
    response = await mesh.stub.Detect(request)
    assert response.batch_id == 9
    assert [v.value for v in response.verdicts] == [10.0, 20.0, 95.0]
    assert [v.anomaly for v in response.verdicts] == [False, False, True]
    assert [a.state for a in response.alerts] == [pb.ALERT_STATE_OPEN]


async def test_stopped_specialist_degrades_verdicts_then_recovers(mesh) -> None:
    """Stop `statistical` mid-stream: verdicts name it as missing, nothing is lost; restart it:
    full verdicts again."""
    queue: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (item := await queue.get()) is not None:
            yield item

    call = mesh.stub.StreamTelemetry(requests())
    start = time.time_ns() - 3600 * NANOS
    next_id = iter(range(1, 10_000))
    sent_readings = 0

    async def roundtrip(values) -> tuple[pb.BatchAck, list[pb.Verdict]]:
        nonlocal sent_readings, start
        await queue.put(batch(next(next_id), values, start_ns=start, mode=pb.VERDICT_MODE_ALL))
        start += len(values) * NANOS
        sent_readings += len(values)
        verdicts: list[pb.Verdict] = []
        while True:
            event = await asyncio.wait_for(call.read(), 10)
            kind = event.WhichOneof("event")
            if kind == "verdicts":
                verdicts.extend(event.verdicts.verdicts)
            elif kind == "ack":
                return event.ack, verdicts

    ack, verdicts = await roundtrip(noise(WARM_READINGS, seed=1))
    assert verdicts[-1].status == pb.VERDICT_STATUS_OK

    await mesh.specialists["statistical"].stop(drain_delay=0, grace=0)
    ack, verdicts = await roundtrip(noise(40, seed=2))
    assert ack.readings_accepted == 40 and len(verdicts) == 40
    assert all(v.status == pb.VERDICT_STATUS_DEGRADED for v in verdicts)
    assert all(list(v.missing) == ["statistical"] for v in verdicts)
    assert all({vote.specialist for vote in v.votes} == {"threshold", "model"} for v in verdicts)

    # Still scoring while degraded: a spike is caught by the remaining engines.
    ack, verdicts = await roundtrip([200.0])
    assert verdicts[0].anomaly and verdicts[0].status == pb.VERDICT_STATUS_DEGRADED

    await mesh.restart_specialist("statistical")
    deadline = time.monotonic() + 20
    while True:
        ack, verdicts = await roundtrip(noise(10, seed=3))
        assert len(verdicts) == 10
        if verdicts[-1].status == pb.VERDICT_STATUS_OK:
            break
        assert time.monotonic() < deadline, "verdicts never recovered after the restart"
    assert {vote.specialist for vote in verdicts[-1].votes} == {"threshold", "statistical", "model"}
    await queue.put(None)
    rest = await collect(call)
    assert rest["ack"] == []
    readings = mesh.orchestrator.metrics.readings._value.get()
    assert readings == sent_readings


@pytest.mark.parametrize(
    ("readings", "field"),
    [
        ([pb.Reading(sensor_id="a", value=float("nan"))], "readings[0].value"),
        (
            [pb.Reading(sensor_id="a", value=1.0), pb.Reading(sensor_id="a", value=float("inf"))],
            "readings[1].value",
        ),
        ([pb.Reading(sensor_id="", value=1.0)], "readings[0].sensor_id"),
        ([pb.Reading(sensor_id="x" * 300, value=1.0)], "readings[0].sensor_id"),
        (
            [pb.Reading(sensor_id="a", value=1.0, timestamp_unix_nanos=-5)],
            "readings[0].timestamp_unix_nanos",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(mesh, readings, field) -> None:
    bad = pb.TelemetryBatch(batch_id=2, readings=readings)
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await mesh.stub.Detect(bad)
    assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in unary.value.details()

    # On a stream: batches before the bad one are acked, then the stream ends with the status.
    call = mesh.stub.StreamTelemetry(_requests([batch(1, [1.0, 2.0]), bad, batch(3, [1.0])]))
    acks = []
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for event in call:
            if event.WhichOneof("event") == "ack":
                acks.append(event.ack.batch_id)
    assert acks == [1]
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in streamed.value.details()
    # The server keeps serving other calls.
    assert (await mesh.stub.Detect(batch(4, [1.0]))).verdicts


async def test_oversize_batch_is_rejected_naming_readings(mesh) -> None:
    limit = mesh.orchestrator.settings.max_batch_readings
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await mesh.stub.Detect(batch(1, [1.0] * (limit + 1)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "readings" in error.value.details() and str(limit) in error.value.details()


async def test_empty_batch_is_acked_with_zero_readings(mesh) -> None:
    events = await collect(mesh.stub.StreamTelemetry(_requests([pb.TelemetryBatch(batch_id=5)])))
    assert [(a.batch_id, a.readings_accepted) for a in events["ack"]] == [(5, 0)]


async def test_columnar_batches_are_scored_like_readings(mesh) -> None:
    """The columnar form through a real orchestrator with TelemetryClient: every reading is
    scored and acked, and a spike sent as columns is flagged like one sent as Reading rows."""
    from sentinel.client import TelemetryClient, reading_columns

    start = time.time_ns() - 3_600 * NANOS
    values = [50.0 + (i % 7) * 0.1 for i in range(WARM_READINGS)] + [500.0]
    stamps = [start + i * NANOS for i in range(len(values))]
    verdicts = []
    async with TelemetryClient(
        mesh.target,
        verdicts=pb.VERDICT_MODE_ANOMALIES,
        on_verdicts=lambda _batch_id, got: verdicts.extend(got),
    ) as client:
        for offset in range(0, len(values), 100):
            chunk = slice(offset, offset + 100)
            await client.send(
                reading_columns(["col-1"] * len(values[chunk]), values[chunk], stamps[chunk])
            )
        await asyncio.wait_for(client.flush(), 30)
    assert client.stats.readings_acked == len(values)
    assert [v.value for v in verdicts if v.anomaly] == [500.0]

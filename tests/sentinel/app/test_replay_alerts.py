"""`sentinel replay` output: the `alert` and `<specialist>_likelihood` columns, without the mesh.

The collector and the writer are fed synthetic verdicts and alerts; one test streams through a
fake orchestrator (a bare gRPC servicer) that sends each batch's alerts after its ack."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import grpc
import numpy as np
import pytest

from sentinel.app.replay import Series, VerdictCollector, replay, write_verdicts
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

OPEN, RESOLVED = pb.ALERT_STATE_OPEN, pb.ALERT_STATE_RESOLVED


def series(values: list[float], sensor: str = "s") -> Series:
    stamps = [f"2021-03-01 00:{i:02d}:00" for i in range(len(values))]
    return Series(
        timestamps_text=stamps,
        timestamps=np.arange(len(values), dtype=np.int64) * 60_000_000_000,
        values=np.array(values, dtype=float),
        sensor_ids=[sensor] * len(values),
    )


def verdict(batch_id: int, anomaly: bool = False, warming: bool = False) -> pb.Verdict:
    return pb.Verdict(
        sensor_id="s",
        batch_id=batch_id,
        anomaly=anomaly,
        score=0.9 if anomaly else 0.1,
        status=pb.VERDICT_STATUS_WARMING_UP if warming else pb.VERDICT_STATUS_OK,
        votes=[
            pb.Vote(specialist="threshold", score=0.25, likelihood=1.0),
            pb.Vote(
                specialist="statistical",
                score=0.75,
                likelihood=0.000123456789 if anomaly else 0.5,
                warming_up=warming,
            ),
        ],
    )


def alert(batch_id: int, index: int, state: int, alert_id: str = "a1", sensor: str = "s"):
    return pb.Alert(
        alert_id=alert_id, sensor_id=sensor, state=state, batch_id=batch_id, reading_index=index
    )


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_alerts_land_on_the_rows_that_emitted_them_and_foreign_ones_are_ignored(
    tmp_path: Path,
) -> None:
    data = series([1.0, 2.0, 99.0, 98.0, 3.0, 4.0, 5.0])
    collector = VerdictCollector(7, data.sensor_ids)
    collector.expect(1001, range(0, 3))
    collector.expect(1002, range(3, 7))
    # Alerts may come before the batch's verdicts are all in, and after its ack.
    collector.on_alert(alert(1001, 2, OPEN))  # row 2
    collector.on_verdicts(1001, [verdict(1001, warming=True), verdict(1001), verdict(1001, True)])
    collector.on_verdicts(1002, [verdict(1002, True)])  # row 3
    collector.on_verdicts(1002, [verdict(1002), verdict(1002)])  # rows 4, 5; row 6 never comes
    collector.on_alert(alert(1002, 2, RESOLVED))  # row 5
    collector.on_alert(alert(1002, 2, RESOLVED))  # the same event twice: written once
    # Not ours: another batch id, an index past the batch, another sensor, no state.
    collector.on_alert(alert(999, 0, OPEN, "x"))
    collector.on_alert(alert(1002, 4, OPEN, "y"))
    collector.on_alert(alert(1001, 0, OPEN, "z", sensor="other"))
    collector.on_alert(alert(1001, 1, pb.ALERT_STATE_UNSPECIFIED, "w"))
    assert collector.ignored_alerts == 4
    assert collector.alerts == ["", "", "open", "", "", "resolved", ""]

    out = tmp_path / "verdicts.csv"
    counts = write_verdicts(out, data, collector.by_row, collector.alerts)
    assert counts == {
        "rows": 7,
        "anomalies": 2,
        "missing": 1,
        "alerts_opened": 1,
        "alerts_resolved": 1,
    }
    header, rows = read_rows(out)
    assert header == [
        "timestamp",
        "sensor_id",
        "value",
        "anomaly",
        "score",
        "status",
        "alert",
        "statistical_score",
        "statistical_likelihood",
        "threshold_score",
        "threshold_likelihood",
    ]
    assert len(rows) == 7  # one row per input row, in file order
    assert [r["timestamp"] for r in rows] == data.timestamps_text
    assert [r["alert"] for r in rows] == ["", "", "open", "", "", "resolved", ""]
    assert [r["status"] for r in rows] == ["warming_up", "ok", "ok", "ok", "ok", "ok", "missing"]
    # %.6g likelihoods; empty while the engine warms up and where there is no verdict.
    assert [r["statistical_likelihood"] for r in rows] == [
        "",
        "0.5",
        "0.000123457",
        "0.000123457",
        "0.5",
        "0.5",
        "",
    ]
    assert rows[0]["statistical_score"] == "" and rows[0]["threshold_likelihood"] == "1"
    assert rows[2]["threshold_score"] == "0.250000"


def test_a_reading_that_resolves_one_incident_and_opens_the_next_keeps_both(
    tmp_path: Path,
) -> None:
    data = series([1.0, 2.0])
    collector = VerdictCollector(2, data.sensor_ids)
    collector.expect(7, range(0, 2))
    collector.on_verdicts(7, [verdict(7, True), verdict(7, True)])
    collector.on_alert(alert(7, 0, OPEN, "first"))
    collector.on_alert(alert(7, 1, RESOLVED, "first"))
    collector.on_alert(alert(7, 1, OPEN, "second"))
    out = tmp_path / "verdicts.csv"
    counts = write_verdicts(out, data, collector.by_row, collector.alerts)
    assert (counts["alerts_opened"], counts["alerts_resolved"]) == (2, 1)
    assert [r["alert"] for r in read_rows(out)[1]] == ["open", "resolved;open"]


def test_writer_without_alerts_and_with_mismatched_lengths(tmp_path: Path) -> None:
    data = series([1.0])
    out = tmp_path / "v.csv"
    write_verdicts(out, data, [verdict(1)])
    assert read_rows(out)[1][0]["alert"] == ""
    with pytest.raises(ValueError, match="one entry per row"):
        write_verdicts(out, data, [verdict(1)], ["", ""])


class AlertsAfterAck(orchestrator_pb2_grpc.OrchestratorServicer):
    """Verdicts, then the ack, then (a little later) the alerts of the batch, like the real
    orchestrator: an alert opens on a reading over 50 and resolves on the next one under it.
    Also sends an alert of some other sensor, which replay must ignore."""

    async def StreamTelemetry(self, request_iterator, context):
        is_open = False
        async for batch in request_iterator:
            verdicts = [
                pb.Verdict(
                    sensor_id=r.sensor_id,
                    batch_id=batch.batch_id,
                    value=r.value,
                    anomaly=r.value > 50,
                    status=pb.VERDICT_STATUS_OK,
                    votes=[pb.Vote(specialist="fake", score=0.5, likelihood=0.01)],
                )
                for r in batch.readings
            ]
            yield pb.StreamEvent(verdicts=pb.VerdictBatch(verdicts=verdicts))
            yield pb.StreamEvent(
                ack=pb.BatchAck(batch_id=batch.batch_id, readings_accepted=len(verdicts))
            )
            await asyncio.sleep(0.05)  # the client has its ack and may be closing by now
            for index, reading in enumerate(batch.readings):
                state = None
                if reading.value > 50 and not is_open:
                    state, is_open = OPEN, True
                elif reading.value <= 50 and is_open:
                    state, is_open = RESOLVED, False
                if state is not None:
                    yield pb.StreamEvent(
                        alert=pb.Alert(
                            alert_id=f"a{batch.batch_id}",
                            sensor_id=reading.sensor_id,
                            state=state,
                            batch_id=batch.batch_id,
                            reading_index=index,
                        )
                    )
            yield pb.StreamEvent(
                alert=pb.Alert(alert_id="other", sensor_id="elsewhere", state=OPEN, batch_id=1)
            )


async def test_replay_collects_alerts_that_follow_the_last_ack(tmp_path: Path) -> None:
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(AlertsAfterAck(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        values = [1.0, 2.0, 3.0, 60.0, 61.0, 4.0, 5.0, 6.0, 70.0]  # the last row opens an alert
        out = tmp_path / "verdicts.csv"
        counts = await replay(series(values), f"127.0.0.1:{port}", out, batch_size=2)
    finally:
        await server.stop(None)
    assert (counts["rows"], counts["alerts_opened"], counts["alerts_resolved"]) == (9, 2, 1)
    _, rows = read_rows(out)
    assert [r["alert"] for r in rows] == ["", "", "", "open", "", "resolved", "", "", "open"]
    assert {r["fake_likelihood"] for r in rows} == {"0.01"}

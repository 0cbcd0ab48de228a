"""What a real orchestrator sends each specialist, by what the specialist declared it reads
(DescribeResponse.row_columns), and how it reads their reasons (sparse or dense), over real
gRPC with in-process fake specialists that record every Score request.

- declared NONE: values, windows and views only; no sensor ids, no timestamps;
- declared SENSOR_IDS: the distinct form (sensors + sensor_rows), no per-row ids;
- declared TIMESTAMPS: the timestamps, no ids;
- no declaration (an engine of the previous revision): per-row ids and timestamps as before,
  and its dense reasons reach verdicts and alerts;
- a shadow scores its specialist's request, which then carries what the shadow reads too;
- reasons of rows that do not exist leave that specialist's votes missing, as a wrong number
  of rows does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from mesh_fixtures import no_tracing
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc, specialist_pb2, specialist_pb2_grpc

NANOS = 1_000_000_000
START = 1_700_000_000 * NANOS
LIMIT = 90.0
NONE = [specialist_pb2.ROW_COLUMN_NONE]
SENSOR_IDS = [specialist_pb2.ROW_COLUMN_SENSOR_IDS]
TIMESTAMPS = [specialist_pb2.ROW_COLUMN_TIMESTAMPS]
LEGACY: list[int] = []  # an engine predating row_columns declares nothing


class Recording(specialist_pb2_grpc.SpecialistServicer):
    """Declares `row_columns`, records every Score request and flags values above LIMIT with a
    reason: only for those rows where the request allows it (unless `dense`, as an engine of
    the previous revision answers: one reason per row, whatever the request says)."""

    def __init__(self, name: str, row_columns: Sequence[int], dense: bool = False) -> None:
        self.name, self.row_columns, self.dense = name, list(row_columns), dense
        self.requests: list[specialist_pb2.ScoreRequest] = []

    async def Describe(self, request, context):  # noqa: N802
        return specialist_pb2.DescribeResponse(
            engine=self.name, engine_version="1", window_length=0, row_columns=self.row_columns
        )

    async def Score(self, request, context):  # noqa: N802
        self.requests.append(request)
        rows = len(request.values)
        flagged = [value > LIMIT for value in request.values]
        response = specialist_pb2.ScoreResponse(
            scores=[1.0 if f else 0.0 for f in flagged],
            anomalies=flagged,
            warming_up=[False] * rows,
            engine=self.name,
            engine_version="1",
        )
        explained = {i: f"{self.name} saw {request.values[i]:g}" for i in range(rows) if flagged[i]}
        if request.sparse_reasons and not self.dense:
            response.reason_rows.extend(explained)
            response.reasons.extend(explained.values())
        else:
            response.reasons.extend(explained.get(i, "") for i in range(rows))
        return response


class BadReasons(Recording):
    """Answers reasons that do not fit the request's rows."""

    def __init__(self, name: str, fault: str) -> None:
        super().__init__(name, NONE)
        self.fault = fault

    async def Score(self, request, context):  # noqa: N802
        response = await super().Score(request, context)
        rows = len(request.values)
        del response.reasons[:], response.reason_rows[:]
        if self.fault == "row beyond the request":
            response.reason_rows.append(rows)
            response.reasons.append("no such row")
        elif self.fault == "more reasons than rows named":
            response.reason_rows.append(0)
            response.reasons.extend(["one", "two"])
        elif self.fault == "rows not ascending":
            response.reason_rows.extend([1, 0])
            response.reasons.extend(["b", "a"])
        else:  # dense, one short
            response.reasons.extend([""] * (rows - 1))
        return response


@contextlib.asynccontextmanager
async def mesh(
    specialists: Sequence[Recording], shadows: Sequence[Recording] = ()
) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorStub]:
    servers, targets = [], {}
    for role, fakes in (("specialist", specialists), ("shadow", shadows)):
        for fake in fakes:
            server = grpc.aio.server()
            specialist_pb2_grpc.add_SpecialistServicer_to_server(fake, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            targets[role, fake.name] = f"127.0.0.1:{port}"

    def listed(role: str) -> str:
        return ",".join(f"{name}={target}" for (r, name), target in targets.items() if r == role)

    process = OrchestratorProcess(
        OrchestratorSettings(
            port=0,
            drain_delay_seconds=0,
            specialists=listed("specialist"),
            shadows=listed("shadow"),
            shadow_verdicts=bool(shadows),
        ),
        no_tracing(),
    )
    await process.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.port}") as channel:
            yield orchestrator_pb2_grpc.OrchestratorStub(channel)
    finally:
        await process.stop(drain_delay=0, grace=0)
        for server in servers:
            await server.stop(0)


# Two sensors, interleaved, repeated: a round with several readings per sensor.
SENSORS = ["pump-2", "pump-1", "pump-2", "fan-9", "pump-1", "pump-2"]
VALUES = [10.0, 95.0, 11.0, 12.0, 13.0, 99.0]
STAMPS = [START + i * NANOS for i in range(len(SENSORS))]


def detect_batch(batch_id: int = 1) -> pb.TelemetryBatch:
    return pb.TelemetryBatch(
        batch_id=batch_id,
        columns=pb.ReadingColumns(sensor_ids=SENSORS, values=VALUES, timestamps_unix_nanos=STAMPS),
    )


async def test_each_specialist_is_sent_the_row_columns_it_declared() -> None:
    fakes = {
        "none": Recording("none", NONE),
        "ids": Recording("ids", SENSOR_IDS),
        "stamps": Recording("stamps", TIMESTAMPS),
        "both": Recording("both", SENSOR_IDS + TIMESTAMPS),
        "legacy": Recording("legacy", LEGACY, dense=True),
    }
    async with mesh(list(fakes.values())) as stub:
        answer = await stub.Detect(detect_batch())
    sent = {name: fake.requests[0] for name, fake in fakes.items()}
    for name, request in sent.items():
        assert len(fakes[name].requests) == 1, name
        assert list(request.values) == VALUES, name
        assert request.sparse_reasons, name  # every request says the orchestrator reads them

    def distinct_ids(request: specialist_pb2.ScoreRequest) -> list[str]:
        return [request.sensors[i] for i in request.sensor_rows]

    none = sent["none"]
    assert not none.sensor_ids and not none.sensors and not none.sensor_rows
    assert not none.timestamps_unix_nanos
    ids = sent["ids"]
    assert not ids.sensor_ids and not ids.timestamps_unix_nanos
    assert list(ids.sensors) == ["pump-2", "pump-1", "fan-9"]  # each once, as first seen
    assert distinct_ids(ids) == SENSORS
    stamps = sent["stamps"]
    assert list(stamps.timestamps_unix_nanos) == STAMPS
    assert not stamps.sensor_ids and not stamps.sensors and not stamps.sensor_rows
    both = sent["both"]
    assert distinct_ids(both) == SENSORS and list(both.timestamps_unix_nanos) == STAMPS
    assert not both.sensor_ids
    legacy = sent["legacy"]  # exactly as before the declaration existed
    assert list(legacy.sensor_ids) == SENSORS and list(legacy.timestamps_unix_nanos) == STAMPS
    assert not legacy.sensors and not legacy.sensor_rows

    # Sparse and dense reasons alike reach the verdicts, on the flagged rows only.
    assert len(answer.verdicts) == len(SENSORS)
    for verdict, value in zip(answer.verdicts, VALUES, strict=True):
        assert verdict.status == pb.VERDICT_STATUS_OK and not verdict.missing
        reasons = {vote.specialist: vote.reason for vote in verdict.votes}
        if value > LIMIT:
            assert reasons == {name: f"{name} saw {value:g}" for name in fakes}
        else:
            assert set(reasons.values()) == {""}
    opened = {alert.sensor_id: list(alert.reasons) for alert in answer.alerts}
    assert set(opened) == {"pump-1", "pump-2"}
    assert "legacy: legacy saw 95" in opened["pump-1"]
    assert "ids: ids saw 99" in opened["pump-2"]


@pytest.mark.parametrize(
    "fault",
    [
        "row beyond the request",
        "more reasons than rows named",
        "rows not ascending",
        "dense, one short",
    ],
)
async def test_reasons_that_do_not_fit_the_rows_leave_that_specialists_votes_missing(fault):
    good, bad = Recording("good", NONE), BadReasons("bad", fault)
    async with mesh([good, bad]) as stub:
        answer = await stub.Detect(detect_batch())
    assert bad.requests, "the bad specialist was called"
    for verdict in answer.verdicts:
        assert list(verdict.missing) == ["bad"]
        assert verdict.status == pb.VERDICT_STATUS_DEGRADED
        assert [vote.specialist for vote in verdict.votes] == ["good"]


@pytest.mark.parametrize(
    ("shadow_reads", "expected"),
    [(TIMESTAMPS, "timestamps"), (SENSOR_IDS, "distinct ids"), (LEGACY, "per-row")],
)
async def test_a_shadow_gets_what_it_reads_on_its_specialists_request(shadow_reads, expected):
    primary = Recording("model", NONE)
    shadow = Recording("model", shadow_reads, dense=shadow_reads == LEGACY)
    async with mesh([primary], shadows=[shadow]) as stub:
        answer = await stub.Detect(detect_batch())
    # The same bytes went to both: the shadow's columns ride on the primary's request.
    assert [r.SerializeToString() for r in primary.requests] == [
        r.SerializeToString() for r in shadow.requests
    ]
    (request,) = shadow.requests
    if expected == "timestamps":
        assert list(request.timestamps_unix_nanos) == STAMPS
        assert not request.sensors and not request.sensor_ids
    elif expected == "distinct ids":
        assert [request.sensors[i] for i in request.sensor_rows] == SENSORS
        assert not request.timestamps_unix_nanos and not request.sensor_ids
    else:
        assert list(request.sensor_ids) == SENSORS
        assert list(request.timestamps_unix_nanos) == STAMPS
    # And the shadow's answer was compared (its vote is in the verdicts), reasons included.
    flagged = [v for v in answer.verdicts if v.value > LIMIT]
    assert flagged and all(v.shadows[0].vote.reason == f"model saw {v.value:g}" for v in flagged)


async def test_without_shadows_a_specialist_reading_nothing_gets_no_row_columns() -> None:
    # The sizes the declarations save: per-row ids and timestamps are most of a small request.
    none, legacy = Recording("none", NONE), Recording("legacy", LEGACY, dense=True)
    async with mesh([none, legacy]) as stub:
        await stub.Detect(detect_batch())
    assert none.requests[0].ByteSize() < legacy.requests[0].ByteSize() / 2


class MixedRevisions(Recording):
    """One target, two revisions: Describe answered by a current replica (declares NONE),
    Score by one of the previous revision, which refuses a request without per-row ids and
    timestamps as that revision's codec did (INVALID_ARGUMENT naming the field)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, NONE, dense=True)

    async def Score(self, request, context):  # noqa: N802
        rows = len(request.values)
        for field, column in (
            ("sensor_ids", request.sensor_ids),
            ("timestamps_unix_nanos", request.timestamps_unix_nanos),
        ):
            if len(column) != rows:
                self.requests.append(request)
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{field}: has {len(column)} entries"
                )
        return await super().Score(request, context)


async def test_a_replica_of_the_previous_revision_gets_every_column_after_one_refusal() -> None:
    good, mixed = Recording("good", NONE), MixedRevisions("mixed")
    async with mesh([good, mixed]) as stub:
        first = await stub.Detect(detect_batch(1))
        second = await stub.Detect(detect_batch(2))
    refused, resent = mixed.requests
    assert not refused.sensor_ids and not refused.timestamps_unix_nanos
    assert list(resent.sensor_ids) == SENSORS and list(resent.timestamps_unix_nanos) == STAMPS
    # The refused round is degraded (that specialist's votes missing), the next one is whole;
    # the specialist that took the slim request keeps getting it.
    assert {tuple(v.missing) for v in first.verdicts} == {("mixed",)}
    assert {tuple(v.missing) for v in second.verdicts} == {()}
    assert all(not r.sensor_ids and not r.timestamps_unix_nanos for r in good.requests)

"""The Specialist service over real gRPC: Describe, Score, and bad requests."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from mesh_fixtures import LIMIT_90_RULES, start_specialist
from sentinel.specialists.statistical import ENGINE_VERSION, StatisticalParams

from sentinel.tensors import encode_windows
from sentinel.v1 import specialist_pb2 as pb
from sentinel.v1 import specialist_pb2_grpc

# window = short - 1 + reference = 20 values; the level needs all of them (min_reference 15).
SHORT, REFERENCE = 6, 15


@pytest.fixture
async def statistical():
    process = await start_specialist(
        "statistical", statistical_short=SHORT, statistical_reference=REFERENCE
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
        yield specialist_pb2_grpc.SpecialistStub(channel)
    await process.stop(drain_delay=0, grace=0)


async def test_describe_reports_engine_version_window_views_and_channels(statistical) -> None:
    info = await statistical.Describe(pb.DescribeRequest())
    assert (info.engine, info.engine_version, info.window_length) == (
        "statistical",
        ENGINE_VERSION,
        20,
    )
    assert info.parameters["level"] == "median of 6 vs median/MAD of the 15 before"
    (view,) = info.views
    assert (view.name, view.kind) == ("daily", pb.VIEW_KIND_SEASONAL)
    assert (view.period_seconds, view.bucket_seconds, view.smoothing) == (86_400.0, 300.0, 12)
    channels = {c.name: (c.calibration, c.flag_below) for c in info.channels}
    defaults = StatisticalParams()
    assert channels == {
        "level": (pb.CALIBRATION_LIKELIHOOD, defaults.level_flag_below),
        "daily": (pb.CALIBRATION_STANDARDIZED_LIKELIHOOD, defaults.daily_flag_below),
    }


def _request(windows: np.ndarray, values, fill, daily) -> pb.ScoreRequest:
    rows = len(values)
    return pb.ScoreRequest(
        sensor_ids=[f"s{i}" for i in range(rows)],
        values=values,
        timestamps_unix_nanos=list(range(1, rows + 1)),
        windows=encode_windows(windows),
        window_fill=fill,
        views=[pb.View(name="daily", values=encode_windows(np.asarray(daily)[:, None]))],
    )


async def test_score_returns_one_answer_and_every_channel_per_row(statistical) -> None:
    calm = np.linspace(9.0, 11.0, 20)
    shifted = np.concatenate([np.linspace(9.0, 11.0, 15), np.full(5, 20.0)])
    short = calm.copy()
    short[:15] = np.nan  # 5 values so far: warming up
    request = _request(
        np.stack([calm, shifted, short]), [10.0, 20.0, 10.0], [20, 20, 5], [10.0, 10.0, np.nan]
    )
    response = await statistical.Score(request)
    assert response.engine == "statistical" and response.engine_version == ENGINE_VERSION
    # The engine never flags rows itself: the orchestrator's calibrated likelihoods do.
    assert list(response.anomalies) == [False, False, False]
    assert list(response.warming_up) == [False, False, True]
    assert list(response.reasons) == ["", "", ""]
    assert all(0.0 <= s <= 1.0 for s in response.scores)
    channels = {c.name: list(c.values) for c in response.channels}
    assert set(channels) == {"level", "daily"}
    level, daily = channels["level"], channels["daily"]
    assert abs(level[0]) < 2 and level[1] > 8 and np.isnan(level[2])
    # daily = mean of the latest 12 values (this one included) - the view's value
    assert daily[0] == pytest.approx((calm[-11:].sum() + 10.0) / 12 - 10.0)
    assert np.isnan(daily[2])


async def test_a_missing_view_is_invalid_argument_naming_it(statistical) -> None:
    request = _request(np.zeros((1, 20)), [1.0], [20], [0.0])
    del request.views[:]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await statistical.Score(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'daily'" in error.value.details()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.values.append(1.0), "sensor_ids"),
        (lambda r: r.windows.shape.__setitem__(1, 19), "windows.data"),
        (lambda r: r.window_fill.__setitem__(0, 99), "window_fill[0]"),
        (lambda r: r.values.__setitem__(0, float("nan")), "values[0]"),
        (lambda r: setattr(r.windows, "dtype", pb.TENSOR_D_TYPE_UNSPECIFIED), "windows.dtype"),
    ],
)
async def test_malformed_score_request_is_invalid_argument(statistical, mutate, field) -> None:
    request = pb.ScoreRequest(
        sensor_ids=["a"],
        values=[1.0],
        timestamps_unix_nanos=[1],
        windows=encode_windows(np.zeros((1, 20))),
        window_fill=[20],
    )
    mutate(request)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await statistical.Score(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.value.details()


async def test_window_shorter_than_engine_needs_is_invalid_argument(statistical) -> None:
    request = pb.ScoreRequest(
        sensor_ids=["a"], values=[1.0], timestamps_unix_nanos=[1],
        windows=encode_windows(np.zeros((1, 5))), window_fill=[5],
    )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await statistical.Score(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "windows" in error.value.details()


async def test_a_version_tag_tells_two_deployments_of_one_engine_apart() -> None:
    """The same engine with other settings and `version_tag`: Describe, Score and the metrics
    report VERSION+TAG (what the orchestrator labels primary and shadow with)."""
    process = await start_specialist(
        "statistical", statistical_short=SHORT, statistical_reference=REFERENCE, version_tag="ref15"
    )
    tagged = f"{ENGINE_VERSION}+ref15"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
            stub = specialist_pb2_grpc.SpecialistStub(channel)
            info = await stub.Describe(pb.DescribeRequest())
            window = np.full((1, 20), 10.0)
            answer = await stub.Score(_request(window, [10.0], [20], [10.0]))
        assert (info.engine, info.engine_version, info.window_length) == ("statistical", tagged, 20)
        assert answer.engine_version == tagged
        rows = process.registry.get_sample_value(
            "sentinel_specialist_rows_scored_total", {"engine": "statistical", "version": tagged}
        )
        assert rows == 1
    finally:
        await process.stop(drain_delay=0, grace=0)


@pytest.mark.parametrize("tag", ["has space", "a/b", "x" * 65])
def test_a_version_tag_is_a_plain_label(tag: str) -> None:
    from pydantic import ValidationError
    from sentinel.specialists.settings import SpecialistSettings

    with pytest.raises(ValidationError, match="version_tag"):
        SpecialistSettings(version_tag=tag)


# -- row columns and reasons, as orchestrators of this and the previous revision send them -----
@pytest.fixture
async def threshold():
    process = await start_specialist(
        "threshold", threshold_rules_file=LIMIT_90_RULES, adaptive_limits=False
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
        yield specialist_pb2_grpc.SpecialistStub(channel)
    await process.stop(drain_delay=0, grace=0)


@pytest.mark.parametrize(
    ("engine", "declared"),
    [
        ("threshold", [pb.ROW_COLUMN_SENSOR_IDS]),
        ("statistical", [pb.ROW_COLUMN_NONE]),  # the orchestrator aligns its daily view
        ("model", [pb.ROW_COLUMN_NONE]),
    ],
)
async def test_each_engine_declares_the_row_columns_it_reads(engine, declared) -> None:
    process = await start_specialist(engine)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
            info = await specialist_pb2_grpc.SpecialistStub(channel).Describe(pb.DescribeRequest())
        assert list(info.row_columns) == declared
    finally:
        await process.stop(drain_delay=0, grace=0)


def _threshold_request(**row_columns) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        values=[50.0, 95.0, 60.0, 99.0],
        windows=encode_windows(np.zeros((4, 0))),
        window_fill=[0] * 4,
        **row_columns,
    )


async def test_previous_and_this_revisions_requests_score_alike(threshold) -> None:
    ids = ["a", "b", "a", "c"]
    # An orchestrator of the previous revision: per-row ids and timestamps, dense reasons.
    old = await threshold.Score(
        _threshold_request(sensor_ids=ids, timestamps_unix_nanos=[1, 2, 3, 4])
    )
    # This revision: what threshold declared (ids, in distinct form), sparse reasons.
    new = await threshold.Score(
        _threshold_request(sensors=["a", "b", "c"], sensor_rows=[0, 1, 0, 2], sparse_reasons=True)
    )
    assert list(old.anomalies) == list(new.anomalies) == [False, True, False, True]
    assert list(old.scores) == list(new.scores)
    assert not old.reason_rows and len(old.reasons) == 4 and old.reasons[0] == ""
    assert list(new.reason_rows) == [1, 3]
    assert list(new.reasons) == [old.reasons[1], old.reasons[3]]
    assert "above high limit 90" in new.reasons[0]


async def test_a_request_lacking_a_declared_row_column_is_invalid_argument(threshold) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await threshold.Score(_threshold_request(timestamps_unix_nanos=[1, 2, 3, 4]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("sensors:")
    assert "threshold reads sensor ids" in error.value.details()
    # An empty request needs nothing.
    empty = await threshold.Score(pb.ScoreRequest(sparse_reasons=True))
    assert not empty.scores and not empty.reasons


async def test_bad_distinct_ids_are_invalid_argument_naming_the_field(threshold) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await threshold.Score(_threshold_request(sensors=["a"], sensor_rows=[0, 0, 1, 0]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("sensor_rows[2]:")


def test_the_pass_through_specialist_reads_no_row_columns_and_sends_no_empty_reasons() -> None:
    from sentinel.specialists.passthrough import PassThroughSpecialistServicer, score_nothing

    info = asyncio.run(PassThroughSpecialistServicer("model").Describe(pb.DescribeRequest(), None))
    assert list(info.row_columns) == [pb.ROW_COLUMN_NONE]
    sparse = score_nothing(pb.ScoreRequest(values=[1.0, 2.0], sparse_reasons=True), "model")
    assert len(sparse.scores) == 2 and not sparse.reasons and not sparse.reason_rows
    dense = score_nothing(pb.ScoreRequest(values=[1.0, 2.0]), "model")
    assert list(dense.reasons) == ["", ""]

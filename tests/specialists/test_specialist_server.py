"""The Specialist service over real gRPC: Describe, Score, and bad requests."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from mesh_fixtures import start_specialist

from sentinel.v1 import specialist_pb2 as pb
from sentinel.v1 import specialist_pb2_grpc
from specialists.codec import encode_windows


@pytest.fixture
async def statistical():
    process = await start_specialist("statistical", statistical_window=20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{process.server.port}") as channel:
        yield specialist_pb2_grpc.SpecialistStub(channel)
    await process.stop(drain_delay=0, grace=0)


async def test_describe_reports_engine_version_and_window(statistical) -> None:
    info = await statistical.Describe(pb.DescribeRequest())
    assert (info.engine, info.engine_version, info.window_length) == ("statistical", "1.0.0", 20)
    assert info.parameters["cutoff"] == "4.0"


async def test_score_returns_one_answer_per_row(statistical) -> None:
    windows = np.tile(np.linspace(9.0, 11.0, 20), (3, 1))
    request = pb.ScoreRequest(
        sensor_ids=["a", "b", "c"],
        values=[10.0, 50.0, 10.0],
        timestamps_unix_nanos=[1, 2, 3],
        windows=encode_windows(windows),
        window_fill=[20, 20, 5],
    )
    response = await statistical.Score(request)
    assert list(response.anomalies) == [False, True, False]
    assert list(response.warming_up) == [False, False, True]
    assert "z=" in response.reasons[1] and response.reasons[0] == ""
    assert response.engine == "statistical" and response.engine_version == "1.0.0"
    assert all(0.0 <= s <= 1.0 for s in response.scores)


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

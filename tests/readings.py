"""Helpers to build sentinel.v1 requests in tests."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from sentinel.v1 import orchestrator_pb2 as pb

NANOS = 1_000_000_000


def batch(
    batch_id: int,
    values: Iterable[float],
    sensor: str = "sensor-1",
    start_ns: int | None = None,
    mode: int = pb.VERDICT_MODE_ALL,
) -> pb.TelemetryBatch:
    start_ns = time.time_ns() - 3600 * NANOS if start_ns is None else start_ns
    return pb.TelemetryBatch(
        batch_id=batch_id,
        verdicts=mode,
        readings=[
            pb.Reading(sensor_id=sensor, value=float(v), timestamp_unix_nanos=start_ns + i * NANOS)
            for i, v in enumerate(values)
        ],
    )


def noise(n: int, seed: int = 1, level: float = 50.0, sd: float = 1.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0.0, sd, n)


async def collect(call) -> dict[str, list]:
    """Drain a StreamTelemetry call into lists of acks, verdicts, alerts, other events."""
    import grpc

    out: dict[str, list] = {
        "ack": [],
        "verdicts": [],
        "alert": [],
        "heartbeat": [],
        "reconnect": [],
    }
    # read() rather than `async for`, so calls already read with read() can be drained too.
    while (event := await call.read()) is not grpc.aio.EOF:
        kind = event.WhichOneof("event")
        if kind == "verdicts":
            out["verdicts"].extend(event.verdicts.verdicts)
        else:
            out[kind].append(getattr(event, kind))
    return out

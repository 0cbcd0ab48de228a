"""SpecialistPool.fan_out: an unexpected exception in one specialist's call is not lost in the
gather (it used to raise the first and drop the others): each is logged naming its specialist,
counted, and that specialist's votes are missing while the others' arrive."""

from __future__ import annotations

import logging

import numpy as np
from opentelemetry import trace
from sentinel.orchestrator.specialist_pool import SpecialistPool

from sentinel.telemetry import build_propagator
from sentinel.v1 import specialist_pb2


class FakeClient:
    def __init__(self, name: str, fail: bool) -> None:
        self.name, self.fail = name, fail
        self.described, self.window_length, self.declaration = True, 0, None
        self.engine_version = "1"

    def row_columns(self):
        return None  # every column, as an engine predating the declaration gets

    async def score(self, request, rows, metadata, timeout, observe):
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        return specialist_pb2.ScoreResponse(
            scores=[0.5] * rows, anomalies=[False] * rows, warming_up=[False] * rows,
            reasons=[""] * rows, engine_version="1",
        )  # fmt: skip

    async def close(self) -> None:
        pass


async def test_every_failing_specialist_is_logged_and_counted_the_others_vote(caplog) -> None:
    observed = []
    pool = SpecialistPool(
        [FakeClient("a", True), FakeClient("b", False), FakeClient("c", True)],
        timeout_seconds=1.0,
        observe=lambda *call: observed.append(call),
        on_declared=lambda name, declaration: None,
        tracer=trace.NoOpTracer(),
        propagator=build_propagator(),
    )
    caplog.set_level(logging.ERROR)
    votes = await pool.fan_out(
        ["s"], np.array([1.0]), np.array([1], dtype=np.int64),
        np.zeros((1, 0), dtype=np.float32), np.zeros(1, dtype=np.int64), (),
    )  # fmt: skip
    assert [v.name for v in votes] == ["b"]
    failed = {r.specialist for r in caplog.records if "raised" in r.getMessage()}
    assert failed == {"a", "c"}
    assert {(name, code) for name, _, _, code in observed} == {("a", "INTERNAL"), ("c", "INTERNAL")}

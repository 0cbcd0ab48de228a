"""The mesh launcher's children: restarted on the same ports, nothing left in the temporary
directory, and counts carried over restarts by the metrics each incarnation writes when it
stops (never by its log). Real `sentinel serve` processes on loopback."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import grpc
import pytest
from readings import batch

from sentinel.app.local_mesh import LocalMesh, RoleChild
from sentinel.app.soak import lifetime_totals_of
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's temporary directory, to see what the launcher leaves in it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


async def _detect(target: str, request: pb.TelemetryBatch) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await orchestrator_pb2_grpc.OrchestratorStub(channel).Detect(request, timeout=30)


async def test_a_child_restarts_on_its_ports_and_leaves_nothing_behind(scratch: Path) -> None:
    child = RoleChild("threshold", metrics_port=0, env={"SENTINEL_LOG_LEVEL": "ERROR"})
    try:
        port = await child.start()
        metrics_port = child.metrics_port
        assert port and metrics_port
        assert not list(scratch.iterdir())  # the ready file's directory went once it reported
        assert child.sample("sentinel_specialist_score_duration_seconds_count") is not None
        assert await child.stop(signal.SIGKILL) == -signal.SIGKILL
        assert await child.start() == port and child.metrics_port == metrics_port
    finally:
        await child.close()
    assert child.exit_codes == [-signal.SIGKILL, 0]
    assert not list(scratch.iterdir())


async def test_counts_over_restarts_come_from_each_incarnations_final_metrics(
    scratch: Path,
) -> None:
    async with LocalMesh(engines=(), log_level="ERROR") as mesh:
        orchestrator = await mesh.start_orchestrator_child(record_final_metrics=True)
        await _detect(orchestrator.target, batch(1, [1.0, 2.0, 3.0]))
        assert await orchestrator.restart(signal.SIGTERM) == 0
        await _detect(orchestrator.target, batch(2, [4.0, 5.0]))
        assert await orchestrator.stop(signal.SIGTERM) == 0
        assert [text is not None for text in orchestrator.final_metrics] == [True, True]
        totals = lifetime_totals_of(orchestrator)
        assert totals is not None
        assert (totals["readings_received"], totals["batches_received"]) == (5, 2)
        await orchestrator.start()
        await orchestrator.stop(signal.SIGKILL)  # no drain: it writes nothing
        assert orchestrator.final_metrics[-1] is None
        assert lifetime_totals_of(orchestrator) is None
    assert not list(scratch.iterdir())

"""The committed stubs must be exactly what protos/generate.py produces from protos/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerating_stubs_changes_nothing(tmp_path: Path) -> None:
    generated = _generator().generate(tmp_path)
    assert generated, "protoc produced no files"
    for path in generated:
        relative = path.relative_to(tmp_path)
        committed = REPO / relative
        assert committed.exists(), f"{relative} is generated but not committed"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{relative} is stale: run `python protos/generate.py`"
        )
    committed_stubs = {p.relative_to(REPO) for p in (REPO / "sentinel" / "v1").glob("*_pb2*.py*")}
    assert committed_stubs == {p.relative_to(tmp_path) for p in generated}


def test_public_service_names_are_stable() -> None:
    from sentinel.v1 import orchestrator_pb2, specialist_pb2

    orchestrator = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"]
    assert orchestrator.full_name == "sentinel.v1.Orchestrator"
    assert {m.name for m in orchestrator.methods} == {
        "StreamTelemetry",
        "Detect",
        "WatchAlerts",
        "ListAlerts",
    }
    stream = orchestrator.methods_by_name["StreamTelemetry"]
    assert stream.client_streaming and stream.server_streaming
    specialist = specialist_pb2.DESCRIPTOR.services_by_name["Specialist"]
    assert specialist.full_name == "sentinel.v1.Specialist"
    assert {m.name for m in specialist.methods} == {"Describe", "Score"}

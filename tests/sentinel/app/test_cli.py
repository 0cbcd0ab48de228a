"""The `sentinel` command as users run it: separate processes, real ports."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mesh_fixtures import LIMIT_90_RULES

from sentinel.app.local_mesh import serve_command, wait_ready

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "tests" / "data" / "nab_sample.csv"
NAB_DIR = Path(os.environ.get("SENTINEL_NAB_DIR", REPO.parent / "shared" / "data" / "nab"))


def sentinel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentinel", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["demo"], ["replay"]])
def test_help_describes_every_command(command: list[str]) -> None:
    result = sentinel(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--help" in result.stdout


def test_demo_prints_alerts_opening_and_resolving_and_a_summary() -> None:
    result = sentinel("demo", "--seconds", "8", "--sensors", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "OPEN" in out and "RESOLVED" in out
    # The simulator's first event is a spike at its 20th reading; the demo's rule (high 90)
    # alerts it, and the alert line says what it caught.
    assert "above high limit 90 (rule 'sensor-*')" in out
    assert "caught: spike to" in out and "at its first reading" in out
    assert "Sentinel demo summary" in out

    def cell(label: str) -> str:
        return next(line for line in out.splitlines() if label in line).split("│")[2].strip()

    sent, _, split = cell("readings sent").partition(" ")
    assert int(sent) == int(cell("readings acked")) > 0
    warm, _, live = split.strip("()").removesuffix(" live").partition(" warm-up + ")
    assert int(warm) + int(live) == int(sent)
    assert int(cell("verdicts (live readings)")) == int(live)
    assert cell("spikes caught (rule: high 90)").startswith("1 of 1, after 0 readings")
    # The seed's pattern: sensor-seed spikes on every 20th reading, each alerted by the rule 90.
    assert "seed spike on reading 20: alerted at once" in out
    alerted, _, rest = cell("seed pattern (spike every 20th reading on sensor-seed)").partition(
        " of "
    )
    spikes, _, what = rest.partition(" ")
    assert what == "spikes alerted by threshold (rule high 90)", out
    assert alerted == spikes and int(spikes) >= 1, out


def _replay_and_check(source: Path, tmp_path: Path) -> list[dict[str, str]]:
    out = tmp_path / "verdicts.csv"
    result = sentinel("replay", str(source), "--out", str(out), "--batch-size", "128")
    assert result.returncode == 0, result.stderr
    with source.open(newline="") as handle:
        inputs = list(csv.DictReader(handle))
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(inputs)
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in inputs]
    assert [float(r["value"]) for r in rows] == [float(r["value"]) for r in inputs]
    assert {
        "anomaly",
        "score",
        "status",
        "threshold_score",
        "statistical_score",
        "model_score",
    } <= set(rows[0])
    assert all(r["status"] in {"ok", "warming_up", "degraded"} for r in rows)
    return rows


def test_replay_writes_one_verdict_row_per_input_row(tmp_path: Path) -> None:
    rows = _replay_and_check(SAMPLE, tmp_path)
    assert rows[0]["status"] == "warming_up" and rows[-1]["status"] == "ok"
    assert any(r["anomaly"] == "1" for r in rows)  # the file's load-balancer spikes


@pytest.mark.skipif(
    not NAB_DIR.is_dir(), reason="NAB development split not present (set SENTINEL_NAB_DIR)"
)
def test_replay_of_a_full_nab_file(tmp_path: Path) -> None:
    _replay_and_check(
        NAB_DIR / "realKnownCause" / "ambient_temperature_system_failure.csv", tmp_path
    )


RAW_CLIENT = textwrap.dedent(
    """
    # A client built only from protos/: stubs generated into a fresh directory.
    import asyncio, sys
    sys.path.insert(0, sys.argv[1])
    import grpc
    from sentinel.v1 import orchestrator_pb2 as pb, orchestrator_pb2_grpc as rpc
    loaded = sys.modules["sentinel"].__file__
    assert loaded.startswith(sys.argv[1]), loaded

    async def main():
        async with grpc.aio.insecure_channel(sys.argv[2]) as channel:
            stub = rpc.OrchestratorStub(channel)
            async def batches():
                for i in range(1, 41):
                    value = 250.0 if i == 30 else 40.0 + (i % 3)
                    reading = pb.Reading(sensor_id="raw-1", value=value)
                    yield pb.TelemetryBatch(batch_id=i, readings=[reading])
            acks, alerts = [], []
            async for event in stub.StreamTelemetry(batches()):
                kind = event.WhichOneof("event")
                if kind == "ack":
                    acks.append(event.ack.batch_id)
                elif kind == "alert":
                    alerts.append(pb.AlertState.Name(event.alert.state))
            print("ACKS", ",".join(map(str, acks)))
            print("ALERTS", ",".join(alerts))
    asyncio.run(main())
    """
)


def test_serve_all_speaks_to_a_client_built_from_protos_alone(tmp_path: Path) -> None:
    from grpc_tools import protoc

    stubs = tmp_path / "stubs"
    stubs.mkdir()
    protos = REPO / "protos"
    generate = ["protoc", f"-I{protos}", f"--python_out={stubs}", f"--grpc_python_out={stubs}"]
    assert protoc.main([*generate, "sentinel/v1/orchestrator.proto"]) == 0
    for package in (stubs / "sentinel", stubs / "sentinel" / "v1"):
        (package / "__init__.py").touch()
    ready = tmp_path / "port"
    server = subprocess.Popen(
        serve_command("all", ready, "--port", "0"),
        env={
            **os.environ,
            "SENTINEL_DRAIN_DELAY_SECONDS": "0.2",
            "SENTINEL_RESOLVE_AFTER": "5",
            # The spike (250) is over this rule's hard limit of 90 (the demo's rule).
            "SENTINEL_THRESHOLD_RULES_FILE": LIMIT_90_RULES,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = asyncio.run(wait_ready(server, ready, time.monotonic() + 60))
        target = f"127.0.0.1:{port}"
        (tmp_path / "client.py").write_text(RAW_CLIENT)
        client = subprocess.run(
            [sys.executable, str(tmp_path / "client.py"), str(stubs), target],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        lines = dict(line.split(" ", 1) for line in client.stdout.strip().splitlines())
        assert lines["ACKS"] == ",".join(str(i) for i in range(1, 41))
        assert lines["ALERTS"].split(",") == ["ALERT_STATE_OPEN", "ALERT_STATE_RESOLVED"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_files_in_the_working_directory_cannot_shadow_the_mesh(tmp_path) -> None:
    """Roles install as sentinel.orchestrator / sentinel.specialists and children start with
    `python -P`, so a user's orchestrator.py (or specialists/, sentinel.py) is never imported."""
    for name in ("orchestrator.py", "specialists.py", "sentinel.py"):
        (tmp_path / name).write_text('raise SystemExit("shadowed by the working directory")\n')
    script = Path(sys.executable).parent / "sentinel"
    result = subprocess.run(
        [str(script), "bench", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shadowed" not in result.stderr
    assert "readings/s" in result.stdout

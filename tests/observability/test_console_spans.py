"""`sentinel demo --console-spans`: tracing is visible without any collector, and the spans (the
orchestrator's, thousands a second) go to a file of one JSON object per line, so the terminal
keeps the alert lines and the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest


@pytest.mark.timeout(60)
def test_demo_writes_its_spans_to_a_file_not_between_the_alerts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = ["demo", "--seconds", "1", "--sensors", "2", "--console-spans"]
    result = subprocess.run(
        [sys.executable, "-m", "sentinel", *command],
        capture_output=True, text=True, timeout=60, env={**env, "COLUMNS": "80"}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Sentinel demo summary" in result.stdout
    # Nothing of the spans on the terminal: the file is named, and counted at the end.
    assert '"trace_id"' not in result.stdout + result.stderr
    assert "trace spans: one JSON object per line to sentinel-demo-spans.jsonl" in result.stdout
    lines = (tmp_path / "sentinel-demo-spans.jsonl").read_text().splitlines()
    assert f"trace spans: {len(lines)} in sentinel-demo-spans.jsonl" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout

    spans = [json.loads(line) for line in lines]
    kinds = Counter((s["name"], s["kind"]) for s in spans)
    batches = {s["context"]["span_id"]: s for s in spans if s["name"] == "sentinel.batch"}
    calls = [s for s in spans if s["kind"] == "SpanKind.CLIENT"]
    assert batches and calls, kinds
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"sentinel-demo"}
    # Every specialist call is a child of a batch span, in the batch's trace.
    for call in calls:
        parent = batches[call["parent_id"]]
        assert call["context"]["trace_id"] == parent["context"]["trace_id"]
    assert {c["attributes"]["sentinel.specialist"] for c in calls} == {
        "threshold",
        "statistical",
        "model",
    }


@pytest.mark.timeout(60)
def test_demo_spans_to_stderr_with_a_dash(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = ["demo", "--seconds", "1", "--sensors", "1", "--console-spans", "--spans-file", "-"]
    result = subprocess.run(
        [sys.executable, "-m", "sentinel", *command],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"trace_id"' not in result.stdout
    spans = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(s["name"] == "sentinel.batch" for s in spans)
    assert not list(tmp_path.iterdir())

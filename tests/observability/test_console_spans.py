"""`sentinel demo --console-spans`: tracing is visible without any collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest


def console_spans(stdout: str) -> list[dict]:
    """ConsoleSpanExporter writes each span as an indented JSON object starting at column 0."""
    spans, block = [], None
    for line in stdout.splitlines():
        if line == "{":
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(block)))
                block = None
    return spans


@pytest.mark.timeout(30)
def test_demo_prints_its_spans_to_the_console() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = ["demo", "--seconds", "1", "--sensors", "2", "--console-spans"]
    result = subprocess.run(
        [sys.executable, "-m", "sentinel", *command],
        capture_output=True, text=True, timeout=30, env={**env, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Sentinel demo summary" in result.stdout
    spans = console_spans(result.stdout)
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

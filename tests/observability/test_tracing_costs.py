"""What tracing costs: nothing when it is not configured, and never a stalled service when the
collector is down (refusing connections, or accepting them and never answering)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from mesh_fixtures import running_mesh
from opentelemetry import trace

from sentinel.telemetry import configure_tracing
from sentinel.v1 import orchestrator_pb2 as pb

PROBE = """
import json, sys, threading
before = threading.active_count()
from sentinel.telemetry import configure_tracing
tracing = configure_tracing("sentinel-probe")
span = tracing.tracer("probe").start_span("probe")
print(json.dumps({
    "provider": type(tracing.provider).__name__,
    "recording": span.is_recording(),
    "sdk_loaded": any(m.startswith("opentelemetry.sdk") for m in sys.modules),
    "exporter_loaded": any("exporter" in m for m in sys.modules if m.startswith("opentelemetry")),
    "new_threads": threading.active_count() - before,
}))
tracing.shutdown()
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_nothing_configured_means_no_sdk_no_exporter_no_threads() -> None:
    assert probe() == {
        "provider": "NoOpTracerProvider",
        "recording": False,
        "sdk_loaded": False,
        "exporter_loaded": False,
        "new_threads": 0,
    }
    # The standard kill switch wins over an endpoint.
    disabled = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317", OTEL_SDK_DISABLED="true")
    assert disabled["provider"] == "NoOpTracerProvider" and not disabled["sdk_loaded"]
    # With an endpoint: the SDK, recording spans, one background export thread.
    enabled = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317")
    assert enabled == {
        "provider": "TracerProvider",
        "recording": True,
        "sdk_loaded": True,
        "exporter_loaded": True,
        "new_threads": 1,
    }


def test_no_tracing_configured_mesh_still_serves_without_trace_ids(monkeypatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing = configure_tracing("sentinel-test")
    assert isinstance(tracing.provider, trace.NoOpTracerProvider)
    assert not tracing.tracer("t").start_span("s").get_span_context().is_valid
    tracing.shutdown()  # a no-op, and harmless


def spike_batches(count: int) -> list[pb.TelemetryBatch]:
    return [
        pb.TelemetryBatch(
            batch_id=i,
            readings=[
                pb.Reading(
                    sensor_id=f"d-{j}",
                    value=250.0 if (i == count // 2 and j == 0) else 40.0 + (i + j) % 3,
                )
                for j in range(10)
            ],
        )
        for i in range(1, count + 1)
    ]


@pytest.fixture(params=["refusing", "silent"])
def dead_collector(request):
    """A port where no collector answers: closed (connection refused), or a socket that accepts
    TCP connections and never speaks HTTP/2 (every export waits for its deadline)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if request.param == "refusing":
        sock.close()
        yield port
        return
    sock.listen(16)
    try:
        yield port
    finally:
        sock.close()


@pytest.mark.timeout(60)
async def test_a_collector_that_is_down_neither_slows_nor_holds_up_the_mesh(
    dead_collector: int, monkeypatch
) -> None:
    batches = spike_batches(200)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{dead_collector}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    tracing = configure_tracing("sentinel-test")
    assert type(tracing.provider).__name__ == "TracerProvider"  # spans are really recorded
    try:
        async with running_mesh(tracing=tracing) as mesh:

            async def requests():
                for batch in batches:
                    yield batch

            started = time.perf_counter()
            acks, alerts = 0, []
            async for event in mesh.stub.StreamTelemetry(requests(), timeout=30):
                kind = event.WhichOneof("event")
                acks += kind == "ack"
                if kind == "alert":
                    alerts.append(event.alert)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.3)  # let the exporter hit the dead collector meanwhile
    finally:
        stopping = time.perf_counter()
        tracing.shutdown()
        shutdown = time.perf_counter() - stopping
    assert acks == len(batches)
    assert alerts and all(len(a.trace_id) == 32 for a in alerts)
    # 2,000 readings normally take well under a second here; a blocking exporter would stall
    # each span for the 10 s export timeout.
    assert elapsed < 8, elapsed
    # Shutdown gives the flush 2 s, then aborts the exporter's retries and in-flight export
    # (the SDK alone would wait up to 30 s per processor).
    assert shutdown < 4, shutdown
    print(f"\ncollector down: {len(batches)} batches {elapsed:.2f}s, shutdown {shutdown:.2f}s")

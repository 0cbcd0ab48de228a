"""One batch followed through real processes: orchestrator and three specialists, each its own
`sentinel serve <role>` process, exporting spans over OTLP/gRPC to a receiver run by this test.

The receiver is the real collector TraceService from opentelemetry-proto on a loopback port, so
what is asserted here is exactly what a collector / Jaeger would receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mesh_fixtures import LIMIT_90_RULES
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("threshold", "statistical", "model")
SPIKE_BATCH = 30
TRACEPARENT_BATCH = 35
BATCHES = 40
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT


# -- a real OTLP/gRPC trace receiver ------------------------------------------------------------
@dataclass(frozen=True)
class ExportedSpan:
    service: str
    span: trace_pb2.Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    def attr(self, key: str):
        return attribute(self.span.attributes, key)


def attribute(attributes, key: str):
    for kv in attributes:
        if kv.key == key:
            value = kv.value
            kind = value.WhichOneof("value")
            if kind == "array_value":
                return [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
            return getattr(value, kind)
    return None


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                service = attribute(resource_spans.resource.attributes, "service.name")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(ExportedSpan(service, s) for s in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.contextmanager
def otlp_receiver():
    receiver = TraceReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(0)


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Role:
    name: str
    process: subprocess.Popen
    ready: Path
    log: Path
    port: int = 0


def spawn(role: str, tmp: Path, env: dict[str, str], *args: str) -> Role:
    ready, log = tmp / f"{role}.port", tmp / f"{role}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "serve", role, "--port", "0",
             "--ready-file", str(ready), *args],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    return Role(role, process, ready, log)


async def wait_ready(role: Role, deadline: float) -> None:
    while not role.ready.exists():
        assert role.process.poll() is None, f"{role.name} exited:\n{role.log.read_text()}"
        assert time.monotonic() < deadline, f"{role.name} did not start:\n{role.log.read_text()}"
        await asyncio.sleep(0.05)
    role.port = int(role.ready.read_text())


def terminate(roles: list[Role]) -> dict[str, int]:
    """SIGTERM (the production stop path: drain, then tracing.shutdown flushes spans)."""
    for role in roles:
        if role.process.poll() is None:
            role.process.send_signal(signal.SIGTERM)
    codes = {}
    for role in roles:
        try:
            codes[role.name] = role.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            role.process.kill()
            codes[role.name] = role.process.wait()
    return codes


def check_health(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def otel_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["SENTINEL_RESOLVE_AFTER"] = "5"  # the spike's incident resolves within the stream
    env["SENTINEL_THRESHOLD_RULES_FILE"] = LIMIT_90_RULES  # the spike (250) is over its limit
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
        SENTINEL_LOG_LEVEL="INFO",
        SENTINEL_LOG_FORMAT="json",
        SENTINEL_DRAIN_DELAY_SECONDS="0",
        SENTINEL_SHUTDOWN_GRACE_SECONDS="1",
    )
    return env


# -- the client -----------------------------------------------------------------------------------
def batch(i: int, traceparent: str = "") -> pb.TelemetryBatch:
    value = 250.0 if i == SPIKE_BATCH else 40.0 + (i % 3)
    return pb.TelemetryBatch(
        batch_id=i,
        readings=[pb.Reading(sensor_id="obs-1", value=value)],
        verdicts=pb.VERDICT_MODE_NONE,
        traceparent=traceparent,
    )


async def stream_one_at_a_time(target: str, metadata, batch_traceparent: str):
    """Each batch waits for the previous ack, so every batch is its own scoring round."""
    acks: list[int] = []
    alerts: list[pb.Alert] = []
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (item := await outbox.get()) is not None:
            yield item

    await outbox.put(batch(1))
    async with grpc.aio.insecure_channel(target) as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).StreamTelemetry(
            requests(), metadata=metadata, timeout=30
        )
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "alert":
                alerts.append(event.alert)
            elif kind == "ack":
                acks.append(event.ack.batch_id)
                following = event.ack.batch_id + 1
                if following > BATCHES:
                    await outbox.put(None)
                else:
                    tp = batch_traceparent if following == TRACEPARENT_BATCH else ""
                    await outbox.put(batch(following, tp))
    return acks, alerts


# -- the test -------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
async def test_one_trace_follows_a_batch_through_every_process(tmp_path: Path) -> None:
    started = time.monotonic()
    stream_trace, stream_span = secrets.token_hex(16), secrets.token_hex(8)
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_receiver() as (receiver, otlp_port):
        env = otel_env(otlp_port)
        roles: list[Role] = []
        try:
            specialists = [
                spawn(
                    name,
                    tmp_path,
                    # This specialist understands B3 only, so its spans can join the batch's
                    # trace only if the B3 headers (what Envoy reads) reached it.
                    {**env, "OTEL_PROPAGATORS": "b3multi"} if name == "statistical" else env,
                )
                for name in ENGINES
            ]
            roles.extend(specialists)
            deadline = time.monotonic() + 40
            for role in specialists:
                await wait_ready(role, deadline)
            targets = ",".join(f"{r.name}=127.0.0.1:{r.port}" for r in specialists)
            orchestrator = spawn("orchestrator", tmp_path, {**env, "SENTINEL_SPECIALISTS": targets})
            roles.insert(0, orchestrator)
            await wait_ready(orchestrator, deadline)
            ready_at = time.monotonic()
            for role in roles:
                check_health(role.port)  # must not produce spans

            acks, alerts = await stream_one_at_a_time(
                f"127.0.0.1:{orchestrator.port}",
                metadata=(
                    ("traceparent", f"00-{stream_trace}-{stream_span}-01"),
                    ("x-request-id", "obs-request-1"),
                ),
                batch_traceparent=f"00-{client_trace}-{client_span}-01",
            )
            streamed_at = time.monotonic()
        finally:
            codes = terminate(roles)
        stopped_at = time.monotonic()
        spans = list(receiver.spans)

    logs = {r.name: r.log.read_text() for r in roles}
    assert codes == {r.name: 0 for r in roles}, logs
    assert acks == list(range(1, BATCHES + 1))
    assert [pb.AlertState.Name(a.state) for a in alerts] == [
        "ALERT_STATE_OPEN",
        "ALERT_STATE_RESOLVED",
    ]

    # Every process exported under its own service name; nothing but batch and Score spans
    # (in particular no grpc.health.v1 Check spans, no Describe spans).
    services = {f"sentinel-{name}" for name in ("orchestrator", *ENGINES)}
    assert {s.service for s in spans} == services
    assert {s.span.name for s in spans} == {"sentinel.batch", "sentinel.v1.Specialist/Score"}
    assert not [s for s in spans if "health" in s.span.name.lower()]

    by_parent: dict[str, list[ExportedSpan]] = defaultdict(list)
    for s in spans:
        by_parent[s.parent_id].append(s)
    batch_spans = {
        s.attr("sentinel.batch_ids")[0]: s for s in spans if s.span.name == "sentinel.batch"
    }
    assert sorted(batch_spans) == list(range(1, BATCHES + 1))  # one span per batch
    assert all(s.service == "sentinel-orchestrator" for s in batch_spans.values())

    # Each batch span → one CLIENT span per specialist (orchestrator process) → one SERVER span
    # exported by that specialist's own process, all in the batch span's trace.
    for batch_id, root in batch_spans.items():
        calls = by_parent[root.span_id]
        assert sorted(c.attr("sentinel.specialist") for c in calls) == sorted(ENGINES), batch_id
        for call in calls:
            assert call.span.kind == CLIENT and call.service == "sentinel-orchestrator"
            assert call.trace_id == root.trace_id
            name = call.attr("sentinel.specialist")
            (served,) = by_parent[call.span_id]
            assert served.service == f"sentinel-{name}"
            assert served.span.kind == SERVER
            assert served.trace_id == root.trace_id
            assert served.attr("sentinel.engine") == name
            assert served.attr("sentinel.rows") == 1
            assert served.attr("sentinel.engine_version") == call.attr("sentinel.engine_version")
            assert served.attr("rpc.method") == "Score"
            # the server span lies within the client span's time
            assert call.span.start_time_unix_nano <= served.span.start_time_unix_nano
            assert served.span.end_time_unix_nano <= call.span.end_time_unix_nano
        # A long-lived stream is not one giant trace: batch spans are linked to the stream.
        assert root.trace_id != stream_trace
        assert [(link.trace_id.hex(), link.span_id.hex()) for link in root.span.links] == [
            (stream_trace, stream_span)
        ]
    assert len(spans) == BATCHES * (1 + 2 * len(ENGINES))

    # The alert names the trace of the batch that opened it, and that trace was exported.
    opened, resolved = alerts
    spike = batch_spans[SPIKE_BATCH]
    assert opened.trace_id == resolved.trace_id == spike.trace_id
    assert opened.trace_id in {s.trace_id for s in spans}
    assert spike.attr("sentinel.alerts") == 1 and spike.attr("sentinel.anomalies") == 1

    # A batch carrying its own traceparent gets its batch span parented by it.
    carried = batch_spans[TRACEPARENT_BATCH]
    assert (carried.trace_id, carried.parent_id) == (client_trace, client_span)
    assert carried.span.kind == SERVER
    assert {s.trace_id for s in spans if s.trace_id == client_trace} == {client_trace}
    assert len([s for s in spans if s.trace_id == client_trace]) == 1 + 2 * len(ENGINES)
    others = [s for i, s in batch_spans.items() if i != TRACEPARENT_BATCH]
    assert all(not s.parent_id and s.span.kind == trace_pb2.Span.SPAN_KIND_INTERNAL for s in others)

    # Structured logs: the orchestrator's alert lines carry the sensor, the alert and the ids
    # of the batch span they were written in.
    lines = [json.loads(line) for line in logs["orchestrator"].splitlines() if line.startswith("{")]
    alert_lines = [line for line in lines if line.get("alert_id")]
    assert [line["msg"] for line in alert_lines] == ["alert open", "alert resolved"]
    open_line, resolved_line = alert_lines
    assert open_line["level"] == "info" and open_line["sensor_id"] == "obs-1"
    assert open_line["alert_id"] == opened.alert_id and open_line["state"] == "open"
    assert (open_line["trace_id"], open_line["span_id"]) == (spike.trace_id, spike.span_id)
    assert open_line["alert_trace_id"] == resolved_line["alert_trace_id"] == opened.trace_id
    resolving = next(s for s in batch_spans.values() if s.span_id == resolved_line["span_id"])
    assert (
        resolving.attr("sentinel.alerts") == 1 and resolving.trace_id == resolved_line["trace_id"]
    )

    print(
        f"\nprocesses ready {ready_at - started:.1f}s, stream {streamed_at - ready_at:.2f}s, "
        f"SIGTERM→all exited {stopped_at - streamed_at:.2f}s, {len(spans)} spans "
        f"in {receiver.requests} OTLP exports"
    )

"""Shadow engines through real servers on loopback: the primary and the shadow model are
separate specialist servers (iforest-v1 and iforest-v2), the orchestrator a real one.

- The agreement counters scraped from /metrics equal an offline row-by-row comparison of the two
  engines on the same data: v1's votes from the shadowed run, v2's from a run where v2 is the
  primary. So the shadow's vote is exactly what v2 would have said in v1's place (calibration
  included), and its incident count is the alerts that run opened.
- With SENTINEL_SHADOW_VERDICTS the verdicts carry the same votes, row by row.
- A shadow that is down, hangs, answers garbage or the wrong number of rows changes no verdict
  and no status, and no ack waits for it (the hanging one still holds its call when the last
  ack arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from mesh_fixtures import LIMIT_90_RULES, metric_samples, no_tracing, start_specialist
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.metrics import DIFFERENCE_BUCKETS
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.model import load_model_engine

from sentinel.telemetry import Tracing, build_propagator
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc, specialist_pb2, specialist_pb2_grpc

SENSORS = 4
READINGS = 400  # per sensor: the model's window (32) and calibration (150) fill well before
PER_BATCH = 10  # readings per sensor per batch
START = 1_700_000_000 * 1_000_000_000
# The primary and the shadow: the bundled models, by the versions they report.
V1, V2 = (load_model_engine(name).version for name in ("iforest-v1", "iforest-v2"))


def signal(sensor: int) -> np.ndarray:
    """Noise with spikes of several sizes and a level shift: cases the two models judge alike
    and cases where they differ."""
    rng = np.random.default_rng(100 + sensor)
    values = 50.0 + rng.normal(0.0, 1.0, READINGS)
    for at, size in ((210, 4.0), (240, 7.0), (270, 12.0), (300, 5.0), (330, 25.0)):
        values[at + sensor] += size
    values[360 + sensor :] += 6.0
    return values


def batches() -> list[pb.TelemetryBatch]:
    values = np.stack([signal(s) for s in range(SENSORS)])
    out = []
    for b in range(READINGS // PER_BATCH):
        readings = [
            pb.Reading(
                sensor_id=f"s-{s}",
                value=float(values[s, i]),
                timestamp_unix_nanos=START + i * 1_000_000_000,
            )
            for i in range(b * PER_BATCH, (b + 1) * PER_BATCH)
            for s in range(SENSORS)
        ]
        out.append(
            pb.TelemetryBatch(batch_id=b + 1, readings=readings, verdicts=pb.VERDICT_MODE_ALL)
        )
    return out


@dataclass
class Run:
    verdicts: list[pb.Verdict]  # in reading order
    acks: list[int]
    alerts: list[pb.Alert]
    held_at_last_ack: int = 0  # calls the hanging shadow held when the last ack arrived


async def stream(target: str, hang: HangingSpecialist | None = None) -> Run:
    sent = batches()
    by_batch: dict[int, list[pb.Verdict]] = {}
    run = Run([], [], [])
    async with grpc.aio.insecure_channel(target) as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).StreamTelemetry(iter(sent))
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "verdicts":
                for verdict in event.verdicts.verdicts:
                    by_batch.setdefault(verdict.batch_id, []).append(verdict)
            elif kind == "ack":
                run.acks.append(event.ack.batch_id)
                if len(run.acks) == len(sent) and hang is not None:
                    run.held_at_last_ack = hang.held
            elif kind == "alert":
                run.alerts.append(event.alert)
    run.verdicts = [v for b in sent for v in by_batch[b.batch_id]]
    return run


@contextlib.asynccontextmanager
async def orchestrator(
    specialists: dict[str, str], tracing: Tracing | None = None, **settings
) -> AsyncIterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        OrchestratorSettings(
            port=0,
            metrics_port=0,
            drain_delay_seconds=0,
            resolve_after=5,
            specialists=",".join(f"{n}={t}" for n, t in specialists.items()),
            **settings,
        ),
        tracing or no_tracing(),
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop(drain_delay=0, grace=0.5)


async def all_compared(process: OrchestratorProcess) -> None:
    """Until every shadow call has been answered and compared (a hang guard, not a timing)."""
    for _ in range(600):
        if process.shadows.outstanding == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("shadow calls still outstanding after 30 s")


def scrape(process: OrchestratorProcess) -> dict[tuple[str, tuple], float]:
    return metric_samples(f"http://127.0.0.1:{process.metrics_endpoint.port}/metrics")


def value(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()
    )


def model_vote(verdict: pb.Verdict) -> pb.Vote:
    return next(v for v in verdict.votes if v.specialist == "model")


def as_read(score: float) -> float:
    return min(max(score, 0.0), 1.0)


@pytest.fixture
async def engines() -> AsyncIterator[dict[str, str]]:
    """threshold (limit 90), model v1 and model v2: each its own server."""
    processes = {
        "threshold": await start_specialist("threshold", threshold_rules_file=LIMIT_90_RULES),
        "v1": await start_specialist("model"),
        "v2": await start_specialist("model", model_path="iforest-v2"),
    }
    yield {name: f"127.0.0.1:{p.server.port}" for name, p in processes.items()}
    for process in processes.values():
        await process.stop(drain_delay=0, grace=0)


async def test_agreement_counters_equal_an_offline_row_by_row_comparison(engines) -> None:
    primaries = {"threshold": engines["threshold"], "model": engines["v1"]}
    async with orchestrator(primaries, shadows=f"model={engines['v2']}") as shadowed:
        with_shadow = await stream(f"127.0.0.1:{shadowed.port}")
        await all_compared(shadowed)
        samples = scrape(shadowed)
    async with orchestrator({"threshold": engines["threshold"], "model": engines["v2"]}) as plain:
        v2_primary = await stream(f"127.0.0.1:{plain.port}")

    rows = len(with_shadow.verdicts)
    assert rows == len(v2_primary.verdicts) == SENSORS * READINGS
    primary = [model_vote(v) for v in with_shadow.verdicts]
    shadow = [model_vote(v) for v in v2_primary.verdicts]
    assert {p.engine_version for p in primary} == {V1}
    assert {s.engine_version for s in shadow} == {V2}
    pairs = list(zip(primary, shadow, strict=True))
    compared = [(p, s) for p, s in pairs if not p.warming_up and not s.warming_up]
    both = sum(p.anomaly and s.anomaly for p, s in compared)
    only_primary = sum(p.anomaly and not s.anomaly for p, s in compared)
    only_shadow = sum(s.anomaly and not p.anomaly for p, s in compared)
    differences = [as_read(s.score) - as_read(p.score) for p, s in compared]
    # The data gives the comparison something to count on every side.
    assert len(compared) > rows // 3 and both > 0 and only_primary + only_shadow > 0

    labels = {"specialist": "model", "primary_version": V1, "shadow_version": V2}
    prefix = "sentinel_orchestrator_shadow_"
    assert value(samples, f"{prefix}rows_compared_total", **labels) == len(compared)
    assert value(samples, f"{prefix}both_anomalous_total", **labels) == both
    assert value(samples, f"{prefix}only_primary_anomalous_total", **labels) == only_primary
    assert value(samples, f"{prefix}only_shadow_anomalous_total", **labels) == only_shadow
    assert value(samples, f"{prefix}score_difference_count", **labels) == len(differences)
    for bound in DIFFERENCE_BUCKETS:
        bucket = value(samples, f"{prefix}score_difference_bucket", le=str(bound), **labels)
        assert bucket == sum(d <= bound for d in differences), bound
    assert 0 < sum(d != 0 for d in differences) < len(differences)
    # The verdict with v2 in v1's place is the v2 run's verdict: the same incidents open.
    opened = sum(a.state == pb.ALERT_STATE_OPEN for a in v2_primary.alerts)
    assert opened > 0
    assert (
        value(samples, f"{prefix}incidents_opened_total", specialist="model", shadow_version=V2)
        == opened
    )
    assert value(samples, f"{prefix}up", specialist="model") == 1
    assert value(samples, f"{prefix}errors_total") == 0
    assert value(samples, f"{prefix}calls_skipped_total") == 0
    assert value(samples, f"{prefix}call_duration_seconds_count", version=V2) > 0


async def test_shadow_verdicts_carry_what_the_shadow_would_have_said_row_by_row(engines) -> None:
    primaries = {"threshold": engines["threshold"], "model": engines["v1"]}
    async with orchestrator(
        primaries, shadows=f"model={engines['v2']}", shadow_verdicts=True
    ) as shadowed:
        with_shadow = await stream(f"127.0.0.1:{shadowed.port}")
    async with orchestrator({"threshold": engines["threshold"], "model": engines["v2"]}) as plain:
        v2_primary = await stream(f"127.0.0.1:{plain.port}")

    opened_rows = {
        (a.batch_id, a.reading_index) for a in v2_primary.alerts if a.state == pb.ALERT_STATE_OPEN
    }
    assert opened_rows
    position: dict[int, int] = {}
    for shadowed_verdict, v2_verdict in zip(with_shadow.verdicts, v2_primary.verdicts, strict=True):
        (shadow,) = shadowed_verdict.shadows
        assert shadow.vote == model_vote(v2_verdict)
        assert shadow.verdict_anomaly == v2_verdict.anomaly
        assert shadow.verdict_score == v2_verdict.score
        index = position.get(v2_verdict.batch_id, 0)
        position[v2_verdict.batch_id] = index + 1
        opened = (v2_verdict.batch_id, index) in opened_rows
        assert (shadow.alert == pb.ALERT_STATE_OPEN) == opened
        # Shadows never vote: the verdict itself is v1's.
        assert model_vote(shadowed_verdict).engine_version == V1


# -- shadows that misbehave ----------------------------------------------------------------------
class HangingSpecialist(specialist_pb2_grpc.SpecialistServicer):
    """Describes itself as the model does, then holds every Score call until released."""

    def __init__(self, describe: specialist_pb2.DescribeResponse) -> None:
        self.describe = describe
        self.release = asyncio.Event()
        self.held = 0

    async def Describe(self, request, context):  # noqa: N802
        return self.describe

    async def Score(self, request, context):  # noqa: N802
        self.held += 1
        try:
            await self.release.wait()
        finally:
            self.held -= 1
        rows = len(request.values)
        return specialist_pb2.ScoreResponse(
            scores=[0.0] * rows, anomalies=[False] * rows, reasons=[""] * rows,
            warming_up=[False] * rows, engine_version="hang",
        )  # fmt: skip


class WrongRowsSpecialist(specialist_pb2_grpc.SpecialistServicer):
    """Describes itself as the model does, then answers one row too many, all anomalous."""

    def __init__(self, describe: specialist_pb2.DescribeResponse) -> None:
        self.describe = describe

    async def Describe(self, request, context):  # noqa: N802
        return self.describe

    async def Score(self, request, context):  # noqa: N802
        rows = len(request.values) + 1
        return specialist_pb2.ScoreResponse(
            scores=[1.0] * rows, anomalies=[True] * rows, reasons=["x"] * rows,
            warming_up=[False] * rows, engine_version="wrong-rows",
        )  # fmt: skip


def garbage_handler(describe: specialist_pb2.DescribeResponse) -> grpc.GenericRpcHandler:
    """Describe as the model does; Score answers bytes that are no ScoreResponse."""

    async def score(request: bytes, context) -> bytes:
        return b"\xff\xff\xff garbage"

    async def describe_(request: bytes, context) -> bytes:
        return describe.SerializeToString()

    return grpc.method_handlers_generic_handler(
        "sentinel.v1.Specialist",
        {
            "Score": grpc.unary_unary_rpc_method_handler(score),
            "Describe": grpc.unary_unary_rpc_method_handler(describe_),
        },
    )


async def serve(servicer=None, handler: grpc.GenericRpcHandler | None = None):
    server = grpc.aio.server()
    if servicer is not None:
        specialist_pb2_grpc.add_SpecialistServicer_to_server(servicer, server)
    if handler is not None:
        server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def unused_target() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing listens there


def verdict_fields(run: Run) -> list[tuple]:
    return [
        (v.sensor_id, v.anomaly, v.score, v.status, tuple(v.missing), tuple(v.votes))
        for v in run.verdicts
    ]


async def test_a_shadow_that_is_down_hangs_or_answers_garbage_changes_no_verdict(
    engines, caplog
) -> None:
    primaries = {"threshold": engines["threshold"], "model": engines["v1"]}
    async with grpc.aio.insecure_channel(engines["v1"]) as channel:
        describe = await specialist_pb2_grpc.SpecialistStub(channel).Describe(
            specialist_pb2.DescribeRequest()
        )
    async with orchestrator(primaries) as plain:
        baseline = await stream(f"127.0.0.1:{plain.port}")
    assert any(v.anomaly for v in baseline.verdicts)
    assert not any(v.status == pb.VERDICT_STATUS_DEGRADED for v in baseline.verdicts)

    hang = HangingSpecialist(describe)
    servers = [
        await serve(hang),
        await serve(WrongRowsSpecialist(describe)),
        await serve(handler=garbage_handler(describe)),
    ]
    faults = {
        "down": unused_target(),
        "hangs": servers[0][1],
        "wrong rows": servers[1][1],
        "garbage": servers[2][1],
    }
    try:
        for fault, target in faults.items():
            caplog.clear()
            async with orchestrator(
                primaries,
                shadows=f"model={target}",
                shadow_inflight_per_stream=1,
                # Far longer than the stream: an ack that waited for the hanging shadow would
                # arrive after it released its calls, never while it holds one.
                specialist_timeout_seconds=60,
            ) as shadowed:
                run = await stream(f"127.0.0.1:{shadowed.port}", hang)
                samples = scrape(shadowed)
                if fault == "hangs":
                    assert run.held_at_last_ack == 1, "an ack waited for the hanging shadow"
                    hang.release.set()
                await all_compared(shadowed)
            assert run.acks == [b.batch_id for b in batches()], fault
            assert verdict_fields(run) == verdict_fields(baseline), fault
            assert [(a.sensor_id, a.state) for a in run.alerts] == [
                (a.sensor_id, a.state) for a in baseline.alerts
            ], fault
            counted = {
                dict(labels).get("reason") or dict(labels).get("code")
                for (name, labels), v in samples.items()
                if v and name.endswith(("shadow_calls_skipped_total", "shadow_errors_total"))
            }
            expected = {
                "down": {"not_ready"},
                "hangs": {"busy"},
                "wrong rows": {"INVALID_RESPONSE"},
                "garbage": {"INVALID_RESPONSE"},
            }[fault]
            assert expected <= counted, (fault, counted)
            if fault == "garbage":
                # Every call failed; the log says so once a minute, not once a call.
                failed = value(samples, "sentinel_orchestrator_shadow_errors_total")
                warned = [
                    r
                    for r in caplog.records
                    if r.name == "sentinel.orchestrator.specialist_pool"
                    and r.levelno >= logging.WARNING
                ]
                assert failed > 1 and len(warned) == 1
            assert value(samples, "sentinel_orchestrator_shadow_rows_compared_total") == 0, fault
    finally:
        hang.release.set()
        for server, _ in servers:
            await server.stop(0)


async def test_a_shadow_that_reads_other_inputs_or_exceeds_its_budget_sits_out(engines) -> None:
    primaries = {"threshold": engines["threshold"], "model": engines["v1"]}
    # The threshold engine as the model's shadow declares another window and views: mismatch.
    async with orchestrator(primaries, shadows=f"model={engines['threshold']}") as mismatched:
        run = await stream(f"127.0.0.1:{mismatched.port}")
        samples = scrape(mismatched)
    assert value(samples, "sentinel_orchestrator_shadow_calls_skipped_total", reason="mismatch")
    assert len(run.acks) == READINGS // PER_BATCH
    # No room for the shadow's calibration: refused, so never ready.
    async with orchestrator(
        primaries, shadows=f"model={engines['v2']}", max_shadow_bytes_per_sensor=0
    ) as refused:
        run = await stream(f"127.0.0.1:{refused.port}")
        samples = scrape(refused)
    assert value(samples, "sentinel_orchestrator_shadow_calls_skipped_total", reason="not_ready")
    assert value(samples, "sentinel_orchestrator_shadow_up", specialist="model") == 0
    assert value(samples, "sentinel_orchestrator_shadow_rows_compared_total") == 0


async def test_shadow_calls_are_spans_of_their_own_linked_to_the_batch(engines) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, build_propagator())
    primaries = {"threshold": engines["threshold"], "model": engines["v1"]}
    async with orchestrator(primaries, tracing, shadows=f"model={engines['v2']}") as shadowed:
        await stream(f"127.0.0.1:{shadowed.port}")
        await all_compared(shadowed)
    spans = exporter.get_finished_spans()
    batches_ = {s.context.span_id: s for s in spans if s.name == "sentinel.batch"}
    shadow_calls = [s for s in spans if s.name == "sentinel.v1.Specialist/Score shadow"]
    assert shadow_calls and len(shadow_calls) <= len(batches_)
    for span in shadow_calls:
        assert span.attributes["sentinel.shadow"] is True
        assert span.attributes["sentinel.specialist"] == "model"
        assert span.attributes["sentinel.engine_version"] == V2
        (link,) = span.links
        batch = batches_[link.context.span_id]
        assert span.parent is None and span.context.trace_id != batch.context.trace_id
    # The primaries' calls stay children of their batch.
    primary_calls = [s for s in spans if s.name == "sentinel.v1.Specialist/Score"]
    assert all(s.parent.span_id in batches_ for s in primary_calls)

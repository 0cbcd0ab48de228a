"""Prometheus /metrics of a running orchestrator and specialists, scraped over HTTP after a known
stream: values, not just names, and the naming conventions."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections import Counter

import grpc
import prometheus_client
from mesh_fixtures import no_tracing, running_mesh
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.metrics import SpecialistMetrics

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

ENGINES = ("threshold", "statistical", "model")
SENSORS = ("m-0", "m-1", "m-2")
PACED_BATCHES = 70  # one at a time: one scoring round each
SPIKE_BATCH = 62  # above the test mesh's hard limit (90): the threshold engine flags it at once
# Sent without waiting (the orchestrator may coalesce them); enough that every engine's
# calibrated channels are past warm-up (~240 readings per sensor) and some verdicts are `ok`.
BURST_BATCHES = 230


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Scrape(response.read().decode())


async def ascrape(port: int) -> Scrape:
    return await asyncio.to_thread(scrape, port)


def readings(batch_id: int) -> list[pb.Reading]:
    return [
        pb.Reading(
            sensor_id=sensor,
            value=250.0
            if (batch_id == SPIKE_BATCH and sensor == "m-1")
            else 40.0 + (batch_id + i) % 3,
        )
        for i, sensor in enumerate(SENSORS)
    ]


async def test_scraped_metrics_match_a_known_stream() -> None:
    overrides = {engine: {"metrics_port": 0} for engine in ENGINES}
    async with running_mesh(metrics_port=0, specialist_overrides=overrides) as mesh:
        orchestrator_port = mesh.orchestrator.metrics_endpoint.port
        specialist_ports = {n: p.metrics_endpoint.port for n, p in mesh.specialists.items()}
        statuses: Counter[str] = Counter()
        anomalous = 0
        votes_anomalous: Counter[str] = Counter()
        votes_warming: Counter[str] = Counter()
        alerts: list[str] = []
        outbox: asyncio.Queue = asyncio.Queue()

        async def requests():
            while (item := await outbox.get()) is not None:
                yield item

        def send(batch_id: int) -> None:
            outbox.put_nowait(
                pb.TelemetryBatch(
                    batch_id=batch_id, readings=readings(batch_id), verdicts=pb.VERDICT_MODE_ALL
                )
            )

        during = None
        send(1)
        acked = 0
        async for event in mesh.stub.StreamTelemetry(requests()):
            kind = event.WhichOneof("event")
            if kind == "verdicts":
                for verdict in event.verdicts.verdicts:
                    statuses[pb.VerdictStatus.Name(verdict.status)] += 1
                    anomalous += verdict.anomaly
                    for vote in verdict.votes:
                        votes_anomalous[vote.specialist] += vote.anomaly
                        votes_warming[vote.specialist] += vote.warming_up
            elif kind == "alert":
                alerts.append(pb.AlertState.Name(event.alert.state))
            elif kind == "ack":
                acked += 1
                if acked < PACED_BATCHES:
                    send(acked + 1)
                elif acked == PACED_BATCHES:
                    during = await ascrape(orchestrator_port)  # the stream is still open
                    for batch_id in range(PACED_BATCHES + 1, PACED_BATCHES + BURST_BATCHES + 1):
                        send(batch_id)
                if acked == PACED_BATCHES + BURST_BATCHES:
                    outbox.put_nowait(None)

        batches_sent = PACED_BATCHES + BURST_BATCHES
        readings_sent = batches_sent * len(SENSORS)
        assert acked == batches_sent
        assert alerts == ["ALERT_STATE_OPEN", "ALERT_STATE_RESOLVED"]

        # While the stream was open: one active stream, nothing queued, three sensors.
        assert during.value("sentinel_orchestrator_active_streams") == 1
        assert "sentinel_orchestrator_queue_depth" in during.families
        assert during.value("sentinel_orchestrator_queue_depth") == 0
        assert during.value("sentinel_orchestrator_sensors_tracked") == len(SENSORS)
        assert during.value("sentinel_orchestrator_readings_received_total") == PACED_BATCHES * len(
            SENSORS
        )
        assert during.value("sentinel_orchestrator_batch_duration_seconds_count") == PACED_BATCHES

        for _ in range(100):  # the session is torn down just after the last event
            after = await ascrape(orchestrator_port)
            if after.value("sentinel_orchestrator_active_streams") == 0:
                break
            await asyncio.sleep(0.02)
        m = after
        assert m.value("sentinel_orchestrator_active_streams") == 0
        assert m.value("sentinel_orchestrator_queue_depth") == 0
        assert m.value("sentinel_orchestrator_sensors_tracked") == len(SENSORS)
        assert m.value("sentinel_orchestrator_open_incidents") == 0

        # Readings, batches, verdicts: what the client sent and saw.
        assert m.value("sentinel_orchestrator_readings_received_total") == readings_sent
        assert m.value("sentinel_orchestrator_batches_received_total") == batches_sent
        assert m.value("sentinel_orchestrator_duplicate_batches_total") == 0
        by_status = {s["status"]: m.value("sentinel_orchestrator_verdicts_total", **s) for s in
                     m.labelsets("sentinel_orchestrator_verdicts_total")}  # fmt: skip
        assert sum(by_status.values()) == readings_sent
        assert by_status == {
            name.removeprefix("VERDICT_STATUS_").lower(): float(n) for name, n in statuses.items()
        }
        assert by_status["warming_up"] > 0 and by_status["ok"] > 0 and "degraded" not in by_status
        assert m.value("sentinel_orchestrator_anomalous_verdicts_total") == anomalous >= 1
        assert m.value("sentinel_orchestrator_alerts_total", state="open") == 1
        assert m.value("sentinel_orchestrator_alerts_total", state="resolved") == 1

        # One scoring round per paced batch; the burst may have been coalesced into fewer.
        rounds = m.value("sentinel_orchestrator_batch_duration_seconds_count")
        assert PACED_BATCHES < rounds <= batches_sent
        versions = {c.name: c.engine_version for c in mesh.orchestrator.pool.clients}
        assert set(versions) == set(ENGINES) and all(versions.values())
        for name in ENGINES:
            labels = {"specialist": name, "version": versions[name]}
            count = m.value(
                "sentinel_orchestrator_specialist_call_duration_seconds_count", **labels
            )
            assert count == rounds, name  # one Score call per specialist per round
            inf = m.value(
                "sentinel_orchestrator_specialist_call_duration_seconds_bucket", le="+Inf", **labels
            )
            assert inf == count
            assert (
                m.value("sentinel_orchestrator_specialist_call_duration_seconds_sum", **labels) > 0
            )
        assert m.value("sentinel_orchestrator_specialist_errors_total") == 0

        # Each specialist: every row scored once, under the version the orchestrator labels it.
        for name, port in specialist_ports.items():
            s = await ascrape(port)
            labels = {"engine": name, "version": versions[name]}
            assert s.labelsets("sentinel_specialist_rows_scored_total") == [labels]
            assert s.value("sentinel_specialist_rows_scored_total", **labels) == readings_sent
            assert s.value("sentinel_specialist_score_duration_seconds_count", **labels) == rounds
            # What the engine said; the orchestrator's calibration of an engine's channels may
            # add flags (a likelihood below threshold) and warm-up (a channel not calibrated yet)
            # to the votes the client sees, never remove them. The threshold engine has no
            # channels: its votes are exactly what it said.
            engine_anomalies = s.value("sentinel_specialist_anomalies_total", **labels)
            engine_warming = s.value("sentinel_specialist_rows_warming_up_total", **labels)
            calibrated = bool(mesh.specialists[name].engine.channels)
            if calibrated:
                assert engine_anomalies <= votes_anomalous[name], name
                assert engine_warming <= votes_warming[name], name
            else:
                assert engine_anomalies == votes_anomalous[name], name
                assert engine_warming == votes_warming[name], name
            assert s.value("sentinel_specialist_requests_rejected_total", **labels) == 0
            check_naming(s)
        assert votes_anomalous["threshold"] >= 1
        check_naming(m)


def check_naming(scrape: Scrape) -> None:
    """Prometheus conventions: prefixed snake_case, `_total` counters, base-unit `_seconds`."""
    assert scrape.families
    for family in scrape.families.values():
        if family.name.endswith("_created") and family.type == "gauge":
            # prometheus_client's text format 0.0.4 writes a counter's / histogram's creation
            # time as a `<name>_created` gauge (OpenMetrics, which Prometheus negotiates
            # first, carries it as metadata instead).
            origin = scrape.families.get(family.name.removesuffix("_created"))
            assert origin is not None and origin.type in ("counter", "histogram"), family.name
            continue
        assert re.fullmatch(r"sentinel_(orchestrator|specialist)_[a-z0-9_]+", family.name), (
            family.name
        )
        assert family.documentation, family.name
        names = {s.name for s in family.samples}
        if family.type == "counter":
            assert names <= {f"{family.name}_total", f"{family.name}_created"}, names
        elif family.type == "histogram":
            # Durations in seconds; a score difference has no unit (scores are in [0, 1]).
            assert family.name.endswith(("_seconds", "_score_difference")), family.name
            assert names <= {f"{family.name}{x}" for x in ("_bucket", "_count", "_sum", "_created")}
        else:
            assert family.type == "gauge", family
            assert not family.name.endswith(("_total", "_seconds", "_count")), family.name
        assert not re.search(r"_(ms|milliseconds|micro\w*)(_|$)", family.name), family.name


async def test_two_orchestrators_in_one_process_have_independent_registries() -> None:
    def settings() -> OrchestratorSettings:
        return OrchestratorSettings(
            port=0, metrics_port=0, specialists="threshold=127.0.0.1:1", drain_delay_seconds=0,
            specialist_timeout_seconds=0.2,
        )  # fmt: skip

    first = OrchestratorProcess(settings(), no_tracing())
    second = OrchestratorProcess(settings(), no_tracing())  # no "Duplicated timeseries"
    assert first.registry is not second.registry
    await first.start()
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            await stub.Detect(pb.TelemetryBatch(batch_id=1, readings=readings(1)), timeout=5)
        one = await ascrape(first.metrics_endpoint.port)
        two = await ascrape(second.metrics_endpoint.port)
        assert first.metrics_endpoint.port != second.metrics_endpoint.port
        assert one.value("sentinel_orchestrator_readings_received_total") == len(SENSORS)
        assert one.value("sentinel_orchestrator_verdicts_total", status="degraded") == len(SENSORS)
        assert two.value("sentinel_orchestrator_readings_received_total") == 0
        assert two.value("sentinel_orchestrator_verdicts_total") == 0
        assert {f for f in one.families if not f.endswith("_created")} == {
            f for f in two.families if not f.endswith("_created")
        }
    finally:
        await first.stop(drain_delay=0, grace=0)
        await second.stop(drain_delay=0, grace=0)
    # Nothing leaks into prometheus_client's process-global default registry.
    assert not [
        m.name for m in prometheus_client.REGISTRY.collect() if m.name.startswith("sentinel_")
    ]
    # Specialists likewise: two engines' metrics in one process do not collide.
    a = SpecialistMetrics(CollectorRegistry(), "threshold", "1")
    b = SpecialistMetrics(CollectorRegistry(), "threshold", "1")
    a.scored(rows=5, anomalies=1, warming_up=0, seconds=0.001)
    assert (
        a.registry.get_sample_value(
            "sentinel_specialist_rows_scored_total", {"engine": "threshold", "version": "1"}
        )
        == 5
    )
    assert (
        b.registry.get_sample_value(
            "sentinel_specialist_rows_scored_total", {"engine": "threshold", "version": "1"}
        )
        == 0
    )

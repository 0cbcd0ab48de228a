"""Alerts delivered to Alertmanager: the payload and the outbox as plain logic, then a real
Alertmanager (Debian's `prometheus-alertmanager`) receiving them from real meshes — firing,
resolved, after it was down, after it lost its memory, and across two replicas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from alertmanager_server import AlertmanagerServer
from mesh_fixtures import LIMIT_90_RULES, no_tracing, running_mesh, start_specialist
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from readings import NANOS, batch
from sentinel.orchestrator.alertmanager import (
    AlertmanagerOptions,
    AlertmanagerSender,
    HttpTransport,
    Outbox,
    Outgoing,
    alert_labels,
    build_alert,
    parse_labels,
    rfc3339,
)
from sentinel.orchestrator.incidents import AlertEvent, Incident, IncidentTracker
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.telemetry import Tracing, build_propagator
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

NOW = 1_800_000_000.0
FAST = {  # retries and re-sends on a test's time scale
    "alertmanager_backoff_seconds": 0.05,
    "alertmanager_max_backoff_seconds": 0.2,
    "alertmanager_resend_seconds": 0.2,
    "alertmanager_timeout_seconds": 2.0,
}


def incident(**fields: Any) -> Incident:
    defaults = dict(
        alert_id="a-1",
        sensor_id="pump-7",
        first_timestamp=int((NOW - 3600) * NANOS),
        last_timestamp=int((NOW - 3500) * NANOS),
        peak_value=250.0,
        peak_score=0.99,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        anomalous_readings=4,
        reasons=["threshold: above 90", "statistical: level shift"],
        engine_versions=["threshold@1.0", "statistical@2.1"],
        last_seen=NOW - 10,
    )
    return Incident(**{**defaults, **fields})


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return (
        registry.get_sample_value(f"sentinel_orchestrator_alertmanager_{name}_total", labels) or 0
    )


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `check` (run in a thread: it may do HTTP) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------ pure logic


def test_an_open_incident_is_a_firing_alert_until_it_would_go_stale() -> None:
    options = AlertmanagerOptions(
        url="http://am:9093",
        labels={"cluster": "plant-3"},
        generator_url="https://jaeger.example/trace/{trace_id}",
        resend_seconds=60,
        stale_after_seconds=900,
    )
    alert = build_alert(incident(), "open", NOW, options)
    assert alert["labels"] == {
        "alertname": "SentinelAnomaly",
        "sensor_id": "pump-7",
        "severity": "warning",
        "cluster": "plant-3",
    }
    assert alert["annotations"] == {
        "summary": "Anomaly on sensor pump-7",
        "reasons": "threshold: above 90; statistical: level shift",
        "engine_versions": "threshold@1.0, statistical@2.1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "alert_id": "a-1",
        "peak_value": "250",
        "anomalous_readings": "4",
    }
    assert parse_time(alert["startsAt"]) == NOW - 3600  # the first anomalous reading
    # Last reading seen + stale_after + 3 resend periods: never closed by resolve_timeout.
    assert parse_time(alert["endsAt"]) == NOW - 10 + 900 + 180
    assert alert["generatorURL"] == "https://jaeger.example/trace/0af7651916cd43dd8448eb211c80319c"
    # An incident restored without a recent reading still ends in the future.
    restored = build_alert(incident(last_seen=0.0), "open", NOW, options)
    assert parse_time(restored["endsAt"]) == NOW + 180


def test_a_resolution_ends_at_its_resolved_time_and_never_before_it_starts() -> None:
    options = AlertmanagerOptions(url="http://am:9093", severity="page")
    resolved = incident(resolved_timestamp=int((NOW - 3000) * NANOS), resolve_reason="quiet")
    alert = build_alert(resolved, "resolved", NOW, options)
    assert alert["labels"]["severity"] == "page"
    assert parse_time(alert["endsAt"]) == NOW - 3000
    assert alert["annotations"]["resolve_reason"] == "quiet"
    assert alert["annotations"]["summary"] == "Anomaly on sensor pump-7 resolved (quiet)"
    assert "generatorURL" not in alert
    # Readings stamped ahead of the clock: resolved now, starting no later than it ends
    # (Alertmanager refuses an alert that ends before it starts, with 400 for the batch).
    future = incident(
        first_timestamp=int((NOW + 50) * NANOS),
        resolved_timestamp=int((NOW + 60) * NANOS),
        resolve_reason="quiet",
    )
    alert = build_alert(future, "resolved", NOW, options)
    assert parse_time(alert["startsAt"]) <= parse_time(alert["endsAt"]) == NOW


def test_extra_labels_parse_and_may_not_replace_the_orchestrators_own() -> None:
    assert parse_labels(" cluster=plant-3, team = ops ") == {"cluster": "plant-3", "team": "ops"}
    for bad in ("sensor_id=x", "severity=page", "cluster", "9x=y", "a=1,a=2", "a="):
        with pytest.raises(ValueError):
            parse_labels(bad)
    with pytest.raises(ValueError):
        OrchestratorSettings(alertmanager_labels="alertname=x")
    with pytest.raises(ValueError):
        OrchestratorSettings(alertmanager_url="alertmanager:9093")
    assert OrchestratorSettings(alertmanager_url="http://am:9093").alertmanager_url


def test_the_outbox_keeps_the_latest_state_of_each_alert_in_order() -> None:
    outbox = Outbox(capacity=2)
    assert outbox.put(Outgoing("a", "open", {}))
    assert outbox.put(Outgoing("b", "open", {}))
    assert outbox.put(Outgoing("a", "resolved", {}))  # replaces a's opening, keeps its place
    assert not outbox.put(Outgoing("c", "open", {}))  # full
    taken = outbox.take(10)
    assert [(i.alert_id, i.state) for i in taken] == [("a", "resolved"), ("b", "open")]
    # A failed batch goes back in front, unless a newer state of the alert came meanwhile.
    outbox.put(Outgoing("b", "resolved", {}))
    assert outbox.requeue(taken) == 0
    assert [(i.alert_id, i.state) for i in outbox.take(10)] == [
        ("a", "resolved"),
        ("b", "resolved"),
    ]


def test_a_full_queue_drops_new_alerts_and_counts_them() -> None:
    registry = CollectorRegistry()
    options = AlertmanagerOptions(url="http://127.0.0.1:9", queue=2)
    sender = AlertmanagerSender(options, IncidentTracker(), registry)  # not started: nothing drains
    for n in range(5):
        sender(AlertEvent("open", incident(alert_id=f"a-{n}", sensor_id=f"s-{n}")))
    sender(
        AlertEvent("resolved", incident(alert_id="a-0", sensor_id="s-0", resolve_reason="quiet"))
    )
    assert counter(registry, "dropped", reason="queue_full") == 3
    assert registry.get_sample_value("sentinel_orchestrator_alertmanager_queue") == 2
    assert [(i.alert_id, i.state) for i in sender.outbox.take(10)] == [
        ("a-0", "resolved"),
        ("a-1", "open"),
    ]


async def test_open_incidents_are_resent_only_while_their_sensor_reports_here() -> None:
    clock = [NOW]
    tracker = IncidentTracker(resolve_after=5, clock=lambda: clock[0])
    options = AlertmanagerOptions(url="http://127.0.0.1:9")
    sender = AlertmanagerSender(options, tracker, CollectorRegistry(), clock=lambda: clock[0])

    def score(sensor: str, anomalous: bool) -> None:
        import numpy as np

        events = tracker.update(
            [sensor], np.array([int(clock[0] * NANOS)]), np.array([200.0]),
            np.array([anomalous]), np.array([1.0]), lambda row: (["threshold: high"], ["t@1"]),
        )  # fmt: skip
        for event in events:
            sender(event)

    score("busy", True)
    score("gone", True)
    assert len(sender.outbox.take(10)) == 2  # the openings
    clock[0] += 30
    score("busy", True)  # still reporting (and anomalous)
    assert await sender.resend() == 1
    assert [i.alert["labels"]["sensor_id"] for i in sender.outbox.take(10)] == ["busy"]
    assert await sender.resend() == 0  # nothing new since


# ------------------------------------------------------------------------------ real Alertmanager


@pytest.fixture
def alertmanager(tmp_path: Path):
    server = AlertmanagerServer(tmp_path)
    server.start()
    yield server
    server.close()


def test_alertmanager_lets_the_latest_update_resolve_an_alert_whoever_sent_it(
    alertmanager: AlertmanagerServer,
) -> None:
    """Alertmanager's merge, as the handover rule relies on it (alertmanager 0.25): one label
    set is one alert; the earliest startsAt is kept, annotations come from the latest update,
    and a resolution closes the alert even if another sender still reports it open."""
    now = time.time()
    labels = {"alertname": "SentinelAnomaly", "sensor_id": "moved", "severity": "warning"}

    def post(alert_id: str, starts: float, ends: float) -> None:
        options = AlertmanagerOptions(url=alertmanager.url)
        alert = build_alert(incident(alert_id=alert_id, sensor_id="moved"), "open", now, options)
        alert.update(startsAt=rfc3339(starts), endsAt=rfc3339(ends))
        alertmanager.post([alert])

    post("replica-a", now - 3600, now + 600)
    post("replica-b", now - 60, now + 900)
    [alert] = alertmanager.alerts(**labels)
    assert alert["annotations"]["alert_id"] == "replica-b"
    assert abs(parse_time(alert["startsAt"]) - (now - 3600)) < 0.01
    post("replica-a", now - 3600, time.time())  # A's stale resolution...
    assert alertmanager.alerts(**labels) == []  # ...closes B's open alert
    post("replica-b", now - 60, now + 900)  # until B re-sends it
    assert [a["annotations"]["alert_id"] for a in alertmanager.alerts(**labels)] == ["replica-b"]


def test_the_ownership_query_matches_any_sensor_id(alertmanager: AlertmanagerServer) -> None:
    options = AlertmanagerOptions(url=alertmanager.url + "/", labels={"cluster": "c1"})
    transport = HttpTransport(options.url)
    odd = 'line "7"\\pump, a=b}'
    for alert_id, sensor in (("odd", odd), ("plain", "line 7")):
        alert = build_alert(
            incident(alert_id=alert_id, sensor_id=sensor), "open", time.time(), options
        )
        transport.post([alert], timeout=5)
    assert transport.active_alert_ids(alert_labels(odd, options), timeout=5) == {"odd"}
    assert transport.active_alert_ids(alert_labels("nobody", options), timeout=5) == set()


async def test_a_spike_fires_in_alertmanager_and_quiet_readings_resolve_it(
    alertmanager: AlertmanagerServer,
) -> None:
    start = (time.time_ns() // NANOS - 600) * NANOS
    async with running_mesh(
        tracing=Tracing(TracerProvider(), build_propagator()),  # alerts carry trace ids
        alertmanager_url=alertmanager.url,
        alertmanager_labels="cluster=test",
        **FAST,
    ) as mesh:
        await mesh.stub.Detect(batch(1, [200.0], sensor="boiler-1", start_ns=start))
        [opened] = (await mesh.stub.ListAlerts(pb.ListAlertsRequest())).alerts
        [alert] = await eventually(lambda: alertmanager.alerts(sensor_id="boiler-1"))
        assert alert["labels"] == {
            "alertname": "SentinelAnomaly",
            "sensor_id": "boiler-1",
            "severity": "warning",
            "cluster": "test",
        }
        notes = alert["annotations"]
        assert notes["alert_id"] == opened.alert_id
        assert notes["trace_id"] == opened.trace_id and len(opened.trace_id) == 32
        assert notes["reasons"] == "; ".join(opened.reasons) and "threshold" in notes["reasons"]
        assert notes["engine_versions"] == ", ".join(opened.engine_versions)
        assert (notes["peak_value"], notes["anomalous_readings"]) == ("200", "1")
        assert abs(parse_time(alert["startsAt"]) - start / NANOS) < 0.002
        assert parse_time(alert["endsAt"]) > time.time() + 800  # stale_after (900) ahead
        assert alert["status"]["state"] == "active"

        await mesh.stub.Detect(batch(2, [10.0] * 5, sensor="boiler-1", start_ns=start + NANOS))
        await eventually(lambda: not alertmanager.alerts(sensor_id="boiler-1"), what="resolved")
        [resolved] = await eventually(
            lambda: alertmanager.notified("resolved", sensor_id="boiler-1")
        )
        assert resolved["annotations"]["alert_id"] == opened.alert_id
        assert resolved["annotations"]["resolve_reason"] == "quiet"
        assert abs(parse_time(resolved["endsAt"]) - (start / NANOS + 5)) < 0.002
        assert [a["status"] for a in alertmanager.notified("firing", sensor_id="boiler-1")] == [
            "firing"
        ]
        registry = mesh.orchestrator.registry
        assert counter(registry, "sent", state="open") >= 1
        assert counter(registry, "sent", state="resolved") == 1


async def test_alerts_raised_while_alertmanager_is_down_arrive_when_it_is_up(
    tmp_path: Path,
) -> None:
    server = AlertmanagerServer(tmp_path)  # its port, not listening yet
    try:
        async with running_mesh(
            engines=("threshold",), alertmanager_url=server.url, **FAST
        ) as mesh:
            registry = mesh.orchestrator.registry
            await mesh.stub.Detect(batch(1, [200.0], sensor="down-1"))
            await mesh.stub.Detect(batch(2, [200.0], sensor="down-2"))
            await mesh.stub.Detect(batch(3, [10.0] * 5, sensor="down-2"))  # resolves
            await eventually(lambda: counter(registry, "failed") >= 3, what="retries")
            await asyncio.to_thread(server.start)
            [alert] = await eventually(lambda: server.alerts(alertname="SentinelAnomaly"))
            assert alert["labels"]["sensor_id"] == "down-1"  # down-2's latest state: resolved
            await eventually(lambda: counter(registry, "sent", state="resolved") == 1)
            assert counter(registry, "dropped", reason="queue_full") == 0

            # Alertmanager keeps alerts in memory: restarted, it knows nothing until the
            # re-send of an incident whose sensor still reports.
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            assert server.alerts(sensor_id="down-1") == []
            await mesh.stub.Detect(batch(4, [200.0], sensor="down-1"))
            await eventually(lambda: server.alerts(sensor_id="down-1"), what="re-sent")
    finally:
        server.close()


async def test_stop_flushes_what_is_queued(alertmanager: AlertmanagerServer) -> None:
    registry = CollectorRegistry()
    options = AlertmanagerOptions(url=alertmanager.url, flush_seconds=5)
    sender = AlertmanagerSender(options, IncidentTracker(), registry)
    sender.start()
    for n in range(300):  # more than one POST's worth
        sender(AlertEvent("open", incident(alert_id=f"f-{n}", sensor_id=f"flush-{n}")))
    await sender.stop()
    assert counter(registry, "sent", state="open") == 300
    assert len(alertmanager.alerts(alertname="SentinelAnomaly")) == 300


async def test_a_sensor_that_moves_between_replicas_keeps_one_alert_until_its_new_owner_resolves(
    alertmanager: AlertmanagerServer,
) -> None:
    threshold = await start_specialist("threshold", threshold_rules_file=LIMIT_90_RULES)
    target = f"threshold=127.0.0.1:{threshold.server.port}"
    replicas: list[OrchestratorProcess] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for stale_after in (1.0, 900.0):  # replica A forgets the sensor fast
            settings = OrchestratorSettings(
                port=0,
                specialists=target,
                resolve_after=5,
                stale_after_seconds=stale_after,
                alertmanager_url=alertmanager.url,
                drain_delay_seconds=0,
                **FAST,
            )
            replica = OrchestratorProcess(settings, no_tracing())
            await replica.start()
            replicas.append(replica)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}"))
        a, b = replicas
        stub_a, stub_b = (orchestrator_pb2_grpc.OrchestratorStub(c) for c in channels)
        start = time.time_ns() - 600 * NANOS

        await stub_a.Detect(batch(1, [200.0, 210.0], sensor="pump-9", start_ns=start))
        id_a = a.incidents.open_incident("pump-9").alert_id
        await eventually(lambda: _alert_ids(alertmanager, "pump-9") == [id_a])

        # The client moves to B, where the sensor is anomalous too: B opens its own incident.
        await stub_b.Detect(batch(2, [220.0], sensor="pump-9", start_ns=start + 2 * NANOS))
        id_b = b.incidents.open_incident("pump-9").alert_id
        await eventually(lambda: _alert_ids(alertmanager, "pump-9") == [id_b])

        # A hears nothing more: its incident resolves as stale, and that resolution is not
        # posted, because the active alert now carries B's alert id.
        await eventually(lambda: counter(a.registry, "handover_skipped") == 1, what="skip")
        assert a.incidents.open_count == 0
        assert _alert_ids(alertmanager, "pump-9") == [id_b]  # exactly one, still active
        assert counter(a.registry, "sent", state="resolved") == 0
        assert alertmanager.notified("resolved", sensor_id="pump-9") == []

        # B's readings turn quiet: B resolves, and Alertmanager resolves the one alert.
        await stub_b.Detect(batch(3, [10.0] * 5, sensor="pump-9", start_ns=start + 3 * NANOS))
        await eventually(lambda: _alert_ids(alertmanager, "pump-9") == [], what="resolved")
        [resolved] = await eventually(lambda: alertmanager.notified("resolved", sensor_id="pump-9"))
        assert resolved["annotations"]["alert_id"] == id_b
        assert abs(parse_time(resolved["startsAt"]) - start / NANOS) < 0.002  # A's start kept
        assert len(alertmanager.notified("firing", sensor_id="pump-9")) == 1  # never flapped
    finally:
        for channel in channels:
            await channel.close()
        for replica in replicas:
            await replica.stop(drain_delay=0, grace=0)
        with contextlib.suppress(Exception):
            await threshold.stop(drain_delay=0, grace=0)


def _alert_ids(server: AlertmanagerServer, sensor: str) -> list[str]:
    return [a["annotations"]["alert_id"] for a in server.alerts(sensor_id=sensor)]

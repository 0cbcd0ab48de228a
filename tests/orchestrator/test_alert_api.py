"""The alert API over real gRPC: WatchAlerts starts with what is open, ListAlerts, stale."""

from __future__ import annotations

import asyncio

from mesh_fixtures import running_mesh
from readings import NANOS, batch

from sentinel.v1 import orchestrator_pb2 as pb


async def test_a_late_watcher_first_learns_what_is_open_then_live_alerts(mesh) -> None:
    await mesh.stub.Detect(batch(1, [200.0], sensor="pump-1"))
    await mesh.stub.Detect(batch(2, [200.0], sensor="fan-1"))
    watch = mesh.stub.WatchAlerts(pb.WatchAlertsRequest(sensor_id_prefix="pump-"))
    snapshot = await asyncio.wait_for(watch.read(), 5)
    assert (snapshot.sensor_id, snapshot.state, snapshot.snapshot) == (
        "pump-1",
        pb.ALERT_STATE_OPEN,
        True,
    )
    await mesh.stub.Detect(batch(3, [10.0] * 5, sensor="pump-1"))  # resolve_after=5 in tests
    live = await asyncio.wait_for(watch.read(), 5)
    assert (live.sensor_id, live.state, live.snapshot) == ("pump-1", pb.ALERT_STATE_RESOLVED, False)
    assert live.alert_id == snapshot.alert_id
    assert live.resolve_reason == pb.RESOLVE_REASON_QUIET
    watch.cancel()


async def test_list_alerts_returns_open_incidents_by_prefix(mesh) -> None:
    for index, sensor in enumerate(["pump-1", "pump-2", "fan-1"], start=1):
        await mesh.stub.Detect(batch(index, [200.0], sensor=sensor))
    response = await mesh.stub.ListAlerts(pb.ListAlertsRequest(sensor_id_prefix="pump-"))
    assert [a.sensor_id for a in response.alerts] == ["pump-1", "pump-2"]
    assert all(a.state == pb.ALERT_STATE_OPEN and a.snapshot for a in response.alerts)
    everything = await mesh.stub.ListAlerts(pb.ListAlertsRequest())
    assert len(everything.alerts) == 3


async def test_an_incident_of_a_silent_sensor_resolves_as_stale() -> None:
    async with running_mesh(stale_after_seconds=0.4) as mesh:
        watch = mesh.stub.WatchAlerts(pb.WatchAlertsRequest())
        await mesh.stub.Detect(batch(1, [200.0], sensor="gone"))
        opened = await asyncio.wait_for(watch.read(), 5)
        resolved = await asyncio.wait_for(watch.read(), 5)
        assert (opened.state, resolved.state) == (pb.ALERT_STATE_OPEN, pb.ALERT_STATE_RESOLVED)
        assert resolved.alert_id == opened.alert_id
        assert resolved.resolve_reason == pb.RESOLVE_REASON_STALE
        assert resolved.resolved_timestamp_unix_nanos > 0
        assert not (await mesh.stub.ListAlerts(pb.ListAlertsRequest())).alerts
        watch.cancel()


async def test_an_incident_of_an_evicted_sensor_resolves_as_evicted_and_is_counted() -> None:
    async with running_mesh(max_sensors=50, max_batch_readings=50) as mesh:
        watch = mesh.stub.WatchAlerts(pb.WatchAlertsRequest())
        await mesh.stub.Detect(batch(1, [200.0], sensor="pump-1"))
        opened = await asyncio.wait_for(watch.read(), 5)
        crowd = pb.TelemetryBatch(
            batch_id=2,
            readings=[
                pb.Reading(sensor_id=f"other-{i}", value=10.0, timestamp_unix_nanos=NANOS * 10**9)
                for i in range(50)
            ],
        )
        await mesh.stub.Detect(crowd)  # 50 new sensors: pump-1, least recently seen, is evicted
        resolved = await asyncio.wait_for(watch.read(), 5)
        assert (resolved.alert_id, resolved.state) == (opened.alert_id, pb.ALERT_STATE_RESOLVED)
        assert resolved.resolve_reason == pb.RESOLVE_REASON_EVICTED
        counted = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_incidents_evicted_total"
        )
        assert counted == 1
        assert not (await mesh.stub.ListAlerts(pb.ListAlertsRequest())).alerts
        watch.cancel()

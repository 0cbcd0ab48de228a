"""`sentinel replay`'s `alert` column is exactly what a `WatchAlerts` subscriber sees.

A real mesh (orchestrator and the three specialists in this process, on loopback ports), a real
gRPC `WatchAlerts` subscriber registered before the replay starts, and a generated series whose
spikes and level shift open and resolve several incidents. Every alert the subscriber receives
for the replayed sensor must sit, with the same state and in the same order, on the verdict row
its (batch_id, reading_index) names, and its timestamp must be that row's timestamp.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from mesh_fixtures import running_mesh

import sentinel.app.replay as replay_module
from sentinel.app.replay import VerdictCollector, parse_timestamp, read_series, replay
from sentinel.v1 import orchestrator_pb2 as pb

STATE_NAMES = {pb.ALERT_STATE_OPEN: "open", pb.ALERT_STATE_RESOLVED: "resolved"}
SENSOR = "pump-station"  # the file stem: replay's sensor id
# A hard limit for the marker sensor only (the replayed sensor matches no rule): its alert,
# published after the replay, tells the subscriber that every earlier alert has arrived.
MARKER = "zz-marker"
RULES = f'[[rule]]\npattern = "{MARKER}"\nhigh = 0.0\nadaptive = false\n'


def write_series(path: Path, rows: int = 3000, seed: int = 20240611) -> None:
    """5-minute readings: a daily wave plus noise, four growing spikes (each a new extreme, so
    the adaptive limits flag it) and one level shift, all well after the engines' warm-up."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    values = 50.0 + 5.0 * np.sin(2 * np.pi * t / 288) + rng.normal(0.0, 1.0, rows)
    for start, height in ((800, 30.0), (1300, 45.0), (2200, 60.0), (2700, 75.0)):
        values[start : start + 3] += height
    values[1800:1900] += 15.0
    first = np.datetime64("2021-03-01T00:00:00")
    stamps = [str(first + np.timedelta64(5 * int(i), "m")).replace("T", " ") for i in t]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(zip(stamps, (f"{v:.4f}" for v in values), strict=True))


class RecordingCollector(VerdictCollector):
    """replay's own collector, remembered so the test can read its batch id -> rows map."""

    instances: list[RecordingCollector] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordingCollector.instances.append(self)


async def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_replay_alert_column_equals_the_watch_alerts_feed(
    tmp_path: Path, monkeypatch
) -> None:
    source = tmp_path / f"{SENSOR}.csv"
    write_series(source)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    monkeypatch.setattr(replay_module, "VerdictCollector", RecordingCollector)
    RecordingCollector.instances = []

    async with running_mesh(
        specialist_overrides={"threshold": {"threshold_rules_file": str(rules)}},
        # A deadline a loaded CI machine does not miss: degraded verdicts would still have to
        # match the feed, but they could hide the incidents this test needs.
        specialist_timeout_seconds=10,
    ) as mesh:
        seen: list[pb.Alert] = []
        marker_seen = asyncio.Event()

        async def watch(call) -> None:
            async for alert in call:
                if alert.sensor_id == MARKER:
                    marker_seen.set()
                else:
                    seen.append(alert)

        call = mesh.stub.WatchAlerts(pb.WatchAlertsRequest())
        watcher = asyncio.create_task(watch(call))
        try:
            # Subscribed before the first reading is sent (not just "probably, after a sleep").
            await _wait_for(lambda: mesh.orchestrator.hub.subscribers == 1)
            out = tmp_path / "verdicts.csv"
            counts = await replay(read_series(source), mesh.target, out, batch_size=256)
            # The hub delivers in publish order: once the marker's alert is here, so is
            # every alert of the replay.
            marker = await mesh.stub.Detect(
                pb.TelemetryBatch(batch_id=1, readings=[pb.Reading(sensor_id=MARKER, value=1.0)])
            )
            assert [a.state for a in marker.alerts] == [pb.ALERT_STATE_OPEN]
            await asyncio.wait_for(marker_seen.wait(), 10)
        finally:
            call.cancel()
            try:
                await watcher
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass

    (collector,) = RecordingCollector.instances
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3000 and counts["missing"] == 0
    assert collector.ignored_alerts == 0

    # The replay's events, flattened in row order: (row, state).
    from_column = [
        (i, event)
        for i, row in enumerate(rows)
        if row["alert"]
        for event in row["alert"].split(";")
    ]
    opened = [e for e in from_column if e[1] == "open"]
    resolved = [e for e in from_column if e[1] == "resolved"]
    # Not vacuous: several incidents opened and at least one resolved.
    statuses = Counter(row["status"] for row in rows)
    assert len(opened) >= 2 and len(resolved) >= 1, (from_column, statuses)
    assert (counts["alerts_opened"], counts["alerts_resolved"]) == (len(opened), len(resolved))

    # The subscriber's alerts, each placed on the row its batch id and reading index name.
    assert {a.sensor_id for a in seen} == {SENSOR}
    assert {a.batch_id for a in seen} <= set(collector.batch_rows)
    from_watch = []
    for alert in seen:
        batch_rows = collector.batch_rows[alert.batch_id]
        assert alert.reading_index < len(batch_rows), alert
        from_watch.append((batch_rows[alert.reading_index], STATE_NAMES[alert.state]))
    assert from_watch == from_column  # same count, same states, same rows, same order

    # Timestamps: an open alert's first reading and a resolve's resolving reading are that row.
    for alert, (row, state) in zip(seen, from_watch, strict=True):
        stamp = parse_timestamp(rows[row]["timestamp"])
        if state == "open":
            assert alert.first_timestamp_unix_nanos == stamp, (row, alert)
            assert alert.resolved_timestamp_unix_nanos == 0
        else:
            assert alert.resolved_timestamp_unix_nanos == stamp, (row, alert)
        assert rows[row]["anomaly"] == ("1" if state == "open" else "0")
    # Incidents alternate on one sensor: each resolve closes the incident opened just before.
    ids = [a.alert_id for a in seen]
    states = [STATE_NAMES[a.state] for a in seen]
    for n, (alert_id, state) in enumerate(zip(ids, states, strict=True)):
        assert state == ("open" if n % 2 == 0 else "resolved")
        if state == "resolved":
            assert alert_id == ids[n - 1]
    assert len(set(ids)) == len(opened)

"""Checkpoints: a restarted orchestrator carries on exactly where it stopped; bad files are
refused with a reason and never half-loaded."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from mesh_fixtures import running_mesh
from readings import NANOS, batch, collect
from sentinel.orchestrator.checkpoint import (
    CURRENT,
    PREVIOUS,
    CheckpointRefused,
    load_latest,
    read_checkpoint,
    write_checkpoint,
)
from sentinel.orchestrator.checkpointer import Checkpointer

from sentinel.v1 import orchestrator_pb2 as pb

CLIENT = (("x-sentinel-client-id", "gateway-1"),)
START = 1_750_000_000 * NANOS
SENSORS = ("pump-1", "pump-2", "fan-1")
PER_BATCH = 50
# With checkpoints the memory plan counts the histories twice (a checkpoint copies them):
# the default 100,000 sensors do not fit the default budget, and startup refuses them.
MAX_SENSORS = 10_000


def _series(sensor: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(sensor)
    values = 50 + 3 * np.sin(np.arange(n) / 40) + rng.normal(0, 1, n)
    values[592:596] = 120.0  # every sensor spikes just before the restart (at 600)
    return values


def _batches(first: int, last: int) -> list[pb.TelemetryBatch]:
    """Batches `first`..`last` (1-based): each sensor's next PER_BATCH readings in turn."""
    out = []
    for index in range(first, last + 1):
        sensor = (index - 1) % len(SENSORS)
        offset = (index - 1) // len(SENSORS) * PER_BATCH
        values = _series(sensor, 1200)[offset : offset + PER_BATCH]
        out.append(batch(index, values, sensor=SENSORS[sensor], start_ns=START + offset * NANOS))
    return out


async def _stream(mesh, batches) -> dict[str, list]:
    async def requests():
        for item in batches:
            yield item

    return await collect(mesh.stub.StreamTelemetry(requests(), metadata=CLIENT))


def _verdict_view(verdicts) -> list[tuple]:
    return [
        (
            v.sensor_id,
            v.status,
            v.anomaly,
            round(v.score, 12),
            tuple(
                (o.specialist, o.anomaly, o.warming_up, round(o.likelihood, 12)) for o in v.votes
            ),
        )
        for v in verdicts
    ]


async def test_a_restarted_orchestrator_carries_on_exactly_where_it_stopped(tmp_path) -> None:
    """History, views, calibration, open incidents and dedup memory all survive a restart:
    the verdicts after it equal those of an orchestrator that never stopped."""
    before, after = _batches(1, 36), _batches(37, 60)  # 600 readings per sensor, then 400
    async with running_mesh(resolve_after=20) as mesh:
        reference = await _stream(mesh, before + after)
    reference_after = reference["verdicts"][-len(after) * PER_BATCH :]

    state = str(tmp_path / "state")
    async with running_mesh(resolve_after=20, state_dir=state, max_sensors=MAX_SENSORS) as mesh:
        first = await _stream(mesh, before)
    assert (tmp_path / "state" / CURRENT).exists()
    resolved_before = {a.alert_id for a in first["alert"] if a.state == pb.ALERT_STATE_RESOLVED}
    opened = [
        a
        for a in first["alert"]
        if a.state == pb.ALERT_STATE_OPEN and a.alert_id not in resolved_before
    ]
    assert {a.sensor_id for a in opened} == set(SENSORS)  # open when it stopped

    async with running_mesh(resolve_after=20, state_dir=state, max_sensors=MAX_SENSORS) as mesh:
        still_open = (await mesh.stub.ListAlerts(pb.ListAlertsRequest())).alerts
        assert {a.alert_id for a in still_open} == {a.alert_id for a in opened}
        resent = await _stream(mesh, before[-3:])  # resends after a restart: duplicates
        assert all(ack.duplicate for ack in resent["ack"])
        second = await _stream(mesh, after)

    assert _verdict_view(second["verdicts"]) == _verdict_view(reference_after)
    assert all(v.status == pb.VERDICT_STATUS_OK for v in second["verdicts"])  # no warm-up
    resolved = [a for a in second["alert"] if a.state == pb.ALERT_STATE_RESOLVED]
    assert sorted(a.alert_id for a in resolved) == sorted(a.alert_id for a in opened)
    assert all(a.resolve_reason == pb.RESOLVE_REASON_QUIET for a in resolved)


async def _two_checkpoints(tmp_path) -> str:
    state = str(tmp_path / "state")
    async with running_mesh(state_dir=state, max_sensors=MAX_SENSORS) as mesh:
        await _stream(mesh, _batches(1, 3))
        await mesh.orchestrator.checkpointer.save()  # becomes the previous one on stop
        await _stream(mesh, _batches(4, 6))
    return state


async def test_a_truncated_checkpoint_is_refused_and_the_previous_one_used(
    tmp_path, caplog
) -> None:
    state = await _two_checkpoints(tmp_path)
    current = os.path.join(state, CURRENT)
    with open(current, "r+b") as file:
        file.truncate(os.path.getsize(current) // 2)
    with caplog.at_level(logging.ERROR, logger="sentinel.orchestrator.checkpoint"):
        checkpoint = load_latest(state)
    assert checkpoint is not None and checkpoint.history.sensor_ids == list(SENSORS)
    assert [r.reason for r in caplog.records if r.msg == "checkpoint refused"] != []
    assert "unreadable" in caplog.records[0].reason
    assert [entry[:3] for entry in checkpoint.dedup] == [
        ["gateway-1", 1, 50],
        ["gateway-1", 2, 50],
        ["gateway-1", 3, 50],
    ]
    assert all(len(bytes.fromhex(entry[3])) == 16 for entry in checkpoint.dedup)


async def test_corrupt_checkpoints_leave_an_empty_orchestrator_that_works(tmp_path) -> None:
    state = await _two_checkpoints(tmp_path)
    for name in (CURRENT, PREVIOUS):
        with open(os.path.join(state, name), "r+b") as file:
            file.seek(200)
            file.write(b"\xff" * 64)  # flipped bytes inside the first array: CRC mismatch
    assert load_latest(state) is None
    async with running_mesh(state_dir=state, max_sensors=MAX_SENSORS) as mesh:
        assert mesh.orchestrator.windows.sensors == 0
        events = await _stream(mesh, _batches(1, 3))
        assert [a.readings_accepted for a in events["ack"]] == [PER_BATCH] * 3


async def test_a_checkpoint_of_another_format_version_is_refused(tmp_path, monkeypatch) -> None:
    state = await _two_checkpoints(tmp_path)
    monkeypatch.setattr("sentinel.orchestrator.checkpoint.FORMAT_VERSION", 3)
    with pytest.raises(CheckpointRefused, match="format version 2, this orchestrator reads 3"):
        read_checkpoint(os.path.join(state, CURRENT))


async def test_a_crash_mid_write_leaves_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    state = await _two_checkpoints(tmp_path)
    good = read_checkpoint(os.path.join(state, CURRENT))

    def crash(*args, **kwargs):
        raise OSError("disk full")  # the temporary file is half written, then the process dies

    monkeypatch.setattr("sentinel.orchestrator.checkpoint.os.replace", crash)
    with pytest.raises(OSError):
        write_checkpoint(state, good)
    monkeypatch.undo()
    assert os.path.exists(os.path.join(state, "checkpoint.npz.tmp"))
    again = load_latest(state)
    assert again is not None and again.written_at == good.written_at


async def test_a_failed_write_is_logged_and_counted_and_the_mesh_carries_on(tmp_path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the state directory should be")
    async with running_mesh(state_dir=str(blocked), max_sensors=MAX_SENSORS) as mesh:
        checkpointer: Checkpointer = mesh.orchestrator.checkpointer
        assert await checkpointer.save() is False
        failed = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_checkpoints_total", {"result": "failed"}
        )
        assert failed == 1
        events = await _stream(mesh, _batches(1, 2))
        assert len(events["ack"]) == 2


async def test_a_checkpoint_that_does_not_fit_is_refused_whole_not_half_loaded(
    tmp_path, caplog
) -> None:
    state = await _two_checkpoints(tmp_path)
    good = read_checkpoint(os.path.join(state, CURRENT))
    arrays = dict(good.history.arrays)
    # The calibration state of another build (say, a different ring length) must not be read
    # into this one's arrays.
    arrays["calibration/_ring"] = arrays["calibration/_ring"][:, :, :3].copy()
    broken = type(good)(
        good.written_at + 1,
        type(good.history)(good.history.meta, good.history.sensor_ids, arrays),
        good.incidents,
        good.dedup,
    )
    write_checkpoint(state, broken)  # now current; `good` is the previous one
    with caplog.at_level(logging.ERROR, logger="sentinel.orchestrator.checkpoint"):
        async with running_mesh(state_dir=state, max_sensors=MAX_SENSORS) as mesh:
            refused = [r for r in caplog.records if r.msg == "checkpoint refused"]
            assert len(refused) == 1 and "calibration/_ring" in refused[0].reason
            # Loaded from the previous file, whole: each sensor's 2 x 50 readings.
            assert mesh.orchestrator.windows.sensors == len(SENSORS)
            assert len(mesh.orchestrator.windows.history("pump-1")) == 2 * PER_BATCH
            events = await _stream(mesh, _batches(7, 9))
            assert [a.readings_accepted for a in events["ack"]] == [PER_BATCH] * 3

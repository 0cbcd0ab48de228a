"""Fault matrix, orchestrator state: SIGTERM or SIGKILL mid-incident, then a restart from the
state directory. Real processes: `sentinel serve orchestrator` plus specialists (a LocalMesh).

After the restart the incident is still open and resolves exactly once, the sensor scores
`ok` at once (no warm-up), and batches resent from before the last checkpoint are duplicates.
"""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest
from faultkit import process_mesh, wait_until
from readings import NANOS, batch, collect, noise

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

CLIENT = (("x-sentinel-client-id", "gateway-7"),)
START = time.time_ns() - 7200 * NANOS
WARM = 400  # readings before every engine votes (statistical level ~230, then calibration)


async def _send(stub, batch_id: int, values, offset: int) -> dict[str, list]:
    async def one():
        yield batch(batch_id, values, sensor="boiler", start_ns=START + offset * NANOS)

    return await collect(stub.StreamTelemetry(one(), metadata=CLIENT))


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_an_incident_survives_a_restart_and_resolves_once(tmp_path, how) -> None:
    state = tmp_path / "state"
    checkpoint = state / "checkpoint.npz"
    async with process_mesh(
        SENTINEL_STATE_DIR=str(state),
        SENTINEL_CHECKPOINT_SECONDS="0.3",
        SENTINEL_RESOLVE_AFTER="5",
    ) as (_specialists, orchestrator):
        values = noise(WARM + 3, seed=5)
        values[WARM:] = [200.0, 210.0, 205.0]
        async with grpc.aio.insecure_channel(orchestrator.target) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            for index in range(0, WARM, 100):
                await _send(stub, index // 100 + 1, values[index : index + 100], index)
            spike = await _send(stub, 5, values[WARM:], WARM)
            (opened,) = spike["alert"]
            assert opened.state == pb.ALERT_STATE_OPEN
            sent_at = time.time()
        if how == signal.SIGKILL:
            # No drain: only the periodic checkpoint taken after the spike can save it.
            await wait_until(
                lambda: checkpoint.exists() and os.path.getmtime(checkpoint) > sent_at + 0.1,
                20,
                "a periodic checkpoint after the spike",
            )
        await orchestrator.stop(how)
        await orchestrator.start()

        async with grpc.aio.insecure_channel(orchestrator.target) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            listed = (await stub.ListAlerts(pb.ListAlertsRequest())).alerts
            assert [a.alert_id for a in listed] == [opened.alert_id]
            watch = stub.WatchAlerts(pb.WatchAlertsRequest())
            assert (await watch.read()).alert_id == opened.alert_id  # the snapshot
            resent = await _send(stub, 5, values[WARM:], WARM)
            assert [a.duplicate for a in resent["ack"]] == [True]
            quiet = await _send(stub, 6, noise(8, seed=6), WARM + 3)
            statuses = {v.status for v in quiet["verdicts"]}
            assert statuses == {pb.VERDICT_STATUS_OK}  # scored at once: no warm-up
            (resolved,) = quiet["alert"]
            assert (resolved.alert_id, resolved.state) == (opened.alert_id, pb.ALERT_STATE_RESOLVED)
            assert resolved.resolve_reason == pb.RESOLVE_REASON_QUIET
            live = await watch.read()
            assert (live.alert_id, live.state) == (opened.alert_id, pb.ALERT_STATE_RESOLVED)
            assert not (await stub.ListAlerts(pb.ListAlertsRequest())).alerts
            watch.cancel()

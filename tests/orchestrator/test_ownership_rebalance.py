"""What a rebalance costs a sensor, with two real orchestrators (in-process gRPC servers).

In Kubernetes the mesh routes a partition key to one orchestrator replica; when the replica set
changes, some keys move to another replica (docs/deploy.md, "Ownership"). Envoy cannot run
here, so the move is simulated the way a client sees it: the same client (same client id and
partition key) streams to orchestrator A, then to orchestrator B. The test checks what the
documentation states: B starts the sensor from scratch (warming up), A's open incident
resolves as `stale` (nothing dangles), and the dedup memory stays behind on A.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from mesh_fixtures import no_tracing, start_specialist
from readings import noise
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.client import CLIENT_ID_HEADER, PARTITION_HEADER, TelemetryClient
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

NANOS = 1_000_000_000
SENSOR = "pump-7"
# Threshold engine only, adaptive limits after 20 readings, no hard limits: a sensor warms up
# for a known number of readings, then a value far outside its range is an anomaly.
WARM_UP = 20
STALE_AFTER = 0.4


@contextlib.asynccontextmanager
async def two_orchestrators() -> AsyncIterator[tuple[OrchestratorProcess, OrchestratorProcess]]:
    threshold = await start_specialist(
        "threshold", threshold_rules_file=None, adaptive_min_history=WARM_UP
    )
    replicas = []
    try:
        for _ in range(2):
            settings = OrchestratorSettings(
                port=0,
                specialists=f"threshold=127.0.0.1:{threshold.server.port}",
                drain_delay_seconds=0,
                shutdown_grace_seconds=1,
                resolve_after=1000,  # only `stale` can resolve an incident in these tests
                stale_after_seconds=STALE_AFTER,
            )
            replica = OrchestratorProcess(settings, no_tracing())
            await replica.start()
            replicas.append(replica)
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            await replica.stop(drain_delay=0, grace=0.5)
        await threshold.stop(drain_delay=0, grace=0)


def readings(values, start_ns: int) -> list[pb.Reading]:
    return [
        pb.Reading(sensor_id=SENSOR, value=float(v), timestamp_unix_nanos=start_ns + i * NANOS)
        for i, v in enumerate(values)
    ]


async def stream(target: str, values, start_ns: int) -> tuple[list, list]:
    """One gateway's stream (fixed client id and partition key): (verdicts, alerts)."""
    verdicts: list[pb.Verdict] = []
    alerts: list[pb.Alert] = []
    client = TelemetryClient(
        target,
        client_id="gateway-7",
        partition="gateway-7",
        verdicts=pb.VERDICT_MODE_ALL,
        on_verdicts=lambda _batch, got: verdicts.extend(got),
        on_alert=alerts.append,
    )
    async with client:
        await client.send(readings(values, start_ns))
    return verdicts, alerts


def statuses(verdicts) -> list[str]:
    return [pb.VerdictStatus.Name(v.status).removeprefix("VERDICT_STATUS_") for v in verdicts]


async def test_a_moved_sensor_warms_up_on_its_new_owner_and_its_old_incident_resolves_stale():
    async with two_orchestrators() as (a, b):
        target_a, target_b = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        async with grpc.aio.insecure_channel(target_a) as channel:
            stub_a = orchestrator_pb2_grpc.OrchestratorStub(channel)
            watch_a = stub_a.WatchAlerts(pb.WatchAlertsRequest())
            start = 1_700_000_000 * NANOS

            # Owned by A: warms up, then judges; a spike opens an incident on A.
            history = [*noise(40, seed=3), 500.0]
            verdicts_a, alerts_a = await stream(target_a, history, start)
            status_a = statuses(verdicts_a)
            assert set(status_a[: WARM_UP - 1]) == {"WARMING_UP"}
            assert set(status_a[WARM_UP:]) == {"OK"}
            assert verdicts_a[-1].anomaly
            (opened,) = alerts_a
            assert opened.state == pb.ALERT_STATE_OPEN and opened.sensor_id == SENSOR

            # The replica set changed and the key now routes to B: B has no history for the
            # sensor, so it warms up from scratch, and the same spike opens a new incident.
            later = start + len(history) * NANOS
            verdicts_b, alerts_b = await stream(target_b, [*noise(40, seed=4), 500.0], later)
            status_b = statuses(verdicts_b)
            assert status_b[: WARM_UP - 1] == status_a[: WARM_UP - 1]  # the same warm-up again
            assert set(status_b[WARM_UP:]) == {"OK"}
            (opened_b,) = alerts_b
            assert opened_b.alert_id != opened.alert_id  # B knows nothing of A's incident

            # A hears nothing more from the sensor: after stale_after_seconds its incident
            # resolves as `stale` (watchers and ListAlerts see it); nothing dangles on A.
            live_open = await asyncio.wait_for(watch_a.read(), 5)
            assert (live_open.alert_id, live_open.state) == (opened.alert_id, pb.ALERT_STATE_OPEN)
            resolved = await asyncio.wait_for(watch_a.read(), 5)
            assert (resolved.alert_id, resolved.state, resolved.resolve_reason) == (
                opened.alert_id,
                pb.ALERT_STATE_RESOLVED,
                pb.RESOLVE_REASON_STALE,
            )
            assert not (await stub_a.ListAlerts(pb.ListAlertsRequest())).alerts
            watch_a.cancel()


async def test_dedup_memory_stays_with_the_old_owner_so_a_resend_after_a_move_is_scored_again():
    """A batch A acked, resent under the same client id and batch id after the key moved to B
    (e.g. its ack was lost in the move), is scored again on B: B never saw it."""
    async with two_orchestrators() as (a, b):
        metadata = ((CLIENT_ID_HEADER, "gateway-7"), (PARTITION_HEADER, "gateway-7"))
        batch = pb.TelemetryBatch(
            batch_id=42,
            verdicts=pb.VERDICT_MODE_ALL,
            readings=readings([1.0, 2.0], 1_750_000_000 * NANOS),
        )

        async def send_once(replica: OrchestratorProcess) -> pb.BatchAck:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
                call = orchestrator_pb2_grpc.OrchestratorStub(channel).StreamTelemetry(
                    iter([batch]), metadata=metadata
                )
                acks = [e.ack async for e in call if e.WhichOneof("event") == "ack"]
            (ack,) = acks
            return ack

        first, on_b, again_on_a = await send_once(a), await send_once(b), await send_once(a)
        assert (first.duplicate, on_b.duplicate, again_on_a.duplicate) == (False, False, True)
        assert b.totals()["readings_received"] == 2  # scored on B as well
        assert a.totals()["duplicate_batches"] == 1

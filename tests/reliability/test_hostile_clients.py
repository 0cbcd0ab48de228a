"""Hostile and careless clients (issue 13): real servers on loopback, real gRPC clients.

Each test reproduces one finding of the adversarial pass and checks the fix: no batch is lost
or acked without being scored, one client cannot silence another, and what a client is refused
comes with a clear status.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from faultkit import make_pki
from mesh_fixtures import running_mesh
from pydantic import ValidationError
from readings import batch, collect
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.client import CLIENT_ID_HEADER
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

XFCC = "x-forwarded-client-cert"
T0 = 1_700_000_000 * 1_000_000_000


def xfcc(name: str) -> tuple[str, str]:
    """The header an Istio sidecar sets from the mTLS peer of the inbound connection."""
    return (
        XFCC,
        f'By=spiffe://cluster.local/ns/sentinel/sa/orchestrator;Hash=abc;Subject="CN=x,O=y";'
        f"URI=spiffe://cluster.local/ns/plant/sa/{name}",
    )


def fixed(batch_id: int, values, sensor: str = "sensor-1") -> pb.TelemetryBatch:
    """The same readings every time it is built (a resend is byte-for-byte the same batch)."""
    return batch(batch_id, values, sensor=sensor, start_ns=T0)


def empty(batch_id: int) -> pb.TelemetryBatch:
    return pb.TelemetryBatch(batch_id=batch_id, verdicts=pb.VERDICT_MODE_NONE)


async def _stream(stub, batches, metadata=()) -> tuple[dict, grpc.aio.AioRpcError | None]:
    feed = Feed(stub, metadata)
    await feed.send(*batches)
    try:
        return await feed.close(), None
    except grpc.aio.AioRpcError as error:
        return {}, error


def wide(batch_id: int, sensors: int, prefix: str) -> pb.TelemetryBatch:
    """One reading each of `sensors` distinct sensors."""
    now = time.time_ns() - 60 * 1_000_000_000
    return pb.TelemetryBatch(
        batch_id=batch_id,
        verdicts=pb.VERDICT_MODE_NONE,
        readings=[
            pb.Reading(sensor_id=f"{prefix}-{i}", value=1.0, timestamp_unix_nanos=now)
            for i in range(sensors)
        ],
    )


class Feed:
    """A stream whose requests the test hands over one by one."""

    def __init__(self, stub, metadata=()) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = stub.StreamTelemetry(self._requests(), metadata=metadata)

    async def _requests(self):
        while (item := await self.queue.get()) is not None:
            yield item

    async def send(self, *batches: pb.TelemetryBatch) -> None:
        for item in batches:
            await self.queue.put(item)

    async def close(self) -> dict[str, list]:
        await self.queue.put(None)
        return await collect(self.call)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- 1. a round never grows past what the window store can hold ----------------------------------


async def test_queued_batches_are_never_coalesced_past_max_sensors() -> None:
    async with running_mesh(engines=("threshold",), max_sensors=10_000) as mesh:
        pipeline = mesh.orchestrator.pipeline
        feed = Feed(mesh.stub, ((CLIENT_ID_HEADER, "gw-wide"),))
        # Rounds are held back while both wide batches queue up behind a first one, so the
        # processor finds them queued together (as a fast client makes it find them).
        async with pipeline.quiesced(timeout=5):
            await feed.send(wide(1, 10, "a"), wide(2, 4_000, "b"), wide(3, 10_000, "c"))
            await _until(lambda: mesh.orchestrator.servicer.queue_depth >= 2)
        out = await feed.close()
        assert [(a.batch_id, a.readings_accepted, a.duplicate) for a in out["ack"]] == [
            (1, 10, False),
            (2, 4_000, False),
            (3, 10_000, False),
        ]
        internal = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_internal_errors_total"
        )
        assert not internal


def test_settings_that_contradict_each_other_are_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match=r"max_sensors \(5000\).*coalesce_max_readings"):
        OrchestratorSettings(
            max_sensors=5_000, max_batch_readings=1_000, coalesce_max_readings=8_000
        )
    with pytest.raises(ValidationError, match=r"max_sensors \(500\).*max_batch_readings"):
        OrchestratorSettings(max_sensors=500, max_batch_readings=1_000, coalesce_max_readings=100)


# -- 2. one client cannot silence another ------------------------------------------------------


async def test_a_batch_id_reused_with_other_readings_is_refused_never_acked_as_duplicate() -> None:
    async with running_mesh(engines=("threshold",)) as mesh:
        victim = ((CLIENT_ID_HEADER, "victim"),)
        # Someone sends empty batches under the victim's id (header mode trusts the header).
        out, error = await _stream(mesh.stub, [empty(i) for i in range(1, 4)], victim)
        assert error is None and len(out["ack"]) == 3
        # The victim's real batch 1 is not acked as a duplicate with 0 readings scored.
        real = [fixed(1, [1.0, 2.0]), fixed(2, [3.0])]
        out, error = await _stream(mesh.stub, real, victim)
        assert error is not None and error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error.details().startswith("batch_id 1: already accepted")
        # A true resend (same readings) is still a duplicate: acked, not scored again.
        out, error = await _stream(mesh.stub, [empty(1), empty(2)], victim)
        assert error is None
        assert [(a.batch_id, a.duplicate) for a in out["ack"]] == [(1, True), (2, True)]
        # Batches before a conflict on the same stream are scored and acked, then it ends.
        out_error = await _stream(mesh.stub, [fixed(10, [1.0]), fixed(10, [2.0])], victim)
        assert out_error[1].code() == grpc.StatusCode.ALREADY_EXISTS
        value = mesh.orchestrator.registry.get_sample_value
        assert (
            value("sentinel_orchestrator_batches_rejected_total", {"code": "ALREADY_EXISTS"}) == 2
        )


async def test_behind_a_sidecar_clients_are_told_apart_by_their_spiffe_id() -> None:
    async with running_mesh(
        engines=("threshold",), client_identity="xfcc", max_streams_per_client=2
    ) as mesh:
        attacker = ((CLIENT_ID_HEADER, "victim"), xfcc("attacker"))
        victim = ((CLIENT_ID_HEADER, "victim"), xfcc("victim"))
        out, error = await _stream(mesh.stub, [empty(i) for i in range(1, 4)], attacker)
        assert error is None
        # Same header, other SPIFFE id: another client. Its batches are scored, not duplicates.
        out, error = await _stream(mesh.stub, [fixed(i, [1.0]) for i in range(1, 4)], victim)
        assert error is None
        assert [(a.readings_accepted, a.duplicate) for a in out["ack"]] == [(1, False)] * 3
        # Idle streams of the attacker use up its own slots only.
        held = [Feed(mesh.stub, attacker) for _ in range(2)]
        for feed in held:
            await feed.send(empty(100))
        await _until(lambda: mesh.orchestrator.servicer.active_streams >= 2)
        out, error = await _stream(mesh.stub, [empty(101)], attacker)
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "spiffe://cluster.local/ns/plant/sa/attacker" in error.details()
        out, error = await _stream(mesh.stub, [fixed(4, [1.0])], victim)
        assert error is None and out["ack"][0].readings_accepted == 1
        for feed in held:
            await feed.close()
        # Without the sidecar's header there is no identity: refused.
        out, error = await _stream(mesh.stub, [empty(1)], ((CLIENT_ID_HEADER, "victim"),))
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Detect(fixed(1, [1.0]))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_with_mutual_tls_limits_count_the_certificate_not_the_header(tmp_path) -> None:
    pki = make_pki(tmp_path)
    async with running_mesh(
        engines=("threshold",),
        tls_cert_file=str(pki["server.pem"]),
        tls_key_file=str(pki["server.key"]),
        tls_client_ca_file=str(pki["ca.pem"]),
        client_identity="mtls",
        max_streams_per_client=2,
    ) as mesh:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.read("ca.pem"),
            private_key=pki.read("client.key"),
            certificate_chain=pki.read("client.pem"),
        )
        async with grpc.aio.secure_channel(mesh.target, credentials) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            # Two streams under two different header ids, one certificate.
            held = [Feed(stub, ((CLIENT_ID_HEADER, f"gw-{i}"),)) for i in range(2)]
            for feed in held:
                await feed.send(empty(1))
            await _until(lambda: mesh.orchestrator.servicer.active_streams >= 2)
            out, error = await _stream(stub, [empty(1)], ((CLIENT_ID_HEADER, "gw-other"),))
            assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "mtls:" in error.details()
            for feed in held:
                await feed.close()
            # The header names a sub-client: gw-0 and gw-1 have their own batch 1.
            response = await stub.Detect(fixed(1, [1.0]), metadata=((CLIENT_ID_HEADER, "gw-9"),))
            assert len(response.verdicts) == 1 and not response.duplicate
    with pytest.raises(ValidationError, match="client_identity=mtls needs tls_client_ca_file"):
        OrchestratorSettings(client_identity="mtls")


async def test_clients_without_an_id_share_a_stream_limit() -> None:
    async with running_mesh(engines=("threshold",), max_anonymous_streams=2) as mesh:
        held = [Feed(mesh.stub) for _ in range(2)]
        for feed in held:
            await feed.send(empty(1))
        await _until(lambda: mesh.orchestrator.servicer.active_streams >= 2)
        out, error = await _stream(mesh.stub, [empty(1)])
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "without a client id (limit 2)" in error.details()
        out, error = await _stream(mesh.stub, [empty(1)], ((CLIENT_ID_HEADER, "named"),))
        assert error is None and len(out["ack"]) == 1  # named clients are not locked out
        for feed in held:
            await feed.close()


async def test_an_over_long_or_blank_client_id_is_invalid_argument() -> None:
    async with running_mesh(engines=("threshold",), max_client_id_length=64) as mesh:
        for bad in ("x" * 65, "   "):
            out, error = await _stream(mesh.stub, [empty(1)], ((CLIENT_ID_HEADER, bad),))
            assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details().startswith(CLIENT_ID_HEADER)


# -- 3. Detect is honest ---------------------------------------------------------------------


async def test_detect_says_duplicate_refuses_other_readings_and_never_dedups_batch_id_0() -> None:
    async with running_mesh(engines=("threshold",)) as mesh:
        me = ((CLIENT_ID_HEADER, "unary"),)
        first = await mesh.stub.Detect(fixed(5, [1.0, 2.0]), metadata=me)
        assert len(first.verdicts) == 2 and not first.duplicate and first.readings_accepted == 2
        again = await mesh.stub.Detect(fixed(5, [1.0, 2.0]), metadata=me)
        assert again.duplicate and again.readings_accepted == 2 and not again.verdicts
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Detect(fixed(5, [7.0]), metadata=me)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "batch_id 5" in refused.value.details()
        # The default batch id 0 is "no id": every call is scored.
        for values in ([1.0], [2.0, 3.0]):
            response = await mesh.stub.Detect(fixed(0, values), metadata=me)
            assert len(response.verdicts) == len(values) and not response.duplicate


async def test_detect_responses_fit_a_default_client_or_are_refused_up_front() -> None:
    async with running_mesh(max_detect_readings=2_000) as mesh:
        value = mesh.orchestrator.registry.get_sample_value
        # The largest Detect allowed, with the longest sensor ids of 4-byte characters and all
        # three engines voting: the response still fits a client's default 4 MiB limit.
        readings = [
            pb.Reading(
                sensor_id=f"{i:05d}" + "\U0001f525" * 251,
                value=float(i % 7),
                timestamp_unix_nanos=T0,
            )
            for i in range(2_000)
        ]
        response = await mesh.stub.Detect(pb.TelemetryBatch(batch_id=1, readings=readings))
        assert len(response.verdicts) == 2_000
        assert response.ByteSize() < 4 * 1024 * 1024
        scored = value("sentinel_orchestrator_readings_received_total")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Detect(batch(2, [1.0] * 2_001))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith(
            "readings: 2001 readings exceeds the limit of 2000"
        )
        assert "StreamTelemetry" in refused.value.details()
        assert value("sentinel_orchestrator_readings_received_total") == scored  # not scored


# -- 10. ids that are blank after trimming ---------------------------------------------------


async def test_sensor_ids_of_only_spaces_or_combining_marks_are_refused() -> None:
    async with running_mesh(engines=("threshold",)) as mesh:
        for blank in ("   ", "\u0301\u0302", " \u20dd "):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await mesh.stub.Detect(fixed(0, [1.0], sensor=blank))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith("readings[0].sensor_id: must not be blank")
        assert len((await mesh.stub.Detect(fixed(0, [1.0], sensor=" a "))).verdicts) == 1


async def test_a_client_that_stops_reading_is_ended_and_stops_counting_as_queue_depth() -> None:
    """A stalled reader used to pin its queues (and the autoscaler's queue-depth signal) for
    good: max stream age is checked between events, and it never got its next event out."""
    async with running_mesh(
        engines=("threshold",), stream_write_timeout_seconds=1.0, heartbeat_seconds=0.2
    ) as mesh:
        servicer = mesh.orchestrator.servicer

        async def requests():
            for index in range(1, 10_000):
                # Every verdict comes back: the client's receive window fills quickly.
                yield batch(index, [1.0] * 1000, sensor=f"stall-{index % 50}")
                await asyncio.sleep(0)

        call = mesh.stub.StreamTelemetry(requests(), metadata=((CLIENT_ID_HEADER, "stalls"),))
        deadline = time.monotonic() + 20
        while servicer.active_streams == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert servicer.active_streams == 1
        # Never read from `call`. Within the write timeout (plus the time to fill the window)
        # the orchestrator ends the stream, forgets its queues and counts it.
        while servicer.active_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert servicer.active_streams == 0 and servicer.queue_depth == 0
        stalled = mesh.orchestrator.registry.get_sample_value(
            "sentinel_orchestrator_stalled_streams_total"
        )
        assert stalled == 1
        call.cancel()

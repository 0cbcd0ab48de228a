"""The ownership key: what TelemetryClient sends on the wire, and `shard_target`'s mapping.

The header is read by a server interceptor on a real in-process orchestrator (not a mock),
so the test sees what Envoy's consistent hashing would see.
"""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from mesh_fixtures import running_mesh

from sentinel.app.replay import Series, default_partition
from sentinel.client import (
    CLIENT_ID_HEADER,
    PARTITION_HEADER,
    TelemetryClient,
    partition_header_value,
    shard_target,
)
from sentinel.v1 import orchestrator_pb2 as pb

STREAM = "/sentinel.v1.Orchestrator/StreamTelemetry"


class HeaderRecorder(grpc.aio.ServerInterceptor):
    """Records the invocation metadata of every call the orchestrator receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def intercept_service(self, continuation, handler_call_details):
        metadata = {k: v for k, v in handler_call_details.invocation_metadata or ()}
        self.calls.append((handler_call_details.method, metadata))
        return await continuation(handler_call_details)

    def streams(self) -> list[dict[str, str]]:
        return [metadata for method, metadata in self.calls if method == STREAM]


def reading(sensor: str = "pump-1", value: float = 1.0) -> list[pb.Reading]:
    return [pb.Reading(sensor_id=sensor, value=value)]


async def test_every_stream_carries_the_partition_key_default_the_client_id() -> None:
    recorder = HeaderRecorder()
    async with running_mesh(engines=("threshold",), interceptors=[recorder]) as mesh:
        async with TelemetryClient(mesh.target, client_id="gateway-7") as client:
            await client.send(reading())
        async with TelemetryClient(
            mesh.target, client_id="gateway-8", partition="site-3/line-2"
        ) as client:
            await client.send(reading())
    default, chosen = recorder.streams()
    assert default[PARTITION_HEADER] == "gateway-7" == default[CLIENT_ID_HEADER]
    assert chosen[PARTITION_HEADER] == "site-3/line-2"
    assert chosen[CLIENT_ID_HEADER] == "gateway-8"


async def test_a_reconnected_stream_keeps_its_partition_key() -> None:
    """Streams end with a reconnect hint (max stream age, drain): the new stream must carry
    the same key, so the mesh sends it back to the same replica."""
    recorder = HeaderRecorder()
    async with running_mesh(engines=("threshold",), interceptors=[recorder]) as mesh:
        async with TelemetryClient(mesh.target, partition="gateway-9") as client:
            await client.send(reading())
            await client.flush()
            for session in list(mesh.orchestrator.servicer.sessions):
                session.end("max stream age reached; reconnect to rebalance")  # as its age does
            await client.send(reading(value=2.0))
        assert client.stats.reconnects >= 1
    streams = recorder.streams()
    assert len(streams) >= 2
    assert {s[PARTITION_HEADER] for s in streams} == {"gateway-9"}


async def test_a_caller_metadata_cannot_override_the_partition_key() -> None:
    recorder = HeaderRecorder()
    async with running_mesh(engines=("threshold",), interceptors=[recorder]) as mesh:
        async with TelemetryClient(
            mesh.target,
            partition="mine",
            metadata=[(PARTITION_HEADER, "other"), ("x-request-id", "r1")],
        ) as client:
            await client.send(reading())
    (stream,) = recorder.streams()
    assert stream[PARTITION_HEADER] == "mine" and stream["x-request-id"] == "r1"


def test_non_ascii_keys_are_percent_encoded_deterministically() -> None:
    assert partition_header_value("pump-1") == "pump-1"
    assert partition_header_value("Kessel-Süd") == "Kessel-S%C3%BCd"
    assert partition_header_value("a\tb") == "a%09b"


def test_replay_streams_a_one_sensor_file_under_its_sensor_id() -> None:
    def series(*sensors: str) -> Series:
        return Series([], None, None, list(sensors))  # type: ignore[arg-type]

    assert default_partition(series("nyc_taxi", "nyc_taxi")) == "nyc_taxi"
    assert default_partition(series("b", "a", "b")) == "a"


# -- shard_target: client-side ownership for clusters without Istio's consistent hashing -------

KEYS = [f"gateway-{i}" for i in range(20_000)]


def shards(n: int) -> list[str]:
    return [f"orchestrator-{i}.orchestrator-headless.sentinel.svc:50051" for i in range(n)]


def owners(n: int) -> dict[str, str]:
    table = shards(n)
    return {key: shard_target(key, table) for key in KEYS}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_scale_out_moves_about_one_in_n_plus_one_keys_all_to_the_new_shard(n: int) -> None:
    before, after = owners(n), owners(n + 1)
    moved = [key for key in KEYS if before[key] != after[key]]
    new_shard = shards(n + 1)[-1]
    assert {after[key] for key in moved} == {new_shard}
    # Rendezvous hashing moves exactly the keys the new shard wins: 1/(n+1) in expectation.
    assert len(moved) / len(KEYS) == pytest.approx(1 / (n + 1), abs=0.015)


def test_removing_a_shard_moves_only_its_keys_and_spreads_them() -> None:
    before = owners(4)
    table = shards(4)
    gone = table.pop(2)
    after = {key: shard_target(key, table) for key in KEYS}
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == gone}
    assert len(set(after[key] for key in moved)) == 3  # spread over the survivors


def test_owner_depends_on_the_shard_names_not_their_order_and_load_is_even() -> None:
    table = shards(5)
    assert all(shard_target(k, table) == shard_target(k, table[::-1]) for k in KEYS[:2000])
    load = Counter(owners(5).values())
    assert max(load.values()) / min(load.values()) < 1.1


def test_shard_target_needs_shards() -> None:
    with pytest.raises(ValueError):
        shard_target("k", [])

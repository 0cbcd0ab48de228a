"""Hostile streams for memory tests: maximal batches, sent raw, responses never read.

Also a measurement that runs against any version of the orchestrator (settings it does not
know are ignored), printing its RSS while N such streams push at it:

    python tests/reliability/memory_hogs.py --streams 12 --batches 8 --seconds 15 [--env N=V ...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc

from sentinel.app.soak import proc_status_kib
from sentinel.client import CLIENT_ID_HEADER
from sentinel.v1 import orchestrator_pb2 as pb

STREAM = "/sentinel.v1.Orchestrator/StreamTelemetry"
DETECT = "/sentinel.v1.Orchestrator/Detect"
WARM = pb.TelemetryBatch(readings=[pb.Reading(sensor_id="w", value=1.0)]).SerializeToString()


def raw_calls(channel: grpc.aio.Channel):
    """Stream and Detect calls that send bytes as given (hand-made or hostile messages)."""
    stream = channel.stream_stream(
        STREAM, request_serializer=lambda raw: raw, response_deserializer=pb.StreamEvent.FromString
    )
    detect = channel.unary_unary(
        DETECT,
        request_serializer=lambda raw: raw,
        response_deserializer=pb.DetectResponse.FromString,
    )
    return stream, detect


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def maximal_body(stream: int) -> bytes:
    """A batch of the largest kind without its batch id: 10,000 readings, each of its own
    sensor, ids of 256 characters that are (almost all) 4 bytes in UTF-8, all verdicts."""
    now = time.time_ns() - 60 * 1_000_000_000
    readings = [
        pb.Reading(
            sensor_id=f"{stream:03d}{i:05d}" + "\U0001f525" * 248,
            value=float(i % 7),
            timestamp_unix_nanos=now,
        )
        for i in range(10_000)
    ]
    return pb.TelemetryBatch(readings=readings, verdicts=pb.VERDICT_MODE_ALL).SerializeToString()


def hostile_calls(channel: grpc.aio.Channel, bodies: list[bytes], batches: int = 4) -> list:
    """One stream per body, each sending `batches` of it and then holding the stream open;
    none reads a response."""
    stream, _detect = raw_calls(channel)

    async def requests(body: bytes):
        for batch_id in range(1, batches + 1):
            yield b"\x08" + varint(batch_id) + body
        await asyncio.Event().wait()

    return [
        stream(requests(body), metadata=((CLIENT_ID_HEADER, f"hostile-{i}"),))
        for i, body in enumerate(bodies)
    ]


async def measure(streams: int, batches: int, seconds: float, env: dict[str, str]) -> None:
    from faultkit import process_mesh

    async with process_mesh(engines=("threshold",), **env) as (_mesh, orchestrator):
        pid = orchestrator.process.pid
        async with grpc.aio.insecure_channel(orchestrator.target) as channel:
            await raw_calls(channel)[1](WARM)
        idle = proc_status_kib(pid, "VmRSS") or 0
        bodies = [maximal_body(s) for s in range(streams)]
        print(
            f"{streams} streams of {batches} x {len(bodies[0]):,}-byte batches; "
            f"idle RSS {idle >> 10} MiB"
        )
        channel = grpc.aio.insecure_channel(orchestrator.target)
        calls = hostile_calls(channel, bodies, batches)
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                await asyncio.sleep(1)
                rss = proc_status_kib(pid, "VmRSS") or 0
                print(f"  {time.monotonic() - started:4.0f} s  RSS {rss >> 10:6,} MiB", flush=True)
        finally:
            for call in calls:
                call.cancel()
            await channel.close()
        peak = proc_status_kib(pid, "VmHWM") or 0
        print(f"peak RSS (VmHWM) {peak >> 10:,} MiB: +{(peak - idle) >> 10:,} MiB over idle")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]  # faultkit, mesh_fixtures
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=12)
    parser.add_argument("--batches", type=int, default=8, help="per stream")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    asyncio.run(measure(args.streams, args.batches, args.seconds, env))

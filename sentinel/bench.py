"""`sentinel bench`: throughput of the real mesh, each role in its own process.

The load generator sends pre-serialised batches (building protobufs in Python would make
the generator, not the mesh, the bottleneck) and counts acked readings per second.

With a local mesh it also reports CPU time per 1000 readings of each process (the orchestrator,
each specialist child, and this load generator), from utime + stime in /proc/<pid>/stat sampled
just before and after the measured run: a figure that, unlike readings/s, barely moves when
other work shares the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from sentinel.lifeline import child_env
from sentinel.local_mesh import serve_command, wait_ready
from sentinel.v1 import orchestrator_pb2

STREAM_METHOD = "/sentinel.v1.Orchestrator/StreamTelemetry"


@dataclass
class BenchResult:
    readings: int
    batches: int
    seconds: float
    ack_latency_p50_ms: float
    ack_latency_p99_ms: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time (user + system) of each process during the measured run."""

    @property
    def readings_per_second(self) -> float:
        return self.readings / self.seconds

    def cpu_ms_per_1000_readings(self) -> dict[str, float]:
        if not self.readings:
            return {}
        return {name: 1e6 * sec / self.readings for name, sec in self.cpu_seconds.items()}

    def render_cpu(self) -> str:
        """One line: CPU ms per 1000 readings per process, the mesh's total and cores used."""
        per = self.cpu_ms_per_1000_readings()
        if not per:
            return "CPU per 1000 readings: not measured (remote --target)"
        mesh = sum(v for k, v in per.items() if k != LOAD_GENERATOR)
        busy = sum(self.cpu_seconds.values()) / self.seconds
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in per.items())
        return (
            f"CPU ms per 1000 readings: {parts}; mesh total {mesh:.2f} "
            f"(all processes busy {busy:.2f} cores)"
        )


LOAD_GENERATOR = "load-generator"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process from /proc/<pid>/stat, in seconds (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    # Fields after the parenthesised command (which may contain spaces): state is field 3,
    # utime field 14 and stime field 15 of the whole line.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _child_pids(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            children.append(int(entry))
    return sorted(children)


def mesh_processes(root: int) -> dict[str, int]:
    """{role: pid} of a `sentinel serve all` process (the orchestrator) and its specialists."""
    processes = {"orchestrator": root}
    for child in _child_pids(root):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv:
            processes[argv[argv.index(b"serve") + 1].decode()] = child
    processes[LOAD_GENERATOR] = os.getpid()
    return processes


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    return {
        name: cpu
        for name, pid in processes.items()
        if (cpu := process_cpu_seconds(pid)) is not None
    }


def make_batches(count: int, size: int, sensors: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    ids = [f"bench-{i:05d}" for i in range(sensors)]
    now = time.time_ns() - 3_600 * 1_000_000_000
    out = []
    for b in range(count):
        values = rng.normal(50.0, 2.0, size).tolist()
        batch = orchestrator_pb2.TelemetryBatch(
            batch_id=b + 1,
            verdicts=orchestrator_pb2.VERDICT_MODE_NONE,
            readings=[
                orchestrator_pb2.Reading(
                    sensor_id=ids[(b * size + i) % sensors], value=v, timestamp_unix_nanos=now + b
                )
                for i, v in enumerate(values)
            ],
        )
        out.append(batch.SerializeToString())
    return out


async def drive(
    target: str, payloads: list[bytes], seconds: float, window: int, producers: int
) -> BenchResult:
    size = len(orchestrator_pb2.TelemetryBatch.FromString(payloads[0]).readings)
    latencies: list[float] = []
    totals = {"batches": 0}

    async def producer() -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.stream_stream(
                STREAM_METHOD,
                request_serializer=None,
                response_deserializer=orchestrator_pb2.StreamEvent.FromString,
            )
            in_flight = asyncio.Semaphore(window)
            sent_at: list[float] = []
            stop_at = time.perf_counter() + seconds

            async def requests():
                i = 0
                while time.perf_counter() < stop_at:
                    await in_flight.acquire()
                    sent_at.append(time.perf_counter())
                    yield payloads[i % len(payloads)]
                    i += 1

            acked = 0
            async for event in call(requests()):
                if event.WhichOneof("event") == "ack":
                    latencies.append(time.perf_counter() - sent_at[acked])
                    acked += 1
                    in_flight.release()
            totals["batches"] += acked

    started = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return BenchResult(
        readings=totals["batches"] * size,
        batches=totals["batches"],
        seconds=elapsed,
        ack_latency_p50_ms=float(np.percentile(lat, 50)),
        ack_latency_p99_ms=float(np.percentile(lat, 99)),
    )


def start_mesh() -> tuple[subprocess.Popen, str, tempfile.TemporaryDirectory]:
    workdir = tempfile.TemporaryDirectory(prefix="sentinel-bench-")
    ready = Path(workdir.name) / "port"
    env = {
        **os.environ,
        "SENTINEL_LOG_LEVEL": "WARNING",
        "SENTINEL_DRAIN_DELAY_SECONDS": "0",
        **child_env(),
    }
    process = subprocess.Popen(
        serve_command("all", ready, "--port", "0"), env=env, stdout=subprocess.DEVNULL
    )
    port = asyncio.run(wait_ready(process, ready, time.monotonic() + 60))
    return process, f"127.0.0.1:{port}", workdir


def run(
    seconds: float,
    batch_size: int,
    sensors: int,
    producers: int,
    window: int,
    target: str | None,
    report: Callable[[str], None] | None = print,
) -> BenchResult:
    """Warm up, measure for `seconds`; with a local mesh, `report` gets the CPU line."""
    payloads = make_batches(64, batch_size, sensors)
    process = workdir = None
    if target is None:
        process, target, workdir = start_mesh()
    try:
        # Warm-up fills the windows, so the measured part scores every engine, not warm-up.
        asyncio.run(drive(target, payloads, 2.0, window, producers))
        processes = mesh_processes(process.pid) if process is not None else {}
        before = cpu_snapshot(processes)
        result = asyncio.run(drive(target, payloads, seconds, window, producers))
        after = cpu_snapshot(processes)
        result.cpu_seconds = {
            name: after[name] - before[name]
            for name in processes
            if name in before and name in after
        }
        if report is not None and result.cpu_seconds:
            report(result.render_cpu())
        return result
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            workdir.cleanup()

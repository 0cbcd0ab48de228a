"""`sentinel bench`: throughput and latency of the real mesh, each role in its own process.

The load generator (this process) sends pre-serialised batches on StreamTelemetry (building
protobufs in Python would make the generator, not the mesh, the bottleneck) and counts acks.

- Closed loop (default): each of `producers` streams keeps `window` batches unacked; the
  figure is the most the mesh sustains. Latency is send → ack.
- Open loop (`rate`): readings/s offered on a fixed schedule whatever the mesh does; latency
  runs from each batch's *scheduled* send time to its ack, so a mesh that falls behind (and
  makes the generator send late) is charged for the wait (no coordinated omission). The
  report says how much of the offered rate was achieved.
- Baseline (`baseline`): a pass-through mesh (the same processes, server scaffold and
  transport; specialists that answer without an engine, an orchestrator that only decodes,
  fans out and acks) runs beside the real one. The two are measured alternately (real,
  pass-through, pass-through, real), so noise from other work on the machine hits both, and
  the report gives real ÷ pass-through: a figure that means something on any machine.

With a local mesh it also reports each process's CPU time per 1000 readings (utime + stime
from /proc/<pid>/stat, sampled around each measured segment: a figure that, unlike
readings/s, barely moves when other work shares the machine) and its peak RSS (VmHWM from
/proc/<pid>/status). Every figure is in `BenchReport.to_json()`.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from sentinel.app.local_mesh import DEFAULT_ENGINES, LocalMesh, RoleChild, sample_sum
from sentinel.v1 import orchestrator_pb2

T = TypeVar("T")

STREAM_METHOD = "/sentinel.v1.Orchestrator/StreamTelemetry"
LOAD_GENERATOR = "load-generator"
REAL = "real"
PASS_THROUGH = "pass-through"
PERCENTILES = (50.0, 99.0, 99.9)
# Counted by the orchestrator per failed Score call (labels: specialist, version, code).
FAILED_CALLS = "sentinel_orchestrator_specialist_errors_total"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- /proc -------------------------------------------------------------------------------------
def parse_stat_cpu_seconds(stat: str, ticks_per_second: int = _CLOCK_TICKS) -> float:
    """utime + stime, in seconds, of one /proc/<pid>/stat line."""
    # Fields after the parenthesised command (which may contain spaces and parentheses):
    # state is field 3, utime field 14 and stime field 15 of the whole line.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def parse_vmhwm_bytes(status: str) -> int | None:
    """Peak resident set size (VmHWM) in bytes from /proc/<pid>/status text; None if absent."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", unit
            return int(value) * 1024
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, in seconds (None if unreadable)."""
    return _read_proc(pid, "stat", parse_stat_cpu_seconds)


def process_peak_rss_bytes(pid: int) -> int | None:
    return _read_proc(pid, "status", parse_vmhwm_bytes)


def _read_proc(pid: int, name: str, parse: Callable[[str], T]) -> T | None:
    try:
        with open(f"/proc/{pid}/{name}", encoding="ascii", errors="replace") as handle:
            return parse(handle.read())
    except OSError:
        return None


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    return {
        name: cpu
        for name, pid in processes.items()
        if (cpu := process_cpu_seconds(pid)) is not None
    }


# -- pure measurement logic ------------------------------------------------------------------
def open_loop_schedule(
    rate: float, batch_size: int, producers: int, seconds: float
) -> list[np.ndarray]:
    """Send times (seconds from the start) of each producer's batches for `rate` readings/s.

    Batches go out every batch_size / rate seconds overall, dealt round-robin to the
    producers, so the streams interleave evenly instead of sending in bursts together.
    """
    interval = batch_size / rate
    count = math.ceil(seconds / interval - 1e-9)
    times = np.arange(count) * interval
    return [times[p::producers] for p in range(producers)]


def percentile(sorted_values: Sequence[float] | np.ndarray, q: float) -> float:
    """Nearest-rank percentile (a value that occurred; p99.9 of < 1000 samples is the max)."""
    if not len(sorted_values):
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_summary_ms(latencies_seconds: Sequence[float]) -> dict[str, float | int]:
    values = np.sort(np.asarray(latencies_seconds, dtype=np.float64)) * 1000
    summary: dict[str, float | int] = {
        _percentile_key(q): percentile(values, q) for q in PERCENTILES
    }
    summary["max"] = float(values[-1]) if len(values) else float("nan")
    summary["samples"] = len(values)
    return summary


def _percentile_key(q: float) -> str:
    return "p" + f"{q:g}".replace(".", "")


def measurement_plan(seconds: float, baseline: bool) -> list[tuple[str, float]]:
    """Segments (mesh, seconds) in order: ABBA when there is a baseline, so drift in the
    machine's load hits both meshes alike; each mesh is measured `seconds` in total."""
    if not baseline:
        return [(REAL, seconds)]
    half = seconds / 2
    return [(REAL, half), (PASS_THROUGH, half), (PASS_THROUGH, half), (REAL, half)]


# -- results ---------------------------------------------------------------------------------
@dataclass
class Segment:
    """What the load generator saw in one measured run against one mesh."""

    seconds: float
    batches_sent: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    """Sum of the acks' readings_accepted."""
    duplicate_acks: int = 0
    verdict_events: int = 0
    verdicts: int = 0
    batches_scheduled: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class MeshResult:
    """A mesh's segments added up; every figure of the report is computed here."""

    name: str
    batch_size: int
    rate: float | None = None
    seconds: float = 0.0
    batches_sent: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    duplicate_acks: int = 0
    verdicts: int = 0
    batches_scheduled: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    specialist_calls_failed: int | None = None
    """Failed Score calls of a local orchestrator over the whole run (warm-up too), from its
    /metrics; None where not measured (a remote --target, the pass-through orchestrator)."""

    def add(self, segment: Segment) -> None:
        self.seconds += segment.seconds
        self.batches_sent += segment.batches_sent
        self.batches_acked += segment.batches_acked
        self.readings_acked += segment.readings_acked
        self.duplicate_acks += segment.duplicate_acks
        self.verdicts += segment.verdicts
        self.batches_scheduled += segment.batches_scheduled
        self.latencies.extend(segment.latencies)
        for name, cpu in segment.cpu_seconds.items():
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu

    @property
    def readings_per_second(self) -> float:
        return self.readings_acked / self.seconds if self.seconds else 0.0

    def cpu_ms_per_1000_readings(self) -> dict[str, float]:
        if not self.readings_acked:
            return {}
        return {k: 1e6 * v / self.readings_acked for k, v in self.cpu_seconds.items()}

    def to_json(self) -> dict:
        per = self.cpu_ms_per_1000_readings()
        mesh_cpu = sum(v for k, v in per.items() if k != LOAD_GENERATOR) if per else None
        offered = None
        if self.rate is not None:
            offered = {
                "offered_readings_per_second": self.rate,
                "batches_scheduled": self.batches_scheduled,
                "achieved_fraction": self.readings_per_second / self.rate,
            }
        return {
            "readings_per_second": self.readings_per_second,
            "seconds": self.seconds,
            "batches_sent": self.batches_sent,
            "batches_acked": self.batches_acked,
            "readings_sent": self.batches_sent * self.batch_size,
            "readings_acked": self.readings_acked,
            "duplicate_acks": self.duplicate_acks,
            "verdicts": self.verdicts,
            "latency_ms": latency_summary_ms(self.latencies),
            "open_loop": offered,
            "cpu_seconds": dict(self.cpu_seconds),
            "cpu_ms_per_1000_readings": per,
            "mesh_cpu_ms_per_1000_readings": mesh_cpu,
            "cores_busy": sum(self.cpu_seconds.values()) / self.seconds if self.seconds else None,
            "peak_rss_bytes": dict(self.peak_rss_bytes),
            "specialist_calls_failed": self.specialist_calls_failed,
        }


@dataclass
class BenchReport:
    config: dict
    meshes: dict[str, MeshResult]
    load_average: dict[str, list[float]]
    """os.getloadavg() at the start and the end of the run."""
    date: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )

    @property
    def ratio(self) -> float | None:
        """Real ÷ pass-through readings/s (closed loop: both at their maximum)."""
        real, base = self.meshes.get(REAL), self.meshes.get(PASS_THROUGH)
        if self.config.get("rate") is not None:
            return None  # open loop: both achieve what is offered, until one cannot
        if real is None or base is None or not base.readings_per_second:
            return None
        return real.readings_per_second / base.readings_per_second

    def to_json(self) -> dict:
        return {
            "date": self.date,
            "machine": {"cores": os.cpu_count(), "load_average": self.load_average},
            "config": self.config,
            "meshes": {name: mesh.to_json() for name, mesh in self.meshes.items()},
            "ratio_real_to_pass_through": self.ratio,
        }

    def render(self) -> str:
        lines = []
        for name, mesh in self.meshes.items():
            data = mesh.to_json()
            lat = data["latency_ms"]
            head = (
                f"{name}: {mesh.readings_per_second:,.0f} readings/s  ({mesh.batches_acked} "
                f"batches of {mesh.batch_size} in {mesh.seconds:.1f}s)  ack latency p50 "
                f"{lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms p99.9 {lat['p999']:.1f} ms"
            )
            if data["open_loop"] is not None:
                head += (
                    f"  (from scheduled send; offered {mesh.rate:,.0f} readings/s, achieved "
                    f"{100 * data['open_loop']['achieved_fraction']:.0f}%)"
                )
            lines.append(head)
            per = data["cpu_ms_per_1000_readings"]
            if per:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in per.items())
                lines.append(
                    f"  CPU ms per 1000 readings: {parts}; mesh total "
                    f"{data['mesh_cpu_ms_per_1000_readings']:.2f} (all processes busy "
                    f"{data['cores_busy']:.2f} cores)"
                )
            if mesh.specialist_calls_failed:
                lines.append(
                    f"  WARNING: {mesh.specialist_calls_failed} specialist calls failed "
                    "(deadline?): those rows got degraded verdicts, not scores"
                )
            if mesh.peak_rss_bytes:
                parts = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in mesh.peak_rss_bytes.items())
                lines.append(f"  peak RSS (VmHWM) MiB: {parts}")
            if not per:
                lines.append("  CPU and memory: not measured (remote --target)")
        if self.ratio is not None:
            lines.append(f"ratio real / pass-through readings/s: {self.ratio:.2f}")
        start, end = self.load_average["start"], self.load_average["end"]
        lines.append(
            f"load average (1/5/15 min) {' '.join(f'{v:.2f}' for v in start)} at start, "
            f"{' '.join(f'{v:.2f}' for v in end)} at end; {os.cpu_count()} cores"
        )
        return "\n".join(lines)


# -- load generation -------------------------------------------------------------------------
def make_batches(count: int, size: int, sensors: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    width = max(5, len(str(sensors - 1)))
    ids = [f"bench-{i:0{width}d}" for i in range(sensors)]
    now = time.time_ns() - 3_600 * 1_000_000_000
    out = []
    for b in range(count):
        values = rng.normal(50.0, 2.0, size).tolist()
        # The columnar form, as a gateway that cares about throughput sends it.
        batch = orchestrator_pb2.TelemetryBatch(
            batch_id=b + 1,
            verdicts=orchestrator_pb2.VERDICT_MODE_NONE,
            columns=orchestrator_pb2.ReadingColumns(
                sensor_ids=[ids[(b * size + i) % sensors] for i in range(size)],
                values=values,
                timestamps_unix_nanos=[now + b] * size,
            ),
        )
        out.append(batch.SerializeToString())
    return out


def readings_in(payload: bytes) -> int:
    """Readings in a serialised batch, in either form (Reading messages or columns)."""
    batch = orchestrator_pb2.TelemetryBatch.FromString(payload)
    return len(batch.readings) or len(batch.columns.sensor_ids)


def payload_count(batch_size: int, sensors: int) -> int:
    """Enough distinct batches that cycling through them touches every sensor."""
    return max(64, math.ceil(sensors / batch_size))


async def _stream(
    target: str,
    payloads: list[bytes],
    first: int,
    send_times: Callable[[], AsyncIterator[float]],
    segment: Segment,
    ack_times: list[float],
    on_ack: Callable[[], None] = lambda: None,
) -> None:
    """One StreamTelemetry stream. `send_times` yields, once each batch may go, the time its
    latency counts from; the stream ends when it is exhausted and every batch is acked."""
    sent_at: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        call: grpc.aio.StreamStreamMultiCallable[bytes, orchestrator_pb2.StreamEvent]
        call = channel.stream_stream(
            STREAM_METHOD,
            request_serializer=None,
            response_deserializer=orchestrator_pb2.StreamEvent.FromString,
        )

        async def requests():
            i = first
            async for stamp in send_times():
                sent_at.append(stamp)
                segment.batches_sent += 1
                yield payloads[i % len(payloads)]
                i += 1

        acked = 0
        async for event in call(requests()):
            kind = event.WhichOneof("event")
            if kind == "ack":
                now = time.perf_counter()
                segment.latencies.append(now - sent_at[acked])
                ack_times.append(now)
                acked += 1
                segment.batches_acked += 1
                segment.readings_acked += event.ack.readings_accepted
                segment.duplicate_acks += event.ack.duplicate
                on_ack()
            elif kind == "verdicts":
                segment.verdict_events += 1
                segment.verdicts += len(event.verdicts.verdicts)


async def drive_closed(
    target: str, payloads: list[bytes], seconds: float, window: int, producers: int
) -> Segment:
    """Each producer keeps `window` batches unacked until `seconds` have passed."""
    segment = Segment(seconds=0.0)
    ack_times: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds

    async def producer(p: int) -> None:
        in_flight = asyncio.Semaphore(window)

        async def send_times():
            while time.perf_counter() < stop_at:
                await in_flight.acquire()
                yield time.perf_counter()

        first = p * len(payloads) // producers
        await _stream(target, payloads, first, send_times, segment, ack_times, in_flight.release)

    await asyncio.gather(*(producer(p) for p in range(producers)))
    segment.seconds = time.perf_counter() - started
    return segment


async def drive_open(
    target: str, payloads: list[bytes], seconds: float, rate: float, producers: int
) -> Segment:
    """Offer `rate` readings/s for `seconds` on a fixed schedule; latency from the schedule.

    Batches the generator could not send by twice the scheduled duration (a mesh far below
    the offered rate holds the streams back through flow control) are not sent; they count
    as offered and not achieved."""
    schedule = open_loop_schedule(rate, readings_in(payloads[0]), producers, seconds)
    segment = Segment(seconds=0.0, batches_scheduled=sum(len(s) for s in schedule))
    ack_times: list[float] = []
    started = time.perf_counter() + 0.05  # time to open the streams
    give_up = started + 2 * seconds + 1

    async def producer(p: int) -> None:
        async def send_times():
            for offset in schedule[p]:
                due = started + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif time.perf_counter() > give_up:
                    return
                yield due

        first = p * len(payloads) // producers
        await _stream(target, payloads, first, send_times, segment, ack_times)

    await asyncio.gather(*(producer(p) for p in range(producers)))
    # The schedule's span, or longer if acks trailed past it: a mesh that keeps up achieves
    # 100%, one that falls behind is charged for the time it took to catch up.
    last = max(ack_times) if ack_times else time.perf_counter()
    segment.seconds = max(seconds, last - started)
    return segment


# -- meshes ----------------------------------------------------------------------------------
_CHILD_ENV = {"GRPC_VERBOSITY": "ERROR"}


async def start_mesh(pass_through: bool) -> LocalMesh:
    """Three specialists and an orchestrator, each its own process, started the same way for
    the real and the pass-through mesh (`sentinel serve ROLE [--pass-through]`)."""
    flag = ["--pass-through"] if pass_through else []
    # Children's logs go to stderr, never into the report on stdout (`--json | jq`).
    mesh = LocalMesh(
        specialist_args={name: flag for name in DEFAULT_ENGINES},
        env=_CHILD_ENV,
        output=sys.stderr.fileno(),
    )
    await mesh.start_specialists(timeout=60)
    try:
        # The real orchestrator's /metrics tells how many Score calls failed; the pass-through
        # one has no metrics (and describes nothing).
        await mesh.start_orchestrator_child(
            *flag,
            # Failed calls are counted from /metrics and reported once, not logged per call.
            env={"SENTINEL_LOG_LEVEL": "ERROR"},
            metrics_port=None if pass_through else 0,
            wait_described=not pass_through,
            timeout=60,
        )
    except BaseException:
        await mesh.stop()
        raise
    return mesh


def specialist_calls_failed(mesh: LocalMesh) -> int | None:
    """Score calls that failed (deadline, unavailable) over the whole run, from the
    orchestrator's /metrics: the rows of those rounds got degraded verdicts, so the mesh did
    less work than it should have. None where not measured (the pass-through orchestrator)."""
    orchestrator = mesh.orchestrator
    text = orchestrator.metrics_text() if isinstance(orchestrator, RoleChild) else None
    return None if text is None else int(sample_sum(text, FAILED_CALLS))


def mesh_processes(mesh: LocalMesh) -> dict[str, int]:
    """{process name: pid}, the load generator (this process) included."""
    return {**mesh.pids(), LOAD_GENERATOR: os.getpid()}


@dataclass(frozen=True)
class BenchConfig:
    seconds: float = 10.0
    batch_size: int = 1000
    sensors: int = 100
    producers: int = 2
    window: int = 64  # as many unacked batches as TelemetryClient keeps by default
    rate: float | None = None
    """Open loop: readings/s offered; None = closed loop."""
    baseline: bool = False
    target: str | None = None
    """A running orchestrator to benchmark instead of local meshes (no CPU/RSS, no baseline)."""
    warmup_seconds: float = 2.0


async def run_bench(config: BenchConfig) -> BenchReport:
    """Start the mesh(es), warm each up, measure the plan's segments, stop everything."""
    if config.baseline and config.target:
        raise ValueError("--baseline starts its own meshes; it cannot be used with --target")
    load_start = list(os.getloadavg())
    payloads = make_batches(
        payload_count(config.batch_size, config.sensors), config.batch_size, config.sensors
    )
    meshes: dict[str, LocalMesh] = {}
    results: dict[str, MeshResult] = {}
    try:
        if config.target is None:
            kinds = {REAL: False, PASS_THROUGH: True} if config.baseline else {REAL: False}
            started = await asyncio.gather(
                *(start_mesh(pass_through) for pass_through in kinds.values()),
                return_exceptions=True,
            )
            for name, mesh in zip(kinds, started, strict=True):
                if isinstance(mesh, LocalMesh):
                    meshes[name] = mesh
            for mesh in started:
                if isinstance(mesh, BaseException):
                    raise mesh
            targets = {name: mesh.target for name, mesh in meshes.items()}
        else:
            targets = {REAL: config.target}
        for name, target in targets.items():
            # Warm-up fills the windows, so the measured part scores every engine, not warm-up.
            await drive_closed(target, payloads, config.warmup_seconds, config.window, 2)
            results[name] = MeshResult(name, config.batch_size, config.rate)
        for name, seconds in measurement_plan(config.seconds, config.baseline):
            processes = mesh_processes(meshes[name]) if name in meshes else {}
            before = cpu_snapshot(processes)
            if config.rate is None:
                segment = await drive_closed(
                    targets[name], payloads, seconds, config.window, config.producers
                )
            else:
                segment = await drive_open(
                    targets[name], payloads, seconds, config.rate, config.producers
                )
            after = cpu_snapshot(processes)
            segment.cpu_seconds = {k: after[k] - before[k] for k in before if k in after}
            results[name].add(segment)
        for name, mesh in meshes.items():
            results[name].peak_rss_bytes = {
                k: rss for k, pid in mesh_processes(mesh).items()
                if (rss := process_peak_rss_bytes(pid)) is not None
            }  # fmt: skip
    finally:
        for name, mesh in meshes.items():
            if name in results:
                results[name].specialist_calls_failed = specialist_calls_failed(mesh)
        await asyncio.gather(*(mesh.stop() for mesh in meshes.values()))
    return BenchReport(
        config=config_json(config),
        meshes=results,
        load_average={"start": load_start, "end": list(os.getloadavg())},
    )


def config_json(config: BenchConfig) -> dict:
    return {
        "seconds": config.seconds,
        "batch_size": config.batch_size,
        "sensors": config.sensors,
        "producers": config.producers,
        "window": config.window if config.rate is None else None,
        "rate": config.rate,
        "baseline": config.baseline,
        "target": config.target,
        "warmup_seconds": config.warmup_seconds,
        "engines": list(DEFAULT_ENGINES),
    }

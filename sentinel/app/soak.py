"""`sentinel soak`: the mesh as separate processes under randomised faults, with exact counts.

Processes: three specialists (`sentinel serve threshold|statistical|model`) and one orchestrator
(`sentinel serve orchestrator`), each its own OS process on loopback (a LocalMesh);
producers are TelemetryClients in this process. While they stream, a fault schedule planned
from the seed alone (`plan_faults`: a slow machine runs the same faults, later) SIGKILLs and
restarts specialists, hangs them (SIGSTOP, then SIGCONT once their deadline has fired) and
stops the orchestrator with SIGTERM and starts it again on the same port.

Counting, so that a lost or double-scored reading is actually detected:
- sent / acked: the producers (every batch must be acked, once per client);
- scored: the orchestrator's own `readings_received` counter, which counts readings when they
  enter scoring (duplicates excluded). Each orchestrator incarnation writes its metrics when it
  stops (SENTINEL_FINAL_METRICS_FILE), so scored = the sum over incarnations, independent of
  what the client saw. scored > sent means a reading was scored twice; scored < sent, lost;
- verdicts: producers ask for a verdict per reading (VERDICT_MODE_ALL) and count them per
  batch, so a batch whose verdicts arrive twice is reported too.

Guarantee under test: with a graceful SIGTERM the orchestrator stops reading, finishes and
acks every batch it read, and only then ends the stream with a reconnect hint, so a client
resends only batches that were never scored and the fresh process (whose dedup window is
empty) scores each exactly once. A SIGKILL of the orchestrator can lose acks of scored
batches; those are resent and scored again (at-least-once) — the soak does not do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel.app.local_mesh import LocalMesh, RoleChild, sample_value
from sentinel.client import TelemetryClient
from sentinel.orchestrator.metrics import lifetime_totals
from sentinel.v1 import orchestrator_pb2

NANOS = 1_000_000_000
MIB = 1024 * 1024


def proc_status_kib(pid: int | str, key: str = "VmHWM") -> int | None:
    """A memory figure of a live process from /proc/<pid>/status, in KiB (None if gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def lifetime_totals_of(orchestrator: RoleChild) -> dict[str, int] | None:
    """The orchestrator child's counts summed over its incarnations, from the metrics each
    wrote when it stopped; None if one wrote none (it was killed, not stopped gracefully)."""
    summed: Counter[str] = Counter()
    for text in orchestrator.final_metrics:
        if text is None:
            return None
        summed.update(lifetime_totals(functools.partial(sample_value, text)))
    return dict(summed)


class Producer:
    """One TelemetryClient streaming readings of its sensors, counting everything it sees."""

    def __init__(
        self,
        target: str,
        name: str,
        sensors: list[str],
        seed: int,
        max_unacked: int = 64,
        verdicts: orchestrator_pb2.VerdictMode = orchestrator_pb2.VERDICT_MODE_ALL,
        **client_options,
    ) -> None:
        self.name = name
        self.sensors = sensors
        self._rng = random.Random(seed)
        self._clock = {s: time.time_ns() - 3600 * NANOS for s in sensors}
        self.rows: dict[int, int] = {}  # batch id -> readings sent
        self.acks: Counter[int] = Counter()  # batch id -> acks delivered to the application
        self.verdicts: Counter[int] = Counter()  # batch id -> verdicts received
        self.degraded = 0
        self.send_blocked_seconds = 0.0
        # Each producer is one gateway: its sensors share one ownership key, stable across runs
        # (the client id is fresh per run).
        client_options.setdefault("partition", f"soak-{name}")
        self.client = TelemetryClient(
            target,
            client_id=f"soak-{name}-{uuid.uuid4().hex[:8]}",
            verdicts=verdicts,
            max_unacked=max_unacked,
            on_verdicts=self._on_verdicts,
            on_ack=self._on_ack,
            **client_options,
        )

    def _on_verdicts(self, batch_id: int, verdicts: list[orchestrator_pb2.Verdict]) -> None:
        self.verdicts[batch_id] += len(verdicts)
        self.degraded += sum(
            1 for v in verdicts if v.status == orchestrator_pb2.VERDICT_STATUS_DEGRADED
        )

    def _on_ack(self, ack: orchestrator_pb2.BatchAck) -> None:
        self.acks[ack.batch_id] += 1

    def readings(self, per_sensor: int) -> list[orchestrator_pb2.Reading]:
        out = []
        rng = self._rng
        for sensor in self.sensors:
            for _ in range(per_sensor):
                self._clock[sensor] += 10_000_000  # 10 ms apart
                value = 150.0 if rng.random() < 0.002 else 50.0 + rng.gauss(0.0, 1.0)
                out.append(
                    orchestrator_pb2.Reading(
                        sensor_id=sensor, value=value, timestamp_unix_nanos=self._clock[sensor]
                    )
                )
        return out

    async def run(self, stop: asyncio.Event, interval: float, per_sensor: int) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            readings = self.readings(per_sensor)
            started = loop.time()
            batch_id = await self.client.send(readings)
            self.send_blocked_seconds += loop.time() - started
            self.rows[batch_id] = len(readings)
            next_at = max(next_at + interval, loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))

    @property
    def sent_readings(self) -> int:
        return sum(self.rows.values())

    @property
    def acked_readings(self) -> int:
        return sum(self.rows[b] for b in self.acks if b in self.rows)


@dataclass
class SoakReport:
    seconds: float
    sensors: int
    seed: int
    faults: Counter = field(default_factory=Counter)
    fault_log: list[str] = field(default_factory=list)
    sent_readings: int = 0
    sent_batches: int = 0
    acked_readings: int = 0
    acked_batches: int = 0
    acked_twice: int = 0
    unacked_batches: int = 0
    scored_readings: int | None = None
    orchestrator_batches: int | None = None
    orchestrator_duplicates: int | None = None
    orchestrator_degraded: int | None = None
    incarnations: int = 0
    orchestrator_exit_codes: list[int] = field(default_factory=list)
    client_duplicates: int = 0
    resent_batches: int = 0
    reconnects: int = 0
    verdicts: int = 0
    batches_missing_verdicts: int = 0
    batches_verdicts_twice: int = 0
    degraded: int = 0
    send_blocked_seconds: float = 0.0
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        lost = self.sent_readings - self.acked_readings
        if self.scored_readings is not None:
            lost = max(lost, self.sent_readings - self.scored_readings)
        return lost

    @property
    def scored_twice(self) -> int:
        extra = (
            0 if self.scored_readings is None else max(0, self.scored_readings - self.sent_readings)
        )
        return max(extra, self.batches_verdicts_twice)

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.scored_readings is not None
            and self.lost == 0
            and self.scored_twice == 0
            and self.unacked_batches == 0
            and self.acked_twice == 0
        )

    def render(self) -> str:
        def n(value: int | None) -> str:
            return "unknown" if value is None else f"{value:,}"

        mem = ", ".join(
            f"{role} {kib / 1024:.0f} MiB" for role, kib in sorted(self.peak_rss_kib.items())
        )
        faults = (
            ", ".join(f"{count} {kind}" for kind, count in sorted(self.faults.items())) or "none"
        )
        lines = [
            f"Sentinel soak: {self.seconds:g} s, {self.sensors} sensors, seed {self.seed}",
            f"  faults                {faults}",
            f"  readings sent         {n(self.sent_readings)} in {n(self.sent_batches)} batches",
            f"  readings acked        {n(self.acked_readings)} "
            f"({n(self.acked_batches)} batches acked, "
            f"{n(self.unacked_batches)} unacked, {n(self.acked_twice)} acked twice)",
            f"  readings scored       {n(self.scored_readings)} (orchestrator counters over "
            f"{self.incarnations} processes; exit codes {self.orchestrator_exit_codes})",
            f"  duplicated batches    {n(self.orchestrator_duplicates)} "
            "acked as duplicates, not scored "
            f"({n(self.resent_batches)} resent by clients, {n(self.reconnects)} reconnects)",
            f"  verdicts              {n(self.verdicts)} "
            f"({n(self.batches_missing_verdicts)} batches without, "
            f"{n(self.batches_verdicts_twice)} with verdicts twice)",
            f"  degraded verdicts     {n(self.degraded)} "
            f"(orchestrator: {n(self.orchestrator_degraded)})",
            f"  producers blocked     {self.send_blocked_seconds:.1f} s in send() (flow control)",
            f"  peak memory (VmHWM)   {mem}",
            f"  lost readings         {n(self.lost)}",
            f"  scored twice          {n(self.scored_twice)}",
        ]
        lines.extend(f"  error                 {e}" for e in self.errors)
        lines.append(
            "  result                "
            + ("OK: no reading lost, none scored twice" if self.ok else "FAILED")
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class Fault:
    """One planned fault: after `gap` seconds, `kind` (kill / hang / orchestrator) on `target`
    for `duration` seconds (specialist down / stopped)."""

    gap: float
    kind: str
    target: str = "orchestrator"
    duration: float = 0.0

    def describe(self) -> str:
        if self.kind == "kill":
            return f"+{self.gap:.1f}s SIGKILL {self.target} for {self.duration:.1f}s"
        if self.kind == "hang":
            return f"+{self.gap:.1f}s SIGSTOP {self.target} for {self.duration:.1f}s"
        return f"+{self.gap:.1f}s SIGTERM orchestrator"


# What each fault is assumed to take when planning (a restart is a process start).
PLANNED_RESTART_SECONDS = {"kill": 0.5, "hang": 0.0, "orchestrator": 2.0}


def plan_faults(
    seed: int, seconds: float, specialists: tuple[str, ...], specialist_timeout: float = 0.5
) -> list[Fault]:
    """The fault schedule of a soak: a function of the seed and the duration only, planned on
    nominal fault durations, so a slow machine runs the same faults (later), never fewer.

    The first fault is an orchestrator SIGTERM + restart and the second a specialist SIGKILL +
    restart whenever the run is long enough for two faults: the two a short soak must show."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    elapsed = 0.0
    while elapsed + 4.0 < seconds:
        gap = rng.uniform(1.0, 3.0)
        if elapsed + gap + 3.0 >= seconds:
            break
        if len(faults) < 2:
            kind = ("orchestrator", "kill")[len(faults)]
        else:
            kind = rng.choices(["kill", "hang", "orchestrator"], weights=[4, 3, 2])[0]
        if kind == "kill":
            fault = Fault(gap, kind, rng.choice(specialists), rng.uniform(0.3, 2.0))
        elif kind == "hang":
            fault = Fault(
                gap, kind, rng.choice(specialists), rng.uniform(specialist_timeout + 0.2, 2.5)
            )
        else:
            fault = Fault(gap, kind)
        faults.append(fault)
        elapsed += gap + fault.duration + PLANNED_RESTART_SECONDS[kind]
    return faults


class MemorySampler:
    """Highest VmHWM seen per role (processes come and go; the last sample before a kill counts)."""

    def __init__(self, pids: Callable[[], dict[str, int | None]]) -> None:
        self._pids = pids
        self.peak: dict[str, int] = {}

    def sample(self) -> None:
        for role, pid in self._pids().items():
            if pid is None:
                continue
            kib = proc_status_kib(pid)
            if kib is not None:
                self.peak[role] = max(self.peak.get(role, 0), kib)

    async def run(self, period: float = 0.25) -> None:
        while True:
            self.sample()
            await asyncio.sleep(period)


async def run_soak(
    seconds: float,
    sensors: int = 64,
    seed: int = 1,
    producers: int = 2,
    rate: float = 50.0,
    interval: float = 0.1,
    specialist_timeout: float = 0.5,
    progress: Callable[[str], None] = lambda line: None,
) -> SoakReport:
    """Run the mesh under faults for `seconds`, then drain and count. Never raises on a count."""
    report = SoakReport(seconds, sensors, seed)
    mesh = LocalMesh(log_level="ERROR", env={"GRPC_VERBOSITY": "ERROR"})
    orchestrator: RoleChild | None = None
    producers_list: list[Producer] = []
    stop_producing = asyncio.Event()
    tasks: list[asyncio.Task] = []
    started = time.monotonic()

    def note(text: str) -> None:
        line = f"{time.monotonic() - started:7.1f}s  {text}"
        report.fault_log.append(line)
        progress(line)

    try:
        await mesh.start_specialists()
        orchestrator = await mesh.start_orchestrator_child(
            env={
                "SENTINEL_SPECIALIST_TIMEOUT_SECONDS": str(specialist_timeout),
                "SENTINEL_DRAIN_DELAY_SECONDS": "0.5",
                "SENTINEL_SHUTDOWN_GRACE_SECONDS": "10",
            },
            record_final_metrics=True,
        )
        note(f"mesh up: orchestrator {orchestrator.target}, {mesh.specialist_targets}")

        def pids() -> dict[str, int | None]:
            out: dict[str, int | None] = dict(mesh.pids())
            out["producers (this process)"] = os.getpid()
            return out

        memory = MemorySampler(pids)
        tasks.append(asyncio.create_task(memory.run()))
        names = [f"sensor-{i:04d}" for i in range(sensors)]
        per_sensor = max(1, round(rate * interval))
        for index in range(producers):
            producer = Producer(
                orchestrator.target, f"p{index}", names[index::producers], seed * 1000 + index
            )
            producer.client.start()
            producers_list.append(producer)
            tasks.append(asyncio.create_task(producer.run(stop_producing, interval, per_sensor)))

        schedule = plan_faults(seed, seconds, tuple(mesh.specialists), specialist_timeout)
        note("fault schedule: " + ("; ".join(f.describe() for f in schedule) or "none"))
        deadline = started + seconds
        # Every planned fault runs, however long the previous ones took on a loaded machine:
        # the run outlasts `seconds` rather than skip one (the schedule is the seed's alone).
        for fault in schedule:
            await asyncio.sleep(fault.gap)
            memory.sample()
            if fault.kind == "kill":
                specialist = mesh.specialists[fault.target]
                await specialist.stop(signal.SIGKILL)
                await asyncio.sleep(fault.duration)
                await specialist.start()
                report.faults["specialist SIGKILL+restart"] += 1
                note(
                    f"SIGKILL {fault.target}; restarted on the same port "
                    f"after {fault.duration:.1f}s"
                )
            elif fault.kind == "hang":
                specialist = mesh.specialists[fault.target]
                specialist.send_signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(fault.duration)
                finally:
                    specialist.send_signal(signal.SIGCONT)
                report.faults["specialist hang (SIGSTOP/SIGCONT)"] += 1
                note(
                    f"SIGSTOP {fault.target} for {fault.duration:.1f}s "
                    f"(deadline {specialist_timeout:g}s), then SIGCONT"
                )
            else:
                code = await orchestrator.restart(signal.SIGTERM, timeout=60)
                report.faults["orchestrator SIGTERM+restart"] += 1
                note(
                    f"SIGTERM orchestrator (exit {code}); started again on port {orchestrator.port}"
                )
                if code != 0:
                    report.errors.append(f"orchestrator exited with {code} after SIGTERM")
        deadline = max(deadline, time.monotonic() + 1.0)
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.5, deadline - time.monotonic()))

        note("stopping producers; waiting for every batch to be acked")
        stop_producing.set()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        for producer in producers_list:
            try:
                await asyncio.wait_for(producer.client.flush(), 60)
                await asyncio.wait_for(producer.client.close(), 30)
            except Exception as error:  # report, never hang
                report.errors.append(f"producer {producer.name}: {error!r}")
        memory.sample()
        code = await orchestrator.stop(signal.SIGTERM, timeout=60)
        if code != 0:
            report.errors.append(f"orchestrator exited with {code} after the final SIGTERM")
        report.peak_rss_kib = memory.peak
    finally:
        stop_producing.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for producer in producers_list:
            if producer.client._runner is not None and not producer.client._runner.done():
                producer.client._runner.cancel()
        _tally(report, producers_list, orchestrator)
        await mesh.stop()
    return report


def _tally(report: SoakReport, producers: list[Producer], orchestrator: RoleChild | None) -> None:
    for p in producers:
        report.sent_readings += p.sent_readings
        report.sent_batches += len(p.rows)
        report.acked_readings += p.acked_readings
        report.acked_batches += sum(1 for b in p.rows if p.acks[b] >= 1)
        report.acked_twice += sum(1 for b in p.rows if p.acks[b] > 1)
        report.unacked_batches += sum(1 for b in p.rows if p.acks[b] == 0)
        report.verdicts += sum(p.verdicts.values())
        report.batches_missing_verdicts += sum(
            1 for b, rows in p.rows.items() if p.verdicts[b] < rows
        )
        report.batches_verdicts_twice += sum(
            1 for b, rows in p.rows.items() if p.verdicts[b] > rows
        )
        report.degraded += p.degraded
        report.client_duplicates += p.client.stats.duplicates
        report.resent_batches += p.client.stats.batches_resent
        report.reconnects += p.client.stats.reconnects
        report.send_blocked_seconds += p.send_blocked_seconds
    if orchestrator is not None:
        report.incarnations = len(orchestrator.final_metrics) + orchestrator.running
        report.orchestrator_exit_codes = list(orchestrator.exit_codes)
        totals = lifetime_totals_of(orchestrator)
        if totals is None or orchestrator.running:
            report.errors.append(
                "an orchestrator process wrote no final metrics (not a graceful stop)"
            )
        else:
            report.scored_readings = totals.get("readings_received", 0)
            report.orchestrator_batches = totals.get("batches_received", 0)
            report.orchestrator_duplicates = totals.get("duplicate_batches", 0)
            report.orchestrator_degraded = totals.get("verdicts_degraded", 0)

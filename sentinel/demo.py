"""`sentinel demo`: the whole mesh plus simulated sensors, with live alert lines and a summary."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from orchestrator.main import OrchestratorProcess
from orchestrator.settings import OrchestratorSettings
from sentinel.client import TelemetryClient
from sentinel.local_mesh import LocalSpecialists
from sentinel.server import install_stop_signals
from sentinel.simulator import SensorSimulator
from sentinel.telemetry import configure_tracing
from sentinel.v1 import orchestrator_pb2

NANOS = 1_000_000_000


@dataclass
class DemoTally:
    readings_sent: int = 0
    verdicts: collections.Counter = field(default_factory=collections.Counter)
    anomalous_verdicts: int = 0
    votes_anomalous: collections.Counter = field(default_factory=collections.Counter)
    alerts: collections.Counter = field(default_factory=collections.Counter)

    def on_verdicts(self, batch_id: int, verdicts: list[orchestrator_pb2.Verdict]) -> None:
        for verdict in verdicts:
            self.verdicts[orchestrator_pb2.VerdictStatus.Name(verdict.status)] += 1
            self.anomalous_verdicts += verdict.anomaly
            for vote in verdict.votes:
                if vote.anomaly and not vote.warming_up:
                    self.votes_anomalous[vote.specialist] += 1


def alert_line(alert: orchestrator_pb2.Alert) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(alert.last_timestamp_unix_nanos / NANOS))
    if alert.state == orchestrator_pb2.ALERT_STATE_OPEN:
        why = "; ".join(alert.reasons) or "anomalous"
        return (
            f"[bold red]{clock} OPEN    [/] {alert.sensor_id}  value {alert.peak_value:.1f} "
            f"score {alert.peak_score:.2f}  {why}  [dim]({alert.alert_id[:8]})[/]"
        )
    lasted = (alert.last_timestamp_unix_nanos - alert.first_timestamp_unix_nanos) / NANOS
    return (
        f"[bold green]{clock} RESOLVED[/] {alert.sensor_id}  after {lasted:.1f}s, "
        f"{alert.anomalous_readings} anomalous readings, peak {alert.peak_value:.1f} "
        f"[dim]({alert.alert_id[:8]})[/]"
    )


async def run_demo(
    seconds: float | None,
    sensors: int,
    rate: float,
    port: int = 0,
    console_spans: bool = False,
    console: Console | None = None,
) -> DemoTally:
    console = console or Console()
    stop = asyncio.Event()
    install_stop_signals(stop)
    specialists = LocalSpecialists()
    tracing = configure_tracing("sentinel-demo", console=console_spans)
    tally = DemoTally()
    console.print(
        f"[bold]Sentinel demo[/]: starting specialists {', '.join(specialists.engines)} ..."
    )
    await specialists.start()
    orchestrator: OrchestratorProcess | None = None
    try:
        settings = OrchestratorSettings(
            port=port,
            specialists=specialists.targets,
            drain_delay_seconds=0,
            shutdown_grace_seconds=2,
        )
        orchestrator = OrchestratorProcess(settings, tracing)
        await orchestrator.start()
        console.print(
            f"orchestrator on 127.0.0.1:{orchestrator.port}; specialists: {specialists.targets}\n"
            f"{sensors} simulated sensors at {rate:g} readings/s each; "
            f"{'Ctrl-C to stop' if seconds is None else f'running {seconds:g}s'}"
        )

        def on_alert(alert: orchestrator_pb2.Alert) -> None:
            tally.alerts[orchestrator_pb2.AlertState.Name(alert.state)] += 1
            console.print(alert_line(alert), highlight=False)

        simulator = SensorSimulator(sensors)
        client = TelemetryClient(
            f"127.0.0.1:{orchestrator.port}",
            verdicts=orchestrator_pb2.VERDICT_MODE_ALL,
            on_verdicts=tally.on_verdicts,
            on_alert=on_alert,
        )
        async with client:
            await _send_history(client, simulator, orchestrator.windows.length + 5, rate, tally)
            await _stream_live(client, simulator, seconds, rate, stop, tally)
        _print_summary(console, tally, client, simulator)
    finally:
        if orchestrator is not None:
            await orchestrator.stop(drain_delay=0, grace=1)
        await specialists.stop()
        tracing.shutdown()
    return tally


async def _send_history(client, simulator, ticks, rate, tally) -> None:
    """Backfill windows so window-based engines judge from the first live second."""
    history = simulator.normal(ticks)
    now = time.time_ns()
    step = int(NANOS / rate)
    for t in range(ticks):
        ts = now - (ticks - t) * step
        await client.send(
            _readings(simulator.ids, history[t], ts), verdicts=orchestrator_pb2.VERDICT_MODE_NONE
        )
        tally.readings_sent += simulator.sensors


async def _stream_live(client, simulator, seconds, rate, stop, tally) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    interval = 1.0 / rate
    next_tick = started
    while not stop.is_set() and (seconds is None or loop.time() - started < seconds):
        await client.send(_readings(simulator.ids, simulator.tick(), time.time_ns()))
        tally.readings_sent += simulator.sensors
        next_tick += interval
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_tick - loop.time()))
        except TimeoutError:
            pass


def _readings(ids, values, timestamp) -> list[orchestrator_pb2.Reading]:
    return [
        orchestrator_pb2.Reading(sensor_id=s, value=v, timestamp_unix_nanos=timestamp)
        for s, v in zip(ids, values.tolist(), strict=True)
    ]


def _print_summary(console: Console, tally: DemoTally, client: TelemetryClient, simulator) -> None:
    table = Table(title="Sentinel demo summary", show_header=False)
    table.add_row("readings sent", str(tally.readings_sent))
    table.add_row("readings acked", str(client.stats.readings_acked))
    table.add_row("verdicts", str(sum(tally.verdicts.values())))
    for status, count in sorted(tally.verdicts.items()):
        table.add_row(f"  {status.removeprefix('VERDICT_STATUS_').lower()}", str(count))
    table.add_row("anomalous verdicts", str(tally.anomalous_verdicts))
    table.add_row("alerts opened", str(tally.alerts["ALERT_STATE_OPEN"]))
    table.add_row("alerts resolved", str(tally.alerts["ALERT_STATE_RESOLVED"]))
    for name, count in sorted(tally.votes_anomalous.items()):
        table.add_row(f"anomalies flagged by {name}", str(count))
    kinds = collections.Counter(e.kind for e in simulator.events)
    table.add_row(
        "injected events", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"
    )
    console.print(table)

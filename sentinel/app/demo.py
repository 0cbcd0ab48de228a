"""`sentinel demo`: the whole mesh plus simulated sensors, with live alert lines and a summary.

The threshold specialist runs with the demo's rules (`demo_rules.toml`: the seed's high limit of
90 for the simulated sensors), so every spike of the simulator is alerted by that rule. Before
the live part, the demo sends 600..1600 readings of normal history per sensor (clients may
send history first): the statistical level channel needs ~90 readings of window
and its likelihood ~150 more to calibrate, and adaptive limits need 150 values of range, so
level shifts and drifts are judged from the first live second. Each alert that opens says which
injected event it caught (or that it caught none); the summary counts what was caught and how
many readings after the event began.

Besides the `--sensors` sensors with random events, `sensor-seed` follows the seed's own demo
pattern: a spike above 90 on every 20th live reading. Each spike should open its own alert by the
rule (incidents resolve after 10 quiet readings); the summary counts, from the alerts received,
how many did. Alerts on `sensor-seed` are accounted for there, not as caught events or false
alarms of the random-event sensors.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import sys
import time
import typing
from dataclasses import dataclass, field
from importlib import resources

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sentinel.app.local_mesh import LocalMesh
from sentinel.app.simulator import (
    EVENT_KINDS,
    SEED_SENSOR_ID,
    SEED_SPIKE_EVERY,
    SETTLE_TICKS,
    InjectedEvent,
    SeedSpike,
    SensorSimulator,
)
from sentinel.client import TelemetryClient
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.server import install_stop_signals
from sentinel.telemetry import configure_tracing
from sentinel.v1 import orchestrator_pb2

NANOS = 1_000_000_000
MIN_HISTORY_TICKS = 600
"""Normal readings per sensor sent before the live part, at least: enough to warm the statistical
level window (~90) plus its likelihood calibration (150) and the adaptive range (150), and to
cover a couple of the simulated seasonal periods (80..300 readings), so their swings are not
new."""
MAX_HISTORY_TICKS = 1_600
"""...and at most: past ~1000 readings the adaptive range is full, so the first live minute
raises fewer new-extreme false alarms (measured on 8 seeds x 8 sensors x 400 live readings:
10 false alarms with 600 readings of history, 4 with 1600)."""
HISTORY_BUDGET_READINGS = 200_000
"""History shrinks towards MIN_HISTORY_TICKS for many sensors so warm-up stays short."""
HISTORY_BATCH_READINGS = 4_000


def history_ticks_for(sensors: int) -> int:
    return max(MIN_HISTORY_TICKS, min(MAX_HISTORY_TICKS, HISTORY_BUDGET_READINGS // sensors))


SPANS_FILE = "sentinel-demo-spans.jsonl"
"""Where `--console-spans` writes the spans (in the working directory)."""
RULES_FILE = "demo_rules.toml"
RULE_REASON = "above high limit"
SEED_RULE_REASON = "above high limit 90 (rule 'sensor-*')"
"""The demo rule's reason on `sensor-seed` (`demo_rules.toml`)."""


@dataclass(frozen=True, slots=True)
class OpenedAlert:
    tick: int
    sensor: int
    event: InjectedEvent | None
    reasons: tuple[str, ...]
    seed_sensor: bool = False
    """On `sensor-seed` (accounted for by the seed pattern, never credited to an event)."""
    seed_spike: SeedSpike | None = None
    """The seed spike at the reading this alert opened on, if it opened on one."""


@dataclass
class DemoTally:
    readings_sent: int = 0
    history_ticks: int = 0
    verdicts: collections.Counter = field(default_factory=collections.Counter)
    anomalous_verdicts: int = 0
    votes_anomalous: collections.Counter = field(default_factory=collections.Counter)
    alerts: collections.Counter = field(default_factory=collections.Counter)
    opened: list[OpenedAlert] = field(default_factory=list)
    caught: dict[InjectedEvent, int] = field(default_factory=dict)
    """Event -> readings between its start and the first alert credited to it."""
    limit_hits: set[tuple[int, int]] = field(default_factory=set)
    """(sensor, tick) of readings the threshold specialist flagged above a hard limit."""
    flagged_by: dict[InjectedEvent, dict[str, int]] = field(default_factory=dict)
    """Event -> {specialist: readings between the event's start and its first flag}."""
    open_alerts: dict[str, str] = field(default_factory=dict)
    """Sensor id -> id of its open alert."""
    live_ticks: int = 0
    events: list[InjectedEvent] = field(default_factory=list)
    """The simulator's injected events (live ticks 0..live_ticks-1)."""
    seed_index: int | None = None
    """Index of `sensor-seed` (None without the seed pattern)."""
    seed_spikes: list[SeedSpike] = field(default_factory=list)
    """The seed sensor's spikes sent (one per `SEED_SPIKE_EVERY` live readings)."""

    def on_verdicts(self, batch_id: int, verdicts: list[orchestrator_pb2.Verdict]) -> None:
        for verdict in verdicts:
            self.verdicts[orchestrator_pb2.VerdictStatus.Name(verdict.status)] += 1
            self.anomalous_verdicts += verdict.anomaly
            for vote in verdict.votes:
                if vote.anomaly and not vote.warming_up:
                    self.votes_anomalous[vote.specialist] += 1

    def false_alarms(self) -> list[OpenedAlert]:
        """Live alerts that opened outside every injected event (not on `sensor-seed`)."""
        return [a for a in self.opened if a.event is None and a.tick >= 0 and not a.seed_sensor]

    def seed_alerted(self) -> dict[SeedSpike, OpenedAlert]:
        """Seed spikes that opened their own alert, on the spike's reading, by the rule 90."""
        alerted: dict[SeedSpike, OpenedAlert] = {}
        for alert in self.opened:
            if alert.seed_spike is not None and any(SEED_RULE_REASON in r for r in alert.reasons):
                alerted.setdefault(alert.seed_spike, alert)
        return alerted

    def seed_counts(self) -> dict[str, int]:
        """The seed pattern's spikes: `alerted` (opened their own alert by the rule 90),
        `flagged_inside` (flagged by the rule inside an alert already open), `missed`, and
        `other_alerts` (alerts on `sensor-seed` that opened on no spike)."""
        alerted = self.seed_alerted()
        flagged_inside = sum(
            1
            for s in self.seed_spikes
            if s not in alerted and (self.seed_index, s.tick) in self.limit_hits
        )
        return {
            "spikes": len(self.seed_spikes),
            "alerted": len(alerted),
            "flagged_inside": flagged_inside,
            "missed": len(self.seed_spikes) - len(alerted) - flagged_inside,
            "other_alerts": sum(
                1 for a in self.opened if a.seed_sensor and a.seed_spike is None and a.tick >= 0
            ),
        }


class Clock:
    """Nominal timestamps: reading `tick` (negative = history) of a run started at `start`."""

    def __init__(self, rate: float) -> None:
        self.step = max(1, round(NANOS / rate))
        self.start = time.time_ns()

    def stamp(self, tick: int) -> int:
        return self.start + tick * self.step

    def tick(self, stamp: int) -> int:
        return (stamp - self.start) // self.step


def alert_line(alert: orchestrator_pb2.Alert, caught: str = "") -> str:
    # An opening is stamped with its last anomalous reading; a resolution with the moment it
    # resolved (so the lines print in time order and "after" is how long the incident lasted).
    resolved = alert.state == orchestrator_pb2.ALERT_STATE_RESOLVED
    stamp = (
        alert.resolved_timestamp_unix_nanos
        if resolved and alert.resolved_timestamp_unix_nanos
        else alert.last_timestamp_unix_nanos
    )
    clock = time.strftime("%H:%M:%S", time.localtime(stamp / NANOS))
    if alert.state == orchestrator_pb2.ALERT_STATE_OPEN:
        # Line 1: what and why (the first reason, without its specialist's restated value);
        # line 2: which injected event it caught, and the alert's (and trace's) id.
        why = escape(_short_reason(alert.reasons[0]) if alert.reasons else "anomalous")
        more = f" (+{len(alert.reasons) - 1})" if len(alert.reasons) > 1 else ""
        return (
            f"[bold red]{clock} OPEN    [/] {alert.sensor_id}  value {alert.peak_value:.1f}  "
            f"{why}{more}\n{INDENT}[dim]{alert.alert_id[:8]}[/]"
            + (f" [yellow]{escape(caught)}[/]" if caught else "")
            + (f" [dim]trace {alert.trace_id[:8]}[/]" if alert.trace_id else "")
        )
    lasted = (stamp - alert.first_timestamp_unix_nanos) / NANOS
    return (
        f"[bold green]{clock} RESOLVED[/] {alert.sensor_id}  after {lasted:.1f}s, "
        f"{alert.anomalous_readings} anomalous, peak {alert.peak_value:.1f}  "
        f"[dim]({alert.alert_id[:8]})[/]"
    )


INDENT = " " * 9
"""Continuation lines start under the state (OPEN)."""


def _short_reason(reason: str) -> str:
    """'threshold: value 117.356 above high limit 90 (rule 'sensor-*')' ->
    'threshold: above high limit 90 (rule 'sensor-*')' (the value is on the line already)."""
    engine, sep, rest = reason.partition(": ")
    if sep and rest.startswith("value "):
        _, _, rest = rest[len("value ") :].partition(" ")
        return f"{engine}: {rest}"
    return reason


def rules_path() -> str:
    """The packaged demo rules file (a real path: the specialist is another process)."""
    return str(resources.files("sentinel.app").joinpath(RULES_FILE))


async def run_demo(
    seconds: float | None,
    sensors: int,
    rate: float,
    port: int = 0,
    console_spans: bool = False,
    console: Console | None = None,
    *,
    ticks: int | None = None,
    paced: bool = True,
    seed: int = 7,
    history_ticks: int | None = None,
    spans_file: str = SPANS_FILE,
) -> DemoTally:
    """Run the demo for `seconds` (or `ticks` live readings per sensor, or until a stop signal).
    `paced=False` sends as fast as the mesh takes it (timestamps still `rate` apart);
    `history_ticks` defaults to `history_ticks_for(sensors)`. With `console_spans`, the
    orchestrator's spans go to `spans_file` (one JSON object per line; "-" for stderr), not
    between the alert lines: thousands a second would bury them."""
    if history_ticks is None:
        history_ticks = history_ticks_for(sensors)
    console = console or Console()
    stop = asyncio.Event()
    install_stop_signals(stop)
    mesh = LocalMesh(specialist_args={"threshold": ["--rules", rules_path()]})
    spans_out: typing.TextIO | None = None
    if console_spans:
        spans_out = sys.stderr if spans_file == "-" else open(spans_file, "w")  # noqa: SIM115
    tracing = configure_tracing("sentinel-demo", console=console_spans, console_out=spans_out)
    tally = DemoTally()
    console.print(
        f"[bold]Sentinel demo[/]: starting specialists {', '.join(mesh.engines)}\n"
        f"  (threshold rules: {RULES_FILE}, high limit 90 for sensor-*) ..."
    )
    try:
        await mesh.start_specialists()
        # Every specialist described before the history is sent, so that it (and every
        # reading after it) is scored by all of them.
        orchestrator = await mesh.start_orchestrator(
            OrchestratorSettings(port=port, drain_delay_seconds=0, shutdown_grace_seconds=1),
            tracing,
        )
        until = (
            "Ctrl-C to stop"
            if seconds is None and ticks is None
            else f"running {seconds:g}s"
            if seconds is not None
            else f"running {ticks} readings per sensor"
        )
        console.print(f"orchestrator on 127.0.0.1:{orchestrator.port}")
        for target in mesh.specialist_targets.split(","):
            console.print(f"  specialist {target.replace('=', ' on ')}")
        console.print(
            f"{sensors} simulated sensors with random events, plus {SEED_SENSOR_ID}\n"
            f"  (the seed's pattern: a spike on every {SEED_SPIKE_EVERY}th reading),\n"
            f"  at {rate:g} readings/s each; {until}"
        )
        if spans_out is not None:
            where = "stderr" if spans_file == "-" else spans_file
            console.print(f"trace spans: one JSON object per line to {where}")

        simulator = SensorSimulator(sensors, seed=seed)
        tally.events = simulator.events
        tally.seed_index = simulator.seed_index
        tally.seed_spikes = simulator.seed_spikes
        clock = Clock(rate)
        index = {sensor_id: i for i, sensor_id in enumerate(simulator.ids)}

        def on_alert(alert: orchestrator_pb2.Alert) -> None:
            tally.alerts[orchestrator_pb2.AlertState.Name(alert.state)] += 1
            caught = ""
            if alert.state == orchestrator_pb2.ALERT_STATE_OPEN:
                tally.open_alerts[alert.sensor_id] = alert.alert_id
                caught = _credit(alert, tally, simulator, clock, index)
            else:
                tally.open_alerts.pop(alert.sensor_id, None)
            if clock.tick(alert.first_timestamp_unix_nanos) >= 0:
                # Alerts on the warm-up history are counted in the summary, not shown live.
                console.print(
                    alert_line(alert, caught), highlight=False, no_wrap=True, overflow="ellipsis"
                )

        def on_verdicts(batch_id: int, verdicts: list[orchestrator_pb2.Verdict]) -> None:
            for line in _on_verdicts(tally, batch_id, verdicts, simulator, clock, index):
                console.print(line, highlight=False, no_wrap=True, overflow="ellipsis")

        client = TelemetryClient(
            f"127.0.0.1:{orchestrator.port}",
            # One simulated gateway: all its sensors under one ownership key.
            partition="demo-gateway",
            verdicts=orchestrator_pb2.VERDICT_MODE_ALL,
            on_verdicts=on_verdicts,
            on_alert=on_alert,
        )
        async with client:
            if history_ticks:
                console.print(
                    f"warming up: {history_ticks} readings of normal history per sensor\n"
                    f"  (level window, likelihood calibration, adaptive ranges) ..."
                )
                await _send_history(client, simulator, clock, history_ticks, tally)
            await _stream_live(client, simulator, clock, seconds, ticks, rate, paced, stop, tally)
    finally:
        await mesh.stop()
        tracing.shutdown()
        if spans_out is not None and spans_out is not sys.stderr:
            spans_out.close()
    _print_summary(console, tally, client, simulator)
    if spans_out is not None and spans_file != "-":
        with open(spans_file) as written:
            spans = sum(1 for _ in written)
        console.print(f"trace spans: {spans} in {spans_file} (the orchestrator's)")
    return tally


def _on_verdicts(
    tally: DemoTally, batch_id, verdicts, simulator, clock: Clock, index: dict[str, int]
) -> list[str]:
    """Tally the verdicts; lines to show for events flagged inside an alert already open."""
    tally.on_verdicts(batch_id, verdicts)
    lines = []
    for verdict in verdicts:
        if not verdict.anomaly:
            continue
        sensor, tick = index[verdict.sensor_id], clock.tick(verdict.timestamp_unix_nanos)
        event = simulator.event_at(sensor, tick)
        for vote in verdict.votes:
            if not vote.anomaly or vote.warming_up:
                continue
            if vote.specialist == "threshold" and RULE_REASON in vote.reason:
                tally.limit_hits.add((sensor, tick))
            if event is not None:
                first = tally.flagged_by.setdefault(event, {})
                first.setdefault(vote.specialist, tick - event.start_tick)
        open_alert = tally.open_alerts.get(verdict.sensor_id)
        if event is not None and event not in tally.caught and open_alert is not None:
            # The sensor was already in an incident when the event began: that alert covers it.
            tally.caught[event] = delay = tick - event.start_tick
            clock_text = time.strftime(
                "%H:%M:%S", time.localtime(verdict.timestamp_unix_nanos / NANOS)
            )
            lines.append(
                f"[bold red]{clock_text} FLAGGED [/] {verdict.sensor_id}  value "
                f"{verdict.value:.1f} inside open alert [dim]({open_alert[:8]})[/]\n"
                f"{INDENT}[yellow]caught: {event.describe()} {_when(delay)} "
                f"(already open)[/]"
            )
    return lines


def _when(delay: int) -> str:
    return "at its first reading" if delay == 0 else f"{delay} readings after it began"


def _credit(alert, tally: DemoTally, simulator, clock: Clock, index: dict[str, int]) -> str:
    """Record an opened alert against the injected event it caught; a line saying which."""
    tick = clock.tick(alert.first_timestamp_unix_nanos)
    sensor = index.get(alert.sensor_id, -1)
    if simulator.is_seed_sensor(sensor):
        spike = simulator.seed_spike_at(tick)
        tally.opened.append(OpenedAlert(tick, sensor, None, tuple(alert.reasons), True, spike))
        if tick < 0:
            return ""
        if spike is None:
            return "seed pattern: no spike at this reading"
        return f"seed spike on reading {tick + 1}: alerted at once"
    event = simulator.event_at(sensor, tick) if tick >= 0 else None
    tally.opened.append(OpenedAlert(tick, sensor, event, tuple(alert.reasons)))
    if tick < 0:
        return ""
    if event is None:
        return "caught: no injected event (a false alarm)"
    delay = tick - event.start_tick
    first = event not in tally.caught
    if first:
        tally.caught[event] = delay
    return f"caught: {event.describe()} {_when(delay)}" + ("" if first else " (again)")


async def _send_history(client, simulator, clock: Clock, ticks: int, tally) -> None:
    """Normal readings of ticks -ticks..-1, several ticks per batch, without verdicts."""
    history = simulator.history(ticks)
    per_batch = max(1, HISTORY_BATCH_READINGS // simulator.sensors)
    for first in range(0, ticks, per_batch):
        readings = []
        for t in range(first, min(first + per_batch, ticks)):
            readings += _readings(simulator.ids, history[t], clock.stamp(t - ticks))
        await client.send(readings, verdicts=orchestrator_pb2.VERDICT_MODE_NONE)
        tally.readings_sent += len(readings)
    tally.history_ticks = ticks


async def _stream_live(client, simulator, clock, seconds, ticks, rate, paced, stop, tally) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    interval = 1.0 / rate
    next_tick = started
    while not stop.is_set():
        if seconds is not None and loop.time() - started >= seconds:
            break
        if ticks is not None and simulator.tick_index >= ticks:
            break
        stamp = clock.stamp(simulator.tick_index)
        await client.send(_readings(simulator.ids, simulator.tick(), stamp))
        tally.readings_sent += simulator.sensors
        tally.live_ticks = simulator.tick_index
        if not paced:
            continue
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


def _caught_rows(kind: str, tally: DemoTally, simulator: SensorSimulator) -> list[tuple[str, str]]:
    events = [e for e in simulator.events if e.kind == kind]
    # An event not caught yet that began less than its own stretch ago is still pending.
    judged = [
        e
        for e in events
        if e in tally.caught or tally.live_ticks - e.start_tick >= e.length + SETTLE_TICKS
    ]
    delays = sorted(tally.caught[e] for e in judged if e in tally.caught)
    text = f"{len(delays)} of {len(judged)}"
    if delays:
        text += f", {_readings_after(delays)}"
    if len(events) > len(judged):
        text += f" ({len(events) - len(judged)} more too recent to judge)"
    label = {"spike": "spikes caught (rule: high 90)", "level-shift": "level shifts caught"}
    rows = [(label.get(kind, f"{kind}s caught"), text)]
    engines = collections.defaultdict(list)
    for event in judged:
        for name, delay in tally.flagged_by.get(event, {}).items():
            engines[name].append(delay)
    if engines:
        rows.append(
            (
                "  flagged by",
                "; ".join(
                    f"{name} {len(d)} of {len(judged)}, {_readings_after(d)}"
                    for name, d in sorted(engines.items(), key=lambda kv: statistics.median(kv[1]))
                ),
            )
        )
    return rows


def _readings_after(delays: list[int]) -> str:
    """'after 0 readings' or 'after median 15 (9..22) readings' (counted from the event's start)."""
    delays = sorted(delays)
    if delays[0] == delays[-1]:
        return f"after {delays[0]} readings"
    return f"after median {statistics.median(delays):g} ({delays[0]}..{delays[-1]}) readings"


def _print_summary(console: Console, tally: DemoTally, client: TelemetryClient, simulator) -> None:
    history = tally.history_ticks * simulator.sensors
    live = tally.readings_sent - history
    table = Table(title="Sentinel demo summary", show_header=False)
    table.add_row("readings sent", f"{tally.readings_sent} ({history} warm-up + {live} live)")
    table.add_row("readings acked", str(client.stats.readings_acked))
    table.add_row("verdicts (live readings)", str(sum(tally.verdicts.values())))
    for status, count in sorted(tally.verdicts.items()):
        table.add_row(f"  {status.removeprefix('VERDICT_STATUS_').lower()}", str(count))
    table.add_row("anomalous verdicts", str(tally.anomalous_verdicts))
    table.add_row("alerts opened", str(tally.alerts["ALERT_STATE_OPEN"]))
    warm = sum(1 for a in tally.opened if a.tick < 0)
    if warm:
        table.add_row("  of which on warm-up history", str(warm))
    seeded = sum(1 for a in tally.opened if a.seed_sensor and a.tick >= 0)
    if seeded:
        table.add_row(f"  of which live on {SEED_SENSOR_ID}", str(seeded))
    table.add_row("alerts resolved", str(tally.alerts["ALERT_STATE_RESOLVED"]))
    for name, count in sorted(tally.votes_anomalous.items()):
        table.add_row(f"anomalies flagged by {name}", str(count))
    kinds = collections.Counter(e.kind for e in simulator.events)
    table.add_row(
        "injected events", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"
    )
    for kind in EVENT_KINDS:
        if kinds[kind]:
            for row in _caught_rows(kind, tally, simulator):
                table.add_row(*row)
    table.add_row("live alerts outside injected events", str(len(tally.false_alarms())))
    if tally.seed_index is not None:
        table.add_row(*_seed_row(tally))
    console.print(table)
    if history:
        console.print(
            f"Readings vs verdicts: each sensor first sent {tally.history_ticks} readings of "
            f"normal history ({history} in all) without asking for verdicts, so that the "
            f"engines had their windows and calibration before the live part; each of the "
            f"{live} live readings got one verdict."
            + (
                f" The {warm} alerts opened on that history (engines still learning) are "
                f"counted above, not shown."
                if warm
                else ""
            )
        )
    for line in event_lines(tally, simulator):
        console.print(line, highlight=False)


MAX_EVENT_LINES = 12


def event_lines(tally: DemoTally, simulator: SensorSimulator) -> list[str]:
    """One line per injected event (the first `MAX_EVENT_LINES`): caught how soon, missed, or
    too recent to judge."""
    events = sorted(simulator.events, key=lambda e: (e.start_tick, e.sensor))
    if not events:
        return []
    lines = ["Injected events (live reading numbers):"]
    for event in events[:MAX_EVENT_LINES]:
        if event in tally.caught:
            outcome = f"caught {_when(tally.caught[event])}"
        elif tally.live_ticks - event.start_tick >= event.length + SETTLE_TICKS:
            outcome = "[bold]missed[/]"
        else:
            outcome = "too recent to judge"
        lines.append(
            f"  {simulator.ids[event.sensor]} {event.describe()} at reading "
            f"{event.start_tick + 1}: {outcome}"
        )
    if len(events) > MAX_EVENT_LINES:
        lines.append(f"  ... and {len(events) - MAX_EVENT_LINES} more (counted in the table)")
    return lines


def _seed_row(tally: DemoTally) -> tuple[str, str]:
    counts = tally.seed_counts()
    text = f"{counts['alerted']} of {counts['spikes']} spikes alerted by threshold (rule high 90)"
    extra = []
    if counts["flagged_inside"]:
        extra.append(f"{counts['flagged_inside']} flagged inside an alert already open")
    if counts["missed"]:
        extra.append(f"{counts['missed']} missed")
    if counts["other_alerts"]:
        extra.append(f"{counts['other_alerts']} alerts on no spike")
    if extra:
        text += f"; {', '.join(extra)}"
    label = f"seed pattern (spike every {SEED_SPIKE_EVERY}th reading on {SEED_SENSOR_ID})"
    return label, text

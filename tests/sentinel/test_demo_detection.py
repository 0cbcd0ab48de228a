"""`sentinel demo` end to end (real specialist processes, in-process orchestrator): the demo's
rule (high limit 90) alerts every simulated spike, and the simulator's level shifts and drifts
open alerts within a bounded number of readings. Seeded, unpaced (timestamps are still 50 ms
apart), so every run sees the same readings and the same verdicts."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from sentinel.demo import DemoTally, history_ticks_for, run_demo
from sentinel.simulator import DRIFT_TICKS, SETTLE_TICKS, InjectedEvent

SEED = 7
SENSORS = 6
TICKS = 1_500
LEVEL_SHIFT_WITHIN = 30
"""Readings after a level shift begins by which an alert must be open. A shift of 12..25 is
usually a new extreme at once (threshold, adaptive limits); the statistical level channel (median
of the last 30) follows after about 15 readings."""
DRIFT_WITHIN = DRIFT_TICKS
"""A drift must be alerted before its ramp is complete."""


@pytest.fixture(scope="module")
def demo() -> tuple[DemoTally, str]:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    tally = asyncio.run(
        run_demo(None, SENSORS, 20.0, console=console, ticks=TICKS, paced=False, seed=SEED)
    )
    return tally, console.file.getvalue()


def judged(tally: DemoTally, kind: str) -> list[InjectedEvent]:
    """Events of `kind` whose whole stretch (departure and settling) lies within the run."""
    events = [
        e
        for e in tally.events
        if e.kind == kind and e.start_tick + e.length + SETTLE_TICKS <= tally.live_ticks
    ]
    assert events, f"seed {SEED} injected no complete {kind} in {TICKS} readings"
    return events


def test_every_reading_is_acked_and_judged(demo: tuple[DemoTally, str]) -> None:
    tally, out = demo
    assert tally.live_ticks == TICKS
    assert tally.readings_sent == (history_ticks_for(SENSORS) + TICKS) * SENSORS
    acked = int(next(line for line in out.splitlines() if "readings acked" in line).split("│")[2])
    assert acked == tally.readings_sent
    # History is sent without verdicts; every live reading gets one, from all three engines.
    assert sum(tally.verdicts.values()) == TICKS * SENSORS
    assert set(tally.verdicts) == {"VERDICT_STATUS_OK"}


def test_every_spike_is_alerted_by_the_rule_90(demo: tuple[DemoTally, str]) -> None:
    tally, out = demo
    for spike in judged(tally, "spike"):
        assert spike.magnitude > 90
        assert (spike.sensor, spike.start_tick) in tally.limit_hits, spike
        assert tally.caught.get(spike) == 0, spike
        opened = next(a for a in tally.opened if a.event == spike)
        assert any(
            "above high limit 90 (rule 'sensor-*')" in reason for reason in opened.reasons
        ), opened
        assert f"caught: spike to {spike.magnitude:.1f} at its first reading" in out


def test_level_shifts_open_an_alert_within_a_bounded_number_of_readings(
    demo: tuple[DemoTally, str],
) -> None:
    tally, out = demo
    for shift in judged(tally, "level-shift"):
        assert shift in tally.caught, f"{shift} never alerted"
        assert 0 <= tally.caught[shift] <= LEVEL_SHIFT_WITHIN, shift
    assert "caught: level shift" in out


def test_the_warmed_level_channel_flags_every_level_shift_too(
    demo: tuple[DemoTally, str],
) -> None:
    """Not only the adaptive limit: the statistical level channel, calibrated on the warm-up
    history, flags each shift once the median of its last 30 readings has moved."""
    tally, _ = demo
    for shift in judged(tally, "level-shift"):
        delay = tally.flagged_by.get(shift, {}).get("statistical")
        assert delay is not None and delay <= LEVEL_SHIFT_WITHIN, (shift, tally.flagged_by[shift])


def test_drifts_are_alerted_before_their_ramp_ends(demo: tuple[DemoTally, str]) -> None:
    tally, _ = demo
    for drift in judged(tally, "drift"):
        assert drift in tally.caught, f"{drift} never alerted"
        assert 0 <= tally.caught[drift] < DRIFT_WITHIN, drift


def test_false_alarms_are_rare_and_labelled(demo: tuple[DemoTally, str]) -> None:
    tally, out = demo
    false = tally.false_alarms()
    # 9,000 live readings of noisy seasonal signals: fewer false alarms than injected events.
    assert len(false) <= len(tally.events), false
    assert out.count("caught: no injected event") == len(false)
    summary = out[out.index("Sentinel demo summary") :]
    for row in ("spikes caught (rule: high 90)", "level shifts caught", "drifts caught"):
        assert row in summary
    assert "live alerts outside injected events" in summary

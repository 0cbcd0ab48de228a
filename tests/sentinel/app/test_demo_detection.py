"""`sentinel demo` end to end (real specialist processes, in-process orchestrator): the demo's
rule (high limit 90) alerts every simulated spike, the seed's own pattern (a spike on every 20th
reading of `sensor-seed`) opens one alert per spike by that rule, and the simulator's level shifts
and drifts open alerts within a bounded number of readings. Seeded, unpaced (timestamps are still
50 ms apart), so every run sees the same readings and the same verdicts."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from rich.console import Console

from sentinel.app.demo import DemoTally, history_ticks_for, run_demo
from sentinel.app.simulator import (
    DRIFT_TICKS,
    SEED_SENSOR_ID,
    SEED_SPIKE_EVERY,
    SETTLE_TICKS,
    InjectedEvent,
    SensorSimulator,
)

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
    # The SENSORS sensors with random events, plus sensor-seed.
    assert tally.readings_sent == (history_ticks_for(SENSORS) + TICKS) * (SENSORS + 1)
    acked = int(next(line for line in out.splitlines() if "readings acked" in line).split("│")[2])
    assert acked == tally.readings_sent
    # History is sent without verdicts; every live reading gets one, from all three engines.
    assert sum(tally.verdicts.values()) == TICKS * (SENSORS + 1)
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


def summary_cell(out: str, label: str) -> str:
    summary = out[out.index("Sentinel demo summary") :]
    return next(line for line in summary.splitlines() if label in line).split("│")[2].strip()


def test_every_seed_pattern_spike_opens_its_own_alert_by_the_rule_90(
    demo: tuple[DemoTally, str],
) -> None:
    """The seed's demo: sensor-seed spikes above 90 on every 20th live reading; each spike opens
    an alert of its own (the previous one resolved after 10 quiet readings) on the spike's
    reading, with the demo rule's reason, counted from the alerts the demo received."""
    tally, out = demo
    spikes = tally.seed_spikes
    assert [s.tick for s in spikes] == list(range(SEED_SPIKE_EVERY - 1, TICKS, SEED_SPIKE_EVERY))
    assert len(spikes) >= 5
    seed_alerts = [a for a in tally.opened if a.seed_sensor and a.tick >= 0]
    for spike in spikes:
        assert 90 < spike.value <= 130, spike
        assert (tally.seed_index, spike.tick) in tally.limit_hits, spike
        opened = [a for a in seed_alerts if a.tick == spike.tick]
        assert len(opened) == 1, (spike, opened)
        assert opened[0].seed_spike == spike
        assert any(
            "above high limit 90 (rule 'sensor-*')" in reason for reason in opened[0].reasons
        ), opened[0]
    assert tally.seed_counts()["alerted"] == len(spikes)
    assert (
        summary_cell(out, f"seed pattern (spike every 20th reading on {SEED_SENSOR_ID})")
        == f"{len(spikes)} of {len(spikes)} spikes alerted by threshold (rule high 90)"
    )
    assert out.count(f"OPEN     {SEED_SENSOR_ID}  value") == len(seed_alerts)


def test_the_seed_sensor_stays_out_of_the_injected_event_accounting(
    demo: tuple[DemoTally, str],
) -> None:
    tally, _ = demo
    assert tally.seed_index == SENSORS
    assert all(e.sensor != tally.seed_index for e in tally.events)
    assert all(not a.seed_sensor for a in tally.false_alarms())
    assert all(a.event is None for a in tally.opened if a.seed_sensor)


def test_the_seed_sensor_leaves_the_other_sensors_signals_and_events_unchanged() -> None:
    plain = SensorSimulator(SENSORS, seed=SEED, seed_pattern=False)
    seeded = SensorSimulator(SENSORS, seed=SEED)
    assert seeded.ids == plain.ids + [SEED_SENSOR_ID]
    history = seeded.history(300)
    assert np.array_equal(history[:, :SENSORS], plain.history(300))
    assert history[:, SENSORS].max() < 70  # normal, well below 90; no spikes in the warm-up
    for t in range(400):
        values = seeded.tick()
        assert np.array_equal(values[:SENSORS], plain.tick())
        assert (values[SENSORS] > 90) == (t % SEED_SPIKE_EVERY == SEED_SPIKE_EVERY - 1), t
    assert seeded.events == plain.events

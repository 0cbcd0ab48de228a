"""Simulated sensors for the demo: noisy seasonal signals with injected spikes, level shifts and
drifts.

Vectorised over sensors: one `tick()` produces one value per sensor with numpy. Each sensor is
`base + amplitude * sin(2 pi t / period) + noise`, with tick t continuing from `history()`
(ticks -n..-1) into `tick()` (0, 1, ...), so history sent first to warm the mesh is the same
signal the live part continues.

Injected events (deterministic for a seed): roughly one per `event_every_ticks` ticks across all
sensors, each on a sensor that has been back to normal for `quiet_ticks` readings. As in a real
plant, one sensor's incidents are rare: each event meets a sensor whose recent range (the
threshold's adaptive limits remember ~1000 readings) reflects normal operation, not the last
event. With few sensors, events wait until one is free.

- `spike`: one reading jumps to 95..130, above the demo's high limit of 90
  (`sentinel/app/demo_rules.toml`);
- `level-shift`: the level steps by +/-(12..25) for `LEVEL_SHIFT_TICKS` readings, then returns;
- `drift`: the level ramps linearly up by 12..25 over `DRIFT_TICKS` readings, holds there for
  `DRIFT_HOLD_TICKS`, then returns (a sensor that drifts out of calibration and is reset).

`InjectedEvent.covers(tick)` is the stretch during which an alert on that sensor is credited to
the event: the departure itself plus `SETTLE_TICKS` after the signal came back (the return to
normal is itself a change an engine may flag).

The seed's pattern (`seed_pattern=True`, the default): one more sensor, `SEED_SENSOR_ID`, after
the others, follows the original product's demo: a noisy signal around `SEED_LEVEL` (well below
90) with a spike to 95..130 on every `SEED_SPIKE_EVERY`th live reading (ticks 19, 39, 59, ...).
It gets no random events, and its spikes are not in `events` but in `seed_spikes`. Its warm-up
`history()` is the normal signal without spikes, like every other sensor's; its values come from
their own random streams, so the other sensors' signals and events are the same with or without
it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVENT_KINDS = ("spike", "level-shift", "drift")
SPIKE_RANGE = (95.0, 130.0)
SHIFT_RANGE = (12.0, 25.0)
LEVEL_SHIFT_TICKS = 120
DRIFT_TICKS = 100
DRIFT_HOLD_TICKS = 40
SETTLE_TICKS = 40
QUIET_TICKS = 1_100
SEED_SENSOR_ID = "sensor-seed"
"""Matches the demo rules' `sensor-*` pattern (high limit 90)."""
SEED_SPIKE_EVERY = 20
SEED_LEVEL = 50.0
SEED_NOISE = 1.5
SEED_AMPLITUDE = 2.0
SEED_PERIOD = 150.0


@dataclass(frozen=True, slots=True)
class InjectedEvent:
    sensor: int
    kind: str
    start_tick: int
    length: int
    """Readings during which the signal departs from normal."""
    magnitude: float
    """spike: the value reached; level-shift: the step; drift: the offset at the end of the ramp."""

    def covers(self, tick: int) -> bool:
        return self.start_tick <= tick < self.start_tick + self.length + SETTLE_TICKS

    def describe(self) -> str:
        if self.kind == "spike":
            return f"spike to {self.magnitude:.1f}"
        if self.kind == "level-shift":
            return f"level shift {self.magnitude:+.1f}"
        return f"drift {self.magnitude:+.1f} over {DRIFT_TICKS} readings"


def is_seed_spike(tick: int) -> bool:
    """The seed's pattern: a spike on every `SEED_SPIKE_EVERY`th live reading (19, 39, ...)."""
    return tick >= 0 and tick % SEED_SPIKE_EVERY == SEED_SPIKE_EVERY - 1


@dataclass(frozen=True, slots=True)
class SeedSpike:
    tick: int
    value: float


class SensorSimulator:
    """`sensors` sensors with random injected events, plus `SEED_SENSOR_ID` (the last column of
    every tick, index `seed_index`) when `seed_pattern` is set."""

    def __init__(
        self,
        sensors: int,
        seed: int = 7,
        event_every_ticks: int = 60,
        quiet_ticks: int = QUIET_TICKS,
        seed_pattern: bool = True,
    ) -> None:
        self.random_sensors = sensors
        self.sensors = sensors + int(seed_pattern)
        """Columns of `tick()` and `history()`: the random-event sensors, then the seed sensor."""
        self.seed_index: int | None = sensors if seed_pattern else None
        self.seed_spikes: list[SeedSpike] = []
        self._seed_rng = np.random.default_rng([seed, 2])
        self._seed_history_rng = np.random.default_rng([seed, 3])
        self.rng = np.random.default_rng(seed)
        self.ids = [f"sensor-{i:03d}" for i in range(sensors)]
        if seed_pattern:
            self.ids.append(SEED_SENSOR_ID)
        self.base = self.rng.uniform(35.0, 60.0, sensors)
        self.noise = self.rng.uniform(0.5, 2.0, sensors)
        self.period = self.rng.uniform(80.0, 300.0, sensors)
        self.amplitude = self.rng.uniform(0.0, 3.0, sensors)
        self.event_every_ticks = event_every_ticks
        self.quiet_ticks = quiet_ticks
        self._free_from = np.zeros(sensors, dtype=np.int64)  # tick each sensor is quiet again
        self.tick_index = 0
        self.events: list[InjectedEvent] = []
        self._active: list[InjectedEvent] = []
        self._history_rng = np.random.default_rng([seed, 1])

    def _normal(
        self, t: np.ndarray, rng: np.random.Generator, seed_rng: np.random.Generator
    ) -> np.ndarray:
        seasonal = self.amplitude * np.sin(2 * np.pi * t[..., None] / self.period)
        noise = rng.normal(0.0, 1.0, (*t.shape, self.random_sensors)) * self.noise
        values = self.base + seasonal + noise
        if self.seed_index is None:
            return values
        seed_values = (
            SEED_LEVEL
            + SEED_AMPLITUDE * np.sin(2 * np.pi * t / SEED_PERIOD)
            + seed_rng.normal(0.0, 1.0, t.shape) * SEED_NOISE
        )
        return np.concatenate([values, seed_values[..., None]], axis=-1)

    def history(self, ticks: int) -> np.ndarray:
        """[ticks, sensors]: the anomaly-free readings of ticks -ticks..-1 (to warm the mesh)."""
        t = np.arange(-ticks, 0, dtype=np.float64)
        return self._normal(t, self._history_rng, self._seed_history_rng)

    def is_seed_sensor(self, sensor: int) -> bool:
        return self.seed_index is not None and sensor == self.seed_index

    def seed_spike_at(self, tick: int) -> SeedSpike | None:
        """The seed sensor's spike at live `tick`, if that reading was one (and has been sent)."""
        if not is_seed_spike(tick) or self.seed_index is None:
            return None
        n = tick // SEED_SPIKE_EVERY
        return self.seed_spikes[n] if n < len(self.seed_spikes) else None

    def event_at(self, sensor: int, tick: int) -> InjectedEvent | None:
        """The injected event an alert on `sensor` at `tick` is credited to, if any."""
        for event in reversed(self.events):
            if event.sensor == sensor and event.covers(tick):
                return event
        return None

    def tick(self) -> np.ndarray:
        t = self.tick_index
        self.tick_index += 1
        values = self._normal(np.array(float(t)), self.rng, self._seed_rng)
        if self.seed_index is not None and is_seed_spike(t):
            spike = SeedSpike(t, float(self._seed_rng.uniform(*SPIKE_RANGE)))
            self.seed_spikes.append(spike)
            values[self.seed_index] = spike.value
        # Roughly one new event per `event_every_ticks` ticks across all sensors, each on a
        # sensor quiet for `quiet_ticks`; the first one early so short demos show an alert.
        if t == 20 or self.rng.random() < 1.0 / self.event_every_ticks:
            free = np.flatnonzero(self._free_from <= t)
        else:
            free = np.empty(0, dtype=np.int64)
        if free.size:
            sensor = int(self.rng.choice(free))
            kind = EVENT_KINDS[len(self.events) % len(EVENT_KINDS)]
            if kind == "spike":
                event = InjectedEvent(sensor, kind, t, 1, float(self.rng.uniform(*SPIKE_RANGE)))
            elif kind == "level-shift":
                sign = 1.0 if self.rng.random() < 0.5 else -1.0
                magnitude = sign * float(self.rng.uniform(*SHIFT_RANGE))
                event = InjectedEvent(sensor, kind, t, LEVEL_SHIFT_TICKS, magnitude)
            else:
                magnitude = float(self.rng.uniform(*SHIFT_RANGE))
                event = InjectedEvent(sensor, kind, t, DRIFT_TICKS + DRIFT_HOLD_TICKS, magnitude)
            self.events.append(event)
            self._active.append(event)
            self._free_from[sensor] = t + event.length + SETTLE_TICKS + self.quiet_ticks
        still = []
        for event in self._active:
            age = t - event.start_tick
            if age >= event.length:
                continue
            if event.kind == "spike":
                values[event.sensor] = event.magnitude
            elif event.kind == "level-shift":
                values[event.sensor] += event.magnitude
            else:
                values[event.sensor] += event.magnitude * min(1.0, (age + 1) / DRIFT_TICKS)
            still.append(event)
        self._active = still
        return values

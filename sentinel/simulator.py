"""Simulated sensors for the demo: noisy signals with injected spikes, drifts and level shifts.

Vectorised over sensors: one `tick()` produces one value per sensor with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVENT_KINDS = ("spike", "drift", "level-shift")


@dataclass(frozen=True, slots=True)
class InjectedEvent:
    sensor: int
    kind: str
    start_tick: int
    length: int


class SensorSimulator:
    def __init__(self, sensors: int, seed: int = 7, event_every_ticks: int = 60) -> None:
        self.sensors = sensors
        self.rng = np.random.default_rng(seed)
        self.ids = [f"sensor-{i:03d}" for i in range(sensors)]
        self.base = self.rng.uniform(35.0, 60.0, sensors)
        self.noise = self.rng.uniform(0.5, 2.0, sensors)
        self.period = self.rng.uniform(80.0, 300.0, sensors)
        self.amplitude = self.rng.uniform(0.0, 3.0, sensors)
        self.event_every_ticks = event_every_ticks
        self.tick_index = 0
        self.events: list[InjectedEvent] = []
        self._offset = np.zeros(sensors)
        self._active: list[tuple[InjectedEvent, float]] = []

    def normal(self, ticks: int) -> np.ndarray:
        """[ticks, sensors] of anomaly-free history (to warm the windows)."""
        t = np.arange(ticks)[:, None]
        seasonal = self.amplitude * np.sin(2 * np.pi * t / self.period)
        return self.base + seasonal + self.rng.normal(0.0, 1.0, (ticks, self.sensors)) * self.noise

    def tick(self) -> np.ndarray:
        t = self.tick_index
        self.tick_index += 1
        values = self.base + self.amplitude * np.sin(2 * np.pi * t / self.period)
        values = values + self.rng.normal(0.0, 1.0, self.sensors) * self.noise
        # Roughly one new event per `event_every_ticks` ticks across all sensors, never two at once
        # on one sensor, and the first one early so short demos show an alert.
        busy = {e.sensor for e, _ in self._active}
        if (t == 20 or self.rng.random() < 1.0 / self.event_every_ticks) and len(
            busy
        ) < self.sensors:
            sensor = int(self.rng.choice([i for i in range(self.sensors) if i not in busy]))
            kind = EVENT_KINDS[len(self.events) % len(EVENT_KINDS)]
            length = {"spike": 1, "drift": 40, "level-shift": 25}[kind]
            magnitude = (
                float(self.rng.uniform(25.0, 60.0))
                if kind == "spike"
                else float(self.rng.uniform(12.0, 25.0))
            )
            event = InjectedEvent(sensor, kind, t, length)
            self.events.append(event)
            self._active.append((event, magnitude))
        still = []
        for event, magnitude in self._active:
            age = t - event.start_tick
            if age >= event.length:
                continue
            if event.kind == "drift":
                values[event.sensor] += magnitude * (age + 1) / event.length
            else:
                values[event.sensor] += magnitude
            still.append((event, magnitude))
        self._active = still
        return values

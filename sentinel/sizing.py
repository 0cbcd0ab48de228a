"""`sentinel sizing`: what the orchestrator's per-sensor history costs with the default engines.

Builds the orchestrator's history exactly as the default specialists declare it (threshold,
statistical, model, each `Describe` answer round-tripped through protobuf), feeds N sensors one
reading each, and reports the accounted bytes per sensor and the process's RSS growth (which
adds the sensor-id strings and the index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Sizing:
    sensors: int
    accounted_bytes_per_sensor: int
    rss_growth_bytes: int

    def render(self) -> str:
        per_sensor = self.rss_growth_bytes / max(self.sensors, 1)
        return (
            f"{self.sensors:,} sensors: history {self.accounted_bytes_per_sensor:,} bytes per "
            f"sensor (numpy state); RSS grew {self.rss_growth_bytes / 2**20:,.0f} MiB "
            f"({per_sensor:,.0f} bytes per sensor with ids and index)"
        )


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * 4096


def measure(sensors: int, chunk: int = 10_000) -> Sizing:
    from orchestrator.history import History
    from orchestrator.specialist_pool import parse_declaration
    from orchestrator.windows import WindowStore
    from sentinel.v1 import specialist_pb2
    from specialists.codec import encode_channel_spec, encode_view_spec
    from specialists.model import load_model_engine
    from specialists.statistical import StatisticalEngine
    from specialists.threshold import AdaptiveLimits, ThresholdEngine

    history = History(WindowStore(0, sensors))
    for engine in (
        ThresholdEngine([], AdaptiveLimits()),
        StatisticalEngine(),
        load_model_engine(None),
    ):
        info = specialist_pb2.DescribeResponse.FromString(
            specialist_pb2.DescribeResponse(
                window_length=engine.window_length,
                views=[encode_view_spec(v) for v in engine.views],
                channels=[encode_channel_spec(c) for c in engine.channels],
            ).SerializeToString()
        )
        declaration = parse_declaration(info)
        history.check(engine.name, declaration)
        history.declare(engine.name, declaration)
    before = _rss()
    stamp = 1_700_000_000 * 1_000_000_000
    rng = np.random.default_rng(0)
    for start in range(0, sensors, chunk):
        ids = [f"sensor-{i:09d}" for i in range(start, min(sensors, start + chunk))]
        history.append(ids, rng.standard_normal(len(ids)), np.full(len(ids), stamp, np.int64))
    return Sizing(sensors, history.bytes_per_sensor(), _rss() - before)

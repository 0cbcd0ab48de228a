"""`sentinel sizing`: what the orchestrator's per-sensor history costs with the default engines.

Builds the orchestrator's history exactly as the default specialists declare it (threshold,
statistical, model, each `Describe` answer round-tripped through protobuf), feeds N sensors one
reading each, and reports the accounted bytes per sensor and the process's RSS growth (which
adds the sensor-id strings and the index). With `checkpoint`, it also times a checkpoint of
that history (copy, write to a temporary directory, read back and restore into a fresh one)
and reports the file's size.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CheckpointCost:
    copy_seconds: float  # on the event loop, scoring held back
    write_seconds: float  # in a thread
    restore_seconds: float  # read, check and load at start
    file_bytes: int


@dataclass(frozen=True, slots=True)
class Sizing:
    sensors: int
    accounted_bytes_per_sensor: int
    rss_growth_bytes: int
    checkpoint: CheckpointCost | None = None

    def render(self) -> str:
        per_sensor = self.rss_growth_bytes / max(self.sensors, 1)
        text = (
            f"{self.sensors:,} sensors: history {self.accounted_bytes_per_sensor:,} bytes per "
            f"sensor (numpy state); RSS grew {self.rss_growth_bytes / 2**20:,.0f} MiB "
            f"({per_sensor:,.0f} bytes per sensor with ids and index)"
        )
        if self.checkpoint is not None:
            cost = self.checkpoint
            text += (
                f"\ncheckpoint: {cost.file_bytes / 2**20:,.0f} MiB; copy {cost.copy_seconds:.2f} s "
                f"(scoring paused), write {cost.write_seconds:.2f} s (in a thread), "
                f"read and restore {cost.restore_seconds:.2f} s"
            )
        return text


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * 4096


def measure(sensors: int, chunk: int = 10_000, checkpoint: bool = False) -> Sizing:
    from sentinel.orchestrator.history import History
    from sentinel.orchestrator.specialist_pool import parse_declaration
    from sentinel.orchestrator.windows import WindowStore
    from sentinel.specialists.codec import encode_channel_spec, encode_view_spec
    from sentinel.specialists.model import load_model_engine
    from sentinel.specialists.statistical import StatisticalEngine
    from sentinel.specialists.threshold import AdaptiveLimits, ThresholdEngine
    from sentinel.v1 import specialist_pb2

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
    grown = _rss() - before
    cost = _checkpoint_cost(history, sensors) if checkpoint else None
    return Sizing(sensors, history.bytes_per_sensor(), grown, cost)


def _checkpoint_cost(history, sensors: int) -> CheckpointCost:
    from sentinel.orchestrator.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
    from sentinel.orchestrator.history import History
    from sentinel.orchestrator.windows import WindowStore

    started = time.perf_counter()
    snapshot = history.snapshot()
    copied = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sentinel-sizing-") as directory:
        size = write_checkpoint(directory, Checkpoint(time.time(), snapshot, [], []))
        written = time.perf_counter()
        restored = History(WindowStore(0, sensors))
        restored.restore(read_checkpoint(f"{directory}/checkpoint.npz").history)
        done = time.perf_counter()
    return CheckpointCost(copied - started, written - copied, done - written, size)

"""Constructed signals, and engines driven through the orchestrator's real history (no gRPC).

`Bench` holds a `History` the way the orchestrator does: an engine's Describe goes through the
protobuf contract (`encode_view_spec` / `parse_declaration`), every batch goes through
`History.append` (windows + views) and the engine's output through `History.calibrate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sentinel.orchestrator.calibration import CalibrationParams
from sentinel.orchestrator.combine import EngineVotes
from sentinel.orchestrator.history import History
from sentinel.orchestrator.specialist_pool import parse_declaration
from sentinel.orchestrator.windows import WindowStore
from sentinel.specialists.codec import (
    encode_channel_spec,
    encode_row_columns,
    encode_view_spec,
)
from sentinel.specialists.engine import Engine, ScoreInput

from sentinel.v1 import specialist_pb2

NANOS = 1_000_000_000
FIVE_MINUTES = 300 * NANOS
DAY = 288  # readings per day at 5-minute sampling
START = 1_700_000_000 * NANOS

# The likelihood stage as issue 8 describes it (the defaults today), spelled out so that tests of
# engines on constructed signals do not move when the defaults are tuned.
CALIBRATION = CalibrationParams(
    average=10,
    refit_every=100,
    blocks=40,
    min_history=150,
    variance_floor=1e-4,
    standardize_after=30,
    standardize_min_step=0.002,
)


def stamps(n: int, step: int = FIVE_MINUTES, start: int = START) -> np.ndarray:
    return start + step * np.arange(n, dtype=np.int64)


def noise(n: int, seed: int = 0, level: float = 50.0, sd: float = 1.0) -> np.ndarray:
    return level + sd * np.random.default_rng(seed).standard_normal(n)


def daily_pattern(days: int, seed: int = 0, amplitude: float = 10.0, sd: float = 0.5) -> np.ndarray:
    """A sine with a 24 h period at 5-minute sampling, plus noise."""
    n = days * DAY
    phase = 2 * np.pi * np.arange(n) / DAY
    return 50.0 + amplitude * np.sin(phase) + noise(n, seed, 0.0, sd)


def quantised(n: int, seed: int = 0, level: int = 10, p_up: float = 0.1) -> np.ndarray:
    """Integer readings: `level` most of the time, `level + 1` now and then (MAD 0)."""
    rng = np.random.default_rng(seed)
    return (level + (rng.random(n) < p_up)).astype(np.float64)


@dataclass
class Scored:
    """Every row's engine output and calibrated vote, concatenated over the batches."""

    scores: np.ndarray
    anomalies: np.ndarray  # the engine's own flags
    reasons: list[str]  # per row, "" where there is none
    warming_up: np.ndarray  # the engine's own
    channels: dict[str, np.ndarray]
    flagged: np.ndarray  # after calibration (engine flag or a likelihood below threshold)
    likelihood: np.ndarray  # lowest calibrated likelihood per row (1 where none)
    judged: np.ndarray  # not warming up after calibration


def declare(history: History, engine: Engine) -> None:
    info = specialist_pb2.DescribeResponse(
        engine=engine.name,
        engine_version=engine.version,
        window_length=engine.window_length,
        views=[encode_view_spec(v) for v in engine.views],
        channels=[encode_channel_spec(c) for c in engine.channels],
        row_columns=encode_row_columns(engine.row_columns),
    )
    declaration = parse_declaration(info)
    history.check(engine.name, declaration)
    history.declare(engine.name, declaration)


class Bench:
    def __init__(self, *engines: Engine, max_sensors: int = 16, **history_options) -> None:
        self.engines = engines
        history_options.setdefault("calibration", CALIBRATION)
        self.history = History(WindowStore(0, max_sensors), **history_options)
        for engine in engines:
            declare(self.history, engine)

    def feed(self, sensor_ids, values: np.ndarray, timestamps: np.ndarray) -> dict[str, Scored]:
        """One batch: append to the history, score on every engine, calibrate."""
        sensor_ids = list(sensor_ids)
        values = np.asarray(values, dtype=np.float64)
        stored, views = self.history.append(sensor_ids, values, timestamps)
        votes, outputs = [], {}
        for engine in self.engines:
            length = engine.window_length
            windows = stored.windows[:, stored.windows.shape[1] - length :]
            out = engine.score(
                ScoreInput(
                    values=values,
                    windows=windows,
                    window_fill=np.minimum(stored.fill, length),
                    views=self.history.views_for(engine.name, views),
                    sensors=stored.sensors,
                    sensor_index=stored.group,
                    timestamps=np.asarray(timestamps, dtype=np.int64),
                )
            )
            outputs[engine.name] = out
            votes.append(
                EngineVotes(
                    engine.name, engine.version, out.scores, out.anomalies, out.warming_up,
                    out.reasons, dict(out.channels),
                )
            )  # fmt: skip
        calibrated = self.history.calibrate(stored, votes)
        result = {}
        for vote in calibrated:
            out = outputs[vote.name]
            result[vote.name] = Scored(
                scores=np.asarray(out.scores),
                anomalies=np.asarray(out.anomalies),
                reasons=[vote.reasons.get(row, "") for row in range(len(values))],
                warming_up=np.asarray(out.warming_up),
                channels={k: np.asarray(v) for k, v in out.channels.items()},
                flagged=np.asarray(vote.anomalies),
                likelihood=(
                    np.ones(len(values)) if vote.likelihood is None else np.asarray(vote.likelihood)
                ),
                judged=~np.asarray(vote.warming_up),
            )
        return result

    def run(
        self,
        values: np.ndarray,
        timestamps: np.ndarray | None = None,
        sensor: str = "s",
        batch: int = 500,
    ) -> dict[str, Scored]:
        """A whole series of one sensor, in batches of `batch` readings."""
        values = np.asarray(values, dtype=np.float64)
        timestamps = stamps(len(values)) if timestamps is None else timestamps
        parts = [
            self.feed([sensor] * len(values[i : i + batch]), values[i : i + batch],
                      timestamps[i : i + batch])
            for i in range(0, len(values), batch)
        ]  # fmt: skip
        return {name: concat([p[name] for p in parts]) for name in parts[0]}


def concat(parts: list[Scored]) -> Scored:
    return Scored(
        scores=np.concatenate([p.scores for p in parts]),
        anomalies=np.concatenate([p.anomalies for p in parts]),
        reasons=[r for p in parts for r in p.reasons],
        warming_up=np.concatenate([p.warming_up for p in parts]),
        channels={
            name: np.concatenate([p.channels[name] for p in parts]) for name in parts[0].channels
        },
        flagged=np.concatenate([p.flagged for p in parts]),
        likelihood=np.concatenate([p.likelihood for p in parts]),
        judged=np.concatenate([p.judged for p in parts]),
    )

"""The transport-free engine contract every specialist implements.

An engine is a pure function of a columnar batch: the servicer decodes a ScoreRequest into a
`ScoreInput`, calls `Engine.score`, and encodes the `ScoreOutput`. Engines never see gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class RangeViewSpec:
    """[max, min, count] over about the last `readings` values (blocks of `block`)."""

    name: str
    readings: int
    block: int


@dataclass(frozen=True, slots=True)
class SeasonalViewSpec:
    """[the `smoothing`-reading moving average about `period_seconds` before the row]."""

    name: str
    period_seconds: float
    bucket_seconds: float
    smoothing: int
    tolerance_buckets: int


ViewSpec = RangeViewSpec | SeasonalViewSpec


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A raw score per row that the orchestrator calibrates per sensor into a likelihood.

    `standardize`: the value is an unscaled residual (standardise it against the sensor's own
    running median/deviation first); otherwise it is already z-like. `flag_below`: default
    likelihood threshold."""

    name: str
    standardize: bool
    flag_below: float


class RowColumn(Enum):
    """A per-row column an engine may read besides values, windows and views. The orchestrator
    sends an engine only the ones it declares (`Engine.row_columns`)."""

    SENSOR_IDS = "sensor ids"
    TIMESTAMPS = "timestamps"


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """Row i is (values[i], windows[i], window_fill[i]) plus row i of every view the engine
    declared, and of the row columns it declared: sensor sensors[sensor_index[i]] and
    timestamps[i]. A column that was not sent is None."""

    values: np.ndarray  # float64 [rows]
    windows: np.ndarray  # float [rows, window_length], oldest first, NaN where unfilled
    window_fill: np.ndarray  # int64 [rows], valid trailing positions of each window row
    views: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> [rows, width]
    # Each distinct sensor id once, and row i's position in it: engines that work per sensor
    # (threshold's rules) do so once per sensor, not once per row.
    sensors: Sequence[str] | None = None
    sensor_index: np.ndarray | None = None  # int64 [rows]
    timestamps: np.ndarray | None = None  # int64 [rows], Unix nanoseconds

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def has(self, column: RowColumn) -> bool:
        """Whether the request carried `column`."""
        if column is RowColumn.SENSOR_IDS:
            return self.sensors is not None and self.sensor_index is not None
        return self.timestamps is not None


@dataclass(frozen=True, slots=True)
class ScoreOutput:
    scores: np.ndarray  # float64 [rows] in [0, 1]
    anomalies: np.ndarray  # bool [rows]
    # Why a row was flagged, by row; rows with nothing to explain have no entry (most rows:
    # they are neither built nor sent).
    reasons: Mapping[int, str]
    warming_up: np.ndarray  # bool [rows]; such rows carry no vote
    channels: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> float64 [rows]

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if not (self.anomalies.shape[0] == n == self.warming_up.shape[0]):
            raise ValueError("ScoreOutput columns must have one entry per row")
        if self.reasons and not (0 <= min(self.reasons) and max(self.reasons) < n):
            raise ValueError("ScoreOutput reasons must be keyed by rows of the batch")
        if any(column.shape[0] != n for column in self.channels.values()):
            raise ValueError("ScoreOutput channels must have one entry per row")


@runtime_checkable
class Engine(Protocol):
    """What a detection engine provides. `window_length` = past values needed per row."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def window_length(self) -> int: ...

    @property
    def views(self) -> Sequence[ViewSpec]: ...

    @property
    def channels(self) -> Sequence[ChannelSpec]: ...

    @property
    def row_columns(self) -> frozenset[RowColumn]:
        """The row columns `score` reads (empty: none); no others are sent."""
        ...

    def parameters(self) -> Mapping[str, str]: ...

    def score(self, batch: ScoreInput) -> ScoreOutput: ...


class VersionTagged:
    """An engine whose reported version carries a tag (`version+tag`): the same engine code
    with other settings is then a version of its own in Describe, Score and every metric."""

    def __init__(self, engine: Engine, tag: str) -> None:
        self._engine = engine
        self.version = f"{engine.version}+{tag}"

    @property
    def name(self) -> str:
        return self._engine.name

    @property
    def window_length(self) -> int:
        return self._engine.window_length

    @property
    def views(self) -> Sequence[ViewSpec]:
        return self._engine.views

    @property
    def channels(self) -> Sequence[ChannelSpec]:
        return self._engine.channels

    @property
    def row_columns(self) -> frozenset[RowColumn]:
        return self._engine.row_columns

    def parameters(self) -> Mapping[str, str]:
        return self._engine.parameters()

    def score(self, batch: ScoreInput) -> ScoreOutput:
        return self._engine.score(batch)


def ratio_score(magnitude: np.ndarray, cutoff: float) -> np.ndarray:
    """Map a non-negative magnitude to [0, 1) so that `cutoff` lands exactly on 0.5.

    m / (m + cutoff) is monotone, needs no tuning constant beyond the cut-off the engine
    already has, and keeps scores of different engines comparable around their decision line.
    """
    m = np.nan_to_num(np.abs(magnitude), nan=0.0, posinf=np.finfo(np.float64).max)
    with np.errstate(over="ignore", invalid="ignore"):
        out = m / (m + cutoff)
    return np.where(np.isfinite(out), out, 1.0)


def full_window_mask(batch: ScoreInput, needed: int) -> np.ndarray:
    """True for rows whose window holds at least `needed` valid values."""
    return batch.window_fill >= needed

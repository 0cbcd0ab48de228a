"""Long-range history views kept per sensor, beside the raw windows.

Engines declare views in `Describe` (see `ViewSpec` in specialist.proto); the orchestrator keeps
each one per sensor in a few hundred bytes and ships every row's view values in `Score`
requests, so the engines stay pure functions of their request. Each view advances reading by
reading: a batch is walked in steps where each sensor appears once (`BatchWindows.steps`), and
each step is numpy over all sensors in it. A row's values describe the history *before* it.

- `RangeView`: max/min of the last `blocks` complete blocks of `block` readings plus the
  current partial block; row = [max, min, count covered].
- `SeasonalView`: a ring of time buckets holding the last moving average of each bucket; row =
  [the average about one period before the row] (nearest non-empty bucket within a tolerance).
  Time that goes backwards (out-of-order readings) is taken as the latest time seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .windows import BatchWindows

NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RangeSpec:
    readings: int
    block: int

    @property
    def blocks(self) -> int:
        return math.ceil(self.readings / self.block)

    @property
    def bytes_per_sensor(self) -> int:
        # float32 max/min per block, of the complete blocks, of the partial block; counters.
        return self.blocks * 8 + 8 + 8 + 8

    @property
    def width(self) -> int:
        return 3


@dataclass(frozen=True, slots=True)
class SeasonalSpec:
    period_seconds: float
    bucket_seconds: float
    smoothing: int
    tolerance: int

    @property
    def lag(self) -> int:
        """Buckets in one period."""
        return max(1, round(self.period_seconds / self.bucket_seconds))

    @property
    def buckets(self) -> int:
        # Buckets k-lag-tolerance .. k must all be in the ring at once.
        return self.lag + self.tolerance + 1

    @property
    def bytes_per_sensor(self) -> int:
        return self.buckets * 4 + 8

    @property
    def width(self) -> int:
        return 1


ViewSpecLike = RangeSpec | SeasonalSpec


class RangeView:
    def __init__(self, spec: RangeSpec) -> None:
        self.spec = spec
        k = spec.blocks
        self._max = np.full((0, k), np.nan, np.float32)
        self._min = np.full((0, k), np.nan, np.float32)
        self._part_max = np.full(0, np.nan, np.float32)
        self._part_min = np.full(0, np.nan, np.float32)
        self._part_n = np.zeros(0, np.int16)
        self._position = np.zeros(0, np.int16)  # ring slot the next complete block goes to
        self._complete = np.zeros(0, np.int32)  # complete blocks seen (saturates at blocks)
        # max/min over the complete blocks, refreshed when a block completes (not per reading).
        self._blocks_max = np.full(0, np.nan, np.float32)
        self._blocks_min = np.full(0, np.nan, np.float32)

    def grow(self, capacity: int) -> None:
        old = self._part_n.shape[0]
        if capacity <= old:
            return
        extra = capacity - old
        k = self.spec.blocks
        self._max = np.concatenate([self._max, np.full((extra, k), np.nan, np.float32)])
        self._min = np.concatenate([self._min, np.full((extra, k), np.nan, np.float32)])
        self._part_max = np.concatenate([self._part_max, np.full(extra, np.nan, np.float32)])
        self._part_min = np.concatenate([self._part_min, np.full(extra, np.nan, np.float32)])
        self._part_n = np.concatenate([self._part_n, np.zeros(extra, np.int16)])
        self._position = np.concatenate([self._position, np.zeros(extra, np.int16)])
        self._complete = np.concatenate([self._complete, np.zeros(extra, np.int32)])
        self._blocks_max = np.concatenate([self._blocks_max, np.full(extra, np.nan, np.float32)])
        self._blocks_min = np.concatenate([self._blocks_min, np.full(extra, np.nan, np.float32)])

    def reset(self, slots: np.ndarray) -> None:
        self._max[slots] = np.nan
        self._min[slots] = np.nan
        self._part_max[slots] = np.nan
        self._part_min[slots] = np.nan
        self._part_n[slots] = 0
        self._position[slots] = 0
        self._complete[slots] = 0
        self._blocks_max[slots] = np.nan
        self._blocks_min[slots] = np.nan

    def step(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """[rows, 3] = (max, min, count) before these values; then the values are added."""
        spec = self.spec
        high = np.fmax(self._blocks_max[slots], self._part_max[slots])
        low = np.fmin(self._blocks_min[slots], self._part_min[slots])
        count = self._complete[slots].astype(np.float64) * spec.block + self._part_n[slots]
        out = np.column_stack([high, low, count])

        x = values.astype(np.float32)
        self._part_max[slots] = np.fmax(self._part_max[slots], x)
        self._part_min[slots] = np.fmin(self._part_min[slots], x)
        self._part_n[slots] += 1
        done = slots[self._part_n[slots] >= spec.block]
        if done.size:
            position = self._position[done].astype(np.int64)
            self._max[done, position] = self._part_max[done]
            self._min[done, position] = self._part_min[done]
            self._position[done] = (position + 1) % spec.blocks
            self._complete[done] = np.minimum(self._complete[done] + 1, spec.blocks)
            self._part_max[done] = np.nan
            self._part_min[done] = np.nan
            self._part_n[done] = 0
            self._blocks_max[done] = np.fmax.reduce(self._max[done], axis=1)
            self._blocks_min[done] = np.fmin.reduce(self._min[done], axis=1)
        return out


class SeasonalView:
    def __init__(self, spec: SeasonalSpec) -> None:
        self.spec = spec
        self._ring = np.full((0, spec.buckets), np.nan, np.float32)
        self._last = np.full(0, np.iinfo(np.int64).min, np.int64)  # latest bucket number seen
        # Search order around one period back: 0, -1, +1, -2, +2, ...
        tolerance = spec.tolerance
        offsets = [0]
        for d in range(1, tolerance + 1):
            offsets += [-d, d]
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._bucket_nanos = int(spec.bucket_seconds * NANOS)

    def grow(self, capacity: int) -> None:
        old = self._last.shape[0]
        if capacity <= old:
            return
        extra = capacity - old
        self._ring = np.concatenate(
            [self._ring, np.full((extra, self.spec.buckets), np.nan, np.float32)]
        )
        self._last = np.concatenate([self._last, np.full(extra, np.iinfo(np.int64).min)])

    def reset(self, slots: np.ndarray) -> None:
        self._ring[slots] = np.nan
        self._last[slots] = np.iinfo(np.int64).min

    def step(self, slots: np.ndarray, timestamps: np.ndarray, averages: np.ndarray) -> np.ndarray:
        """[rows, 1] = the average about one period before each row; then each row's own
        moving average is stored in its bucket."""
        spec = self.spec
        size = spec.buckets
        bucket = timestamps // self._bucket_nanos
        last = self._last[slots]
        fresh = last == np.iinfo(np.int64).min
        bucket = np.where(fresh, bucket, np.maximum(bucket, last))
        # Buckets between the latest seen and this one had no reading: empty them.
        gap = np.where(fresh, 0, np.minimum(bucket - last, size))
        one = gap == 1
        if one.any():
            self._ring[slots[one], bucket[one] % size] = np.nan
        whole = gap >= size  # a day or more without readings: the whole ring is stale
        if whole.any():
            self._ring[slots[whole]] = np.nan
        many = (gap > 1) & ~whole
        if many.any():
            rows = np.flatnonzero(many)
            span = np.arange(size)
            clear = span[None, :] < gap[rows, None]
            positions = (last[rows, None] + 1 + span[None, :]) % size
            r, c = np.nonzero(clear)
            self._ring[slots[rows[r]], positions[r, c]] = np.nan
        self._last[slots] = bucket

        candidates = (bucket[:, None] - spec.lag + self._offsets[None, :]) % size
        found = self._ring[slots[:, None], candidates]
        present = ~np.isnan(found)
        first = present.argmax(axis=1)
        reference = found[np.arange(found.shape[0]), first].astype(np.float64)
        reference[~present.any(axis=1)] = np.nan

        self._ring[slots, bucket % size] = averages.astype(np.float32)
        return reference[:, None]


class HistoryViews:
    """The views the described engines ask for, by name; attached to a window store."""

    def __init__(self) -> None:
        self.views: dict[str, RangeView | SeasonalView] = {}

    def bytes_per_sensor(self) -> int:
        return sum(v.spec.bytes_per_sensor for v in self.views.values())

    def update(
        self,
        stored: BatchWindows,
        values: np.ndarray,
        timestamps: np.ndarray,
        steps: Sequence[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every view's [rows, width] values for the batch, advancing the views past it."""
        rows = values.shape[0]
        out = {n: np.empty((rows, v.spec.width)) for n, v in self.views.items()}
        if not self.views or rows == 0:
            return out
        averages = {
            v.spec.smoothing: _moving_averages(stored, values, v.spec.smoothing)
            for v in self.views.values()
            if isinstance(v, SeasonalView)
        }
        for step in stored.steps() if steps is None else steps:
            slots = stored.slots[step]
            for name, view in self.views.items():
                if isinstance(view, RangeView):
                    out[name][step] = view.step(slots, values[step])
                else:
                    average = averages[view.spec.smoothing][step]
                    out[name][step] = view.step(slots, timestamps[step], average)
        return out


def _moving_averages(stored: BatchWindows, values: np.ndarray, smoothing: int) -> np.ndarray:
    """Mean of each row's value and up to smoothing-1 values before it."""
    previous = max(0, min(smoothing - 1, stored.windows.shape[1]))
    if previous == 0:
        return values.astype(np.float64)
    tail = stored.windows[:, stored.windows.shape[1] - previous :].astype(np.float64)
    valid = np.minimum(stored.fill, previous)
    total = np.nansum(tail, axis=1) + values
    return total / (valid + 1)

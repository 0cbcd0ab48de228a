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

`HistoryViews.update` advances each view past a whole batch at once (`run`), with the same
values as walking the steps (`step`); a view falls back to the steps only when the batch is so
lopsided that the all-at-once arrays would be much larger than the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .windows import BatchWindows

NANOS = 1_000_000_000
INT64_MIN = np.iinfo(np.int64).min
# All-at-once arrays beyond this many cells (and beyond a few per row) fall back to the steps.
_DENSE_CELLS = 1 << 16


@dataclass(frozen=True, slots=True)
class _Batch:
    """A batch grouped by sensor: row i is reading rank[i] of the batch's sensor group[i]."""

    group: np.ndarray  # int64 [rows]
    rank: np.ndarray  # int64 [rows]
    slots: np.ndarray  # int64 [sensors], each sensor's slot
    counts: np.ndarray  # int64 [sensors], readings per sensor

    @classmethod
    def of(cls, stored: BatchWindows) -> _Batch:
        return cls(stored.group, stored.rank, stored.sensor_slots, stored.counts)

    def dense_ok(self, cells: int) -> bool:
        return cells <= max(_DENSE_CELLS, 8 * self.rank.shape[0])


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
    # Per-sensor state: arrays whose first axis is the window store's slot (checkpointed).
    SLOT_FIELDS = (
        "_max", "_min", "_part_max", "_part_min", "_part_n", "_position", "_complete",
        "_blocks_max", "_blocks_min",
    )  # fmt: skip

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

    def run(self, batch: _Batch, values: np.ndarray) -> np.ndarray | None:
        """`step` over the whole batch at once: [rows, 3] for every row (the same values as
        walking the steps), then the state past the batch; None (nothing changed) if the
        batch is too lopsided for it."""
        block, blocks = self.spec.block, self.spec.blocks
        g, r, su, n = batch.group, batch.rank, batch.slots, batch.counts
        sensors = su.shape[0]
        start = self._part_n[su].astype(np.int64)  # readings already in the partial block
        end = start + n
        completed = end // block  # blocks completed within the batch, per sensor
        total = int(completed.sum())
        width = int(-(-int(end.max()) // block)) * block
        if not (batch.dense_ok(sensors * width) and batch.dense_ok(total * blocks)):
            return None
        position = start[g] + r  # of each row in its sensor's run of blocks
        x = values.astype(np.float32)
        first = np.flatnonzero(r == 0)
        head = g[first]
        part_max0, part_min0 = self._part_max[su], self._part_min[su]

        def scan(fold, part0):
            # dense[u, p]: partial-block extreme after reading p of sensor u (block by block).
            dense = np.full((sensors, width), np.nan, np.float32)
            dense[g, position] = x
            dense[head, start[head]] = fold(part0[head], x[first])
            dense = fold.accumulate(dense.reshape(sensors, -1, block), axis=2)
            return dense.reshape(sensors, width)

        acc_max, acc_min = scan(np.fmax, part_max0), scan(np.fmin, part_min0)

        # The ring after each block completed in the batch (j-th of sensor u), oldest first.
        owner = np.repeat(np.arange(sensors), completed)
        offsets = np.cumsum(completed) - completed
        nth = np.arange(total) - offsets[owner]
        position0 = self._position[su].astype(np.int64)
        ring_slot = np.arange(blocks)
        back = (position0[owner, None] + nth[:, None] - ring_slot[None, :]) % blocks
        writer = nth[:, None] - back  # the completion that last wrote each ring slot, or < 0
        newer = writer >= 0
        # Where each ring slot's block ended in the batch, as a flat index into acc.
        block_end = np.maximum(writer, 0) * block + (block - 1) + (owner * width)[:, None]
        owner_slot = su[owner]

        def rings(acc, ring0):
            return np.where(newer, acc.reshape(-1).take(block_end), ring0.take(owner_slot, axis=0))

        rings_max, rings_min = rings(acc_max, self._max), rings(acc_min, self._min)
        after_max = np.fmax.reduce(rings_max, axis=1)
        after_min = np.fmin.reduce(rings_min, axis=1)

        # Each row's state before it.
        done = position // block  # blocks completed before the row, within the batch
        inner = position % block
        prev = np.maximum(position - 1, 0)
        part_max = np.where(inner == 0, np.float32(np.nan), acc_max[g, prev])
        part_min = np.where(inner == 0, np.float32(np.nan), acc_min[g, prev])
        part_max[first] = part_max0[head]
        part_min[first] = part_min0[head]
        blocks_max, blocks_min = self._blocks_max[su][g], self._blocks_min[su][g]
        later = np.flatnonzero(done > 0)
        index = offsets[g[later]] + done[later] - 1
        blocks_max[later] = after_max[index]
        blocks_min[later] = after_min[index]
        complete = np.minimum(self._complete[su][g].astype(np.int64) + done, blocks)
        out = np.empty((r.shape[0], 3))
        out[:, 0] = np.fmax(blocks_max, part_max)
        out[:, 1] = np.fmin(blocks_min, part_min)
        out[:, 2] = complete.astype(np.float64) * block + inner

        # The state past the batch.
        last = end - 1
        open_ = end % block != 0
        self._part_max[su] = np.where(open_, acc_max[np.arange(sensors), last], np.nan)
        self._part_min[su] = np.where(open_, acc_min[np.arange(sensors), last], np.nan)
        self._part_n[su] = (end % block).astype(np.int16)
        moved = np.flatnonzero(completed > 0)
        if moved.size:
            final = offsets[moved] + completed[moved] - 1
            where = su[moved]
            self._max[where] = rings_max[final]
            self._min[where] = rings_min[final]
            self._blocks_max[where] = after_max[final]
            self._blocks_min[where] = after_min[final]
            self._position[where] = ((position0[moved] + completed[moved]) % blocks).astype(
                np.int16
            )
            self._complete[where] = np.minimum(
                self._complete[where].astype(np.int64) + completed[moved], blocks
            ).astype(np.int32)
        return out


class SeasonalView:
    # Per-sensor state: arrays whose first axis is the window store's slot (checkpointed).
    SLOT_FIELDS = ("_ring", "_last")

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

    def run(self, batch: _Batch, timestamps: np.ndarray, averages: np.ndarray) -> np.ndarray | None:
        """`step` over the whole batch at once: [rows, 1] for every row (the same values as
        walking the steps), then the state past the batch; None (nothing changed) if the
        batch is too lopsided for it.

        After a reading in bucket b, ring slot m % size holds bucket m for m in (b - size, b]:
        the average of the latest reading in bucket m, NaN if none (entering a bucket empties
        it). So a lookup of bucket m is the latest earlier reading of the batch in bucket m, or
        else what the ring held before the batch if m is no later than the batch's start."""
        spec = self.spec
        size = spec.buckets
        g, r, su, n = batch.group, batch.rank, batch.slots, batch.counts
        sensors, rows = su.shape[0], r.shape[0]
        deepest = int(n.max())
        if not batch.dense_ok(sensors * (deepest + 1)):
            return None
        last0 = self._last[su]
        # bucket[i] = the latest bucket seen up to row i (time never goes back).
        dense = np.full((sensors, deepest + 1), INT64_MIN, np.int64)
        dense[:, 0] = last0
        dense[g, r + 1] = timestamps // self._bucket_nanos
        dense = np.maximum.accumulate(dense, axis=1)
        bucket = dense[g, r + 1]
        base = dense[:, 1]  # each sensor's first bucket of the batch
        top = dense[np.arange(sensors), n]  # and its last
        span = top - base
        if float(span.max()) * sensors > 2.0**61:
            return None
        # The rows sorted by sensor then rank, keyed so that one searchsorted finds, for any
        # bucket m >= base of a sensor, how many of its readings lie in buckets <= m.
        order = np.argsort(g, kind="stable")
        stride = int(span.max()) + 1
        keys = g[order] * stride + (bucket[order] - base[g[order]])
        begin = np.cumsum(n) - n
        stored = averages.astype(np.float32)[order]
        sorted_bucket = bucket[order]

        def settle(value: np.ndarray, u: np.ndarray, before: np.ndarray, m: np.ndarray) -> None:
            """value (float32, what the ring held at m % size before the batch) becomes bucket
            m of sensor u as seen just before its reading of rank `before` (u and before
            broadcast to m's shape); m lies in (that reading's bucket - size, bucket]."""
            value[m > last0[u]] = np.nan  # entered (so emptied) during the batch, or fresh
            inside = np.nonzero(m >= base[u])
            if inside[0].size == 0:
                return
            uu = np.broadcast_to(u, m.shape)[inside]
            mm = m[inside]
            k = np.searchsorted(keys, uu * stride + (mm - base[uu]), side="right")
            count = np.minimum(k - begin[uu], np.broadcast_to(before, m.shape)[inside])
            at = begin[uu] + np.maximum(count - 1, 0)
            hit = (count > 0) & (sorted_bucket[at] == mm)
            value[tuple(i[hit] for i in inside)] = stored[at[hit]]

        # Candidate buckets around one period back, nearest first, as in `step`.
        back = (spec.lag - self._offsets) % size
        candidates = bucket[:, None] - back[None, :]
        # One flat gather: cheaper than a 2-D fancy index.
        at = candidates % size
        at += (su[g] * size)[:, None]
        found = _flat(self._ring).take(at)
        # Only rows whose candidates reach the latest bucket before the batch can see one the
        # batch changed; in a steady stream one period back is long settled, so none do.
        near = np.flatnonzero(bucket - int(back.min()) >= last0[g])
        if near.size:
            changed = found[near]
            settle(changed, g[near, None], r[near, None], candidates[near])
            found[near] = changed
        present = ~np.isnan(found)
        first = present.argmax(axis=1)
        reference = found[np.arange(rows), first].astype(np.float64)
        reference[~present.any(axis=1)] = np.nan

        # The state past the batch: the buckets entered during it (after the latest before,
        # within the ring's reach of the last one) are emptied, then each bucket written
        # during it holds its latest reading's average; the other slots keep what they held.
        entered = np.maximum(last0, top - size) + 1  # first bucket entered, per sensor
        width = int((top - entered).max()) + 1
        ring = _flat(self._ring)  # one flat index is cheaper than a 2-D fancy index
        if width > 0:
            emptied = entered[:, None] + np.arange(width)[None, :]
            kept = emptied <= top[:, None]
            emptied %= size
            emptied += (su * size)[:, None]
            ring[emptied[kept]] = np.nan
        # Each (sensor, bucket)'s latest reading (buckets never go back within a sensor), if
        # the bucket is still within the ring's reach.
        sorted_group = g[order]
        latest = np.empty(rows, dtype=bool)
        latest[-1] = True
        np.not_equal(sorted_group[1:], sorted_group[:-1], out=latest[:-1])
        latest[:-1] |= sorted_bucket[1:] != sorted_bucket[:-1]
        latest &= sorted_bucket > top[sorted_group] - size
        kept = np.flatnonzero(latest)
        ring[su[sorted_group[kept]] * size + sorted_bucket[kept] % size] = stored[kept]
        self._last[su] = top
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
        batch = _Batch.of(stored)
        stepped: dict[str, RangeView | SeasonalView] = {}
        for name, view in self.views.items():
            if isinstance(view, RangeView):
                done = view.run(batch, values)
            else:
                done = view.run(batch, timestamps, averages[view.spec.smoothing])
            if done is None:
                stepped[name] = view
            else:
                out[name][:] = done
        if stepped:
            # `steps`, if given, must be `stored.steps()`.
            for step in stored.steps() if steps is None else steps:
                slots = stored.slots[step]
                for name, view in stepped.items():
                    if isinstance(view, RangeView):
                        out[name][step] = view.step(slots, values[step])
                    else:
                        average = averages[view.spec.smoothing][step]
                        out[name][step] = view.step(slots, timestamps[step], average)
        return out


def _flat(array: np.ndarray) -> np.ndarray:
    """A 1-D view of a C-contiguous array (state arrays are allocated whole)."""
    flat = array.reshape(-1)
    if not np.may_share_memory(flat, array):  # writes through a copy would be lost
        raise ValueError("expected a C-contiguous array")
    return flat


def _moving_averages(stored: BatchWindows, values: np.ndarray, smoothing: int) -> np.ndarray:
    """Mean of each row's value and up to smoothing-1 values before it."""
    previous = max(0, min(smoothing - 1, stored.windows.shape[1]))
    if previous == 0:
        return values.astype(np.float64)
    tail = stored.windows[:, stored.windows.shape[1] - previous :].astype(np.float64)
    valid = np.minimum(stored.fill, previous)
    total = np.nansum(tail, axis=1) + values
    return total / (valid + 1)

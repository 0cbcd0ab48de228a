"""Anomaly likelihood: raw engine scores → tail probabilities against each sensor's own past.

A `CalibrationBank` keeps, per sensor and (specialist, channel), O(1) state (a few hundred
bytes) in arrays indexed by the window store's slots:

1. optionally (`standardize`) a running median m and mean absolute deviation a of the raw
   value e, updated with step g = max(1/j, g_min) (j = values seen): a += g(|e - m| - a),
   m += g * 1.2533 * a * sign(e - m); z = (e - m) / max(1.2533 a, 1e-9, 1e-6 |m|) once
   `standardize_after` values were seen (the engine's raw value is used as z otherwise);
2. avg = mean |z| over the sensor's last `average` readings;
3. every `refit_every` readings, the mean and variance (floored) of avg over the last
   `blocks` × `refit_every` readings are refitted from per-block sums;
4. q = ½ erfc((avg - mean) / √(2 var)) once `min_history` readings were calibrated and avg
   is above the mean; else 1.

This is the step behind Numenta HTM's jump from 53.6 to 70.1 on NAB: an engine's score is
judged against what that engine usually says about that sensor, not against a global cut-off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MEAN_ABS_TO_SIGMA = 1.2533
# Zero-padded per-run arrays up to this many cells (and a few per reading); sorted beyond.
_DENSE_CELLS = 1 << 16
_DENSE_PER_READING = 4


@dataclass(frozen=True, slots=True)
class CalibrationParams:
    average: int = 10
    refit_every: int = 100
    blocks: int = 40
    min_history: int = 150
    variance_floor: float = 1e-4
    standardize_after: int = 30
    standardize_min_step: float = 0.002
    # False: skip steps 2-4 and take q = P(|N(0,1)| > |z|) of the single reading (an ablation:
    # what the likelihood stage is worth).
    likelihood: bool = True
    max_abs_z: float = 100.0

    @property
    def cycle(self) -> int:
        """Readings after which ring, refit and block positions repeat."""
        return math.lcm(self.average, self.refit_every * self.blocks)

    @property
    def bytes_per_channel(self) -> int:
        """Per sensor and channel, whether standardised or not."""
        # float32 ring of |z|, block sums and sums of squares, running sums and fit; int32
        # count; the standardisation's float32 median/deviation and int32 count (a bank keeps
        # these for every channel, used by the standardised ones).
        return 4 * self.average + 8 * self.blocks + 8 + 8 + 4 + 12


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, relative error < 1.2e-7 everywhere (Numerical Recipes'
    Chebyshev fit), so tail probabilities stay accurate far into the tail."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    # The fit's polynomial in t by Horner's rule, updated in place: the same operations as
    # the nested expression, without a temporary per term.
    poly = t * 0.17087277
    for coefficient in (
        -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
        1.00002368,
    ):  # fmt: skip
        poly += coefficient
        poly *= t
    poly += -1.26551223
    poly -= z * z  # the exponent, -z² + poly
    with np.errstate(under="ignore"):
        r = np.exp(poly)
    r *= t
    return np.where(x >= 0, r, 2.0 - r)


def tail_probability(avg: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """P(X > avg) for X ~ N(mean, var), one-sided."""
    return 0.5 * erfc((avg - mean) / np.sqrt(2.0 * var))


@dataclass(slots=True)
class StepStats:
    """Per (row, channel): the recent mean |z| and the fit it is judged against."""

    average: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    ready: np.ndarray  # bool: calibrated (enough history and a fit)
    single_z: np.ndarray  # |z| of the reading alone (likelihood stage switched off)

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> StepStats:
        nan = np.full(shape, np.nan)
        return cls(nan, nan.copy(), nan.copy(), np.zeros(shape, dtype=bool), nan.copy())

    def likelihood(self) -> np.ndarray:
        q = np.where(self.ready, 1.0, np.nan)
        hot = self.ready & (self.average > self.mean)
        if hot.any():
            q[hot] = tail_probability(self.average[hot], self.mean[hot], self.variance[hot])
        single = np.isfinite(self.single_z)
        if single.any():
            q[single] = erfc(self.single_z[single] / np.sqrt(2.0))
        return q


@dataclass(frozen=True, slots=True)
class SensorRuns:
    """A batch's rows grouped by sensor, each sensor's in reading order: sensor u (of the
    batch) has slot slots[u] and the sorted rows starts[u] up to starts[u + 1]."""

    rows: np.ndarray  # row indices, by sensor then reading
    group: np.ndarray  # the sensor of each sorted row (non-decreasing)
    rank: np.ndarray  # the reading number of each sorted row within the batch
    starts: np.ndarray  # first sorted row of each sensor
    slots: np.ndarray  # slot of each sensor

    @classmethod
    def from_steps(cls, slots: np.ndarray, steps: Sequence[np.ndarray]) -> SensorRuns:
        """From steps (row indices, each slot at most once per step, in reading order)."""
        steps = [np.asarray(s, dtype=np.int64) for s in steps]
        covered = np.concatenate(steps) if steps else np.zeros(0, np.int64)
        if covered.size == 0:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, empty, empty)
        # The covered rows in reading order per slot: sorted by slot, then step.
        step_of = np.repeat(np.arange(len(steps), dtype=np.int64), [s.size for s in steps])
        at = slots[covered].astype(np.int64)
        order = np.lexsort((step_of, at))
        rows = covered[order]
        at = at[order]
        new = np.empty(rows.size, dtype=bool)
        new[0] = True
        np.not_equal(at[1:], at[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        group = np.cumsum(new) - 1  # batch-local sensor of each sorted row
        rank = np.arange(rows.size) - starts[group]  # its reading number within the batch
        return cls(rows, group, rank, starts, at[starts])

    @classmethod
    def grouped(
        cls,
        order: np.ndarray,
        group: np.ndarray,
        rank: np.ndarray,
        counts: np.ndarray,
        sensor_slots: np.ndarray,
    ) -> SensorRuns:
        """From a grouping by sensor that is known already: `order` (rows by sensor then
        reading), each row's sensor and rank, readings and slot per sensor."""
        return cls(order, group[order], rank[order], np.cumsum(counts) - counts, sensor_slots)


def _rows(array: np.ndarray, leading: int = 1) -> np.ndarray:
    """`array` as rows of its trailing axes after the first `leading` ones: [n, k], a view."""
    rows = array.reshape(math.prod(array.shape[:leading]), -1)
    if not np.may_share_memory(rows, array):  # writes through a copy would be lost
        raise ValueError("expected a C-contiguous array")
    return rows


def _set_rows(rows: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """rows[index] = values for [n, k] rows and distinct indices, each row copied as one
    record: a fancy assignment with a trailing axis copies element by element, several times
    slower."""
    width = rows.shape[1]
    values = np.ascontiguousarray(values, dtype=rows.dtype).reshape(-1, width)
    if width == 1:
        rows[index.reshape(-1), 0] = values[:, 0]
        return
    record = np.dtype((np.void, width * rows.itemsize))
    rows.view(record)[index.reshape(-1), 0] = values.view(record)[:, 0]


def _take(state: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Bank state [slots, channels, ...] of these items (slot * channels + channel):
    [*items.shape, ...], whole rows at a time (`take`, not a 2-D fancy index)."""
    gathered = _rows(state, 2).take(items.reshape(-1), axis=0)
    return gathered.reshape(items.shape + state.shape[2:])


def _put(state: np.ndarray, items: np.ndarray, values: np.ndarray) -> None:
    """Bank state of these (distinct) items = values."""
    _set_rows(_rows(state, 2), items, values)


class CalibrationBank:
    """Per-sensor calibration state of several channels at once; a `SlotState` of the window
    store. Arrays are [slots, channels, ...], so one step costs the same few numpy calls
    however many channels there are (the step runs once per reading depth of a batch)."""

    # Per-sensor state: arrays [slots, channels, ...] (checkpointed, reset with the slot).
    SLOT_FIELDS = (
        "_median", "_deviation", "_seen", "_ring", "_count", "_block_sum", "_block_squares",
        "_running", "_fit",
    )  # fmt: skip
    # Allocated (and grown) by `_allocate`, one array per SLOT_FIELDS name.
    _median: np.ndarray
    _deviation: np.ndarray
    _seen: np.ndarray
    _ring: np.ndarray
    _count: np.ndarray
    _block_sum: np.ndarray
    _block_squares: np.ndarray
    _running: np.ndarray
    _fit: np.ndarray

    def __init__(self, params: CalibrationParams | None = None) -> None:
        self.params = params or CalibrationParams()
        self.standardize = np.zeros(0, dtype=bool)  # per channel
        self._capacity = 0
        self._allocate(0, 0)

    def _allocate(self, capacity: int, channels: int) -> None:
        p = self.params
        shapes = {
            "_median": ((), np.float32),
            "_deviation": ((), np.float32),
            "_seen": ((), np.int32),  # raw values seen (standardisation)
            "_ring": ((p.average,), np.float32),  # last |z|
            "_count": ((), np.int32),  # z values calibrated
            "_block_sum": ((p.blocks,), np.float32),
            "_block_squares": ((p.blocks,), np.float32),
            "_running": ((2,), np.float32),  # sum and sum of squares of avg in this block
            "_fit": ((2,), np.float32),  # mean, variance (variance 0 = no fit yet)
        }
        for name, (tail, dtype) in shapes.items():
            fresh = np.zeros((capacity, channels, *tail), dtype)
            old = getattr(self, name, None)
            if old is not None and old.size:
                fresh[: old.shape[0], : old.shape[1]] = old
            setattr(self, name, fresh)
        self._capacity = capacity

    @property
    def channels(self) -> int:
        return int(self.standardize.shape[0])

    def add_channel(self, standardize: bool) -> int:
        """A new channel column (empty for every sensor); returns its index."""
        self.standardize = np.append(self.standardize, standardize)
        self._allocate(self._capacity, self.channels)
        return self.channels - 1

    def clear_channel(self, index: int, standardize: bool) -> None:
        """Forget a channel for every sensor (its meaning changed)."""
        self.standardize[index] = standardize
        for name in self.SLOT_FIELDS:
            getattr(self, name)[:, index] = 0

    def grow(self, capacity: int) -> None:
        if capacity > self._capacity:
            self._allocate(capacity, self.channels)

    def reset(self, slots: np.ndarray) -> None:
        for name in self.SLOT_FIELDS:
            getattr(self, name)[slots] = 0

    def step(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """raw [rows, channels] → tail probability [rows, channels] (NaN where not calibrated
        yet or `raw` is NaN); advances the state of these slots (each at most once)."""
        return self.run(slots, raw, [np.arange(raw.shape[0])])

    def run(self, slots: np.ndarray, raw: np.ndarray, steps: Sequence[np.ndarray]) -> np.ndarray:
        """`step` over a whole batch: `steps` are row indices with each slot at most once per
        step, in reading order. The tail probabilities are computed once at the end.

        The same values and state as advancing one reading depth at a time (the tests hold a
        plain step-by-step reference, `tests/calibration_reference.py`), but all readings at once:
        only the standardisation (a sign-driven recurrence) and the float32 running sums are
        walked reading by reading, over plain arrays (see `_run_likelihood`)."""
        return self.run_stats(slots, raw, steps).likelihood()

    def run_stats(
        self, slots: np.ndarray, raw: np.ndarray, steps: Sequence[np.ndarray]
    ) -> StepStats:
        """What `run` computes its tail probabilities from (advancing the state the same)."""
        return self.run_by_sensor(raw, SensorRuns.from_steps(slots, steps))

    def run_by_sensor(self, raw: np.ndarray, runs: SensorRuns) -> StepStats:
        """`run_stats` with the batch already grouped by sensor (as the window store has it)."""
        stats = StepStats.empty(raw.shape)
        if runs.rows.size == 0 or self.channels == 0:
            return stats
        rows, group, rank, starts, sensors = (
            runs.rows,
            runs.group,
            runs.rank,
            runs.starts,
            runs.slots,
        )
        z = raw.take(rows, axis=0)
        if self.standardize.any():
            columns = np.flatnonzero(self.standardize)
            z[:, columns] = self._standardized_run(
                sensors, group, rank, starts, z[:, columns], columns
            )
        self._run_likelihood(sensors, rows, group, z, stats)
        return stats

    def _standardized_run(
        self,
        sensors: np.ndarray,
        group: np.ndarray,
        rank: np.ndarray,
        starts: np.ndarray,
        raw: np.ndarray,
        columns: np.ndarray,
    ) -> np.ndarray:
        """The running median/deviation standardisation over a batch sorted by sensor (rows
        `raw` [rows, len(columns)] of the standardised channels): z, NaN where not
        standardised.

        Only the median/deviation recurrence is walked step by step (its float32 state after
        each step is kept); the counts, step sizes and z are computed for all rows at once."""
        p = self.params
        update = np.isfinite(raw)
        if not update.any():
            return np.full(raw.shape, np.nan)
        # Values seen before each row (saturating below the int32 limit) and after it.
        items = sensors[:, None] * self.channels + columns[None, :]
        seen0 = _take(self._seen, items).astype(np.int64)
        limit = np.iinfo(np.int32).max - 1
        counted = np.cumsum(update, axis=0)
        before_sensor = np.take(counted - update, starts, axis=0)  # cumulative at each start
        earlier = counted - update - np.take(before_sensor, group, axis=0)
        start_seen = np.take(seen0, group, axis=0)
        seen = np.minimum(start_seen + earlier, limit) + update  # as a step-by-step update sees it
        ends = np.append(starts[1:], rank.size) - 1
        _put(self._seen, items, np.minimum(seen0 + np.take(counted, ends, axis=0)
                                           - before_sensor, limit))  # fmt: skip
        first = seen == 1
        with np.errstate(invalid="ignore"):
            gain = np.maximum(1.0 / np.maximum(seen, 1), p.standardize_min_step)

        counts = np.diff(np.append(starts, rank.size))
        sensor_count = counts.size
        by_count = np.argsort(-counts, kind="stable")  # sensors, most readings first
        place = np.empty_like(by_count)
        place[by_count] = np.arange(sensor_count)
        # Reading k of every sensor that has one, sensors in `by_count` order: contiguous, and
        # the sensors of reading k are the first active[k] of `by_count` (so a row's place
        # in that order is known without sorting).
        active = np.bincount(rank)
        bounds = np.append(0, np.cumsum(active))
        order = np.empty_like(rank)
        order[bounds[rank] + place[group]] = np.arange(rank.size)
        x_all = np.take(raw, order, axis=0)
        gain_all = np.take(gain, order, axis=0)
        # Block 0: the state before the batch (by_count order); block k+1: after reading k.
        width = len(columns)
        median = np.empty((sensor_count + rank.size, width), dtype=np.float32)
        deviation = np.empty_like(median)
        counted_items = items.take(by_count, axis=0)
        median[:sensor_count] = _take(self._median, counted_items)
        deviation[:sensor_count] = _take(self._deviation, counted_items)
        # Readings needing the general update (a first or a missing value), per depth.
        odd = np.take((first | ~update).any(axis=1), order)
        odd_depth = np.add.reduceat(odd, bounds[:-1]) > 0
        first_all = np.take(first, order, axis=0)
        update_all = np.take(update, order, axis=0)
        # gain * MEAN_ABS_TO_SIGMA for every reading at once (the same products as per step).
        median_gain_all = gain_all * MEAN_ABS_TO_SIGMA
        source = 0
        with np.errstate(invalid="ignore"):
            # Plain ints: this loop runs once per reading depth, so per-step overhead counts.
            for a, begin, odd_k in zip(
                active.tolist(), bounds.tolist(), odd_depth.tolist(), strict=False
            ):
                target = sensor_count + begin
                here = slice(begin, begin + a)
                x = x_all[here]
                gain = gain_all[here]
                median_gain = median_gain_all[here]
                m = median[source : source + a].astype(np.float64)
                d = deviation[source : source + a].astype(np.float64)
                step = x - m
                new_d = d + gain * (np.abs(step) - d)
                new_m = m + median_gain * new_d * np.sign(step)
                if odd_k:
                    f, u = first_all[here], update_all[here]
                    new_d = np.where(f, 0.0, new_d)
                    new_m = np.where(f, x, m + median_gain * new_d * np.sign(step))
                    new_d = np.where(u, new_d, d)
                    new_m = np.where(u, new_m, m)
                deviation[target : target + a] = new_d
                median[target : target + a] = new_m
                source = target
        # Each row's state before it: block k holds what reading k of its sensors started from.
        block_size = np.append(sensor_count, active[:-1])
        before = np.arange(rank.size) + sensor_count - np.repeat(block_size, active)
        last = sensor_count + bounds[counts[by_count] - 1] + np.arange(sensor_count)
        _put(self._median, counted_items, median.take(last, axis=0))
        _put(self._deviation, counted_items, deviation.take(last, axis=0))
        m = np.take(median, before, axis=0).astype(np.float64)
        d = np.take(deviation, before, axis=0).astype(np.float64)
        scale = np.maximum(np.maximum(MEAN_ABS_TO_SIGMA * d, 1e-9), 1e-6 * np.abs(m))
        with np.errstate(invalid="ignore"):
            z_sorted = np.where(
                update_all & (np.take(seen, order, axis=0) > p.standardize_after),
                (x_all - m) / scale,
                np.nan,
            )
        z = np.empty_like(z_sorted)
        _set_rows(z, order, z_sorted)
        return z

    def _run_likelihood(
        self,
        sensors: np.ndarray,
        rows: np.ndarray,
        group: np.ndarray,
        z: np.ndarray,
        out: StepStats,
    ) -> None:
        """Steps 2-3 (ring, average, refits) for every valid z of a batch at once; z [rows,
        channels] is sorted by sensor, then reading. Each (sensor, channel) pair is a run of
        consecutive counts, so every ring and block position written is known up front: the
        ring (and block ring) after each reading is gathered from the batch's own values and
        the state before it, and summed in the same shape as a step-by-step update sums it
        (so bit for bit). The float32 running sums are the one sequential part: walked in steps
        over the runs between refits, one numpy call per step."""
        p = self.params
        # Events (valid z) ordered by channel, sensor, reading: each pair is contiguous.
        flat = np.flatnonzero(np.isfinite(z.T).ravel())
        if flat.size == 0:
            return
        ch = flat // rows.size
        t = flat % rows.size
        row = rows[t]
        value = z[t, ch]
        if not p.likelihood:
            out.single_z[row, ch] = np.abs(value)
            return
        events = flat.size
        pair_key = ch * (int(group[-1]) + 1) + group[t]
        new = np.empty(events, dtype=bool)
        new[0] = True
        np.not_equal(pair_key[1:], pair_key[:-1], out=new[1:])
        pair_start = np.flatnonzero(new)
        pair = np.cumsum(new) - 1
        index = np.arange(events)
        j = index - pair_start[pair]  # readings of the pair before this one, in the batch
        pair_item = sensors[group[t[pair_start]]] * self.channels + ch[pair_start]
        pairs = pair_start.size
        pair_end = np.append(pair_start[1:], events) - 1  # last event of each pair

        cycle = p.cycle
        count0 = _take(self._count, pair_item).astype(np.int64)
        count = count0[pair] + j + 1
        wrapped = np.flatnonzero(count > 2 * cycle)
        if wrapped.size:
            count[wrapped] = cycle + 1 + (count[wrapped] - 2 * cycle - 1) % np.int64(cycle)

        # The ring of |z| after each event. In count space, ring position k holds the value
        # of the latest count ≡ k (mod average) so far: with counts laid out in rows of
        # `average` (row = count // average), that is the count's own row up to its position
        # and the row before it beyond. Each pair gets rows from the one before its stored
        # count on, both first filled with its ring before the batch (the stored count's
        # row beyond its position holds no count yet, the row before it only older ones).
        size = p.average
        ring0 = _take(self._ring, pair_item)
        start = count0 % size + size
        used = (start + pair_end - pair_start + 1) // size + 1  # rows per pair
        first_row = np.cumsum(used) - used
        table = np.empty((int(first_row[-1] + used[-1]), size), dtype=np.float32)
        _set_rows(table, first_row, ring0)
        _set_rows(table, first_row + 1, ring0)
        u = start[pair] + j + 1  # count relative to the pair's first row
        row_of = first_row[pair] + u // size
        column = u % size
        table[row_of, column] = np.minimum(np.abs(value), p.max_abs_z)
        own = np.arange(size)[None, :] <= np.arange(size)[:, None]
        ring = np.where(
            own.take(column, axis=0), table.take(row_of, axis=0), table.take(row_of - 1, axis=0)
        )
        avg = ring.sum(axis=1, dtype=np.float64) / np.minimum(count, size)

        # Refits: events whose count is a multiple of refit_every; runs between them.
        refit = count % p.refit_every == 0
        refits_before = np.cumsum(refit) - refit  # refits earlier in the batch (all pairs)
        pair_refits0 = refits_before[pair_start]
        nth = refits_before - pair_refits0[pair]  # refits of the pair before this event
        pair_refits = refits_before[pair_end] + refit[pair_end] - pair_refits0
        # Run r of a pair: its events after refit r-1 up to and including refit r.
        run_base = np.cumsum(pair_refits + 1) - (pair_refits + 1)
        run = run_base[pair] + nth
        run_starts = np.empty(events, dtype=bool)
        run_starts[0] = True
        np.not_equal(run[1:], run[:-1], out=run_starts[1:])
        run_first = np.flatnonzero(run_starts)
        position = index - run_first[np.cumsum(run_starts) - 1]
        runs = int(run_base[-1] + pair_refits[-1] + 1)
        running = np.zeros((runs, 2), dtype=np.float32)
        _set_rows(running, run_base, _take(self._running, pair_item))
        self._walk_runs(running, run, position, avg)

        fit = _take(self._fit, pair_item)  # before the batch
        refit_events = np.flatnonzero(refit)
        if refit_events.size:
            blocks = p.blocks
            which = count[refit_events] // p.refit_every
            block_position = (which - 1) % blocks
            number = nth[refit_events]  # of the refit within its pair
            owner = pair[refit_events]
            written = running[run[refit_events]]  # float32 block sums and squares
            back = (block_position[:, None] - np.arange(blocks)[None, :]) % blocks
            before = number[:, None] < back
            source = np.maximum(np.arange(refit_events.size)[:, None] - back, 0)
            owner_item = pair_item[owner]
            block_sum = np.where(before, _take(self._block_sum, owner_item), written[source, 0])
            block_squares = np.where(
                before, _take(self._block_squares, owner_item), written[source, 1]
            )
            filled = np.minimum(which, blocks) * p.refit_every
            mean = block_sum.sum(axis=1, dtype=np.float64) / filled
            squares = block_squares.sum(axis=1, dtype=np.float64)
            var = np.maximum(squares / filled - mean * mean, p.variance_floor)
            refit_fit = np.stack([mean, var], axis=1).astype(np.float32)
            # The fit each event is judged against: its pair's latest refit before it.
            fits = np.concatenate([fit, refit_fit])
            which_fit = np.where(nth > 0, pairs + pair_refits0[pair] + nth - 1, pair)
            event_fit = fits.take(which_fit, axis=0)
            last = pair_refits > 0
            final = (pair_refits0 + pair_refits - 1)[last]
            refitted = pair_item[last]
            _put(self._block_sum, refitted, block_sum[final])
            _put(self._block_squares, refitted, block_squares[final])
            _put(self._fit, refitted, refit_fit[final])
        else:
            event_fit = fit.take(pair, axis=0)

        cell = row * z.shape[1] + ch  # of each event in the [rows, channels] outputs
        _rows(out.average, 2)[cell, 0] = avg
        _rows(out.mean, 2)[cell, 0] = event_fit[:, 0]
        _rows(out.variance, 2)[cell, 0] = event_fit[:, 1]
        _rows(out.ready, 2)[cell, 0] = (count >= p.min_history) & (event_fit[:, 1] > 0)

        last_count = count[pair_end]
        last_count = np.where(last_count >= 2 * cycle, last_count - cycle, last_count)
        _put(self._count, pair_item, last_count)
        # With one event per pair (many sensors, a reading each) the rings are the pairs'.
        _put(self._ring, pair_item, ring if pairs == events else ring.take(pair_end, axis=0))
        # The run after the pair's last refit (empty, so 0, if that was its last event).
        _put(self._running, pair_item, running.take(run_base + pair_refits, axis=0))

    @staticmethod
    def _walk_runs(
        running: np.ndarray, run: np.ndarray, position: np.ndarray, avg: np.ndarray
    ) -> None:
        """running[r] (float32 sums of avg and of avg², as a step-by-step update keeps them)
        after each run's avg values, added one at a time exactly as that update adds them: one
        numpy call per reading depth, over all runs at once."""
        runs = running.shape[0]
        width = int(position.max()) + 1
        if runs * width <= max(_DENSE_CELLS, _DENSE_PER_READING * position.size):
            # Zero-padded: adding 0.0 leaves a float32 sum as it is.
            addend = np.zeros((width, runs, 2))
            flat = addend.reshape(-1)
            at = position * (2 * runs) + 2 * run  # of [position, run, 0]
            flat[at] = avg
            flat[at + 1] = avg * avg
            for column in addend:
                np.add(running, column, out=running)
            return
        # Lopsided: runs sorted longest first, so depth k is a prefix of them.
        lengths = np.bincount(run, minlength=runs)
        by_length = np.argsort(-lengths, kind="stable")
        place = np.empty_like(by_length)
        place[by_length] = np.arange(runs)
        order = np.argsort(position * runs + place[run], kind="stable")
        sums = running.take(by_length, axis=0)
        added = np.stack([avg, avg * avg], axis=1).take(order, axis=0)
        offset = 0
        for a in np.bincount(position).tolist():
            np.add(sums[:a], added[offset : offset + a], out=sums[:a])
            offset += a
        _set_rows(running, by_length, sums)


def likelihood_score(q: np.ndarray, flag_below: float) -> np.ndarray:
    """Likelihood → score in [0, 1] with the threshold exactly at 0.5 (log scale)."""
    if flag_below <= 0.0:
        return np.zeros(np.shape(q))  # the channel is switched off
    with np.errstate(divide="ignore"):
        # + 0.0 turns the -0.0 of q == 1 into 0.0 (it would show as "-0.000000" in verdicts).
        surprise = -np.log10(np.clip(np.nan_to_num(q, nan=1.0), 1e-300, 1.0)) + 0.0
    cut = max(-np.log10(flag_below), 1e-9)
    return surprise / (surprise + cut)


@dataclass(frozen=True, slots=True)
class ChannelKey:
    specialist: str
    channel: str

    def __str__(self) -> str:
        return f"{self.specialist}.{self.channel}"


@dataclass(slots=True)
class Calibrated:
    """A channel's column in the calibration bank and the likelihood below which it flags."""

    index: int
    standardize: bool
    flag_below: float

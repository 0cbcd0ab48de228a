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

    def bytes_per_sensor(self, standardize: bool) -> int:
        # float32 ring of |z|, block sums and sums of squares, running sums and fit; int32
        # count; the standardisation's float32 median/deviation and int32 count (a bank keeps
        # these for every channel, used by the standardised ones).
        return 4 * self.average + 8 * self.blocks + 8 + 8 + 4 + 12


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, relative error < 1.2e-7 everywhere (Numerical Recipes'
    Chebyshev fit), so tail probabilities stay accurate far into the tail."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t
                    * (
                        0.27886807
                        + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                    )
                )
            )
        )
    )
    with np.errstate(under="ignore"):
        r = t * np.exp(-z * z + poly)
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


class CalibrationBank:
    """Per-sensor calibration state of several channels at once; a `SlotState` of the window
    store. Arrays are [slots, channels, ...], so one step costs the same few numpy calls
    however many channels there are (the step runs once per reading depth of a batch)."""

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
        for name in ("_median", "_deviation", "_seen", "_ring", "_count", "_block_sum",
                     "_block_squares", "_running", "_fit"):  # fmt: skip
            getattr(self, name)[:, index] = 0

    def bytes_per_channel(self, standardize: bool) -> int:
        return self.params.bytes_per_sensor(standardize)

    def grow(self, capacity: int) -> None:
        if capacity > self._capacity:
            self._allocate(capacity, self.channels)

    def reset(self, slots: np.ndarray) -> None:
        for name in ("_median", "_deviation", "_seen", "_ring", "_count", "_block_sum",
                     "_block_squares", "_running", "_fit"):  # fmt: skip
            getattr(self, name)[slots] = 0

    def step(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """raw [rows, channels] → tail probability [rows, channels] (NaN where not calibrated
        yet or `raw` is NaN); advances the state of these slots (each at most once)."""
        stats = StepStats.empty(raw.shape)
        self.advance(slots, raw, stats, np.arange(raw.shape[0]))
        return stats.likelihood()

    def run(self, slots: np.ndarray, raw: np.ndarray, steps: Sequence[np.ndarray]) -> np.ndarray:
        """`step` over a whole batch: `steps` are row indices with each slot at most once per
        step, in reading order. The tail probabilities are computed once at the end."""
        stats = StepStats.empty(raw.shape)
        for step in steps:
            self.advance(slots[step], raw[step], stats, step)
        return stats.likelihood()

    def advance(
        self, slots: np.ndarray, raw: np.ndarray, out: StepStats, where: np.ndarray
    ) -> None:
        """Advance the state of these slots by one reading; what the likelihood needs goes to
        rows `where` of `out`."""
        p = self.params
        usable = np.isfinite(raw)
        if not usable.any():
            return
        z = raw
        if self.standardize.any():
            z = np.where(self.standardize, self._standardized(slots, raw, usable), raw)
        valid = np.isfinite(z)
        rows, channels = np.nonzero(valid)
        if rows.size == 0:
            return
        target = where[rows]
        if not p.likelihood:
            out.single_z[target, channels] = np.abs(z[rows, channels])
            return
        at = slots[rows]
        count = self._count[at, channels] + 1
        # Counts only matter modulo the ring, the refit and the block cycle once past them:
        # keep them there instead of letting an int32 wrap after 2**31 readings.
        self._count[at, channels] = np.where(count >= 2 * p.cycle, count - p.cycle, count)
        # Beyond 100 a |z| says nothing more (its likelihood is 0 already); unbounded, one
        # absurd value would dominate the fit of the next ~4000 readings.
        self._ring[at, channels, count % p.average] = np.minimum(
            np.abs(z[rows, channels]), p.max_abs_z
        )
        avg = self._ring[at, channels].sum(axis=1, dtype=np.float64) / np.minimum(count, p.average)
        fit = self._fit[at, channels]
        out.average[target, channels] = avg
        out.mean[target, channels] = fit[:, 0]
        out.variance[target, channels] = fit[:, 1]
        out.ready[target, channels] = (count >= p.min_history) & (fit[:, 1] > 0)

        running = self._running[at, channels]
        running[:, 0] += avg
        running[:, 1] += avg * avg
        self._running[at, channels] = running
        done = count % p.refit_every == 0
        if done.any():
            self._refit(at[done], channels[done], count[done])

    def _standardized(self, slots: np.ndarray, raw: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """z of the standardised channels ([rows, channels], NaN elsewhere); advances their
        running median/deviation where `usable`."""
        p = self.params
        update = usable & self.standardize
        seen = self._seen[slots] + update
        median = self._median[slots].astype(np.float64)
        deviation = self._deviation[slots].astype(np.float64)
        scale = np.maximum(np.maximum(MEAN_ABS_TO_SIGMA * deviation, 1e-9), 1e-6 * np.abs(median))
        with np.errstate(invalid="ignore"):
            z = np.where(update & (seen > p.standardize_after), (raw - median) / scale, np.nan)
            first = seen == 1
            step = np.maximum(1.0 / np.maximum(seen, 1), p.standardize_min_step)
            new_deviation = np.where(
                first, 0.0, deviation + step * (np.abs(raw - median) - deviation)
            )
            new_median = np.where(
                first,
                raw,
                median + step * MEAN_ABS_TO_SIGMA * new_deviation * np.sign(raw - median),
            )
        self._seen[slots] = np.minimum(seen, np.iinfo(np.int32).max - 1)
        self._median[slots] = np.where(update, new_median, median)
        self._deviation[slots] = np.where(update, new_deviation, deviation)
        return z

    def _refit(self, slots: np.ndarray, channels: np.ndarray, count: np.ndarray) -> None:
        p = self.params
        position = (count // p.refit_every - 1) % p.blocks
        self._block_sum[slots, channels, position] = self._running[slots, channels, 0]
        self._block_squares[slots, channels, position] = self._running[slots, channels, 1]
        self._running[slots, channels] = 0
        filled = np.minimum(count // p.refit_every, p.blocks) * p.refit_every
        total = self._block_sum[slots, channels].sum(axis=1, dtype=np.float64)
        squares = self._block_squares[slots, channels].sum(axis=1, dtype=np.float64)
        mean = total / filled
        var = np.maximum(squares / filled - mean * mean, p.variance_floor)
        self._fit[slots, channels, 0] = mean
        self._fit[slots, channels, 1] = var


class ChannelCalibrator:
    """One channel on its own (a bank of one; `step` takes and returns [rows]). The
    orchestrator uses one `CalibrationBank` for all channels; this is for single-channel use."""

    def __init__(self, standardize: bool, params: CalibrationParams | None = None) -> None:
        self.bank = CalibrationBank(params)
        self.bank.add_channel(standardize)
        self.standardize = standardize
        self.params = self.bank.params

    @property
    def bytes_per_sensor(self) -> int:
        return self.params.bytes_per_sensor(self.standardize)

    def grow(self, capacity: int) -> None:
        self.bank.grow(capacity)

    def reset(self, slots: np.ndarray) -> None:
        self.bank.reset(slots)

    def step(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return self.bank.step(slots, np.asarray(raw, dtype=np.float64)[:, None])[:, 0]

    def _standardized(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)[:, None]
        return self.bank._standardized(slots, raw, np.isfinite(raw))[:, 0]

    def __getattr__(self, name: str) -> np.ndarray:
        # Single-channel state as 1-D views (for inspection): _count, _fit, _ring, ...
        if name.startswith("_") and not name.startswith("__"):
            return getattr(self.bank, name)[:, 0]
        raise AttributeError(name)


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

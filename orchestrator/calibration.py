"""Anomaly likelihood: raw engine scores → tail probabilities against each sensor's own past.

One `ChannelCalibrator` per (specialist, channel) keeps, per sensor, O(1) state (a few hundred
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

    def bytes_per_sensor(self, standardize: bool) -> int:
        # float32 ring of |z|, float32 block sums and sums of squares, float32 running sums,
        # fit and median/deviation; int16/int32 counters.
        return 4 * self.average + 8 * self.blocks + 8 + 8 + 12 + (12 if standardize else 0)


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


class ChannelCalibrator:
    """Per-sensor calibration state of one channel; a `SlotState` of the window store."""

    def __init__(self, standardize: bool, params: CalibrationParams | None = None) -> None:
        self.standardize = standardize
        self.params = params or CalibrationParams()
        p = self.params
        self._median = np.zeros(0, np.float32)
        self._deviation = np.zeros(0, np.float32)
        self._seen = np.zeros(0, np.int32)  # raw values seen (standardisation)
        self._ring = np.zeros((0, p.average), np.float32)  # last |z|
        self._count = np.zeros(0, np.int32)  # z values calibrated
        self._block_sum = np.zeros((0, p.blocks), np.float32)
        self._block_squares = np.zeros((0, p.blocks), np.float32)
        self._running = np.zeros((0, 2), np.float32)  # sum and sum of squares of this block
        self._fit = np.zeros((0, 2), np.float32)  # mean, variance (variance 0 = no fit yet)

    @property
    def bytes_per_sensor(self) -> int:
        return self.params.bytes_per_sensor(self.standardize)

    def grow(self, capacity: int) -> None:
        old = self._count.shape[0]
        if capacity <= old:
            return
        extra = capacity - old
        p = self.params

        def more(array: np.ndarray, *shape: int) -> np.ndarray:
            return np.concatenate([array, np.zeros((extra, *shape), array.dtype)])

        self._median = more(self._median)
        self._deviation = more(self._deviation)
        self._seen = more(self._seen)
        self._ring = more(self._ring, p.average)
        self._count = more(self._count)
        self._block_sum = more(self._block_sum, p.blocks)
        self._block_squares = more(self._block_squares, p.blocks)
        self._running = more(self._running, 2)
        self._fit = more(self._fit, 2)

    def reset(self, slots: np.ndarray) -> None:
        for array in (
            self._median,
            self._deviation,
            self._seen,
            self._ring,
            self._count,
            self._block_sum,
            self._block_squares,
            self._running,
            self._fit,
        ):
            array[slots] = 0

    def step(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Tail probability per row (NaN where not calibrated yet or `raw` is NaN); advances
        the state of these slots (each at most once in `slots`)."""
        q = np.full(slots.shape[0], np.nan)
        usable = np.isfinite(raw)
        if not usable.any():
            return q
        if not usable.all():
            inner = self.step(slots[usable], raw[usable])
            q[usable] = inner
            return q
        z = self._standardized(slots, raw) if self.standardize else raw
        judged = np.isfinite(z)
        if not judged.all():
            slots, z, where = slots[judged], z[judged], np.flatnonzero(judged)
        else:
            where = None
        p = self.params
        if not p.likelihood:
            result = erfc(np.abs(z) / np.sqrt(2.0))
        else:
            result = self._likelihood(slots, z)
        if where is None:
            return result
        q[where] = result
        return q

    def _likelihood(self, slots: np.ndarray, z: np.ndarray) -> np.ndarray:
        p = self.params
        count = self._count[slots] + 1
        self._count[slots] = count
        self._ring[slots, count % p.average] = np.abs(z)
        avg = self._ring[slots].sum(axis=1, dtype=np.float64) / np.minimum(count, p.average)

        mean = self._fit[slots, 0].astype(np.float64)
        var = self._fit[slots, 1].astype(np.float64)
        ready = (count >= p.min_history) & (var > 0)
        result = np.where(ready, 1.0, np.nan)
        hot = ready & (avg > mean)
        if hot.any():
            result[hot] = tail_probability(avg[hot], mean[hot], var[hot])

        running = self._running[slots]
        running[:, 0] += avg
        running[:, 1] += avg * avg
        self._running[slots] = running
        done = count % p.refit_every == 0
        if done.any():
            self._refit(slots[done], count[done])
        return result

    def _standardized(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        p = self.params
        seen = self._seen[slots] + 1
        self._seen[slots] = np.minimum(seen, np.iinfo(np.int32).max - 1)
        median = self._median[slots].astype(np.float64)
        deviation = self._deviation[slots].astype(np.float64)
        scale = np.maximum(np.maximum(MEAN_ABS_TO_SIGMA * deviation, 1e-9), 1e-6 * np.abs(median))
        z = np.where(seen > p.standardize_after, (raw - median) / scale, np.nan)
        first = seen == 1
        step = np.maximum(1.0 / seen, p.standardize_min_step)
        deviation = np.where(first, 0.0, deviation + step * (np.abs(raw - median) - deviation))
        median = np.where(
            first, raw, median + step * MEAN_ABS_TO_SIGMA * deviation * np.sign(raw - median)
        )
        self._median[slots] = median
        self._deviation[slots] = deviation
        return z

    def _refit(self, slots: np.ndarray, count: np.ndarray) -> None:
        p = self.params
        position = (count // p.refit_every - 1) % p.blocks
        self._block_sum[slots, position] = self._running[slots, 0]
        self._block_squares[slots, position] = self._running[slots, 1]
        self._running[slots] = 0
        filled = np.minimum(count // p.refit_every, p.blocks) * p.refit_every
        total = self._block_sum[slots].sum(axis=1, dtype=np.float64)
        squares = self._block_squares[slots].sum(axis=1, dtype=np.float64)
        mean = total / filled
        var = np.maximum(squares / filled - mean * mean, p.variance_floor)
        self._fit[slots, 0] = mean
        self._fit[slots, 1] = var


def likelihood_score(q: np.ndarray, flag_below: float) -> np.ndarray:
    """Likelihood → score in [0, 1] with the threshold exactly at 0.5 (log scale)."""
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
    """A channel's calibrator and the likelihood below which it flags a row."""

    calibrator: ChannelCalibrator
    flag_below: float

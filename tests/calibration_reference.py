"""Calibration advanced one reading at a time: the plain reference the orchestrator's
batch-at-once `CalibrationBank.run` is checked against bit for bit (it is what `run` computes,
written the obvious way), and a single-channel wrapper for the tests."""

from __future__ import annotations

import numpy as np
from sentinel.orchestrator.calibration import (
    MEAN_ABS_TO_SIGMA,
    CalibrationBank,
    CalibrationParams,
    StepStats,
)


def advance(
    bank: CalibrationBank, slots: np.ndarray, raw: np.ndarray, out: StepStats, where: np.ndarray
) -> None:
    """Advance the state of these slots by one reading; what the likelihood needs goes to
    rows `where` of `out`."""
    p = bank.params
    usable = np.isfinite(raw)
    if not usable.any():
        return
    z = raw
    if bank.standardize.any():
        z = np.where(bank.standardize, standardized(bank, slots, raw, usable), raw)
    valid = np.isfinite(z)
    rows, channels = np.nonzero(valid)
    if rows.size == 0:
        return
    target = where[rows]
    if not p.likelihood:
        out.single_z[target, channels] = np.abs(z[rows, channels])
        return
    at = slots[rows]
    count = bank._count[at, channels] + 1
    # Counts only matter modulo the ring, the refit and the block cycle once past them:
    # keep them there instead of letting an int32 wrap after 2**31 readings.
    bank._count[at, channels] = np.where(count >= 2 * p.cycle, count - p.cycle, count)
    # Beyond 100 a |z| says nothing more (its likelihood is 0 already); unbounded, one
    # absurd value would dominate the fit of the next ~4000 readings.
    bank._ring[at, channels, count % p.average] = np.minimum(np.abs(z[rows, channels]), p.max_abs_z)
    avg = bank._ring[at, channels].sum(axis=1, dtype=np.float64) / np.minimum(count, p.average)
    fit = bank._fit[at, channels]
    out.average[target, channels] = avg
    out.mean[target, channels] = fit[:, 0]
    out.variance[target, channels] = fit[:, 1]
    out.ready[target, channels] = (count >= p.min_history) & (fit[:, 1] > 0)

    running = bank._running[at, channels]
    running[:, 0] += avg
    running[:, 1] += avg * avg
    bank._running[at, channels] = running
    done = count % p.refit_every == 0
    if done.any():
        refit(bank, at[done], channels[done], count[done])


def standardized(
    bank: CalibrationBank, slots: np.ndarray, raw: np.ndarray, usable: np.ndarray
) -> np.ndarray:
    """z of the standardised channels ([rows, channels], NaN elsewhere); advances their
    running median/deviation where `usable`."""
    p = bank.params
    update = usable & bank.standardize
    seen = bank._seen[slots] + update
    median = bank._median[slots].astype(np.float64)
    deviation = bank._deviation[slots].astype(np.float64)
    scale = np.maximum(np.maximum(MEAN_ABS_TO_SIGMA * deviation, 1e-9), 1e-6 * np.abs(median))
    with np.errstate(invalid="ignore"):
        z = np.where(update & (seen > p.standardize_after), (raw - median) / scale, np.nan)
        first = seen == 1
        step = np.maximum(1.0 / np.maximum(seen, 1), p.standardize_min_step)
        new_deviation = np.where(first, 0.0, deviation + step * (np.abs(raw - median) - deviation))
        new_median = np.where(
            first,
            raw,
            median + step * MEAN_ABS_TO_SIGMA * new_deviation * np.sign(raw - median),
        )
    bank._seen[slots] = np.minimum(seen, np.iinfo(np.int32).max - 1)
    bank._median[slots] = np.where(update, new_median, median)
    bank._deviation[slots] = np.where(update, new_deviation, deviation)
    return z


def refit(
    bank: CalibrationBank, slots: np.ndarray, channels: np.ndarray, count: np.ndarray
) -> None:
    p = bank.params
    position = (count // p.refit_every - 1) % p.blocks
    bank._block_sum[slots, channels, position] = bank._running[slots, channels, 0]
    bank._block_squares[slots, channels, position] = bank._running[slots, channels, 1]
    bank._running[slots, channels] = 0
    filled = np.minimum(count // p.refit_every, p.blocks) * p.refit_every
    total = bank._block_sum[slots, channels].sum(axis=1, dtype=np.float64)
    squares = bank._block_squares[slots, channels].sum(axis=1, dtype=np.float64)
    mean = total / filled
    var = np.maximum(squares / filled - mean * mean, p.variance_floor)
    bank._fit[slots, channels, 0] = mean
    bank._fit[slots, channels, 1] = var


class ChannelCalibrator:
    """One channel on its own, a bank of one: `step` takes and returns [rows] and runs the
    orchestrator's code (`CalibrationBank.step`); `_standardized` is the reference's."""

    def __init__(self, standardize: bool, params: CalibrationParams | None = None) -> None:
        self.bank = CalibrationBank(params)
        self.bank.add_channel(standardize)
        self.standardize = standardize
        self.params = self.bank.params

    @property
    def bytes_per_sensor(self) -> int:
        return self.params.bytes_per_channel

    def grow(self, capacity: int) -> None:
        self.bank.grow(capacity)

    def reset(self, slots: np.ndarray) -> None:
        self.bank.reset(slots)

    def step(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return self.bank.step(slots, np.asarray(raw, dtype=np.float64)[:, None])[:, 0]

    def _standardized(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)[:, None]
        return standardized(self.bank, slots, raw, np.isfinite(raw))[:, 0]

    def __getattr__(self, name: str) -> np.ndarray:
        # Single-channel state as 1-D views (for inspection): _count, _fit, _ring, ...
        if name.startswith("_") and not name.startswith("__"):
            return getattr(self.bank, name)[:, 0]
        raise AttributeError(name)

"""Statistical engine: a level-shift score and a daily-seasonal residual per reading.

Two channels, each calibrated per sensor by the orchestrator into an anomaly likelihood:

- `level`: robust z of the recent level against the reference before it. short = median of
  the latest `short` values (this reading included); R = the `reference` values before those;
  z = (short - median R) / (1.4826 MAD R). When the MAD is 0 (a mostly flat reference) the
  scale falls back to 1.2533 * mean |R - median R|, then to max(1e-9, 1e-6 |median R|), so a
  constant signal scores 0 and any departure from it scores high. Needs `min_reference` values
  of R.
- `daily`: e = (mean of the latest `smoothing` values) - (the same average about 24 h earlier,
  from the orchestrator's SEASONAL view). The orchestrator standardises e against the sensor's
  own running median/deviation, so a series whose daily pattern repeats scores low and one whose
  day looks unlike yesterday scores high.

The engine does not flag rows itself; the orchestrator's calibrated likelihoods do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sentinel.errors import InvalidArgument

from .engine import (
    ChannelSpec,
    RowColumn,
    ScoreInput,
    ScoreOutput,
    SeasonalViewSpec,
    ratio_score,
)

ENGINE_VERSION = "2.0.0"
MAD_TO_SIGMA = 1.4826
MEAN_ABS_TO_SIGMA = 1.2533
DAILY_VIEW = "daily"
LEVEL = "level"
DAILY = "daily"


def row_median(rows: np.ndarray) -> np.ndarray:
    """Median of each row as float64. numpy's SIMD sort of short rows is several times faster
    than the partition np.median uses (measured: 4.7 -> 0.6 ms per 1000 rows of 200)."""
    return sorted_row_median(np.sort(rows, axis=1))


def sorted_row_median(ordered: np.ndarray) -> np.ndarray:
    """`row_median` of rows that are sorted already."""
    length = ordered.shape[1]
    half = length // 2
    if length % 2:
        return ordered[:, half].astype(np.float64)
    return (ordered[:, half - 1].astype(np.float64) + ordered[:, half]) / 2


@dataclass(frozen=True, slots=True)
class StatisticalParams:
    short: int = 30
    """Latest values whose median is the current level."""
    reference: int = 200
    """Values before those, the level is compared with."""
    min_reference: int = 60
    """Reference values needed before the level channel scores."""
    smoothing: int = 12
    """Values averaged for the daily comparison."""
    period_seconds: float = 86_400.0
    """Seasonal period of the daily channel."""
    bucket_seconds: float = 300.0
    """Resolution of the orchestrator's seasonal view."""
    tolerance_buckets: int = 5
    """Buckets either side of one period back that may stand in for it."""
    level_flag_below: float = 1e-7
    """Default likelihood threshold of the level channel."""
    daily_flag_below: float = 1e-8
    """Default likelihood threshold of the daily channel."""

    def __post_init__(self) -> None:
        if self.short < 1 or self.reference < 3 or not 3 <= self.min_reference <= self.reference:
            raise ValueError("need short >= 1 and 3 <= min_reference <= reference")
        if self.smoothing < 1 or self.period_seconds <= 0 or self.bucket_seconds <= 0:
            raise ValueError("need smoothing >= 1 and a positive period and bucket")


class StatisticalEngine:
    name = "statistical"
    # The daily view is aligned by the orchestrator: the engine reads no timestamps.
    row_columns: frozenset[RowColumn] = frozenset()

    def __init__(self, params: StatisticalParams | None = None, daily: bool = True) -> None:
        self.params = params or StatisticalParams()
        p = self.params
        self.version = ENGINE_VERSION
        self.window_length = max(p.short - 1 + p.reference, p.smoothing - 1)
        self.daily = daily
        self.views = (
            (
                SeasonalViewSpec(
                    DAILY_VIEW, p.period_seconds, p.bucket_seconds, p.smoothing,
                    p.tolerance_buckets,
                ),
            )
            if daily
            else ()
        )  # fmt: skip
        self.channels = (ChannelSpec(LEVEL, False, p.level_flag_below),) + (
            (ChannelSpec(DAILY, True, p.daily_flag_below),) if daily else ()
        )

    def parameters(self) -> Mapping[str, str]:
        p = self.params
        parameters = {
            "level": f"median of {p.short} vs median/MAD of the {p.reference} before",
        }
        if self.daily:
            parameters["daily"] = (
                f"{p.smoothing}-value average vs {p.period_seconds:g} s earlier "
                f"(+/- {p.tolerance_buckets} x {p.bucket_seconds:g} s)"
            )
        return parameters

    def level_z(self, values: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Robust z of median(latest `short`, value included) against the `reference` before;
        windows [rows, short - 1 + reference] of finite values."""
        p = self.params
        recent = np.concatenate(
            [windows[:, windows.shape[1] - (p.short - 1) :], values[:, None].astype(windows.dtype)],
            axis=1,
        )
        reference = windows[:, : windows.shape[1] - (p.short - 1)]
        level = row_median(recent)
        return robust_z(level, reference)

    def score(self, batch: ScoreInput) -> ScoreOutput:
        rows = batch.rows
        p = self.params
        if rows and batch.windows.shape[1] < self.window_length:
            raise ValueError(
                f"windows have {batch.windows.shape[1]} columns, engine needs {self.window_length}"
            )
        level = np.full(rows, np.nan)
        windows = batch.windows[:, batch.windows.shape[1] - self.window_length :]
        # The level needs the latest `short` values and at least `min_reference` before them.
        fill = batch.window_fill
        ready = fill >= p.short - 1 + p.min_reference
        full = ready & (fill >= self.window_length)
        if rows and full.all():  # the steady state: no row selection (it would copy every window)
            level = self.level_z(batch.values, windows)
        elif full.any():
            level[full] = self.level_z(batch.values[full], windows[full])
        partial = np.flatnonzero(ready & ~full)
        # Sensors with a partly filled reference: group by fill so each group is one matrix.
        for count in np.unique(fill[partial]).tolist():
            rows_of = partial[fill[partial] == count]
            level[rows_of] = self.level_z(
                batch.values[rows_of], windows[rows_of, self.window_length - count :]
            )
        channels = {LEVEL: level}
        judged = np.isfinite(level)
        if self.daily:
            daily = self.daily_residual(batch)
            channels[DAILY] = daily
            judged |= np.isfinite(daily)
        return ScoreOutput(
            scores=np.where(np.isfinite(level), ratio_score(level, 4.0), 0.0),
            anomalies=np.zeros(rows, dtype=bool),
            reasons={},
            warming_up=~judged,
            channels=channels,
        )

    def daily_residual(self, batch: ScoreInput) -> np.ndarray:
        """Moving average now minus the one about a period ago (NaN where there is none)."""
        p = self.params
        view = batch.views.get(DAILY_VIEW)
        if view is None or view.shape[1] != 1:
            raise InvalidArgument("views", f"view {DAILY_VIEW!r} must have 1 column")
        previous = p.smoothing - 1
        if previous:
            tail = batch.windows[:, batch.windows.shape[1] - previous :].astype(np.float64)
            count = np.minimum(batch.window_fill, previous)
            average = (np.nansum(tail, axis=1) + batch.values) / (count + 1)
        else:
            average = batch.values
        return average - view[:, 0]


def sorted_deviation_median(ordered: np.ndarray, center: np.ndarray) -> np.ndarray:
    """`row_median(np.abs(ordered - center[:, None]))` (float64, the same values bit for bit)
    for rows sorted ascending, finite, with `center` (of their dtype) their median.

    No second sort: the deviations below the median, read right to left, and those above it,
    read left to right, are two ascending runs, and their middle is found by a binary search
    over how many to take from each, for all rows at once (log2(n) steps of gathers over one
    value per row). Measured on 3,000 rows of 200: 0.49 -> 0.21 ms per 1,000 rows."""
    rows, n = ordered.shape
    if rows == 0 or n < 3:  # too short for two runs to pay (and run B may be empty)
        return row_median(np.abs(ordered - center[:, None]))
    below = (n + 1) // 2  # run A: center - ordered[below - 1 - i], i < below
    above = n - below  # run B: ordered[below + j] - center, j < above
    flat = ordered.ravel()
    row_start = np.arange(rows) * n

    def run_a(i: np.ndarray) -> np.ndarray:  # i in [0, below)
        return center - flat.take(row_start + (below - 1 - i))

    def run_b(j: np.ndarray) -> np.ndarray:  # j in [0, above)
        return flat.take(row_start + below + j) - center

    k = (n - 1) // 2  # the lower middle, 0-indexed
    # Smallest i (taken from A) with A[i] >= B[k - i]: then the k-th is max(A[i-1], B[k-i]).
    lo = np.full(rows, max(0, k + 1 - above))
    hi = np.full(rows, min(below, k + 1))
    for _ in range(int(hi[0] - lo[0]).bit_length()):
        mid = (lo + hi) >> 1
        a = np.where(mid < below, run_a(np.minimum(mid, below - 1)), np.inf)
        j = k - mid
        b = np.where(j >= 0, run_b(np.clip(j, 0, above - 1)), -np.inf)
        enough = a >= b
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid + 1)
    taken_b = k + 1 - lo
    last_a = np.where(lo > 0, run_a(np.maximum(lo - 1, 0)), -np.inf)
    last_b = np.where(taken_b > 0, run_b(np.clip(taken_b - 1, 0, above - 1)), -np.inf)
    lower = np.maximum(last_a, last_b).astype(np.float64)
    if n % 2:
        return lower
    next_a = np.where(lo < below, run_a(np.minimum(lo, below - 1)), np.inf)
    next_b = np.where(taken_b < above, run_b(np.clip(taken_b, 0, above - 1)), np.inf)
    # row_median averages the two middle values in float64, as np.median does.
    return (lower + np.minimum(next_a, next_b)) / 2


def robust_z(level: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ordered = np.sort(reference, axis=1)
    median = sorted_row_median(ordered)
    narrow_median = median.astype(reference.dtype)
    scale = MAD_TO_SIGMA * sorted_deviation_median(ordered, narrow_median)
    flat = ~(scale > 0)
    if flat.any():
        narrow_median = narrow_median[:, None]
        # A mean depends on the order it sums in: take it in the window's own order.
        deviations = np.abs(reference[flat] - narrow_median[flat])
        fallback = MEAN_ABS_TO_SIGMA * deviations.mean(axis=1, dtype=np.float64)
        floor = np.maximum(1e-9, 1e-6 * np.abs(median[flat]))
        scale[flat] = np.where(fallback > 0, fallback, floor)
    return (level - median) / scale

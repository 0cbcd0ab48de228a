"""Statistical engine: robust z-score of the latest value against its window.

z = (x - median(window)) / (1.4826 * MAD(window)). When MAD is 0 (a flat or mostly flat
window) the scale falls back to the window's mean absolute deviation, and when that is 0 too
(a constant window) to a small relative floor, so a constant signal scores 0 while any
departure from it scores high instead of dividing by zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .engine import ScoreInput, ScoreOutput, ratio_score

ENGINE_VERSION = "1.0.0"
MAD_TO_SIGMA = 1.4826
MEAN_ABS_TO_SIGMA = 1.2533


def row_median(rows: np.ndarray) -> np.ndarray:
    """Median of each row as float64; one partition pass (np.median does more work)."""
    length = rows.shape[1]
    half = length // 2
    if length % 2:
        return np.partition(rows, half, axis=1)[:, half].astype(np.float64)
    parted = np.partition(rows, (half - 1, half), axis=1)
    return (parted[:, half - 1].astype(np.float64) + parted[:, half]) / 2


class StatisticalEngine:
    name = "statistical"

    def __init__(self, window_length: int = 60, cutoff: float = 4.0) -> None:
        if window_length < 3:
            raise ValueError("window_length must be at least 3")
        if cutoff <= 0:
            raise ValueError("cutoff must be positive")
        self.window_length = window_length
        self.cutoff = cutoff
        self.version = ENGINE_VERSION

    def parameters(self) -> Mapping[str, str]:
        return {"window_length": str(self.window_length), "cutoff": str(self.cutoff)}

    def robust_z(self, values: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Robust z per row; windows [rows, L] of finite values (float32 or float64)."""
        median = row_median(windows)
        deviations = np.abs(windows - median[:, None].astype(windows.dtype))
        scale = MAD_TO_SIGMA * row_median(deviations)
        flat = ~(scale > 0)
        if flat.any():
            fallback = MEAN_ABS_TO_SIGMA * deviations[flat].mean(axis=1, dtype=np.float64)
            floor = np.maximum(1e-9, 1e-6 * np.abs(median[flat]))
            scale[flat] = np.where(fallback > 0, fallback, floor)
        return (values - median) / scale

    def score(self, batch: ScoreInput) -> ScoreOutput:
        rows = batch.rows
        scores = np.zeros(rows)
        anomalies = np.zeros(rows, dtype=bool)
        reasons = [""] * rows
        # Judging needs a full window: a half-seen sensor is warming up, not normal.
        ready = batch.window_fill >= self.window_length
        if rows and batch.windows.shape[1] < self.window_length:
            raise ValueError(
                f"windows have {batch.windows.shape[1]} columns, engine needs {self.window_length}"
            )
        idx = np.flatnonzero(ready)
        if idx.size:
            windows = batch.windows[idx, -self.window_length :]
            z = self.robust_z(batch.values[idx], windows)
            scores[idx] = ratio_score(z, self.cutoff)
            flagged = np.abs(z) > self.cutoff
            anomalies[idx] = flagged
            for row, zval in zip(idx[flagged], z[flagged], strict=True):
                reasons[row] = f"robust z={zval:.2f} beyond cut-off {self.cutoff:g}"
        return ScoreOutput(scores=scores, anomalies=anomalies, reasons=reasons, warming_up=~ready)

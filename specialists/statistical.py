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
        """Robust z per row; windows [rows, L] of finite values."""
        median = np.median(windows, axis=1)
        deviations = np.abs(windows - median[:, None])
        scale = MAD_TO_SIGMA * np.median(deviations, axis=1)
        fallback = MEAN_ABS_TO_SIGMA * deviations.mean(axis=1)
        floor = np.maximum(1e-9, 1e-6 * np.abs(median))
        scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, floor))
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
            windows = batch.windows[idx, -self.window_length :].astype(np.float64)
            z = self.robust_z(batch.values[idx], windows)
            scores[idx] = ratio_score(z, self.cutoff)
            flagged = np.abs(z) > self.cutoff
            anomalies[idx] = flagged
            for row, zval in zip(idx[flagged], z[flagged], strict=True):
                reasons[row] = f"robust z={zval:.2f} beyond cut-off {self.cutoff:g}"
        return ScoreOutput(scores=scores, anomalies=anomalies, reasons=reasons, warming_up=~ready)

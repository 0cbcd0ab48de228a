"""Feature extraction shared by the training script and the model engine.

Feature contract "robust-window-v1" (any model whose ``sentinel.features`` metadata names it
expects exactly this input; change anything below and the name must change too):

Inputs per row: the last ``L`` history values ``h[0..L-1]`` (oldest first, all finite) and the
latest value ``x``, where ``L`` is the model's ``sentinel.window_length``. Computed in float64:

1. ``m = median(h)``.
2. ``mad = 1.4826 * median(|h - m|)`` (robust standard deviation), ``sd = std(h)`` (population).
3. ``tiny = max(1e-12, 1e-9 * |m|)``: spreads at or below this are float rounding, not signal.
4. ``scale = mad`` if ``mad > tiny``; else ``sd`` if ``sd > tiny`` (a mostly-constant window
   with a few steps); else ``max(1e-6, 1e-3 * |m|)`` (a constant window: a change of 0.1% of
   its level, or 1e-6 near zero, counts as one unit).
5. Columns ``0..L-1``: ``(h[i] - x) / scale`` (each history value relative to the latest);
   column ``L``: ``(x - m) / scale`` (the latest value's deviation from the window median).
6. Every column is clipped to ``[-50, 50]``; NaN maps to 0 and +/-inf to +/-50, so the model
   input is always finite.

Output: float32 array ``[rows, L + 1]``. The transform is invariant to a sensor's offset and
(above the floors) its scale, which is why one model can serve every sensor.

Why history relative to the latest value: an isolation forest splits one axis at a time and
treats any point beyond the training range like the range's edge point. Were the latest
value a single column, a 20-sd spike would move the point along 1 of L + 1 axes and stay
hidden among normal windows; relative to the latest value, a spike moves every column.
"""

from __future__ import annotations

import numpy as np

FEATURE_SET = "robust-window-v1"
MAD_TO_SD = 1.4826  # makes the MAD a consistent estimator of a normal distribution's sd
CLIP = 50.0  # beyond this many robust-sd every value is simply "extreme"
_ROUNDING_REL = 1e-9
_ROUNDING_ABS = 1e-12
_CONSTANT_REL = 1e-3
_CONSTANT_ABS = 1e-6


def feature_count(window_length: int) -> int:
    return window_length + 1


def robust_scale(history: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Per-row scale ([rows, 1]) of `history` around `median` following steps 2-4 above."""
    mad = MAD_TO_SD * np.median(np.abs(history - median), axis=1, keepdims=True)
    sd = history.std(axis=1, keepdims=True)
    level = np.abs(median)
    tiny = np.maximum(_ROUNDING_ABS, _ROUNDING_REL * level)
    constant_floor = np.maximum(_CONSTANT_ABS, _CONSTANT_REL * level)
    return np.where(mad > tiny, mad, np.where(sd > tiny, sd, constant_floor))


def robust_window_features(
    windows: np.ndarray, latest: np.ndarray, window_length: int
) -> np.ndarray:
    """Features for every row of `windows` ([rows, >= L]) and `latest` ([rows]).

    Only the last `window_length` columns of `windows` are used; callers pass rows whose
    last `window_length` positions are filled.
    """
    if window_length < 1:
        raise ValueError(f"window_length must be >= 1, got {window_length}")
    if windows.ndim != 2 or windows.shape[1] < window_length:
        raise ValueError(
            f"windows must have shape [rows, >= {window_length}], got {list(windows.shape)}"
        )
    rows = windows.shape[0]
    if latest.shape != (rows,):
        raise ValueError(f"latest must have shape [{rows}], got {list(latest.shape)}")
    if rows == 0:
        return np.empty((0, feature_count(window_length)), dtype=np.float32)

    history = np.asarray(windows[:, -window_length:], dtype=np.float64)
    latest_column = np.asarray(latest, dtype=np.float64)[:, None]
    # Non-finite input is sanitised below rather than warned about row by row.
    with np.errstate(invalid="ignore", over="ignore"):
        median = np.median(history, axis=1, keepdims=True)
        scale = robust_scale(history, median)
        z = np.concatenate([history - latest_column, latest_column - median], axis=1) / scale
    z = np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(z, -CLIP, CLIP).astype(np.float32)

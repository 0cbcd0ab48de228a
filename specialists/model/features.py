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


def row_median(values: np.ndarray) -> np.ndarray:
    """Per-row median ([rows, 1]) of a 2-D float64 array; the same values as
    ``np.median(values, axis=1, keepdims=True)`` (NaN rows give NaN; a zero median may come
    out as -0.0 where np.median gives 0.0 or vice versa, which no comparison can tell apart).

    One vectorised sort per call: numpy's SIMD sort of short rows is several times faster
    than the partition `np.median` uses, and this runs on every scored row.
    """
    count = values.shape[1]
    ordered = np.sort(values, axis=1)
    middle = count // 2
    if count % 2:
        median = ordered[:, middle : middle + 1].copy()
    else:
        # np.median averages the two middle values as (a + b) / 2 too.
        median = (ordered[:, middle - 1 : middle] + ordered[:, middle : middle + 1]) / 2.0
    # NaN sorts last; np.median returns NaN for any row holding one.
    median[np.isnan(ordered[:, -1])] = np.nan
    return median


def robust_scale(history: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Per-row scale ([rows, 1]) of `history` around `median` following steps 2-4 above."""
    mad = MAD_TO_SD * row_median(np.abs(history - median))
    level = np.abs(median)
    tiny = np.maximum(_ROUNDING_ABS, _ROUNDING_REL * level)
    constant_floor = np.maximum(_CONSTANT_ABS, _CONSTANT_REL * level)
    scale = np.where(mad > tiny, mad, constant_floor)
    # The population sd is only needed where the MAD collapses (a mostly-constant window).
    fallback = np.flatnonzero(~(mad > tiny)[:, 0])
    if fallback.size:
        sd = history[fallback].std(axis=1, keepdims=True)
        scale[fallback] = np.where(sd > tiny[fallback], sd, constant_floor[fallback])
    return scale


def robust_window_features(
    windows: np.ndarray, latest: np.ndarray, window_length: int
) -> np.ndarray:
    """Features for every row of `windows` ([rows, >= L]) and `latest` ([rows]).

    Only the last `window_length` columns of `windows` are used; callers pass rows whose
    last `window_length` positions are filled. Returns a C-contiguous float32 array, ready
    to feed to ONNX Runtime without another copy.
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
    z = np.empty((rows, feature_count(window_length)), dtype=np.float64)
    # Non-finite input is sanitised below rather than warned about row by row.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        median = row_median(history)
        scale = robust_scale(history, median)
        np.subtract(history, latest_column, out=z[:, :window_length])
        np.subtract(latest_column, median, out=z[:, window_length:])
        z /= scale
    nan = np.isnan(z)
    if nan.any():
        z[nan] = 0.0
    # Clipping maps +/-inf to +/-CLIP; the float32 result is written in the same pass.
    features = np.empty(z.shape, dtype=np.float32)
    np.clip(z, -CLIP, CLIP, out=features, casting="same_kind")
    return features

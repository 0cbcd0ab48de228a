"""Synthetic NORMAL sensor series for training and checking the model (numpy only).

Each row is one short series in one regime, at a random level and scale, so that a model
trained on scale-free features sees the shapes of normal behaviour, not particular units.
"""

from __future__ import annotations

import numpy as np

REGIMES = ("white-noise", "seasonal", "random-walk", "trend", "ar1")


def normal_series(
    rng: np.random.Generator, rows: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """`rows` series of `length` points (float64) and each row's index into `REGIMES`."""
    t = np.arange(length, dtype=np.float64)
    regime = rng.integers(0, len(REGIMES), rows)
    noise = rng.standard_normal((rows, length))

    # Seasonal: periods from a few samples to far longer than the window, so a window may
    # hold many cycles or only a slow curve.
    period = rng.uniform(4.0, 200.0, (rows, 1))
    amplitude = rng.uniform(0.5, 5.0, (rows, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, (rows, 1))
    seasonal = amplitude * np.sin(2.0 * np.pi * t / period + phase) + noise

    random_walk = np.cumsum(noise, axis=1)
    trend = rng.uniform(-0.5, 0.5, (rows, 1)) * t + noise

    # AR(1) via a decaying-kernel convolution keeps it vectorised; the first value starts
    # from the stationary distribution so no burn-in is needed.
    phi = rng.uniform(0.3, 0.95, (rows, 1))
    powers = phi**t  # [rows, length]
    innovations = noise.copy()
    innovations[:, :1] /= np.sqrt(1.0 - phi**2)
    ar1 = np.stack(
        [np.sum(innovations[:, : k + 1] * powers[:, k::-1], axis=1) for k in range(length)],
        axis=1,
    )

    shapes = np.stack([noise, seasonal, random_walk, trend, ar1])  # [regimes, rows, length]
    shape = shapes[regime, np.arange(rows)]
    scale = 10.0 ** rng.uniform(-3.0, 3.0, (rows, 1))
    level = rng.standard_normal((rows, 1)) * 10.0 ** rng.uniform(-2.0, 4.0, (rows, 1))
    return level + scale * shape, regime

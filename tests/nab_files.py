"""NAB-style CSV series (timestamp,value at 5-minute steps) for the evaluate and replay tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FIRST = np.datetime64("2021-03-01T00:00:00")


def stamp(row: int) -> str:
    """The timestamp of reading `row`, written as NAB writes it."""
    return str(FIRST + np.timedelta64(5 * row, "m")).replace("T", " ")


def write_series(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows((stamp(i), f"{v:.4f}") for i, v in enumerate(values))

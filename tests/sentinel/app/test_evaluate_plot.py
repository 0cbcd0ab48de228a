"""`sentinel evaluate --plot`: one PNG per series, drawn from a replay verdict file."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from sentinel.app.evaluate import plot_series, read_verdicts

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_verdict_csv(path: Path, rows: int = 120, with_likelihood: bool = True) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "sensor_id", "value", "anomaly", "score", "status", "alert",
                         "model_score", "model_likelihood", "threshold_score",
                         "threshold_likelihood"])  # fmt: skip
        for i in range(rows):
            value = 40 + 5 * math.sin(i / 7) + (50 if i in (60, 61) else 0)
            warming = i < 30
            alert = {60: "open", 75: "resolved"}.get(i, "")
            likelihood = "" if warming or not with_likelihood else f"{10 ** -(i % 9):.6g}"
            writer.writerow(
                [f"2021-03-01 {i // 60:02d}:{i % 60:02d}:00", "cat/s.csv", repr(value),
                 int(i in (60, 61)), "0.5", "warming_up" if warming else "ok", alert,
                 "" if warming else "0.5", likelihood, "0.1", ""]
            )  # fmt: skip


def test_plot_of_a_small_series_is_a_png(tmp_path: Path) -> None:
    verdicts = tmp_path / "s.verdicts.csv"
    write_verdict_csv(verdicts)
    table = read_verdicts(verdicts)
    assert table.alert_rows("open") == [60] and table.alert_rows("resolved") == [75]
    # threshold's likelihood column is all empty: not drawn; model's is.
    assert all(math.isnan(v) for v in table.likelihoods["threshold"])
    assert table.likelihoods["model"][30] == 1e-3 and table.likelihoods["model"][36] == 1.0
    out = plot_series(verdicts, tmp_path / "plots" / "s.png", [(55, 70)], "cat/s.csv", 18)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_plot_without_any_likelihood_or_windows_still_draws(tmp_path: Path) -> None:
    verdicts = tmp_path / "s.verdicts.csv"
    write_verdict_csv(verdicts, rows=20, with_likelihood=False)
    out = plot_series(verdicts, tmp_path / "s.png", mark_anomalies=True)
    assert out.read_bytes()[:8] == PNG_MAGIC

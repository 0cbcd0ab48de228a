"""`sentinel evaluate`: NAB scoring (pure, hand-computed cases) and one small end-to-end run."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.incidents import IncidentTracker
from sentinel.evaluate import (
    STANDARD,
    CostProfile,
    alert_opens,
    load_windows,
    match_files,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
    score_file,
    window_rows,
)

# tanh(2.5): NAB's reward at the left edge of a window, before scaling to exactly A_TP.
MAX_TP = 0.9866142981514303

# One file of 1,000 rows: rows 0..149 are probationary, one window on rows 500..599 (width 100).
ROWS = 1000
WINDOW = [(500, 599)]


def raw(detections, windows=WINDOW, rows=ROWS, **kwargs) -> float:
    return score_file(rows, windows, detections, **kwargs).raw


def test_scaled_sigmoid_matches_nab() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(MAX_TP)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.8482836399575129)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-MAX_TP)
    assert scaled_sigmoid(3.0) == pytest.approx(-0.9999994, abs=1e-6)
    assert scaled_sigmoid(3.01) == -1.0


@pytest.mark.parametrize(
    ("rows", "expected"),
    [(0, 0), (5, 0), (7, 1), (1000, 150), (4032, 604), (5000, 750), (20_000, 750)],
)
def test_probationary_length_is_min_of_15_percent_and_750(rows: int, expected: int) -> None:
    assert probationary_length(rows) == expected


def test_detection_at_the_start_of_a_window_earns_a_tp() -> None:
    assert raw([500]) == pytest.approx(1.0 * STANDARD.tp)


def test_detection_at_the_end_of_a_window_earns_almost_nothing() -> None:
    # position -1/100: tanh(0.025) / tanh(2.5)
    assert raw([599]) == pytest.approx(0.025333905068325255)


def test_detection_in_the_middle_of_a_window() -> None:
    assert raw([550]) == pytest.approx(0.8597925669097837)


def test_only_the_earliest_detection_in_a_window_counts_and_later_ones_cost_nothing() -> None:
    score = score_file(ROWS, WINDOW, [550, 500, 560, 599])
    assert score.raw == pytest.approx(1.0)
    assert (score.tp_windows, score.fn_windows, score.fp, score.detections) == (1, 0, 0, 4)


def test_missed_window_costs_a_fn() -> None:
    score = score_file(ROWS, WINDOW, [])
    assert score.raw == STANDARD.fn == -1.0
    assert (score.tp_windows, score.fn_windows, score.fp) == (0, 1, 0)


def test_false_positive_before_any_window_costs_the_full_fp_weight() -> None:
    score = score_file(ROWS, WINDOW, [200, 300, 500])
    assert score.raw == pytest.approx(1.0 + 2 * STANDARD.fp)  # 1 - 0.22
    assert score.fp == 2


def test_false_positive_cost_grows_with_the_distance_after_a_window() -> None:
    # Just after the window (1 row past, width 100): position 1/99, tanh(-5/198) * 0.11.
    assert raw([500, 600]) == pytest.approx(1.0 - 0.002777187474616507)
    # One window width later (position 1): tanh(-2.5) * 0.11.
    assert raw([500, 599 + 99]) == pytest.approx(1.0 - 0.10852757279665734)
    # More than 3 widths later: the full 0.11.
    assert raw([500, 599 + 3 * 99 + 1]) == pytest.approx(1.0 - 0.11)


def test_false_positive_after_a_window_is_measured_from_the_nearest_earlier_window() -> None:
    windows = [(200, 299), (500, 599)]
    # 350 is 51 rows after the first window; it is before the second one, which does not matter.
    assert raw([200, 350, 500], windows=windows) == pytest.approx(
        2.0 + 0.11 * scaled_sigmoid(51 / 99)
    )


def test_probationary_rows_are_not_scored() -> None:
    # Detections inside the probationary period neither cost nor count.
    assert raw([0, 10, 149]) == -1.0
    assert score_file(ROWS, WINDOW, [0, 149]).detections == 0
    # A window wholly inside the probationary period is not scored (no FN), but `perfect` counts it.
    early = score_file(ROWS, [(10, 20), (500, 599)], [500])
    assert (early.raw, early.scored_windows, early.null, early.perfect) == (1.0, 1, -1.0, 2.0)
    # A window straddling the end of the probationary period: only its scored rows count.
    straddle = [(100, 199)]
    assert raw([120], windows=straddle) == -1.0
    assert raw([150], windows=straddle) == pytest.approx(scaled_sigmoid(-50 / 100) / MAX_TP)


def test_file_without_windows() -> None:
    score = score_file(ROWS, [], [100, 200, 900])
    assert score.raw == pytest.approx(2 * -0.11)
    assert (score.windows, score.null, score.perfect, score.fp) == (0, 0.0, 0.0, 2)


def test_custom_profile() -> None:
    profile = CostProfile(tp=2.0, fp=-0.5, fn=-3.0)
    assert raw([500, 200], profile=profile) == pytest.approx(2.0 - 0.5)
    assert raw([], profile=profile) == -3.0


def test_normalised_null_detector_is_0_and_perfect_is_100() -> None:
    files = [((1000, [(500, 599)])), (4000, [(1000, 1099), (2000, 2499)]), (2000, [])]
    null = score_corpus([score_file(rows, w, []) for rows, w in files])
    perfect = score_corpus([score_file(rows, w, [left for left, _ in w]) for rows, w in files])
    assert (null.null, null.perfect) == (-3.0, 3.0)
    assert null.normalised == 0.0
    assert perfect.normalised == pytest.approx(100.0)
    # Two of three windows caught at their start plus one far false positive:
    # raw = 1 + 1 - 1 - 0.11; normalised = 100 * (0.89 + 3) / 6.
    some = score_corpus(
        [
            score_file(1000, [(500, 599)], [500]),
            score_file(4000, [(1000, 1099), (2000, 2499)], [1000, 3900]),
        ]
    )
    assert some.normalised == pytest.approx(100 * (0.89 + 3) / 6)
    assert score_corpus([score_file(100, [], [50])]).normalised is None


def test_window_rows_follow_nab_on_duplicate_and_missing_timestamps() -> None:
    stamps = [0, 1, 2, 2, 3, 4, 5]  # a repeated timestamp, as at a DST change
    assert window_rows(stamps, [(1, 2), (4, 5)]) == [(1, 2), (5, 6)]
    with pytest.raises(ValueError, match="not a row"):
        window_rows(stamps, [(1, 9)], "f.csv")
    with pytest.raises(ValueError, match="overlaps"):
        window_rows(stamps, [(1, 3), (2, 5)])
    with pytest.raises(ValueError, match="ends before"):
        window_rows(stamps, [(4, 1)])
    with pytest.raises(ValueError, match="outside"):
        score_file(5, [(3, 7)], [])


def test_alert_opens_with_hysteresis() -> None:
    a = [0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    assert alert_opens([bool(x) for x in a], resolve_after=2) == [1, 7, 11]
    assert alert_opens([bool(x) for x in a], resolve_after=1) == [1, 4, 7, 11]
    assert alert_opens([bool(x) for x in a], resolve_after=5) == [1]
    with pytest.raises(ValueError):
        alert_opens([], 0)


@pytest.mark.parametrize("resolve_after", [1, 3, 5])
def test_alert_opens_matches_the_orchestrators_incident_tracker(resolve_after: int) -> None:
    rng = random.Random(resolve_after)
    flags = np.array([rng.random() < 0.15 for _ in range(3000)])
    tracker = IncidentTracker(resolve_after)
    opened: list[int] = []
    for start in range(0, len(flags), 97):  # in batches, as the orchestrator sees them
        chunk = flags[start : start + 97]
        events = tracker.update(
            ["s"] * len(chunk),
            np.arange(start, start + len(chunk)),
            np.zeros(len(chunk)),
            chunk,
            chunk.astype(float),
            lambda row: ((), ()),
        )
        opened += [e.incident.first_timestamp for e in events if e.state == "open"]
    assert alert_opens(flags.tolist(), resolve_after) == opened


def test_windows_file_and_matching_files_under_a_subdirectory(tmp_path: Path) -> None:
    windows_file = tmp_path / "windows.json"
    windows_file.write_text(
        json.dumps(
            {"cat/a.csv": [["2020-01-01 00:00:00.000000", "2020-01-01 01:00:00"]], "cat/b.csv": []}
        )
    )
    windows = load_windows(windows_file)
    assert windows["cat/a.csv"] == [("2020-01-01 00:00:00.000000", "2020-01-01 01:00:00")]
    root = tmp_path / "data" / "cat"
    root.mkdir(parents=True)
    for name in ("a.csv", "b.csv", "c.csv"):
        (root / name).write_text("timestamp,value\n")
    matched, skipped = match_files(root, windows)  # DIR is one category of the corpus
    assert [key for _, key in matched] == ["cat/a.csv", "cat/b.csv"]
    assert skipped == ["c.csv"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a.csv": [["only-start"]]}))
    with pytest.raises(ValueError, match="start, end"):
        load_windows(bad)


# --- end to end: the real command, a real embedded mesh, a tiny generated corpus ---------------


def _write_series(path: Path, values: np.ndarray) -> list[str]:
    stamps = [f"2021-03-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(len(values))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(zip(stamps, (f"{v:.4f}" for v in values), strict=True))
    return stamps


def test_evaluate_command_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = tmp_path / "corpus"
    # Calm signal (well under the default threshold limit 90) with one big spike at row 300.
    spiky = 40 + rng.normal(0, 1, 400)
    spiky[300] = 80
    spiky_stamps = _write_series(data / "plant" / "spiky.csv", spiky)
    # The same calm signal, never anomalous, no windows.
    _write_series(data / "plant" / "calm.csv", 40 + rng.normal(0, 1, 400))
    # A CSV without an entry in the windows file: reported as not scored, not silently dropped.
    _write_series(data / "plant" / "unlabelled.csv", 40 + rng.normal(0, 1, 100))
    windows = tmp_path / "windows.json"
    windows.write_text(
        json.dumps(
            {"plant/spiky.csv": [[spiky_stamps[290], spiky_stamps[320]]], "plant/calm.csv": []}
        )
    )
    report = tmp_path / "report.csv"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentinel",
            "evaluate",
            str(data),
            "--windows",
            str(windows),
            "--out",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "plant/spiky.csv" in out and "plant/calm.csv" in out
    assert "not scored (no entry in the windows file): plant/unlabelled.csv" in out
    assert "NAB standard-profile score" in out
    with report.open(newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"plant/spiky.csv", "plant/calm.csv", "TOTAL"}
    spiky_row = rows["plant/spiky.csv"]
    assert (spiky_row["rows"], spiky_row["windows"], spiky_row["tp_windows"], spiky_row["fn"]) == (
        "400",
        "1",
        "1",
        "0",
    )
    assert rows["TOTAL"]["rows"] == "800"
    # Caught at row 300 of the window 290..320: position -21/31, tanh(2.5 * 21/31) / tanh(2.5);
    # anything the engines flag outside the window can only lower that.
    caught = scaled_sigmoid(-21 / 31) / MAX_TP
    assert float(spiky_row["raw_score"]) <= caught + 1e-4
    normalised = float(rows["TOTAL"]["normalised_score"])
    # raw is printed to 4 decimals: (raw - null) / (perfect - null) with null -1, perfect 1
    assert normalised == pytest.approx(100 * (float(rows["TOTAL"]["raw_score"]) + 1) / 2, abs=0.01)
    assert f"{normalised:.2f}" in out

    # A windows file naming a timestamp that is not in the file is an error, not a silent zero.
    windows.write_text(
        json.dumps({"plant/spiky.csv": [["2030-01-01 00:00:00", "2030-01-01 01:00:00"]]})
    )
    failed = subprocess.run(
        [sys.executable, "-m", "sentinel", "evaluate", str(data), "--windows", str(windows)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2
    assert "not a row of the file" in failed.stderr

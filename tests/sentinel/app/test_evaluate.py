"""`sentinel evaluate`: NAB scoring (pure, hand-computed cases) and one small end-to-end run."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentinel.app.evaluate import (
    LOW_FN,
    LOW_FP,
    PROFILES,
    STANDARD,
    CostProfile,
    Evaluation,
    category,
    corpus_scores,
    detection_settings,
    evaluate,
    load_windows,
    match_files,
    probationary_length,
    render,
    scaled_sigmoid,
    score_corpus,
    score_file,
    score_profiles,
    score_verdicts,
    window_rows,
    write_report,
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


def nab_sigmoid(x: float) -> float:
    """NAB's scaledSigmoid, written out here so expected values do not come from the code."""
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def test_the_three_profiles_are_nab_v1_1_cost_matrices() -> None:
    # numenta/NAB config/profiles.json: tpWeight, fpWeight, fnWeight per profile.
    assert PROFILES == {
        "standard": CostProfile(tp=1.0, fp=-0.11, fn=-1.0),
        "reward_low_FP_rate": CostProfile(tp=1.0, fp=-0.22, fn=-1.0),
        "reward_low_FN_rate": CostProfile(tp=1.0, fp=-0.11, fn=-2.0),
    }
    assert (STANDARD, LOW_FP, LOW_FN) == tuple(PROFILES.values())


# A small file by hand: 100 rows, so probation = min(floor(0.15 * 100), 0.15 * 5000) = 15 rows.
# One window on rows 40..59 (width 20). Detections: row 30 (a false positive before any window,
# after probation), row 40 (the window's first row), row 65 (a false positive 6 rows after the
# window's right edge, row 59).
SMALL_ROWS = 100
SMALL_WINDOWS = [(40, 59)]
SMALL_DETECTIONS = [30, 40, 65]
# TP: position = -(59 - 40 + 1) / 20 = -1, worth A_TP * sigmoid(-1) / sigmoid(-1) = A_TP = 1.
# FP at 30: no window before it, unweighted -1, so it costs A_FP.
# FP at 65: position = (65 - 59) / (20 - 1) = 6/19; sigmoid(6/19) = 2 / (1 + e^(30/19)) - 1
#           = 2 / (1 + 4.8500...) - 1 = -0.658110776...; it costs |A_FP| * that.
SIGMOID_6_19 = -0.6581107760257359
EXPECTED_SMALL = {
    # 1 - 0.11 + 0.11 * -0.65811077... = 1 - 0.11 - 0.07239218...
    "standard": 0.817607814637169,
    # 1 - 0.22 + 0.22 * -0.65811077... = 1 - 0.22 - 0.14478437...
    "reward_low_FP_rate": 0.6352156292743382,
    # No missed window, so A_FN plays no part: the same as standard.
    "reward_low_FN_rate": 0.817607814637169,
}


def test_hand_computed_small_file_under_each_profile() -> None:
    assert nab_sigmoid(6 / 19) == pytest.approx(SIGMOID_6_19)
    assert probationary_length(SMALL_ROWS) == 15
    scores = score_profiles(SMALL_ROWS, SMALL_WINDOWS, SMALL_DETECTIONS, name="cat/small.csv")
    assert set(scores) == set(EXPECTED_SMALL)
    for name, expected in EXPECTED_SMALL.items():
        score = scores[name]
        assert score.raw == pytest.approx(expected, abs=1e-12), name
        assert score == score_file(SMALL_ROWS, SMALL_WINDOWS, SMALL_DETECTIONS, PROFILES[name],
                                   name="cat/small.csv")  # fmt: skip
        assert (score.tp_windows, score.fn_windows, score.fp, score.detections) == (1, 0, 2, 3)
        assert score.tp_score == pytest.approx(1.0)
    assert scores["standard"].fp_score == pytest.approx(-0.11 + 0.11 * SIGMOID_6_19)
    assert scores["reward_low_FP_rate"].fp_score == pytest.approx(-0.22 + 0.22 * SIGMOID_6_19)
    # null = A_FN * scored windows, perfect = A_TP * windows
    assert [(s.null, s.perfect) for s in scores.values()] == [(-1, 1), (-1, 1), (-2, 1)]


def test_missed_windows_cost_twice_as_much_under_low_fn_and_normalise_against_minus_2() -> None:
    # A second file, 200 rows (probation 30), two windows, no detection: both missed.
    missed = score_profiles(200, [(50, 69), (120, 139)], [], name="other/missed.csv")
    assert [missed[p].raw for p in PROFILES] == [-2.0, -2.0, -4.0]
    assert missed["reward_low_FN_rate"].null == -2 * 2  # null = -2 x windows
    small = score_profiles(SMALL_ROWS, SMALL_WINDOWS, SMALL_DETECTIONS, name="cat/small.csv")
    corpus = {name: score_corpus([small[name], missed[name]]) for name in PROFILES}
    low_fn = corpus["reward_low_FN_rate"]
    # raw 0.8176... - 4, null -2 * 3 windows = -6, perfect 3:
    # 100 * (0.8176... - 4 + 6) / (3 + 6) = 100 * 2.8176... / 9
    assert (low_fn.null, low_fn.perfect) == (-6.0, 3.0)
    assert low_fn.normalised == pytest.approx(100 * (0.817607814637169 + 2) / 9)
    # standard: raw 0.8176... - 2, null -3, perfect 3: 100 * 1.8176... / 6
    assert corpus["standard"].normalised == pytest.approx(100 * (0.817607814637169 + 1) / 6)
    # low FP: raw 0.6352... - 2, null -3, perfect 3
    assert corpus["reward_low_FP_rate"].normalised == pytest.approx(
        100 * (0.6352156292743382 + 1) / 6
    )
    # A detector that never fires scores 0 under every profile, a perfect one 100.
    for name, profile in PROFILES.items():
        never = score_corpus([score_file(200, [(50, 69), (120, 139)], [], profile)])
        perfect = score_corpus([score_file(200, [(50, 69), (120, 139)], [50, 120], profile)])
        assert (never.normalised, perfect.normalised) == (0.0, pytest.approx(100.0)), name


def test_category_is_the_first_path_component_of_the_windows_key() -> None:
    assert category("realTweets/Twitter_volume_AAPL.csv") == "realTweets"
    assert category("a/b/c.csv") == "a"
    assert category("loose.csv") == ""


def _write_verdict_file(path: Path, stamps: list[str], anomaly: list[int], alert: list[str]):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "sensor_id", "value", "anomaly", "score", "status", "alert",
                         "model_score", "model_likelihood"])  # fmt: skip
        for i, (stamp, flag, event) in enumerate(zip(stamps, anomaly, alert, strict=True)):
            status = "missing" if i == 3 else "ok"
            writer.writerow([stamp, "s", float(i), flag if status == "ok" else "",
                             "0.5", status, event, "0.5", "0.01"])  # fmt: skip


def test_detections_from_a_verdict_file_in_alerts_and_verdicts_mode(tmp_path: Path) -> None:
    stamps = [f"2021-03-01 {m // 60:02d}:{m % 60:02d}:00" for m in range(SMALL_ROWS)]
    anomaly = [0] * SMALL_ROWS
    alert = [""] * SMALL_ROWS
    for row in SMALL_DETECTIONS:
        alert[row] = "open"
        anomaly[row] = anomaly[row + 1] = 1  # an alert stays open: later anomalous rows
    alert[70] = "resolved"
    alert[90] = "resolved;open"  # one reading may resolve an incident and open the next
    path = tmp_path / "v.csv"
    _write_verdict_file(path, stamps, anomaly, alert)
    windows = [(stamps[40], stamps[59])]
    result = score_verdicts(path, "cat/small.csv", windows, "alerts")
    assert result.detections == [30, 40, 65, 90]
    assert (result.rows, result.windows, result.missing, result.category) == (
        100, [(40, 59)], 1, "cat")  # fmt: skip
    # the extra false positive at 90 is 31 rows after the window: sigmoid(31/19)
    extra = 0.11 * nab_sigmoid(31 / 19)
    assert result.scores["standard"].raw == pytest.approx(EXPECTED_SMALL["standard"] + extra)
    pointwise = score_verdicts(path, "cat/small.csv", windows, "verdicts")
    assert pointwise.detections == [30, 31, 40, 41, 65, 66]
    # A verdict file from before the alert column cannot be scored by alerts.
    old = tmp_path / "old.csv"
    old.write_text("timestamp,sensor_id,value,anomaly,score,status\n2021-03-01,s,1.0,1,0.9,ok\n")
    with pytest.raises(ValueError, match="no alert column"):
        score_verdicts(old, "old.csv", [], "alerts")
    assert score_verdicts(old, "old.csv", [], "verdicts").detections == [0]


def test_report_and_summary_show_every_profile(tmp_path: Path) -> None:
    stamps = [f"2021-03-01 {m // 60:02d}:{m % 60:02d}:00" for m in range(SMALL_ROWS)]
    alert = ["open" if i in SMALL_DETECTIONS else "" for i in range(SMALL_ROWS)]
    path = tmp_path / "v.csv"
    _write_verdict_file(path, stamps, [0] * SMALL_ROWS, alert)
    small = score_verdicts(path, "cat/small.csv", [(stamps[40], stamps[59])])
    missed = score_verdicts(path, "dog/missed.csv", [(stamps[50], stamps[60])], "verdicts")
    files = [small, missed]
    evaluation = Evaluation(files=files, corpora=corpus_scores(files), mode="alerts", seconds=1.0,
                            settings={"SENTINEL_COMBINE_POLICY": "any"})  # fmt: skip
    assert evaluation.corpus is evaluation.corpora["standard"]
    assert [f.raw for f in evaluation.file_scores("reward_low_FN_rate")] == [
        pytest.approx(EXPECTED_SMALL["reward_low_FN_rate"]), -2.0]  # fmt: skip
    assert evaluation.missing_rows == 2
    text = render(evaluation)
    normalised = {name: c.normalised for name, c in evaluation.corpora.items()}
    assert normalised["standard"] == pytest.approx(100 * (EXPECTED_SMALL["standard"] + 1) / 4)
    assert normalised["reward_low_FN_rate"] == pytest.approx(
        100 * (EXPECTED_SMALL["reward_low_FN_rate"] - 2 + 4) / (2 + 4)
    )
    line = next(line for line in text.splitlines() if line.startswith("NAB score"))
    for name, value in normalised.items():
        assert f"{name} {value:.2f}" in line
    assert "SENTINEL_COMBINE_POLICY=any" in text
    assert "resolve_after" not in text
    report = tmp_path / "report.csv"
    write_report(report, evaluation)
    with report.open(newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"cat/small.csv", "dog/missed.csv", "TOTAL"}
    assert float(rows["cat/small.csv"]["raw_score"]) == pytest.approx(0.8176, abs=1e-4)
    for name, value in normalised.items():
        assert float(rows["TOTAL"][f"normalised_{name}"]) == pytest.approx(value, abs=1e-4)
        assert rows["cat/small.csv"][f"normalised_{name}"] == ""


def test_detection_settings_printed_are_the_ones_set() -> None:
    environ = {
        "SENTINEL_STATISTICAL_SHORT": "20",
        "SENTINEL_PORT": "1",
        "SENTINEL_RESOLVE_AFTER_SECONDS": "600",
        "SENTINEL_COMBINE_POLICY": "any",
        "SENTINEL_ADAPTIVE_MARGIN": "0.1",
        "SENTINEL_LIKELIHOOD_THRESHOLDS": "statistical=1e-4",
        "HOME": "/",
    }
    assert list(detection_settings(environ)) == [
        "SENTINEL_COMBINE_POLICY",
        "SENTINEL_RESOLVE_AFTER_SECONDS",
        "SENTINEL_LIKELIHOOD_THRESHOLDS",
        "SENTINEL_ADAPTIVE_MARGIN",
        "SENTINEL_STATISTICAL_SHORT",
    ]


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
    assert "NAB score (normalised" in out and "reward_low_FN_rate" in out
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
    normalised = float(rows["TOTAL"]["normalised_standard"])
    # raw is printed to 4 decimals: (raw - null) / (perfect - null) with null -1, perfect 1
    assert normalised == pytest.approx(100 * (float(rows["TOTAL"]["raw_score"]) + 1) / 2, abs=0.01)
    assert f"standard {normalised:.2f}" in out
    for name in PROFILES:
        assert rows["TOTAL"][f"normalised_{name}"]

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


async def test_evaluate_through_a_running_mesh_with_fresh_sensor_ids_and_plots(
    tmp_path: Path, mesh
) -> None:
    """--target: the files go to an already-running orchestrator, each run under its own
    sensor-id prefix, so a second run does not continue the first run's sensors."""
    rng = np.random.default_rng(5)
    data = tmp_path / "corpus"
    spiky = 40 + rng.normal(0, 1, 300)
    spiky[200] = 95  # over the threshold engine's default limit (90)
    stamps = _write_series(data / "plant" / "spiky.csv", spiky)
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({"plant/spiky.csv": [[stamps[190], stamps[220]]]}))
    prefixes = []
    for run in range(2):
        verdicts = tmp_path / f"verdicts{run}"
        plots = tmp_path / f"plots{run}"
        evaluation = await evaluate(
            data, windows, "verdicts", 64, verdicts, target=mesh.target, plot_dir=plots
        )
        assert evaluation.target == mesh.target and evaluation.sensor_prefix
        prefixes.append(evaluation.sensor_prefix)
        with (verdicts / "plant__spiky.verdicts.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 300
        assert {r["sensor_id"] for r in rows} == {evaluation.sensor_prefix + "plant/spiky.csv"}
        # A fresh sensor each run: its window engines warm up again.
        assert rows[0]["status"] == "warming_up"
        assert rows[200]["anomaly"] == "1"
        (result,) = evaluation.files
        assert 200 in result.detections and result.scores["standard"].tp_windows == 1
        png = plots / "plant__spiky.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "those of the mesh at" in render(evaluation)
    assert prefixes[0] != prefixes[1]
    explicit = await evaluate(
        data, windows, "verdicts", 64, target=mesh.target, sensor_prefix="mine/"
    )
    assert explicit.sensor_prefix == "mine/"

"""StatisticalEngine: robust z-score against median / MAD of each row's window."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specialists.engine import ScoreInput
from specialists.statistical import MAD_TO_SIGMA, StatisticalEngine


def make_input(values, windows, fill=None, sensors=None) -> ScoreInput:
    values = np.asarray(values, dtype=np.float64)
    windows = np.asarray(windows, dtype=np.float64).reshape(values.shape[0], -1)
    n = values.shape[0]
    if fill is None:
        fill = (~np.isnan(windows)).sum(axis=1)
    return ScoreInput(
        sensor_ids=list(sensors or [f"s{i}" for i in range(n)]),
        values=values,
        timestamps=np.arange(n, dtype=np.int64),
        windows=windows,
        window_fill=np.asarray(fill, dtype=np.int64),
    )


def reference_z(value: float, window: np.ndarray) -> float:
    median = float(np.median(window))
    mad = float(np.median(np.abs(window - median)))
    return (value - median) / (MAD_TO_SIGMA * mad)


WINDOW = np.array([10.0, 11.0, 9.0, 10.5, 9.5, 12.0, 8.0, 10.0])


def test_describes_itself():
    engine = StatisticalEngine(window_length=8, cutoff=3.0)
    assert engine.name == "statistical"
    assert engine.window_length == 8
    assert engine.parameters() == {"window_length": "8", "cutoff": "3.0"}


def test_robust_z_against_median_and_mad():
    engine = StatisticalEngine(window_length=8)
    values = np.array([10.0, 13.0, 4.0, 30.0])
    z = engine.robust_z(values, np.tile(WINDOW, (4, 1)))
    np.testing.assert_allclose(z, [reference_z(v, WINDOW) for v in values])
    out = engine.score(make_input(values, np.tile(WINDOW, (4, 1))))
    assert out.anomalies.tolist() == [abs(reference_z(v, WINDOW)) > 4.0 for v in values]
    assert out.anomalies.tolist() == [False, False, True, True]
    assert out.warming_up.tolist() == [False] * 4
    assert out.scores[0] == 0.0


def test_cutoff_is_configurable():
    value = 13.0  # robust z of about 2.7
    z = reference_z(value, WINDOW)
    assert 2.0 < z < 4.0
    loose = StatisticalEngine(window_length=8, cutoff=4.0).score(make_input([value], [WINDOW]))
    strict = StatisticalEngine(window_length=8, cutoff=2.0).score(make_input([value], [WINDOW]))
    assert loose.anomalies.tolist() == [False] and loose.scores[0] < 0.5
    assert strict.anomalies.tolist() == [True] and strict.scores[0] > 0.5


def test_score_is_one_half_at_the_cutoff():
    engine = StatisticalEngine(window_length=8, cutoff=2.5)
    median = float(np.median(WINDOW))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(WINDOW - median)))
    out = engine.score(make_input([median + 2.5 * scale], [WINDOW]))
    assert out.scores[0] == pytest.approx(0.5)


def test_reason_carries_the_z_value():
    engine = StatisticalEngine(window_length=8)
    out = engine.score(make_input([10.0, 30.0], np.tile(WINDOW, (2, 1))))
    assert out.reasons[0] == ""
    assert "z=" in out.reasons[1]
    assert f"z={reference_z(30.0, WINDOW):.2f}" in out.reasons[1]
    assert "cut-off 4" in out.reasons[1]
    low = StatisticalEngine(window_length=8).score(make_input([-10.0], [WINDOW]))
    assert "z=-" in low.reasons[0]


@pytest.mark.parametrize("level", [0.0, 42.0, -1e6, 1e-12])
def test_constant_window(level):
    engine = StatisticalEngine(window_length=5)
    window = np.full(5, level)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        same = engine.score(make_input([level], [window]))
        other = engine.score(make_input([level + max(1.0, abs(level) * 1e-3)], [window]))
    assert same.scores.tolist() == [0.0]
    assert same.anomalies.tolist() == [False]
    assert other.anomalies.tolist() == [True]
    assert np.isfinite(other.scores).all() and other.scores[0] > 0.5
    assert "z=" in other.reasons[0]


def test_constant_float32_window_and_the_same_float64_value_is_normal():
    # Windows travel as float32; the float64 value differs from them by rounding only.
    engine = StatisticalEngine(window_length=5)
    window = np.full((1, 5), 0.1, dtype=np.float32)
    batch = ScoreInput(["s"], np.array([0.1]), np.zeros(1, np.int64), window, np.array([5]))
    out = engine.score(batch)
    assert out.anomalies.tolist() == [False]
    assert out.scores[0] < 0.5


def test_mostly_flat_window_uses_a_fallback_scale():
    # MAD is 0 but the window is not constant: still no division by zero.
    engine = StatisticalEngine(window_length=5)
    window = [5.0, 5.0, 5.0, 5.0, 6.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = engine.score(make_input([5.0, 5.2, 50.0], np.tile(window, (3, 1))))
    assert out.anomalies.tolist() == [False, False, True]
    assert np.isfinite(out.scores).all()


def test_warming_up_rows_carry_no_verdict():
    engine = StatisticalEngine(window_length=4)
    nan = np.nan
    windows = [[nan, nan, nan, nan], [nan, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    out = engine.score(make_input([1000.0, 1000.0, 1000.0], windows))
    assert out.warming_up.tolist() == [True, True, False]
    assert out.anomalies.tolist() == [False, False, True]
    assert out.scores[:2].tolist() == [0.0, 0.0]
    assert out.reasons[:2] == ["", ""]


def test_wider_windows_use_the_trailing_values():
    engine = StatisticalEngine(window_length=4)
    windows = np.array(
        [[1e9, -1e9, 10.0, 10.0, 10.0, 10.0], [np.nan, np.nan, 10.0, 10.0, 10.0, 10.0]]
    )
    out = engine.score(make_input([10.0, 10.0], windows, fill=[6, 4]))
    assert out.anomalies.tolist() == [False, False]
    assert out.warming_up.tolist() == [False, False]
    assert out.scores.tolist() == [0.0, 0.0]


def test_float32_windows():
    engine = StatisticalEngine(window_length=8)
    batch = make_input([30.0], [WINDOW])
    batch32 = ScoreInput(
        batch.sensor_ids,
        batch.values,
        batch.timestamps,
        batch.windows.astype(np.float32),
        batch.window_fill,
    )
    np.testing.assert_allclose(engine.score(batch32).scores, engine.score(batch).scores)


def test_too_narrow_windows_are_an_error():
    with pytest.raises(ValueError, match="columns"):
        StatisticalEngine(window_length=5).score(make_input([1.0], [[1.0, 2.0, 3.0]]))


def test_empty_batch():
    out = StatisticalEngine(window_length=5).score(
        ScoreInput([], np.empty(0), np.empty(0, np.int64), np.empty((0, 0)), np.empty(0, np.int64))
    )
    assert out.scores.shape == (0,) and out.reasons == []


@pytest.mark.parametrize(("length", "cutoff"), [(2, 4.0), (5, 0.0), (5, -1.0)])
def test_invalid_parameters(length, cutoff):
    with pytest.raises(ValueError):
        StatisticalEngine(window_length=length, cutoff=cutoff)


# ---------------------------------------------------------------- properties

FINITE = st.floats(-1e9, 1e9, allow_nan=False)
LENGTH = 5


@st.composite
def batches(draw):
    rows = draw(st.integers(1, 8))
    width = draw(st.integers(LENGTH, LENGTH + 2))
    windows = draw(hnp.arrays(np.float64, (rows, width), elements=FINITE))
    # A few repeated values make MAD = 0 cases common.
    if draw(st.booleans()):
        windows = np.round(windows / 1e8) * 1e8
    fill = np.array(draw(st.lists(st.integers(0, width), min_size=rows, max_size=rows)))
    for i, f in enumerate(fill):
        windows[i, : width - f] = np.nan
    values = np.array(draw(st.lists(FINITE, min_size=rows, max_size=rows)))
    cutoff = draw(st.floats(0.5, 10.0))
    return cutoff, make_input(values, windows, fill)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_scores_in_unit_interval_and_consistent_flags(case):
    cutoff, batch = case
    engine = StatisticalEngine(window_length=LENGTH, cutoff=cutoff)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = engine.score(batch)
    assert np.isfinite(out.scores).all()
    assert ((out.scores >= 0.0) & (out.scores <= 1.0)).all()
    assert (out.warming_up == (batch.window_fill < LENGTH)).all()
    assert not (out.anomalies & out.warming_up).any()
    assert (out.scores[out.anomalies] >= 0.5).all()
    assert (out.scores[~out.anomalies] <= 0.5).all()
    for i in range(batch.rows):
        assert ("z=" in out.reasons[i]) == bool(out.anomalies[i])


@settings(max_examples=100, deadline=None)
@given(batches())
def test_batch_result_equals_row_by_row(case):
    cutoff, batch = case
    engine = StatisticalEngine(window_length=LENGTH, cutoff=cutoff)
    whole = engine.score(batch)
    for i in range(batch.rows):
        single = engine.score(
            ScoreInput(
                [batch.sensor_ids[i]],
                batch.values[i : i + 1],
                batch.timestamps[i : i + 1],
                batch.windows[i : i + 1],
                batch.window_fill[i : i + 1],
            )
        )
        assert single.scores[0] == whole.scores[i]
        assert single.anomalies[0] == whole.anomalies[i]
        assert single.warming_up[0] == whole.warming_up[i]
        assert single.reasons[0] == whole.reasons[i]

"""StatisticalEngine: the `level` channel (robust z of the recent median against the median / MAD
of the values before it) and the `daily` channel (moving average minus the SEASONAL view)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import signals
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sentinel.specialists.engine import ChannelSpec, ScoreInput, SeasonalViewSpec
from sentinel.specialists.statistical import (
    ENGINE_VERSION,
    MAD_TO_SIGMA,
    StatisticalEngine,
    StatisticalParams,
    row_median,
    sorted_deviation_median,
    sorted_row_median,
)
from signals import DAY, Bench

from sentinel.errors import InvalidArgument

# Small windows for unit tests: level = median of the latest 3 (value included) against the 8
# values before them; the level needs 5 of those. Window = short - 1 + reference = 10.
SMALL = StatisticalParams(short=3, reference=8, min_reference=5, smoothing=4)
WIDTH = 10


def make_input(values, windows, fill=None, daily=None) -> ScoreInput:
    values = np.asarray(values, dtype=np.float64)
    windows = np.asarray(windows, dtype=np.float64).reshape(values.shape[0], -1)
    n = values.shape[0]
    if fill is None:
        fill = (~np.isnan(windows)).sum(axis=1)
    views = {} if daily is None else {"daily": np.asarray(daily, dtype=np.float64).reshape(n, 1)}
    return ScoreInput(
        values=values,
        windows=windows,
        window_fill=np.asarray(fill, dtype=np.int64),
        views=views,
    )


def reference_level_z(value: float, window: np.ndarray, short: int) -> float:
    """The level channel written out with np.median (window = reference then short - 1)."""
    recent = np.append(window[len(window) - (short - 1) :], value)
    reference = window[: len(window) - (short - 1)]
    median = float(np.median(reference))
    mad = float(np.median(np.abs(reference - median)))
    return (float(np.median(recent)) - median) / (MAD_TO_SIGMA * mad)


REFERENCE = np.array([10.0, 11.0, 9.0, 10.5, 9.5, 12.0, 8.0, 10.0])
WINDOW = np.concatenate([REFERENCE, [10.2, 9.9]])  # 8 reference values, then short - 1 = 2


def level_engine(params: StatisticalParams = SMALL) -> StatisticalEngine:
    return StatisticalEngine(params, daily=False)


# ---------------------------------------------------------------- contract


def test_describes_itself():
    engine = StatisticalEngine()
    assert engine.name == "statistical"
    assert engine.version == ENGINE_VERSION
    assert engine.window_length == 30 - 1 + 200
    assert engine.views == (SeasonalViewSpec("daily", 86_400.0, 300.0, 12, 5),)
    # level is z-like already; daily is a residual the orchestrator standardises first
    defaults = StatisticalParams()
    assert engine.channels == (
        ChannelSpec("level", False, defaults.level_flag_below),
        ChannelSpec("daily", True, defaults.daily_flag_below),
    )
    assert 0.0 < defaults.level_flag_below < 1e-4 and 0.0 < defaults.daily_flag_below < 1e-4
    assert engine.parameters()["level"] == "median of 30 vs median/MAD of the 200 before"
    assert "86400 s earlier" in engine.parameters()["daily"]


def test_without_daily_there_is_no_view_and_one_channel():
    engine = level_engine()
    assert engine.views == ()
    assert [c.name for c in engine.channels] == ["level"]
    assert engine.window_length == WIDTH
    assert set(engine.parameters()) == {"level"}


def test_never_flags_rows_itself():
    # Flags come from the orchestrator's calibrated likelihoods, never from a global cut-off.
    shifted = np.concatenate([REFERENCE, [1e9, 1e9]])
    out = level_engine().score(make_input([10.0, 1e9], [WINDOW, shifted]))
    assert out.anomalies.tolist() == [False, False]
    assert out.reasons == {}
    assert out.channels["level"][1] > 1e6 and out.scores[1] > 0.99


# ---------------------------------------------------------------- the level channel


def test_level_is_a_robust_z_of_the_recent_median():
    values = np.array([10.0, 13.0, 4.0, 30.0])
    out = level_engine().score(make_input(values, np.tile(WINDOW, (4, 1))))
    expected = [reference_level_z(v, WINDOW, 3) for v in values]
    np.testing.assert_allclose(out.channels["level"], expected)
    assert out.warming_up.tolist() == [False] * 4
    # One spike in the latest three moves the median by one rank only.
    assert abs(out.channels["level"][3]) < 1.0


def test_score_is_one_half_at_a_level_z_of_four():
    engine = level_engine()
    median = float(np.median(REFERENCE))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(REFERENCE - median)))
    level = median + 4.0 * scale
    window = np.concatenate([REFERENCE, [level, level]])
    out = engine.score(make_input([level], [window]))
    assert out.channels["level"][0] == pytest.approx(4.0)
    assert out.scores[0] == pytest.approx(0.5)


@pytest.mark.parametrize("level", [0.0, 42.0, -1e6, 1e-12])
def test_constant_window(level):
    engine = level_engine()
    window = np.full(WIDTH, level)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        # A departure must move the median of the latest three: two recent values and this one.
        moved = level + max(1.0, abs(level) * 1e-3)
        shifted = window.copy()
        shifted[-2:] = moved
        same = engine.score(make_input([level], [window]))
        other = engine.score(make_input([moved], [shifted]))
    assert same.channels["level"].tolist() == [0.0]
    assert same.scores.tolist() == [0.0]
    # scale: 1e-6 of the level (at least 1e-9), so any departure is a large z
    assert np.isfinite(other.channels["level"]).all() and other.channels["level"][0] >= 999
    assert other.scores[0] > 0.5


def test_constant_float32_window_and_the_same_float64_value_is_level():
    # Windows travel as float32; the float64 value differs from them by rounding only.
    engine = level_engine()
    window = np.full((1, WIDTH), 0.1, dtype=np.float32)
    batch = ScoreInput(np.array([0.1]), window, np.array([WIDTH]))
    out = engine.score(batch)
    assert out.channels["level"].tolist() == [0.0]
    assert out.scores[0] < 0.5


def test_mostly_flat_reference_uses_a_fallback_scale():
    # MAD is 0 but the reference is not constant: scale = 1.2533 * mean |R - median R|.
    engine = level_engine()
    reference = np.array([5.0] * 7 + [6.0])
    fallback = 1.2533 * np.mean(np.abs(reference - 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = engine.score(
            make_input(
                [5.0, 7.0], [np.append(reference, [5.0, 5.0]), np.append(reference, [7.0, 7.0])]
            )
        )
    np.testing.assert_allclose(out.channels["level"], [0.0, 2.0 / fallback])


def test_warming_up_rows_have_no_level():
    engine = level_engine()
    nan = np.nan
    # The level needs short - 1 + min_reference = 7 values before the row.
    windows = np.array([[nan] * 10, [nan] * 4 + [1.0] * 6, [nan] * 3 + [1.0] * 7])
    out = engine.score(make_input([1000.0, 1000.0, 1000.0], windows))
    assert out.warming_up.tolist() == [True, True, False]
    assert np.isnan(out.channels["level"][:2]).all()
    assert out.channels["level"][2] == 0.0  # median of [1, 1, 1000] is 1: level unchanged
    assert out.scores[:2].tolist() == [0.0, 0.0]


def test_a_partly_filled_reference_uses_the_values_it_has():
    engine = level_engine()
    window = np.concatenate([[np.nan] * 2, REFERENCE[2:], [10.2, 9.9]])
    out = engine.score(make_input([30.0], [window]))
    expected = reference_level_z(30.0, np.concatenate([REFERENCE[2:], [10.2, 9.9]]), 3)
    assert out.channels["level"][0] == pytest.approx(expected)


def test_wider_windows_use_the_trailing_values():
    engine = level_engine()
    windows = np.array([[1e9, -1e9, *[10.0] * WIDTH], [np.nan, np.nan, *[10.0] * WIDTH]])
    out = engine.score(make_input([10.0, 10.0], windows, fill=[WIDTH + 2, WIDTH]))
    assert out.warming_up.tolist() == [False, False]
    assert out.channels["level"].tolist() == [0.0, 0.0]


def test_float32_windows():
    engine = level_engine()
    batch = make_input([30.0, 10.0], np.tile(WINDOW, (2, 1)))
    batch32 = ScoreInput(batch.values, batch.windows.astype(np.float32), batch.window_fill)
    np.testing.assert_allclose(
        engine.score(batch32).channels["level"], engine.score(batch).channels["level"], rtol=1e-6
    )


def test_too_narrow_windows_are_an_error():
    with pytest.raises(ValueError, match="columns"):
        level_engine().score(make_input([1.0], [[1.0, 2.0, 3.0]]))


def test_empty_batch():
    out = StatisticalEngine().score(
        ScoreInput(
            np.empty(0), np.empty((0, 229)), np.empty(0, np.int64),
            views={"daily": np.empty((0, 1))},
        )
    )  # fmt: skip
    assert out.scores.shape == (0,) and out.reasons == {}
    assert {name: c.shape for name, c in out.channels.items()} == {"level": (0,), "daily": (0,)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"short": 0},
        {"reference": 2, "min_reference": 2},
        {"min_reference": 2},
        {"reference": 50, "min_reference": 60},
        {"smoothing": 0},
        {"period_seconds": 0.0},
        {"bucket_seconds": -1.0},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        StatisticalParams(**kwargs)


# ---------------------------------------------------------------- the daily channel


def test_daily_is_the_moving_average_minus_the_view():
    engine = StatisticalEngine(SMALL)  # smoothing 4: this value and the 3 before it
    window = np.arange(WIDTH, dtype=np.float64)
    out = engine.score(make_input([10.0, 10.0], np.tile(window, (2, 1)), daily=[5.0, np.nan]))
    assert out.channels["daily"][0] == pytest.approx((7 + 8 + 9 + 10) / 4 - 5.0)
    assert np.isnan(out.channels["daily"][1])  # nothing about a period earlier yet
    # A short history: the average of what there is.
    short = np.array([np.nan] * 8 + [2.0, 4.0])
    out = engine.score(make_input([6.0], [short], daily=[0.0]))
    assert out.channels["daily"][0] == pytest.approx(4.0)
    assert out.warming_up.tolist() == [False]  # the daily channel judges it already


def test_daily_needs_its_view():
    with pytest.raises(InvalidArgument, match="daily"):
        StatisticalEngine(SMALL).score(make_input([1.0], [WINDOW]))


# ---------------------------------------------------------------- properties

FINITE = st.floats(-1e9, 1e9, allow_nan=False)


@st.composite
def batches(draw):
    rows = draw(st.integers(1, 8))
    width = draw(st.integers(WIDTH, WIDTH + 2))
    windows = draw(hnp.arrays(np.float64, (rows, width), elements=FINITE))
    # A few repeated values make MAD = 0 cases common.
    if draw(st.booleans()):
        windows = np.round(windows / 1e8) * 1e8
    fill = np.array(draw(st.lists(st.integers(0, width), min_size=rows, max_size=rows)))
    for i, f in enumerate(fill):
        windows[i, : width - f] = np.nan
    values = np.array(draw(st.lists(FINITE, min_size=rows, max_size=rows)))
    daily = np.array(
        draw(st.lists(st.one_of(st.just(np.nan), FINITE), min_size=rows, max_size=rows))
    )
    return make_input(values, windows, fill, daily=daily)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_scores_in_unit_interval_and_channels_finite_where_judged(batch):
    engine = StatisticalEngine(SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = engine.score(batch)
    assert np.isfinite(out.scores).all()
    assert ((out.scores >= 0.0) & (out.scores <= 1.0)).all()
    assert not out.anomalies.any()
    level, daily = out.channels["level"], out.channels["daily"]
    ready = batch.window_fill >= SMALL.short - 1 + SMALL.min_reference
    assert np.isfinite(level).tolist() == ready.tolist()
    assert np.isfinite(daily).tolist() == np.isfinite(batch.views["daily"][:, 0]).tolist()
    assert out.warming_up.tolist() == (~(np.isfinite(level) | np.isfinite(daily))).tolist()


@settings(max_examples=100, deadline=None)
@given(batches())
def test_batch_result_equals_row_by_row(batch):
    engine = StatisticalEngine(SMALL)
    whole = engine.score(batch)
    for i in range(batch.rows):
        single = engine.score(
            ScoreInput(
                batch.values[i : i + 1],
                batch.windows[i : i + 1],
                batch.window_fill[i : i + 1],
                views={"daily": batch.views["daily"][i : i + 1]},
            )
        )
        assert single.scores[0] == whole.scores[i]
        assert single.warming_up[0] == whole.warming_up[i]
        for name, channel in whole.channels.items():
            np.testing.assert_array_equal(single.channels[name], channel[i : i + 1])


# ---------------------------------------------------------------- constructed signals
# The engine (default parameters) driven through the orchestrator's real windows, SEASONAL view
# and calibration (tests/signals.py), at 5-minute sampling.


# The parameters of issue 8 (today's defaults), pinned so these tests do not move with tuning.
PINNED = StatisticalParams(
    short=30,
    reference=200,
    min_reference=60,
    smoothing=12,
    period_seconds=86_400.0,
    bucket_seconds=300.0,
    tolerance_buckets=5,
    level_flag_below=1e-6,
    daily_flag_below=1e-8,
)


def run(values, daily: bool = True, batch: int = 500):
    return Bench(StatisticalEngine(PINNED, daily=daily)).run(values, batch=batch)["statistical"]


def test_spike_raises_the_level_a_little_and_only_upwards():
    values = signals.noise(1560, seed=0)
    at = 1500 + int(np.argmin(values[1500:1510]))  # a value below the recent median
    spiked = values.copy()
    spiked[at] += 15.0
    with_spike = run(spiked, daily=False).channels["level"]
    plain = run(values, daily=False).channels["level"]
    recent = slice(at, at + 30)  # the spike is among the latest 30 values
    assert (with_spike[recent] >= plain[recent]).all()
    assert (with_spike[recent] > plain[recent]).any()
    # The median shrugs off one value: no level shift to report.
    assert np.abs(with_spike[recent] - plain[recent]).max() < 1.0
    np.testing.assert_array_equal(with_spike[:at], plain[:at])


def test_level_shift_gives_a_large_z_and_is_flagged():
    values = signals.noise(1100, seed=1)
    values[1000:] += 5.0  # 5 sd
    out = run(values, daily=False)
    level = out.channels["level"]
    assert np.isnan(level[: 30 - 1 + 60]).all()  # short - 1 + min_reference values first
    assert np.nanmax(np.abs(level[:1000])) < 1.5
    assert level[1000:1030].max() > 4.0  # within the short window
    assert (level[1030:1060] > 3.0).all()
    flagged = np.flatnonzero(out.flagged)
    assert not flagged[flagged < 1000].size  # this seed: no false alarm before
    assert 1000 <= flagged[0] < 1030
    assert "level likelihood" in out.reasons[flagged[0]]


def test_daily_pattern_repeats_or_breaks():
    days = 6
    values = signals.daily_pattern(days, seed=0)
    broken = values.copy()
    morning = slice(5 * DAY, 5 * DAY + DAY // 2)  # the morning of the last day stays flat
    broken[morning] = signals.noise(DAY // 2, seed=10, level=50.0, sd=0.5)
    same = run(values, batch=600)
    other = run(broken, batch=600)
    residual, broken_residual = same.channels["daily"], other.channels["daily"]
    # Nothing about a day earlier during the first day (but for the 5-bucket tolerance).
    assert np.isnan(residual[: DAY - 5]).all() and np.isfinite(residual[DAY:]).all()
    # Where the day repeats, the residual is noise (the 12-value average: sd ~0.2);
    # the first hour of day 2 compares with averages over fewer values.
    assert np.median(np.abs(residual[DAY:])) < 0.25
    assert np.abs(residual[DAY + 12 :]).max() < 1.0
    # Where the day differs from yesterday (up to 10 above it), the residual is large.
    assert np.abs(broken_residual[morning]).max() > 8.0
    np.testing.assert_array_equal(broken_residual[: 5 * DAY], residual[: 5 * DAY])
    # Calibrated: the broken morning is flagged by the daily likelihood, the same morning of
    # the repeating series is not.
    daily_flags = [i for i, r in enumerate(other.reasons) if "daily likelihood" in r]
    in_morning = [i for i in daily_flags if morning.start <= i < morning.stop]
    assert len(in_morning) >= 30
    assert not [i for i, r in enumerate(same.reasons) if "daily" in r and i >= 5 * DAY]


def test_flat_line_scores_zero_and_never_flags():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run(np.full(1500, 7.0))
    for name, channel in out.channels.items():
        assert not np.isinf(channel).any(), name
        finite = channel[np.isfinite(channel)]
        assert finite.size and (finite == 0.0).all(), name
    assert np.isfinite(out.scores).all() and (out.scores == 0.0).all()
    assert not out.flagged.any()
    assert out.judged[-1]  # past warm-up, voting "normal"


def test_flat_line_then_a_step_is_flagged():
    values = np.full(1100, 7.0)
    values[1000:] = 7.5
    out = run(values, daily=False)
    assert np.isfinite(out.channels["level"][89:]).all()
    flagged = np.flatnonzero(out.flagged)
    assert flagged.size and flagged.min() >= 1000 and flagged.min() < 1030


def test_quantised_values_have_finite_z_and_no_flood_of_flags():
    values = signals.quantised(1500, seed=1)  # 10, sometimes 11: MAD 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run(values)
    level = out.channels["level"]
    assert not np.isinf(level).any() and np.isfinite(level[89:]).all()
    assert np.isfinite(out.channels["daily"][DAY:]).all()
    assert out.flagged.sum() == 0
    # A real change of the typical value (mostly 11 now) is caught.
    changed = values.copy()
    changed[1400:] = signals.quantised(100, seed=2, level=11)
    out = run(changed, daily=False)
    flagged = np.flatnonzero(out.flagged)
    assert flagged.size and 1400 <= flagged[0] < 1430


@st.composite
def sorted_rows(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 41)))
    values = draw(
        hnp.arrays(dtype, shape, elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=False))
    )
    if draw(st.booleans()):  # ties, and deviations that tie across the two sides
        values = np.round(values / 1e5) * 1e5
    return np.sort(values, axis=1)


@settings(max_examples=300, deadline=None)
@given(sorted_rows())
def test_deviation_median_of_sorted_rows_is_the_mad_bit_for_bit(ordered):
    center = sorted_row_median(ordered).astype(ordered.dtype)
    expected = row_median(np.abs(ordered - center[:, None]))
    assert np.array_equal(sorted_deviation_median(ordered, center), expected)

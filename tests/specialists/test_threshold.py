"""ThresholdEngine: the user's TOML rules (hard limits) plus adaptive limits from the RANGE view."""

from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import signals
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.specialists.engine import RangeViewSpec, RowColumn, ScoreInput
from sentinel.specialists.threshold import (
    NO_RULE,
    AdaptiveLimits,
    LimitRule,
    ThresholdEngine,
    load_rules,
)
from signals import Bench

from sentinel.errors import InvalidArgument
from sentinel.tensors import distinct_sensors

# The demo's rule (the seed's old built-in default, which is gone: no rule = no hard limit).
LIMIT_90 = LimitRule("*", high=90.0)


def rows(values, sensors=None) -> ScoreInput:
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    distinct, index = distinct_sensors(["sensor-1"] * n if sensors is None else list(sensors))
    return ScoreInput(
        values=values,
        windows=np.empty((n, 0)),
        window_fill=np.zeros(n, dtype=np.int64),
        sensors=distinct,
        sensor_index=index,
    )


def test_describes_itself_as_windowless():
    engine = ThresholdEngine()
    assert engine.name == "threshold"
    assert engine.window_length == 0
    assert engine.version
    assert engine.parameters() == {"rules": "none"}
    assert engine.views == () and engine.channels == ()
    assert engine.row_columns == {RowColumn.SENSOR_IDS}  # and no timestamps
    assert "90" in ThresholdEngine([LIMIT_90]).parameters()["rules"]


def test_adaptive_limits_declare_a_range_view():
    engine = ThresholdEngine(adaptive=AdaptiveLimits(readings=1000, block=16))
    assert engine.views == (RangeViewSpec("range", 1000, 16),)
    assert "margin 0.05" in engine.parameters()["adaptive"]
    assert engine.window_length == 0 and engine.channels == ()


def test_no_rule_means_no_hard_limit():
    # The seed's default high limit of 90 fired on every reading of any series living above 90.
    out = ThresholdEngine().score(rows([89.0, 90.0, 1e9, -1e9]))
    assert out.anomalies.tolist() == [False] * 4
    assert out.scores.tolist() == [0.0] * 4
    # Nothing to judge the rows by (no rule, no adaptive limits): no vote.
    assert out.warming_up.tolist() == [True] * 4
    assert ThresholdEngine().rule_for("anything") is NO_RULE


def test_a_high_limit_of_90_is_inclusive():
    out = ThresholdEngine([LIMIT_90]).score(rows([89.0, 90.0, 90.0001, -1e9]))
    assert out.anomalies.tolist() == [False, False, True, False]
    assert out.scores[1] < 0.5 <= out.scores[2]
    assert out.warming_up.tolist() == [False] * 4


def test_reason_names_the_limit_and_the_rule():
    out = ThresholdEngine([LIMIT_90]).score(rows([42.0, 95.0]))
    assert 0 not in out.reasons
    assert "above high limit 90" in out.reasons[1]
    assert "'*'" in out.reasons[1]
    assert "95" in out.reasons[1]


def test_glob_rules_first_match_wins_and_unmatched_sensors_have_no_limit():
    engine = ThresholdEngine(
        [
            LimitRule("boiler-1*", high=200.0),
            LimitRule("boiler-*", low=10.0, high=120.0),
            LimitRule("freezer-?", low=-30.0, high=-10.0),
        ]
    )
    sensors = ["boiler-12", "boiler-2", "boiler-2", "freezer-a", "freezer-ab", "pump"]
    values = [150.0, 150.0, 5.0, -5.0, -5.0, 95.0]
    out = engine.score(rows(values, sensors))
    assert out.anomalies.tolist() == [False, True, True, True, False, False]
    assert "rule 'boiler-*'" in out.reasons[1] and "above high limit 120" in out.reasons[1]
    assert "below low limit 10" in out.reasons[2] and "rule 'boiler-*'" in out.reasons[2]
    assert "above high limit -10" in out.reasons[3] and "rule 'freezer-?'" in out.reasons[3]
    assert 5 not in out.reasons
    assert out.warming_up.tolist() == [False, False, False, False, True, True]
    assert engine.rule_for("boiler-12").pattern == "boiler-1*"
    assert engine.rule_for("pump") is NO_RULE


def test_low_limit_only():
    engine = ThresholdEngine([LimitRule("tank-*", low=0.0)])
    out = engine.score(rows([-0.5, 0.0, 1e6], ["tank-1"] * 3))
    assert out.anomalies.tolist() == [True, False, False]
    assert "below low limit 0" in out.reasons[0]


def test_glob_is_case_sensitive():
    engine = ThresholdEngine([LimitRule("Boiler-*", high=500.0)])
    assert engine.rule_for("boiler-1") is NO_RULE
    assert engine.rule_for("Boiler-1").pattern == "Boiler-*"


def test_rule_without_limits_never_fires_and_scores_stay_finite():
    # Regression: a rule with neither low nor high gave NaN scores (inf / inf).
    engine = ThresholdEngine([LimitRule("free-*")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = engine.score(rows([5.0, -1e300, 1e300], ["free-1"] * 3))
    assert out.anomalies.tolist() == [False] * 3
    assert np.isfinite(out.scores).all()
    assert ((out.scores >= 0) & (out.scores < 0.5)).all()


def test_scores_rise_towards_and_beyond_the_limit():
    out = ThresholdEngine([LIMIT_90]).score(rows([0.0, 50.0, 85.0, 90.0, 91.0, 100.0, 1000.0]))
    assert (np.diff(out.scores) > 0).all()
    assert ((out.scores >= 0) & (out.scores <= 1)).all()


def test_empty_batch():
    out = ThresholdEngine().score(rows([]))
    assert out.scores.shape == out.anomalies.shape == out.warming_up.shape == (0,)
    assert out.reasons == {}


def test_cache_is_bounded_and_still_correct():
    engine = ThresholdEngine([LimitRule("a*", high=1.0)], cache_size=2)
    for sensor in ["a1", "b1", "a2", "b2", "a1"]:
        out = engine.score(rows([5.0], [sensor]))
        assert out.anomalies[0] == sensor.startswith("a")
    assert len(engine._cache) <= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": ""}, "pattern"),
        ({"pattern": "x", "low": 5.0, "high": 1.0}, "low <= high"),
        ({"pattern": "x", "low": math.nan}, "low <= high"),
    ],
)
def test_invalid_rules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LimitRule(**kwargs)


# ---------------------------------------------------------------- TOML


def test_load_rules(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text(
        """
[[rule]]
pattern = "boiler-*"
high = 120
low = -10.5

[[rule]]
pattern = "tank-*"
low = 0
""",
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert rules == [
        LimitRule("boiler-*", low=-10.5, high=120.0),
        LimitRule("tank-*", low=0.0, high=math.inf),
    ]
    engine = ThresholdEngine(rules)
    out = engine.score(rows([121.0, 95.0], ["boiler-1", "tank-1"]))
    assert out.anomalies.tolist() == [True, False]


def test_empty_rules_file(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text("", encoding="utf-8")
    assert load_rules(path) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[rule]]\npattern = "a"\nhihg = 3\n', r"rule\[0\].*unknown keys.*hihg"),
        ('[[rule]]\npattern = "a"\n[[rule]]\nhigh = 3\n', r"rule\[1\] needs a pattern"),
        ('[[rule]]\npattern = "a"\nlow = 5\nhigh = 1\n', "low <= high"),
        ('[[rule]]\npattern = ""\n', "pattern"),
    ],
)
def test_load_rules_errors(tmp_path, body, message):
    path = tmp_path / "limits.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_rules(path)


def test_load_rules_invalid_toml(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text("[[rule]\n", encoding="utf-8")
    with pytest.raises(ValueError):
        load_rules(path)


# ---------------------------------------------------------------- properties

PATTERNS = st.sampled_from(["a*", "b*", "*-1", "c?", "*", "a-1"])
LIMIT = st.one_of(st.none(), st.floats(-1e6, 1e6))


@st.composite
def limit_rules(draw):
    pattern = draw(PATTERNS)
    low, high = draw(LIMIT), draw(LIMIT)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return LimitRule(
        pattern, low=-math.inf if low is None else low, high=math.inf if high is None else high
    )


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(limit_rules(), max_size=4),
    batch=st.lists(
        st.tuples(
            st.sampled_from(["a-1", "a-2", "b-1", "c1", "c12", "z"]),
            st.one_of(st.floats(-2e6, 2e6), st.floats(allow_nan=False, allow_infinity=False)),
        ),
        max_size=20,
    ),
)
def test_scores_in_unit_interval_and_half_iff_anomalous(rules, batch):
    engine = ThresholdEngine(rules)
    sensors = [s for s, _ in batch]
    values = [v for _, v in batch]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow of extreme differences
        out = engine.score(rows(values, sensors))
    assert np.isfinite(out.scores).all()
    assert ((out.scores >= 0.0) & (out.scores <= 1.0)).all()
    assert ((out.scores >= 0.5) == out.anomalies).all()
    for i, (sensor, value) in enumerate(batch):
        rule = next((r for r in rules if fnmatch.fnmatchcase(sensor, r.pattern)), NO_RULE)
        assert out.anomalies[i] == (value > rule.high or value < rule.low)
        assert bool(out.reasons.get(i)) == out.anomalies[i]
        assert out.warming_up[i] == (rule is NO_RULE)  # without adaptive limits
        if out.anomalies[i]:
            assert f"'{rule.pattern}'" in out.reasons[i]


def test_load_rules_adaptive_switch(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text('[[rule]]\npattern = "flat-*"\nadaptive = false\n', encoding="utf-8")
    assert load_rules(path) == [LimitRule("flat-*", adaptive=False)]


# ---------------------------------------------------------------- adaptive limits (unit)

ADAPTIVE = AdaptiveLimits(margin=0.05, readings=1000, block=16, min_history=150)


def ranged(values, high, low, count, sensors=None) -> ScoreInput:
    """Rows with a RANGE view row [high, low, count] each (as the orchestrator ships it)."""
    batch = rows(values, sensors)
    n = batch.rows
    view = np.column_stack(
        [np.broadcast_to(high, n), np.broadcast_to(low, n), np.broadcast_to(count, n)]
    ).astype(np.float64)
    return replace(batch, views={"range": view})


def test_a_new_extreme_beyond_the_margin_is_flagged_and_explained():
    # range 40..60 (r = 20): adaptive limits at 60 + 1 and 40 - 1.
    out = ThresholdEngine(adaptive=ADAPTIVE).score(
        ranged([50.0, 61.0, 61.5, 38.5, 39.0], 60.0, 40.0, 1000)
    )
    assert out.anomalies.tolist() == [False, False, True, True, False]
    assert out.warming_up.tolist() == [False] * 5
    assert out.scores[1] == 0.0 and out.scores[2] > 0.5 and out.scores[3] > 0.5
    assert "above the recent high (range 40..60 over 1000 values)" in out.reasons[2]
    assert "below the recent low" in out.reasons[3]
    assert not {0, 1, 4} & out.reasons.keys()


def test_adaptive_score_rises_with_the_distance_beyond_the_range():
    values = [61.5, 62.0, 70.0, 100.0, 1e6]
    out = ThresholdEngine(adaptive=ADAPTIVE).score(ranged(values, 60.0, 40.0, 1000))
    assert out.anomalies.all()
    assert (np.diff(out.scores) > 0).all() and (out.scores <= 1.0).all()


def test_adaptive_limits_wait_for_min_history():
    engine = ThresholdEngine(adaptive=ADAPTIVE)
    out = engine.score(ranged([1e6, 1e6], 60.0, 40.0, [149, 150]))
    assert out.anomalies.tolist() == [False, True]
    assert out.warming_up.tolist() == [True, False]  # no rule: no vote until then
    # No history at all (a sensor just seen): the view is NaN, count 0.
    out = engine.score(ranged([1e6], np.nan, np.nan, 0))
    assert out.anomalies.tolist() == [False] and out.warming_up.tolist() == [True]
    assert np.isfinite(out.scores).all()


def test_a_flat_range_never_flags_but_votes():
    # r = 0: no adaptive limit (every value would be a new extreme).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ThresholdEngine(adaptive=ADAPTIVE).score(ranged([7.0, 7.5, -1e9], 7.0, 7.0, 900))
    assert out.anomalies.tolist() == [False] * 3
    assert out.warming_up.tolist() == [False] * 3
    assert out.scores.tolist() == [0.0] * 3


def test_hard_limits_and_adaptive_limits_together():
    engine = ThresholdEngine(
        [LimitRule("boiler-*", high=90.0), LimitRule("raw-*", high=90.0, adaptive=False)],
        adaptive=ADAPTIVE,
    )
    sensors = ["boiler-1", "boiler-2", "raw-1", "pump-1"]
    out = engine.score(ranged([95.0, 70.0, 70.0, 70.0], 60.0, 40.0, 1000, sensors))
    assert out.anomalies.tolist() == [True, True, False, True]
    assert "above high limit 90" in out.reasons[0]  # the user's rule explains first
    assert "above the recent high" in out.reasons[1]
    assert 2 not in out.reasons  # adaptive = false for raw-*
    assert "above the recent high" in out.reasons[3]  # no rule: adaptive limits only


def test_a_range_view_of_the_wrong_width_is_invalid_argument():
    batch = rows([1.0])
    bad = replace(batch, views={"range": np.zeros((1, 2))})
    with pytest.raises(InvalidArgument, match="range"):
        ThresholdEngine(adaptive=ADAPTIVE).score(bad)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.floats(-1e6, 1e6),  # value
            st.floats(-1e3, 1e3),  # low
            st.floats(0, 1e3),  # spread
            st.integers(0, 2000),  # count
        ),
        min_size=1,
        max_size=20,
    ),
    # (with a margin of exactly 0, a value beyond the range by under 1e-9 of it is flagged with
    # a score below 0.5: the score's cut-off is max(margin, 1e-9))
    margin=st.floats(1e-6, 1.0),
)
def test_adaptive_flags_follow_the_rule_and_scores_stay_in_the_unit_interval(data, margin):
    adaptive = AdaptiveLimits(margin=margin, readings=1000, block=16, min_history=150)
    values = np.array([d[0] for d in data])
    low = np.array([d[1] for d in data])
    high = low + np.array([d[2] for d in data])
    count = np.array([d[3] for d in data], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow of excess / a tiny range
        out = ThresholdEngine(adaptive=adaptive).score(ranged(values, high, low, count))
    spread = high - low
    ready = count >= 150
    expected = (
        ready
        & (spread > 0)
        & ((values > high + margin * spread) | (values < low - margin * spread))
    )
    assert out.anomalies.tolist() == expected.tolist()
    assert out.warming_up.tolist() == (~ready).tolist()
    assert np.isfinite(out.scores).all()
    assert ((out.scores >= 0.0) & (out.scores <= 1.0)).all()
    assert (out.scores[~expected] == 0.0).all()
    assert (out.scores[expected] >= 0.5 - 1e-9).all()
    assert sorted(out.reasons) == np.flatnonzero(expected).tolist()
    assert all(out.reasons.values())


# ---------------------------------------------------------------- constructed signals
# The engine driven through the orchestrator's real RANGE view (tests/signals.py).


def adaptive_run(values):
    return Bench(ThresholdEngine(adaptive=ADAPTIVE)).run(values)["threshold"]


def test_spike_is_a_new_extreme():
    values = signals.noise(1700, seed=0)
    values[1500] += 15.0  # 15 sd
    out = adaptive_run(values)
    assert out.anomalies[1500]
    assert "above the recent high" in out.reasons[1500]
    assert not out.anomalies[1501:].any()  # the spike is in the range now
    # Before it, only the odd new extreme of plain noise (range learned from few values).
    assert out.anomalies[:1500].sum() <= 6
    assert not out.anomalies[1000:1500].any()
    assert out.warming_up[:150].all() and not out.warming_up[150:].any()


def test_level_shift_first_reading_is_a_new_extreme():
    values = signals.noise(1200, seed=0)
    values[1000:] += 10.0
    out = adaptive_run(values)
    assert out.anomalies[1000]
    # A shift is one event: the range takes in the new level at once.
    assert out.anomalies[1000:].sum() <= 3


def test_flat_line_flags_nothing_and_stays_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = adaptive_run(np.full(600, 42.0))
    assert not out.anomalies.any()
    assert np.isfinite(out.scores).all() and (out.scores == 0.0).all()
    assert not out.warming_up[150:].any()


def test_quantised_values_flag_only_a_real_new_extreme():
    values = signals.quantised(1500, seed=1)  # 10 or 11
    values[1400] = 12.0
    out = adaptive_run(values)
    assert np.isfinite(out.scores).all()
    assert np.flatnonzero(out.anomalies).tolist() == [1400]


def test_reads_the_distinct_ids_and_fails_without_them():
    """Rules are matched once per distinct sensor and broadcast by the row index; a batch
    without sensor ids is refused (the servicer refuses it first, naming `sensors`)."""
    engine = ThresholdEngine([LimitRule("hot-*", high=10.0)])
    batch = ScoreInput(
        values=np.array([11.0, 11.0, 11.0]),
        windows=np.empty((3, 0)),
        window_fill=np.zeros(3, dtype=np.int64),
        sensors=["cold-1", "hot-1"],
        sensor_index=np.array([1, 0, 1]),
    )
    assert engine.score(batch).anomalies.tolist() == [True, False, True]
    with pytest.raises(InvalidArgument) as error:
        engine.score(replace(batch, sensors=None, sensor_index=None))
    assert error.value.field == "sensors"

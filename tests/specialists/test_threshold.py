"""ThresholdEngine and its TOML rules."""

from __future__ import annotations

import fnmatch
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specialists.engine import ScoreInput
from specialists.threshold import DEFAULT_HIGH, LimitRule, ThresholdEngine, load_rules


def rows(values, sensors=None) -> ScoreInput:
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    sensors = ["sensor-1"] * n if sensors is None else list(sensors)
    return ScoreInput(
        sensor_ids=sensors,
        values=values,
        timestamps=np.arange(n, dtype=np.int64),
        windows=np.empty((n, 0)),
        window_fill=np.zeros(n, dtype=np.int64),
    )


def test_describes_itself_as_windowless():
    engine = ThresholdEngine()
    assert engine.name == "threshold"
    assert engine.window_length == 0
    assert engine.version
    assert "90" in engine.parameters()["rules"]


def test_default_high_limit_is_90_inclusive():
    assert DEFAULT_HIGH == 90.0
    out = ThresholdEngine().score(rows([89.0, 90.0, 90.0001, -1e9]))
    assert out.anomalies.tolist() == [False, False, True, False]
    assert out.scores[1] < 0.5 <= out.scores[2]
    assert out.warming_up.tolist() == [False] * 4


def test_reason_names_the_limit_and_the_rule():
    out = ThresholdEngine().score(rows([42.0, 95.0]))
    assert out.reasons[0] == ""
    assert "above high limit 90" in out.reasons[1]
    assert "'*'" in out.reasons[1]
    assert "95" in out.reasons[1]


def test_glob_rules_first_match_wins_and_fall_back_to_default():
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
    assert out.anomalies.tolist() == [False, True, True, True, False, True]
    assert "rule 'boiler-*'" in out.reasons[1] and "above high limit 120" in out.reasons[1]
    assert "below low limit 10" in out.reasons[2] and "rule 'boiler-*'" in out.reasons[2]
    assert "above high limit -10" in out.reasons[3] and "rule 'freezer-?'" in out.reasons[3]
    assert "rule '*'" in out.reasons[5]
    assert engine.rule_for("boiler-12").pattern == "boiler-1*"
    assert engine.rule_for("pump").pattern == "*"


def test_low_limit_only():
    engine = ThresholdEngine([LimitRule("tank-*", low=0.0)])
    out = engine.score(rows([-0.5, 0.0, 1e6], ["tank-1"] * 3))
    assert out.anomalies.tolist() == [True, False, False]
    assert "below low limit 0" in out.reasons[0]


def test_glob_is_case_sensitive():
    engine = ThresholdEngine([LimitRule("Boiler-*", high=500.0)])
    assert engine.rule_for("boiler-1").pattern == "*"
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
    out = ThresholdEngine().score(rows([0.0, 50.0, 85.0, 90.0, 91.0, 100.0, 1000.0]))
    assert (np.diff(out.scores) > 0).all()
    assert ((out.scores >= 0) & (out.scores <= 1)).all()


def test_empty_batch():
    out = ThresholdEngine().score(rows([]))
    assert out.scores.shape == out.anomalies.shape == out.warming_up.shape == (0,)
    assert out.reasons == []


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
        rule = next(
            (r for r in rules if fnmatch.fnmatchcase(sensor, r.pattern)),
            LimitRule("*", high=DEFAULT_HIGH),
        )
        assert out.anomalies[i] == (value > rule.high or value < rule.low)
        assert bool(out.reasons[i]) == out.anomalies[i]
        if out.anomalies[i]:
            assert f"'{rule.pattern}'" in out.reasons[i]

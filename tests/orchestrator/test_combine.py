"""Combiner: policies any / majority / weighted, degraded and warming-up statuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.combine import STATUS_CODES, Combiner, EngineVotes, Policy, Status

OK = STATUS_CODES[Status.OK]
DEGRADED = STATUS_CODES[Status.DEGRADED]
WARMING = STATUS_CODES[Status.WARMING_UP]
POLICIES = list(Policy)


def votes(name, scores, anomalies=None, warming=None, version="1.0.0") -> EngineVotes:
    scores = np.asarray(scores, dtype=np.float64)
    anomalies = scores >= 0.5 if anomalies is None else np.asarray(anomalies, dtype=bool)
    warming = np.zeros(scores.shape[0], bool) if warming is None else np.asarray(warming, bool)
    return EngineVotes(name, version, scores, anomalies, warming, {})


# ---------------------------------------------------------------- examples


def test_majority_needs_more_than_half_and_averages_scores():
    engines = [
        votes("a", [0.9, 0.9, 0.1]),
        votes("b", [0.8, 0.2, 0.1]),
        votes("c", [0.1, 0.1, 0.1]),
    ]
    out = Combiner(Policy.MAJORITY).combine(3, engines, ["a", "b", "c"])
    assert out.anomaly.tolist() == [True, False, False]
    np.testing.assert_allclose(out.score, [0.6, 0.4, 0.1])
    assert out.status.tolist() == [OK, OK, OK]
    assert out.missing == ()


def test_majority_tie_is_not_anomalous():
    out = Combiner(Policy.MAJORITY).combine(1, [votes("a", [0.9]), votes("b", [0.1])], ["a", "b"])
    assert out.anomaly.tolist() == [False]


def test_any_takes_the_highest_score():
    engines = [votes("a", [0.9, 0.1]), votes("b", [0.2, 0.3])]
    out = Combiner(Policy.ANY).combine(2, engines, ["a", "b"])
    assert out.anomaly.tolist() == [True, False]
    np.testing.assert_allclose(out.score, [0.9, 0.3])


def test_weighted_mean_with_decision_line_at_one_half():
    engines = [votes("model", [0.8, 0.6]), votes("threshold", [0.2, 0.3])]
    out = Combiner(Policy.WEIGHTED, {"model": 3.0}).combine(2, engines, ["model", "threshold"])
    np.testing.assert_allclose(out.score, [(3 * 0.8 + 0.2) / 4, (3 * 0.6 + 0.3) / 4])
    assert out.anomaly.tolist() == [True, True]
    even = Combiner(Policy.WEIGHTED).combine(2, engines, ["model", "threshold"])
    np.testing.assert_allclose(even.score, [0.5, 0.45])
    assert even.anomaly.tolist() == [True, False]  # exactly 0.5 is anomalous


def test_weight_defaults_to_one():
    combiner = Combiner(Policy.WEIGHTED, {"model": 2.5})
    assert combiner.weight("model") == 2.5
    assert combiner.weight("other") == 1.0
    assert Combiner().weight("x") == 1.0
    assert Combiner().policy is Policy.ANY  # the default that scores best on NAB


def test_missing_specialist_degrades_every_row():
    out = Combiner().combine(3, [votes("a", [0.9, 0.1, 0.9])], ["a", "b", "c"])
    assert out.missing == ("b", "c")
    assert out.status.tolist() == [DEGRADED] * 3
    assert out.anomaly.tolist() == [True, False, True]  # the answering engine still decides


def test_nobody_answered():
    for policy in POLICIES:
        out = Combiner(policy).combine(2, [], ["a"])
        assert out.anomaly.tolist() == [False, False]
        assert out.score.tolist() == [0.0, 0.0]
        assert out.status.tolist() == [DEGRADED, DEGRADED]
        assert out.missing == ("a",)


def test_warming_up_engine_has_no_vote_and_marks_status():
    engines = [
        votes("stat", [1.0, 1.0], anomalies=[True, True], warming=[True, False]),
        votes("thr", [0.1, 0.1]),
    ]
    out = Combiner(Policy.ANY).combine(2, engines, ["stat", "thr"])
    assert out.anomaly.tolist() == [False, True]
    np.testing.assert_allclose(out.score, [0.1, 1.0])
    assert out.status.tolist() == [WARMING, OK]


def test_all_warming_up_is_not_anomalous_with_score_zero():
    engines = [votes("a", [0.9], anomalies=[True], warming=[True])]
    for policy in POLICIES:
        out = Combiner(policy).combine(1, engines, ["a"])
        assert out.anomaly.tolist() == [False]
        assert out.score.tolist() == [0.0]
        assert out.status.tolist() == [WARMING]


def test_scores_outside_unit_interval_are_clipped():
    out = Combiner(Policy.ANY).combine(2, [votes("a", [7.0, -3.0])], ["a"])
    assert out.score.tolist() == [1.0, 0.0]


def test_zero_rows():
    for policy in POLICIES:
        out = Combiner(policy).combine(0, [votes("a", [])], ["a"])
        assert out.anomaly.shape == out.score.shape == out.status.shape == (0,)


# ---------------------------------------------------------------- properties

NAMES = ["a", "b", "c", "d"]


@st.composite
def vote_sets(draw, consistent: bool = False, unanimous: bool | None = None):
    rows = draw(st.integers(1, 6))
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    engines = []
    for name in names:
        warming = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        if unanimous is None:
            flags = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        else:
            flags = [unanimous] * rows
        if consistent or unanimous is not None:
            scores = [
                draw(st.floats(0.5, 1.0) if flag else st.floats(0.0, 0.4999)) for flag in flags
            ]
        else:
            scores = draw(st.lists(st.floats(-1.0, 2.0), min_size=rows, max_size=rows))
        engines.append(votes(name, scores, flags, warming))
    weights = draw(st.dictionaries(st.sampled_from(NAMES), st.floats(0.0, 5.0), max_size=4))
    return rows, engines, weights


@settings(max_examples=150, deadline=None)
@given(vote_sets(), st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
def test_basic_invariants(case, expected):
    rows, engines, weights = case
    answered = {e.name for e in engines}
    voters = sum((~e.warming_up).astype(int) for e in engines) if engines else np.zeros(rows, int)
    warming_any = np.zeros(rows, bool)
    for e in engines:
        warming_any |= e.warming_up
    for policy in POLICIES:
        out = Combiner(policy, weights).combine(rows, engines, expected)
        assert out.anomaly.dtype == bool and out.anomaly.shape == (rows,)
        assert np.isfinite(out.score).all()
        assert ((out.score >= 0.0) & (out.score <= 1.0)).all()
        # no voters: not anomalous, score 0
        assert not out.anomaly[voters == 0].any()
        assert (out.score[voters == 0] == 0.0).all()
        missing = tuple(n for n in expected if n not in answered)
        assert out.missing == missing
        if missing:
            assert (out.status == DEGRADED).all()
        else:
            assert out.status.tolist() == np.where(warming_any, WARMING, OK).tolist()


@settings(max_examples=150, deadline=None)
@given(vote_sets(), st.data())
def test_warming_up_votes_do_not_count(case, data):
    rows, engines, weights = case
    scrambled = []
    for e in engines:
        noise_scores = np.array(data.draw(st.lists(st.floats(0, 1), min_size=rows, max_size=rows)))
        noise_flags = np.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
        scores = np.where(e.warming_up, noise_scores, e.scores)
        flags = np.where(e.warming_up, noise_flags, e.anomalies)
        scrambled.append(EngineVotes(e.name, e.version, scores, flags, e.warming_up, e.reasons))
    names = [e.name for e in engines]
    for policy in POLICIES:
        a = Combiner(policy, weights).combine(rows, engines, names)
        b = Combiner(policy, weights).combine(rows, scrambled, names)
        assert a.anomaly.tolist() == b.anomaly.tolist()
        np.testing.assert_allclose(a.score, b.score)
        assert a.status.tolist() == b.status.tolist()


@settings(max_examples=150, deadline=None)
@given(vote_sets())
def test_any_includes_majority(case):
    rows, engines, _ = case
    names = [e.name for e in engines]
    majority = Combiner(Policy.MAJORITY).combine(rows, engines, names)
    anyone = Combiner(Policy.ANY).combine(rows, engines, names)
    assert not (majority.anomaly & ~anyone.anomaly).any()
    assert (anyone.score >= majority.score - 1e-12).all()


@settings(max_examples=150, deadline=None)
@given(vote_sets(), st.sampled_from(NAMES))
def test_weighted_ignores_an_engine_with_zero_weight(case, ignored):
    rows, engines, weights = case
    weights = {**weights, ignored: 0.0}
    others = [e for e in engines if e.name != ignored]
    with_it = Combiner(Policy.WEIGHTED, weights).combine(rows, engines, [e.name for e in engines])
    without = Combiner(Policy.WEIGHTED, weights).combine(rows, others, [e.name for e in others])
    assert with_it.anomaly.tolist() == without.anomaly.tolist()
    np.testing.assert_allclose(with_it.score, without.score, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.booleans().flatmap(lambda v: vote_sets(unanimous=v).map(lambda case: (v, case))))
def test_unanimous_votes_agree_across_policies(drawn):
    verdict, (rows, engines, _) = drawn
    names = [e.name for e in engines]
    voters = sum((~e.warming_up).astype(int) for e in engines) if engines else np.zeros(rows, int)
    results = [Combiner(p).combine(rows, engines, names).anomaly for p in POLICIES]
    for anomaly in results:
        assert anomaly.tolist() == ((voters > 0) & verdict).tolist()


@settings(max_examples=100, deadline=None)
@given(vote_sets(consistent=True))
def test_single_voter_decides_alone_under_every_policy(case):
    rows, engines, weights = case
    if not engines:
        return
    engine = engines[0]
    for policy in POLICIES:
        out = Combiner(policy, {k: v for k, v in weights.items() if v > 0}).combine(
            rows, [engine], [engine.name]
        )
        voting = ~engine.warming_up
        assert out.anomaly.tolist() == (engine.anomalies & voting).tolist()
        np.testing.assert_allclose(out.score, np.where(voting, engine.scores, 0.0))


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_parses_from_text(policy):
    assert Policy(policy.value) is policy


def test_tiny_weights_do_not_underflow_the_weighted_score():
    vote = EngineVotes(
        name="a",
        version="1",
        scores=np.array([2.2250738585072014e-308, 0.7]),
        anomalies=np.array([False, True]),
        warming_up=np.array([False, False]),
        reasons={},
    )
    out = Combiner(Policy.WEIGHTED, {"a": 3.1e-290}).combine(2, [vote], ["a"])
    assert out.score.tolist() == [2.2250738585072014e-308, 0.7]

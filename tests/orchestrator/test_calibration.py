"""The anomaly-likelihood stage (ChannelCalibrator) on known distributions, erfc, the score map."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import replace

import numpy as np
import pytest
from calibration_reference import ChannelCalibrator, advance
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.calibration import (
    CalibrationBank,
    StepStats,
    erfc,
    likelihood_score,
    tail_probability,
)
from signals import CALIBRATION

SENSORS = 40


def calibrator(standardize: bool = False, sensors: int = SENSORS, **params) -> ChannelCalibrator:
    """The stage with issue 8's parameters (signals.CALIBRATION), or with `params` changed."""
    c = ChannelCalibrator(standardize, replace(CALIBRATION, **params))
    c.grow(sensors)
    return c


def feed(c: ChannelCalibrator, raw: np.ndarray) -> np.ndarray:
    """raw [readings, sensors] → q [readings, sensors], one step per reading of every sensor."""
    slots = np.arange(raw.shape[1])
    return np.stack([c.step(slots, row) for row in raw])


# ---------------------------------------------------------------- erfc and the tail


def test_erfc_matches_math_erfc_far_into_the_tail():
    x = np.linspace(-6.0, 26.0, 20_001)  # erfc(26) ~ 6e-296, still a normal float64
    expected = np.array([math.erfc(v) for v in x])
    relative = np.abs(erfc(x) - expected) / expected
    assert relative.max() < 1e-6


def test_erfc_edges_and_symmetry():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = erfc(np.array([40.0, 1e6, np.inf, -np.inf, 0.0]))
    assert big.tolist() == [0.0, 0.0, 0.0, 2.0, pytest.approx(1.0, rel=1e-7)]
    x = np.linspace(0.0, 5.0, 101)
    # (the fit is within 1.2e-7 of erfc, on either side of 0 independently)
    np.testing.assert_allclose(erfc(-x), 2.0 - erfc(x), rtol=1.2e-7)


@pytest.mark.parametrize(("mean", "sd"), [(0.0, 1.0), (0.8, 0.19), (5.0, 0.01)])
def test_tail_probability_is_the_gaussian_upper_tail(mean, sd):
    dist = statistics.NormalDist(mean, sd)
    avg = mean + sd * np.linspace(-3.0, 5.0, 33)
    expected = np.array([1.0 - dist.cdf(a) for a in avg])
    np.testing.assert_allclose(
        tail_probability(avg, np.full_like(avg, mean), np.full_like(avg, sd * sd)),
        expected,
        rtol=1e-6,
        atol=1e-15,
    )


def test_likelihood_score_puts_the_threshold_at_one_half():
    flag_below = 1e-6
    q = np.array([1.0, 0.5, 1e-3, flag_below, 1e-9, 1e-300, 0.0, np.nan])
    score = likelihood_score(q, flag_below)
    assert score[0] == 0.0 and score[-1] == 0.0  # q = 1 and "no likelihood" score nothing
    assert score[3] == pytest.approx(0.5)
    assert (np.diff(score[:6]) > 0).all() and score[6] == score[5]  # 0 is taken as 1e-300
    assert ((score >= 0.0) & (score < 1.0)).all()


# ---------------------------------------------------------------- known distributions


def test_standard_normal_scores_rarely_look_unlikely():
    rng = np.random.default_rng(0)
    c = calibrator()
    q = feed(c, rng.standard_normal((4000, SENSORS)))
    p = c.params
    # Not judged until min_history values were calibrated (and one refit is done).
    assert np.isnan(q[: p.min_history - 1]).all()
    assert np.isfinite(q[p.min_history - 1 :]).all()
    judged = q[p.min_history - 1 :]
    assert ((judged > 0.0) & (judged <= 1.0)).all()
    # About half the time the recent mean |z| is below its usual mean: q = 1 exactly.
    assert 0.3 < (judged == 1.0).mean() < 0.7
    # The mean of 10 |z| is skewed, so its Gaussian tail is a little optimistic: ~5e-4
    # below 1e-4 over 155,000 judged readings of 40 sensors, a handful below 1e-6.
    assert (judged < 1e-4).mean() < 1e-3
    assert (judged < 1e-6).sum() <= 5


def test_a_sustained_shift_to_six_sigma_is_unlikely_within_ten_readings():
    rng = np.random.default_rng(1)
    c = calibrator()
    feed(c, rng.standard_normal((1500, SENSORS)))
    signs = np.where(rng.random(SENSORS) < 0.5, -1.0, 1.0)
    shifted = 6.0 * signs + 0.3 * rng.standard_normal((10, SENSORS))
    q = feed(c, shifted)
    assert (q < 1e-6).any(axis=0).all()  # every sensor
    first = np.argmax(q < 1e-6, axis=0)
    assert first.max() < 10


def test_standardisation_makes_offset_and_scale_irrelevant():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3000, SENSORS))
    plain = calibrator(standardize=True)
    scaled = calibrator(standardize=True)
    q_plain = feed(plain, z)
    q_scaled = feed(scaled, 100.0 + 5.0 * z)
    # Running median / mean absolute deviation are equivariant: the same z's, up to rounding.
    assert (np.isnan(q_plain) == np.isnan(q_scaled)).all()
    judged = np.isfinite(q_plain)
    log_plain = -np.log10(np.maximum(q_plain[judged], 1e-300))
    log_scaled = -np.log10(np.maximum(q_scaled[judged], 1e-300))
    assert np.abs(log_plain - log_scaled).max() < 0.05
    assert (q_scaled[judged] < 1e-4).mean() < 1e-3


def test_standardised_residual_with_offset_100_and_scale_5_looks_standard_normal():
    rng = np.random.default_rng(3)
    c = calibrator(standardize=True)
    slots = np.arange(SENSORS)
    z = np.stack([c._standardized(slots, 100.0 + 5.0 * rng.standard_normal(SENSORS))
                  for _ in range(3000)])  # fmt: skip
    after = c.params.standardize_after
    assert np.isnan(z[:after]).all() and np.isfinite(z[after:]).all()
    settled = z[500:]
    assert abs(np.median(settled)) < 0.05
    assert abs(settled.std() - 1.0) < 0.1
    assert abs((np.abs(settled) > 1.96).mean() - 0.05) < 0.015


def test_standardised_single_reading_tail_is_uniform_for_standard_normal_input():
    # The ablation mode (no likelihood stage): q = P(|N(0,1)| > |z|) of each reading alone.
    rng = np.random.default_rng(4)
    c = calibrator(standardize=True, likelihood=False)
    q = feed(c, 100.0 + 5.0 * rng.standard_normal((3000, SENSORS)))[500:]
    assert np.isfinite(q).all()
    for level in (0.01, 0.05, 0.5):
        assert abs((q < level).mean() - level) < max(0.2 * level, 0.005), level


def test_a_step_in_a_standardised_residual_is_unlikely_fast():
    rng = np.random.default_rng(5)
    c = calibrator(standardize=True)
    feed(c, 100.0 + 5.0 * rng.standard_normal((1500, SENSORS)))
    q = feed(c, 130.0 + 5.0 * rng.standard_normal((10, SENSORS)))  # +6 sd
    assert (q < 1e-6).any(axis=0).all()


def test_a_constant_channel_never_looks_unlikely():
    c = calibrator(standardize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = feed(c, np.full((600, SENSORS), 42.0))
    judged = q[np.isfinite(q)]
    assert judged.size and (judged == 1.0).all()


# ---------------------------------------------------------------- state handling


def test_nan_rows_are_not_judged_and_do_not_advance_the_state():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((400, 2))
    a, b = calibrator(sensors=2), calibrator(sensors=2)
    slots = np.arange(2)
    q_a, q_b = [], []
    for row in z:
        q_a.append(a.step(slots, row))
        # b sees a NaN for sensor 1 between every reading: nothing changes
        q_b.append(b.step(slots, row))
        gap = b.step(slots[1:], np.array([np.nan]))
        assert np.isnan(gap).all()
    np.testing.assert_array_equal(np.array(q_a), np.array(q_b))


def test_reset_starts_a_slot_afresh_and_leaves_the_others():
    rng = np.random.default_rng(7)
    c = calibrator(sensors=3)
    feed(c, rng.standard_normal((300, 3)))
    c.reset(np.array([1]))
    q = feed(c, rng.standard_normal((10, 3)))
    assert np.isnan(q[:, 1]).all()  # back to warm-up
    assert np.isfinite(q[:, [0, 2]]).all()
    assert c._count[1] == 10 and (c._fit[1] == 0).all()


def test_grow_keeps_existing_slots():
    rng = np.random.default_rng(8)
    c = calibrator(sensors=2)
    feed(c, rng.standard_normal((300, 2)))
    before = c._fit[:2].copy()
    c.grow(1000)
    np.testing.assert_array_equal(c._fit[:2], before)
    assert (c._count[2:] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.integers(0, 2), min_size=1, max_size=120),
    seed=st.integers(0, 2**16),
)
def test_slots_are_independent(order, seed):
    """Stepping sensors together or each alone gives the same likelihoods."""
    params = {"average": 3, "refit_every": 5, "blocks": 4, "min_history": 8,
              "standardize_after": 3}  # fmt: skip
    rng = np.random.default_rng(seed)
    raw = 10.0 + rng.standard_normal(len(order))
    together = calibrator(standardize=True, sensors=3, **params)
    alone = {s: calibrator(standardize=True, sensors=1, **params) for s in range(3)}
    for sensor, value in zip(order, raw, strict=True):
        q = together.step(np.array([sensor]), np.array([value]))
        r = alone[sensor].step(np.array([0]), np.array([value]))
        np.testing.assert_array_equal(q, r)


def test_the_count_stays_bounded_and_calibration_goes_on():
    c = calibrator(sensors=1)
    slots = np.array([0])
    rng = np.random.default_rng(3)
    for _ in range(300):
        c.step(slots, rng.standard_normal(1))
    cycle = c.params.cycle
    c.bank._count[0, 0] = (
        2 * cycle - 5 + (int(c.bank._count[0, 0]) % cycle) - (2 * cycle - 5) % cycle
    )
    for _ in range(20):
        c.step(slots, rng.standard_normal(1))
    assert cycle <= c.bank._count[0, 0] < 2 * cycle
    q = [c.step(slots, np.array([50.0]))[0] for _ in range(5)]
    assert np.isfinite(q).all() and q[-1] < 1e-6


def test_one_absurd_score_does_not_blind_the_sensor():
    c = calibrator(sensors=1)
    slots = np.array([0])
    rng = np.random.default_rng(4)
    for _ in range(500):
        c.step(slots, rng.standard_normal(1))
    c.step(slots, np.array([1e21]))
    for _ in range(300):
        c.step(slots, rng.standard_normal(1))
    q = [c.step(slots, np.array([50.0]))[0] for _ in range(10)]
    assert np.isfinite(c.bank._fit[0, 0]).all()
    assert min(q) < 1e-6


# ---------------------------------------------------------------- all at once vs. step by step

_STATE = ("_median", "_deviation", "_seen", "_ring", "_count", "_block_sum", "_block_squares",
          "_running", "_fit")  # fmt: skip
_RAW = [0.0, -0.0, 0.5, -1.25, 3.0, 7.5, 1e-30, -40.0, 250.0, 1e21, math.nan, math.inf, -math.inf]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    average=st.sampled_from([1, 2, 3, 5, 8, 10, 13]),
    refit_every=st.integers(1, 5),
    blocks=st.sampled_from([1, 2, 3, 4, 9]),
    min_history=st.integers(0, 12),
    variance_floor=st.sampled_from([1e-4, 0.0]),
    standardize_after=st.integers(0, 4),
    min_step=st.sampled_from([0.002, 0.3]),
    likelihood=st.booleans(),
    max_abs_z=st.sampled_from([100.0, 2.5]),
    standardize=st.lists(st.booleans(), min_size=1, max_size=3),
    sorted_walk=st.booleans(),
)
def test_batch_at_once_is_exactly_the_step_loop(
    data, average, refit_every, blocks, min_history, variance_floor, standardize_after,
    min_step, likelihood, max_abs_z, standardize, sorted_walk,
):  # fmt: skip
    """`run` (all readings at once) against the reference `advance` step by step: the same
    stats bit for bit and the same state, for any batching, NaN/inf, clipping, several refits
    per batch and the count wrapping around its cycle."""
    from sentinel.orchestrator import calibration

    params = replace(
        CALIBRATION, average=average, refit_every=refit_every, blocks=blocks,
        min_history=min_history, variance_floor=variance_floor,
        standardize_after=standardize_after, standardize_min_step=min_step,
        likelihood=likelihood, max_abs_z=max_abs_z,
    )  # fmt: skip
    sensors = data.draw(st.integers(1, 5))
    banks = [CalibrationBank(params), CalibrationBank(params)]
    for bank in banks:
        for s in standardize:
            bank.add_channel(s)
        bank.grow(sensors + 1)
    if data.draw(st.booleans()):  # start near the int32 limit of `seen` and the count wrap
        seen = np.iinfo(np.int32).max - 1 - data.draw(st.integers(0, 3))
        count = data.draw(st.integers(0, 2 * params.cycle - 1))
        for bank in banks:
            bank._seen[0] = seen
            bank._count[0] = count
    saved = calibration._DENSE_CELLS, calibration._DENSE_PER_READING
    if sorted_walk:
        calibration._DENSE_CELLS = calibration._DENSE_PER_READING = 0
    try:
        for _ in range(data.draw(st.integers(1, 4))):
            rows = data.draw(st.integers(1, 40))
            slots = np.array(data.draw(st.lists(st.integers(0, sensors), min_size=rows,
                                                max_size=rows)))  # fmt: skip
            raw = np.array(data.draw(st.lists(
                st.one_of(st.sampled_from(_RAW), st.floats(-1e3, 1e3)),
                min_size=rows * len(standardize), max_size=rows * len(standardize),
            ))).reshape(rows, len(standardize))  # fmt: skip
            seen: dict[int, int] = {}
            rank = np.array([seen.setdefault(s, 0) + (seen.__setitem__(s, seen[s] + 1) or 0)
                             for s in slots.tolist()])  # fmt: skip
            steps = [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]
            got = banks[0].run_stats(slots, raw, steps)
            expected = StepStats.empty(raw.shape)
            for step in steps:
                advance(banks[1], slots[step], raw[step], expected, step)
            for field in ("average", "mean", "variance", "ready", "single_z"):
                assert _same_bits(getattr(got, field), getattr(expected, field)), field
            q, r = got.likelihood(), expected.likelihood()
            assert _same_bits(q, r)
            for name in _STATE:
                assert _same_bits(getattr(banks[0], name), getattr(banks[1], name)), name
    finally:
        calibration._DENSE_CELLS, calibration._DENSE_PER_READING = saved

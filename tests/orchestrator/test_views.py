"""History views (RANGE, SEASONAL) against naive per-reading references."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.history import Declaration, History
from sentinel.orchestrator.views import NANOS, RangeSpec, RangeView, SeasonalSpec, SeasonalView
from sentinel.orchestrator.windows import WindowStore

# ---------------------------------------------------------------- naive references


def naive_range(history: list[float], spec: RangeSpec) -> tuple[float, float, float]:
    """[max, min, count] of the values before a reading: the last kept complete blocks and
    the current partial block."""
    seen = len(history)
    complete = min(seen // spec.block, spec.blocks)
    covered = complete * spec.block + seen % spec.block
    if covered == 0:
        return (math.nan, math.nan, 0.0)
    recent = np.float32(history[seen - covered :])
    return (float(recent.max()), float(recent.min()), float(covered))


class NaiveSeasonal:
    """A dict of time bucket → the latest moving average stored in it, per sensor."""

    def __init__(self, spec: SeasonalSpec) -> None:
        self.spec = spec
        self.buckets: dict[int, float] = {}
        self.latest: int | None = None
        self.values: list[float] = []

    def step(self, timestamp: int, value: float) -> float:
        spec = self.spec
        bucket = timestamp // int(spec.bucket_seconds * NANOS)
        if self.latest is not None:
            bucket = max(bucket, self.latest)
        self.latest = bucket
        reference = math.nan
        for offset in [0, *[d * s for d in range(1, spec.tolerance + 1) for s in (-1, 1)]]:
            candidate = bucket - spec.lag + offset
            if candidate in self.buckets:
                reference = self.buckets[candidate]
                break
        # previous values as the float32 window store keeps them, this one as float64
        previous = [float(np.float32(v)) for v in self.values[-(spec.smoothing - 1) :]]
        previous = previous if spec.smoothing > 1 else []
        average = (sum(previous) + value) / (len(previous) + 1)
        self.buckets[bucket] = float(np.float32(average))
        self.values.append(value)
        return reference


# ---------------------------------------------------------------- RangeView


def test_range_spec_sizes():
    spec = RangeSpec(readings=1000, block=16)
    assert spec.blocks == 63 and spec.width == 3
    # max/min per block, of the complete blocks and of the partial block; three counters
    assert spec.bytes_per_sensor == 63 * 8 + 8 + 8 + 8


def test_range_covers_complete_blocks_plus_the_partial_one():
    spec = RangeSpec(readings=6, block=3)  # 2 complete blocks kept
    view = RangeView(spec)
    view.grow(1)
    slot = np.array([0])
    values = [5.0, 1.0, 9.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 0.5]
    rows = [view.step(slot, np.array([v]))[0].tolist() for v in values]
    assert rows[0][2] == 0.0 and np.isnan(rows[0][:2]).all()  # nothing before the first
    assert rows[1] == [5.0, 5.0, 1.0]
    assert rows[3] == [9.0, 1.0, 3.0]  # one complete block
    assert rows[6] == [9.0, 1.0, 6.0]  # two complete blocks
    assert rows[7] == [9.0, 1.0, 7.0]  # two complete + one partial: 7 values
    assert rows[9] == [8.0, 2.0, 6.0]  # the first block (5, 1, 9) fell out of the range
    for i in range(len(values)):
        np.testing.assert_array_equal(rows[i], naive_range(values[:i], spec))


def test_range_slots_are_independent_and_reset():
    view = RangeView(RangeSpec(readings=4, block=2))
    view.grow(3)
    view.step(np.array([0, 1]), np.array([10.0, -10.0]))
    view.step(np.array([0, 1]), np.array([20.0, -20.0]))
    out = view.step(np.array([0, 1, 2]), np.array([0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(out[0], [20.0, 10.0, 2.0])
    np.testing.assert_array_equal(out[1], [-10.0, -20.0, 2.0])
    assert out[2][2] == 0.0 and np.isnan(out[2][:2]).all()
    view.reset(np.array([0]))
    out = view.step(np.array([0, 1]), np.array([1.0, 1.0]))
    assert out[0][2] == 0.0 and np.isnan(out[0][:2]).all()
    np.testing.assert_array_equal(out[1], [0.0, -20.0, 3.0])


# ---------------------------------------------------------------- SeasonalView

DAILY = SeasonalSpec(period_seconds=86_400.0, bucket_seconds=300.0, smoothing=1, tolerance=2)
T0 = 1_700_000_100 * NANOS - (1_700_000_100 * NANOS) % (300 * NANOS)


def seasonal(spec: SeasonalSpec = DAILY, sensors: int = 1) -> SeasonalView:
    view = SeasonalView(spec)
    view.grow(sensors)
    return view


def step(view: SeasonalView, seconds: float, average: float, slot: int = 0) -> float:
    out = view.step(np.array([slot]), np.array([T0 + int(seconds * NANOS)]), np.array([average]))
    return float(out[0, 0])


def test_seasonal_spec_sizes():
    assert DAILY.lag == 288 and DAILY.buckets == 288 + 2 + 1 and DAILY.width == 1
    assert DAILY.bytes_per_sensor == DAILY.buckets * 4 + 8


def test_seasonal_reference_is_the_value_one_period_earlier():
    view = seasonal()
    day = 86_400
    for k in range(286):  # one day at 5-minute sampling: no reference yet...
        assert math.isnan(step(view, k * 300, float(k)))
    # ...but for the last two buckets, whose day-ago bucket + 2 (the tolerance) exists
    assert step(view, 286 * 300, 286.0) == 0.0
    assert step(view, 287 * 300, 287.0) == 0.0  # buckets -1 and -2 are empty, +1 is bucket 0
    assert step(view, day, 1000.0) == 0.0
    assert step(view, day + 300, 1001.0) == 1.0
    assert step(view, day + 600 + 10, 1002.0) == 2.0  # anywhere inside the bucket
    assert step(view, 2 * day, 5.0) == 1000.0  # the latest value of that bucket


def test_seasonal_tolerance_searches_nearest_first_then_earlier_side():
    view = seasonal()
    day = 86_400
    step(view, -300, 7.0)  # one bucket before "one period ago"
    step(view, 300, 8.0)  # one bucket after
    assert step(view, day, 0.0) == 7.0  # offset -1 before +1
    view = seasonal()
    step(view, 600, 9.0)  # only two buckets after: within tolerance 2
    assert step(view, day, 0.0) == 9.0
    view = seasonal()
    step(view, 900, 9.0)  # three buckets after: outside the tolerance
    assert math.isnan(step(view, day, 0.0))


def test_seasonal_gaps_clear_stale_buckets():
    view = seasonal()
    step(view, 0, 1.0)
    # Three periods later the ring has wrapped: yesterday had no readings, nothing to compare.
    assert math.isnan(step(view, 3 * 86_400, 2.0))
    assert step(view, 4 * 86_400, 3.0) == 2.0


def test_time_going_backwards_is_taken_as_the_latest_time():
    view = seasonal()
    day = 86_400
    step(view, 0, 1.0)
    step(view, 600, 2.0)
    # An out-of-order reading (older timestamp) lands in the latest bucket (600 s).
    step(view, 0, 3.0)
    assert step(view, day + 600, 0.0) == 3.0
    assert step(view, day, 0.0) == 3.0  # also late: taken as day + 600 s


def test_seasonal_reset():
    view = seasonal(sensors=2)
    step(view, 0, 1.0, slot=0)
    step(view, 0, 1.0, slot=1)
    view.reset(np.array([0]))
    assert math.isnan(step(view, 86_400, 0.0, slot=0))
    assert step(view, 86_400, 0.0, slot=1) == 1.0


# ---------------------------------------------------------------- through History


def views_history(range_spec: RangeSpec, seasonal_spec: SeasonalSpec, sensors: int = 8) -> History:
    history = History(WindowStore(0, sensors))
    history.declare(
        "engine",
        Declaration(window_length=0, views={"r": range_spec, "d": seasonal_spec}, channels={}),
    )
    return history


@st.composite
def streams(draw):
    """Readings of a few sensors: (sensor, seconds, value), per-sensor times mostly rising."""
    count = draw(st.integers(1, 120))
    sensors = draw(st.lists(st.sampled_from("abcd"), min_size=count, max_size=count))
    values = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=count, max_size=count))
    jumps = draw(st.lists(st.integers(-2, 4), min_size=count, max_size=count))
    seconds, clock = [], 0
    for jump in jumps:
        clock += jump
        seconds.append(clock)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(count - 1, 1)), max_size=8))))
    return list(zip(sensors, seconds, values, strict=True)), cuts


@settings(max_examples=80, deadline=None)
@given(
    case=streams(),
    readings=st.integers(1, 9),
    block=st.integers(1, 4),
    lag=st.integers(2, 6),
    tolerance=st.integers(0, 1),
    smoothing=st.integers(1, 4),
)
def test_views_match_the_naive_reference_for_any_batching(
    case, readings, block, lag, tolerance, smoothing
):
    stream, cuts = case
    range_spec = RangeSpec(readings=readings, block=block)
    seasonal_spec = SeasonalSpec(float(lag), 1.0, smoothing, tolerance)
    history = views_history(range_spec, seasonal_spec)
    got_range, got_seasonal = [], []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        part = stream[start:stop]
        if not part:
            continue
        _, views = history.append(
            [s for s, _, _ in part],
            np.array([v for _, _, v in part]),
            np.array([T0 + t * NANOS for _, t, _ in part], dtype=np.int64),
        )
        mine = history.views_for("engine", views)
        got_range.extend(mine["r"].tolist())
        got_seasonal.extend(mine["d"][:, 0].tolist())

    values: dict[str, list[float]] = defaultdict(list)
    naive: dict[str, NaiveSeasonal] = {}
    for i, (sensor, t, value) in enumerate(stream):
        np.testing.assert_array_equal(got_range[i], naive_range(values[sensor], range_spec))
        values[sensor].append(value)
        reference = naive.setdefault(sensor, NaiveSeasonal(seasonal_spec)).step(
            T0 + t * NANOS, value
        )
        if math.isnan(reference):
            assert math.isnan(got_seasonal[i]), i
        else:
            assert got_seasonal[i] == pytest.approx(reference, rel=1e-6, abs=1e-9), i


# ---------------------------------------------------------------- all at once vs. step by step


def _views_pair(specs, max_sensors: int, length: int):
    """Two stores with the same views; the second always walks the batch step by step."""
    from sentinel.orchestrator.views import HistoryViews

    pair = []
    for stepped in (False, True):
        store, views = WindowStore(length, max_sensors), HistoryViews()
        for index, spec in enumerate(specs):
            view = RangeView(spec) if isinstance(spec, RangeSpec) else SeasonalView(spec)
            if stepped:
                view.run = lambda *args: None  # type: ignore[method-assign]
            views.views[f"v{index}"] = view
            store.attach(view)
        pair.append((store, views))
    return pair


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    # NaN where NaN, else the same bits (but for the sign of zero, which numpy's own fmax/fmin
    # picks differently for short and long arrays).
    if a.dtype.kind != "f":
        return np.array_equal(a, b)
    a, b = np.where(a == 0, 0, a), np.where(b == 0, 0, b)
    same_nan = np.array_equal(np.isnan(a), np.isnan(b))
    bits_a, bits_b = np.nan_to_num(a).view(np.uint8), np.nan_to_num(b).view(np.uint8)
    return same_nan and np.array_equal(bits_a, bits_b)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    sensors=st.integers(1, 6),
    max_sensors=st.integers(1, 6),
    length=st.integers(0, 4),
    block=st.integers(1, 4),
    readings=st.integers(1, 12),
    lag=st.integers(1, 6),
    tolerance=st.integers(0, 2),
    smoothing=st.integers(1, 3),
)
def test_batch_at_once_is_exactly_the_step_loop(
    data, sensors, max_sensors, length, block, readings, lag, tolerance, smoothing
):
    specs = [RangeSpec(readings, block), SeasonalSpec(2.0 * lag, 2.0, smoothing, tolerance)]
    (store_a, views_a), (store_b, views_b) = _views_pair(specs, max_sensors, length)
    clock = [0] * sensors
    for _ in range(data.draw(st.integers(1, 4))):
        count = data.draw(st.integers(1, 30))
        which = data.draw(st.lists(st.integers(0, sensors - 1), min_size=count, max_size=count))
        if len(set(which)) > max_sensors:
            which = [w % max_sensors for w in which]
        jumps = data.draw(
            st.lists(st.sampled_from([-3, -1, 0, 0, 1, 1, 2, 5, 13, 40]), min_size=count,
                     max_size=count)
        )  # fmt: skip
        values = np.array(
            data.draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, -2.5, 3.25, math.nan, 7.0]),
                               min_size=count, max_size=count))
        )  # fmt: skip
        stamps = []
        for w, jump in zip(which, jumps, strict=True):
            clock[w] += jump
            stamps.append(clock[w] * NANOS)
        ids = [f"s{w}" for w in which]
        got = []
        for store, views in ((store_a, views_a), (store_b, views_b)):
            stored = store.append(ids, values)
            got.append(views.update(stored, values, np.array(stamps, dtype=np.int64)))
        for name in got[0]:
            assert _identical(got[0][name], got[1][name]), name
        for name, view in views_a.views.items():
            other = views_b.views[name]
            for attr, state in vars(view).items():
                if isinstance(state, np.ndarray):
                    assert _identical(state, getattr(other, attr)), (name, attr)

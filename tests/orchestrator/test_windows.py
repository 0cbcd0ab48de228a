"""WindowStore against a naive per-reading reference (a dict of deques)."""

from __future__ import annotations

import math
from collections import OrderedDict, deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.windows import WindowStore

NAN = math.nan


class ReferenceStore:
    """One reading at a time, obviously correct, slow.

    Recency is per batch: a batch's sensors are all "seen" when the batch arrives, in the order
    of their first reading in it. A new sensor arriving when `max_sensors` are stored evicts the
    least recently seen sensor that is not part of the current batch; an evicted sensor that
    comes back starts with an empty history.
    """

    def __init__(self, length: int, max_sensors: int) -> None:
        self.length = length
        self.max_sensors = max_sensors
        self.history: OrderedDict[str, deque[float]] = OrderedDict()

    def grow_length(self, length: int) -> None:
        if length <= self.length:
            return
        self.length = length
        for sensor, values in self.history.items():
            self.history[sensor] = deque(values, maxlen=length)

    def append(self, sensor_ids: list[str], values: list[float]):
        in_batch = list(dict.fromkeys(sensor_ids))
        if len(in_batch) > self.max_sensors:
            raise ValueError("too many sensors")
        batch_set = set(in_batch)
        evicted = 0
        for sensor in in_batch:
            if sensor in self.history:
                self.history.move_to_end(sensor)
                continue
            if len(self.history) == self.max_sensors:
                victim = next(s for s in self.history if s not in batch_set)
                del self.history[victim]
                evicted += 1
            self.history[sensor] = deque(maxlen=self.length)
        # Move every sensor of the batch to the recent end in first-reading order.
        for sensor in in_batch:
            self.history.move_to_end(sensor)
        windows, fills = [], []
        for sensor, value in zip(sensor_ids, values, strict=True):
            past = list(self.history[sensor])[-self.length :] if self.length else []
            windows.append([NAN] * (self.length - len(past)) + past)
            fills.append(len(past))
            if self.length:
                self.history[sensor].append(value)
        return windows, fills, evicted


def assert_same(store: WindowStore, ref: ReferenceStore, result, expected) -> None:
    windows, fills, evicted = expected
    assert result.windows.shape == (len(fills), ref.length)
    assert np.array_equal(
        result.windows,
        np.array(windows, dtype=result.windows.dtype).reshape(len(fills), ref.length),
        equal_nan=True,
    )
    assert result.fill.tolist() == fills
    assert result.evicted == evicted
    assert store.sensors == len(ref.history)
    for sensor, values in ref.history.items():
        assert store.history(sensor).tolist() == list(values)


# ---------------------------------------------------------------- plain examples


def test_windows_hold_values_before_each_reading_oldest_first():
    store = WindowStore(length=3, max_sensors=10)
    first = store.append(["a", "a"], np.array([1.0, 2.0]))
    assert np.array_equal(first.windows, [[NAN, NAN, NAN], [NAN, NAN, 1.0]], equal_nan=True)
    assert first.fill.tolist() == [0, 1]
    second = store.append(["a", "b", "a", "a"], np.array([3.0, 10.0, 4.0, 5.0]))
    assert np.array_equal(
        second.windows,
        [[NAN, 1.0, 2.0], [NAN, NAN, NAN], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]],
        equal_nan=True,
    )
    assert second.fill.tolist() == [2, 0, 3, 3]
    assert store.history("a").tolist() == [3.0, 4.0, 5.0]
    assert store.history("b").tolist() == [10.0]
    assert store.history("unknown").size == 0


def test_zero_length_windows():
    store = WindowStore(length=0, max_sensors=2)
    result = store.append(["a", "b", "a"], np.array([1.0, 2.0, 3.0]))
    assert result.windows.shape == (3, 0)
    assert result.fill.tolist() == [0, 0, 0]
    assert store.history("a").size == 0


def test_empty_batch():
    store = WindowStore(length=4, max_sensors=2)
    result = store.append([], np.empty(0))
    assert result.windows.shape == (0, 4)
    assert result.fill.shape == (0,)
    assert result.evicted == 0
    assert store.sensors == 0


def test_batch_with_more_sensors_than_max_raises_and_changes_nothing():
    store = WindowStore(length=2, max_sensors=2)
    store.append(["a", "b"], np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="max_sensors"):
        store.append(["c", "d", "e"], np.array([1.0, 2.0, 3.0]))
    assert store.sensors == 2
    assert store.history("a").tolist() == [1.0]
    assert store.history("b").tolist() == [2.0]


def test_least_recently_seen_sensor_is_evicted_and_its_history_resets():
    store = WindowStore(length=2, max_sensors=2)
    store.append(["a"], np.array([1.0]))
    store.append(["b"], np.array([2.0]))
    store.append(["a"], np.array([3.0]))  # b is now the least recently seen
    result = store.append(["c"], np.array([4.0]))
    assert result.evicted == 1
    assert store.history("b").size == 0
    assert store.history("a").tolist() == [1.0, 3.0]
    back = store.append(["b"], np.array([5.0]))  # evicts a; b starts over
    assert back.fill.tolist() == [0]
    assert np.isnan(back.windows).all()
    assert store.history("a").size == 0


def test_eviction_never_picks_a_sensor_of_the_current_batch():
    # Regression: "a" is the least recently seen sensor but is part of the batch (after the new
    # sensor "c"), so "b" must be evicted instead.
    store = WindowStore(length=2, max_sensors=2)
    store.append(["a", "b"], np.array([1.0, 2.0]))
    result = store.append(["c", "a"], np.array([3.0, 4.0]))
    assert result.evicted == 1
    assert np.array_equal(result.windows, [[NAN, NAN], [NAN, 1.0]], equal_nan=True)
    assert store.history("a").tolist() == [1.0, 4.0]
    assert store.history("b").size == 0


def test_grow_length_keeps_history():
    store = WindowStore(length=2, max_sensors=4)
    store.append(["a"] * 3, np.array([1.0, 2.0, 3.0]))
    store.grow_length(4)
    store.grow_length(1)  # never shrinks
    assert store.length == 4
    assert store.history("a").tolist() == [2.0, 3.0]
    result = store.append(["a", "a", "a"], np.array([4.0, 5.0, 6.0]))
    assert np.array_equal(
        result.windows,
        [[NAN, NAN, 2.0, 3.0], [NAN, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]],
        equal_nan=True,
    )
    assert result.fill.tolist() == [2, 3, 4]


def test_grow_from_zero_length():
    store = WindowStore(length=0, max_sensors=4)
    store.append(["a"], np.array([1.0]))
    store.grow_length(2)
    result = store.append(["a", "a"], np.array([2.0, 3.0]))
    assert np.array_equal(result.windows, [[NAN, NAN], [NAN, 2.0]], equal_nan=True)
    assert result.fill.tolist() == [0, 1]


def test_float64_store_keeps_full_precision():
    store = WindowStore(length=2, max_sensors=1, dtype=np.float64)
    value = 0.1 + 1e-12
    store.append(["a"], np.array([value]))
    result = store.append(["a"], np.array([0.0]))
    assert result.windows.dtype == np.float64
    assert result.windows[0, -1] == value


def test_capacity_grows_beyond_the_initial_allocation():
    store = WindowStore(length=2, max_sensors=3000)
    ref = ReferenceStore(length=2, max_sensors=3000)
    for start in range(0, 2600, 650):
        ids = [f"s{i}" for i in range(start, start + 650)] + ["s0"]
        values = np.arange(len(ids), dtype=np.float32) + start
        assert_same(store, ref, store.append(ids, values), ref.append(ids, values.tolist()))
    assert store.sensors == 2600
    assert store.history("s0").tolist() == [1950.0, 2600.0]


def test_invalid_construction():
    with pytest.raises(ValueError):
        WindowStore(length=-1, max_sensors=1)
    with pytest.raises(ValueError):
        WindowStore(length=1, max_sensors=0)


# ---------------------------------------------------------------- property


SENSORS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
VALUES = st.floats(width=32, allow_nan=False, allow_infinity=False)
BATCH = st.lists(st.tuples(SENSORS, VALUES), max_size=10).map(lambda b: ("batch", b))
GROW = st.integers(0, 6).map(lambda n: ("grow", n))


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(0, 5),
    max_sensors=st.integers(1, 4),
    operations=st.lists(st.one_of(BATCH, BATCH, BATCH, GROW), max_size=12),
)
def test_store_matches_per_reading_reference(length, max_sensors, operations):
    store = WindowStore(length=length, max_sensors=max_sensors)
    ref = ReferenceStore(length=length, max_sensors=max_sensors)
    for kind, payload in operations:
        if kind == "grow":
            store.grow_length(payload)
            ref.grow_length(payload)
            assert store.length == ref.length
            continue
        ids = [s for s, _ in payload]
        values = [v for _, v in payload]
        if len(set(ids)) > max_sensors:
            with pytest.raises(ValueError):
                store.append(ids, np.array(values, dtype=np.float64))
            with pytest.raises(ValueError):
                ref.append(ids, values)
            continue
        result = store.append(ids, np.array(values, dtype=np.float64))
        assert_same(store, ref, result, ref.append(ids, values))


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(0, 4),
    batches=st.lists(st.lists(SENSORS, max_size=12), max_size=6),
)
def test_compact_form_and_grouping_agree_with_the_windows(length, batches):
    # Every sensor once, the same count per sensor and uneven counts take different paths.
    store = WindowStore(length=length, max_sensors=6)
    reading = 0.0
    for ids in batches:
        values = reading + np.arange(len(ids), dtype=np.float64)
        reading += len(ids)
        out = store.append(ids, values)
        sensors = list(dict.fromkeys(ids))
        assert out.group.tolist() == [sensors.index(s) for s in ids]
        assert out.counts.tolist() == [ids.count(s) for s in sensors]
        assert out.sensor_slots.tolist() == [store.slot_of(s) for s in sensors]
        assert out.order.tolist() == sorted(range(len(ids)), key=lambda i: (out.group[i], i))
        deepest = max(out.counts, default=0)
        padded = len(sensors) * (length + deepest)
        if out.extended is None:
            # Lopsided: rows padded to the deepest sensor's would be over twice what they hold.
            assert padded > 2 * (len(sensors) * length + len(ids))
            continue
        assert padded <= 2 * (len(sensors) * length + len(ids))
        assert out.extended.shape == (len(sensors), length + deepest)
        for i in range(len(ids)):
            row = out.extended[out.group[i]]
            assert np.array_equal(row[out.rank[i] : out.rank[i] + length], out.windows[i],
                                  equal_nan=True)  # fmt: skip
            assert row[length + out.rank[i]] == np.float32(values[i])
        for u, count in enumerate(out.counts.tolist()):
            assert np.isnan(out.extended[u, length + count :]).all()


def test_a_lopsided_batch_is_not_padded_to_its_deepest_sensor():
    store = WindowStore(length=3, max_sensors=1_000)
    ids = [f"s{i}" for i in range(500)] + ["s0"] * 500
    out = store.append(ids, np.arange(1_000, dtype=np.float64))
    assert out.extended is None  # 500 x 504 padded values for 2,000 held
    assert out.windows.shape == (1_000, 3)
    # s0's readings: 0 (row 0), then 500..999; its last window is its last three readings.
    assert out.windows[-1].tolist() == [996.0, 997.0, 998.0]
    assert out.windows[500].tolist()[-1] == 0.0
    assert store.history("s0").tolist() == [997.0, 998.0, 999.0]
    assert store.history("s7").tolist() == [7.0]


# ---------------------------------------------------------------- per-sensor state beside it


class Recorder:
    """A SlotState that records what the store asks of it."""

    def __init__(self) -> None:
        self.capacity = 0
        self.resets: list[list[int]] = []

    def grow(self, capacity: int) -> None:
        assert capacity >= self.capacity
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.resets.append(sorted(slots.tolist()))


def test_attached_state_grows_and_resets_with_the_slots():
    store = WindowStore(length=1, max_sensors=2000)
    state = Recorder()
    store.attach(state)
    assert state.capacity == store.capacity == 1024
    first = store.append(["a", "b", "a"], np.array([1.0, 2.0, 3.0]))
    assert state.resets == [sorted({int(first.slots[0]), int(first.slots[1])})]
    store.append(["a"], np.array([4.0]))  # known sensor: nothing to reset
    assert len(state.resets) == 1
    store.append([f"s{i}" for i in range(1500)], np.zeros(1500))
    assert state.capacity == store.capacity == 2000  # grown together
    assert len(state.resets[-1]) == 1500


def test_a_reused_slot_is_reset_and_gets_a_new_generation():
    store = WindowStore(length=2, max_sensors=2)
    state = Recorder()
    store.attach(state)
    a = store.append(["a", "b"], np.array([1.0, 2.0]))
    c = store.append(["c"], np.array([3.0]))  # evicts "a" (least recently seen)
    assert c.evicted == 1 and c.slots[0] == a.slots[0]
    assert state.resets[-1] == [int(a.slots[0])]
    assert c.generation[0] == a.generation[0] + 1
    # An in-flight batch of "a" is no longer current for that slot; "b" still is.
    assert store.current(a.slots, a.generation).tolist() == [False, True]
    assert store.current(c.slots, c.generation).tolist() == [True]


def test_rank_counts_earlier_rows_of_the_same_sensor():
    store = WindowStore(length=0, max_sensors=4)
    out = store.append(["a", "b", "a", "c", "a", "b"], np.zeros(6))
    assert out.rank.tolist() == [0, 0, 1, 0, 2, 1]
    assert out.slots[0] == out.slots[2] == out.slots[4] != out.slots[1]


@settings(max_examples=150, deadline=None)
@given(st.lists(SENSORS, max_size=30))
def test_steps_hold_each_sensor_once_in_reading_order(ids):
    store = WindowStore(length=1, max_sensors=6)
    out = store.append(ids, np.zeros(len(ids)))
    steps = out.steps()
    rows = [int(r) for step in steps for r in step]
    assert sorted(rows) == list(range(len(ids)))
    for k, step in enumerate(steps):
        sensors = [ids[r] for r in step]
        assert len(sensors) == len(set(sensors))  # each sensor at most once per step
        assert (out.rank[step] == k).all()
    # A sensor's k-th reading is in step k: walking the steps replays each sensor in order.
    for sensor in set(ids):
        walked = [int(r) for step in steps for r in step if ids[r] == sensor]
        assert walked == [i for i, s in enumerate(ids) if s == sensor]

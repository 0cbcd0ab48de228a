"""Per-sensor ring buffers of recent values, updated a whole batch at a time.

The orchestrator owns the only detector state: the last `length` values of each sensor. A
batch may hold many readings of one sensor; each reading's window is the `length` values that
came before it, including earlier readings of the same batch. Everything after the sensor-id
lookup is numpy over the whole batch.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SlotState(Protocol):
    """Per-sensor state kept beside the windows, in arrays indexed by the store's slots."""

    @property
    def SLOT_FIELDS(self) -> tuple[str, ...]:
        """The attributes holding those arrays (what a checkpoint saves and restores)."""

    def grow(self, capacity: int) -> None:
        """Make room for slots 0..capacity-1 (new slots start empty)."""

    def reset(self, slots: np.ndarray) -> None:
        """Forget the state of these slots (a new sensor took them over)."""


@dataclass(frozen=True, slots=True)
class BatchWindows:
    windows: np.ndarray  # [rows, length], oldest first, NaN where the sensor had no history
    fill: np.ndarray  # int64 [rows], valid trailing positions per row
    evicted: int  # sensors dropped (least recently seen) to make room for this batch
    slots: np.ndarray  # int64 [rows], the slot of each row's sensor
    rank: np.ndarray  # int64 [rows], earlier rows of the same sensor in this batch
    generation: np.ndarray  # int64 [rows], the slot's generation (changes when it is reused)
    # Compact form of `windows`: one row per sensor of the batch (stored history, then its new
    # values); row i's window is extended[group[i], rank[i] : rank[i] + length]. None for a
    # lopsided batch, whose rows would be padded to its deepest sensor's.
    extended: np.ndarray | None
    group: np.ndarray
    # The batch's distinct sensor ids in order of first appearance: row i's is
    # sensors[group[i]] (sent so to engines that read sensor ids).
    sensors: Sequence[str]
    # The same grouping by sensor, for state that advances reading by reading: `order` lists
    # the rows by sensor, then reading; sensor u of the batch has counts[u] rows and slot
    # sensor_slots[u].
    order: np.ndarray
    counts: np.ndarray
    sensor_slots: np.ndarray
    evicted_ids: tuple[str, ...] = ()  # the sensors counted in `evicted`

    def steps(self) -> list[np.ndarray]:
        """Row indices by rank: step k holds each sensor's (k+1)-th reading of the batch, so
        state that advances reading by reading can be updated with one numpy pass per step."""
        if self.rank.size == 0:
            return []
        deepest = int(self.rank.max())
        if deepest == 0:
            return [np.arange(self.rank.size)]
        order = np.argsort(self.rank, kind="stable")
        bounds = np.searchsorted(self.rank[order], np.arange(1, deepest + 1))
        return np.split(order, bounds)


class WindowStore:
    """Bounded store: at most `max_sensors` sensors, least recently seen evicted first."""

    # Per-sensor state: arrays whose first axis is the slot (checkpointed).
    SLOT_FIELDS = ("_values", "_fill")

    def __init__(self, length: int, max_sensors: int, dtype: np.dtype | type = np.float32) -> None:
        if length < 0 or max_sensors < 1:
            raise ValueError("length must be >= 0 and max_sensors >= 1")
        self.length = length
        self.max_sensors = max_sensors
        self._dtype = np.dtype(dtype)
        capacity = min(max_sensors, 1024)
        self._values = np.full((capacity, length), np.nan, dtype=self._dtype)
        self._fill = np.zeros(capacity, dtype=np.int64)
        self._generation = np.zeros(capacity, dtype=np.int64)
        self._slots: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._states: list[SlotState] = []
        self.id_bytes = 0  # of the sensor-id strings the index keeps (for the memory gauge)

    @property
    def capacity(self) -> int:
        return int(self._values.shape[0])

    def attach(self, state: SlotState) -> None:
        """Keep `state` sized to the slots and reset with them (eviction starts it afresh)."""
        state.grow(self.capacity)
        self._states.append(state)

    def detach(self, state: SlotState) -> None:
        """Stop keeping `state` (its arrays go with it)."""
        self._states = [s for s in self._states if s is not state]

    def current(self, slots: np.ndarray, generation: np.ndarray) -> np.ndarray:
        """True where a slot still belongs to the sensor it held at that generation."""
        return self._generation[slots] == generation

    def slot_of(self, sensor_id: str) -> int | None:
        return self._slots.get(sensor_id)

    @property
    def sensors(self) -> int:
        return len(self._slots)

    def grow_length(self, length: int) -> None:
        """Widen every window (a specialist asked for more history); existing values are kept."""
        if length <= self.length:
            return
        pad = np.full((self._values.shape[0], length - self.length), np.nan, dtype=self._dtype)
        self._values = np.concatenate([pad, self._values], axis=1)
        self.length = length

    def live(self) -> tuple[list[str], np.ndarray]:
        """Sensor ids, least recently seen first, and their slots."""
        return list(self._slots), np.fromiter(self._slots.values(), np.int64, len(self._slots))

    def restore(
        self, sensor_ids: Sequence[str], values: np.ndarray, fill: np.ndarray
    ) -> np.ndarray:
        """Take over sensors from a checkpoint (least recently seen first) into an empty store;
        returns their slots, for the attached states to load theirs. Windows of another length
        keep their most recent values; beyond `max_sensors` the least recent are left out."""
        if self._slots:
            raise RuntimeError("restore needs an empty window store")
        keep = min(len(sensor_ids), self.max_sensors)
        sensor_ids, values, fill = sensor_ids[-keep:], values[-keep:], fill[-keep:]
        while self.capacity < keep:
            self._grow_capacity()
        slots = np.asarray([self._free.pop() for _ in range(keep)], dtype=np.int64)
        width = min(self.length, values.shape[1])
        if width:
            self._values[slots, self.length - width :] = values[:, values.shape[1] - width :]
        self._fill[slots] = np.minimum(fill, width)
        self._generation[slots] += 1
        self._slots.update(zip(sensor_ids, slots.tolist(), strict=True))
        self.id_bytes = sum(map(sys.getsizeof, self._slots))
        return slots

    def history(self, sensor_id: str) -> np.ndarray:
        """The stored window of one sensor (a copy), oldest first; empty if unknown."""
        slot = self._slots.get(sensor_id)
        if slot is None:
            return np.empty(0, dtype=self._dtype)
        fill = int(self._fill[slot])
        return self._values[slot, self.length - fill :].copy()

    def append(self, sensor_ids: Sequence[str], values: np.ndarray) -> BatchWindows:
        rows = len(sensor_ids)
        length = self.length
        # Group readings by sensor: `group[i]` is the batch-local index of row i's sensor (in
        # order of first appearance).
        unique_ids = list(dict.fromkeys(sensor_ids))
        sensors = len(unique_ids)
        if sensors > self.max_sensors:
            raise ValueError(
                f"batch has {sensors} distinct sensors, more than max_sensors={self.max_sensors}"
            )
        slots, evicted, fresh = self._slots_for(unique_ids)
        if fresh.size:
            self._generation[fresh] += 1
            for state in self._states:
                state.reset(fresh)
        # Every sensor once (many sensors, one reading each) is common enough to skip the
        # grouping: rows are then the sensors, in order.
        once = sensors == rows
        if once:
            group = order = np.arange(rows)
            counts = np.ones(rows, dtype=np.int64)
            rank = np.zeros(rows, dtype=np.int64)
        else:
            local = dict(zip(unique_ids, range(sensors), strict=True))
            group = np.fromiter(map(local.__getitem__, sensor_ids), dtype=np.int64, count=rows)
            counts = np.bincount(group, minlength=sensors)
            # rank[i]: how many earlier rows of the same batch belong to row i's sensor.
            order = np.argsort(group, kind="stable")
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            rank = np.empty(rows, dtype=np.int64)
            rank[order] = np.arange(rows) - starts[group[order]]

        # The stored windows are gathered once: a gather of the big slot array is the costly
        # part with many sensors.
        deepest = int(counts.max(initial=0))
        stored = self._values.take(slots, axis=0)
        extended: np.ndarray | None
        if sensors * (length + deepest) <= 2 * (sensors * length + rows):
            # extended[u] = stored history of sensor u followed by its new values in batch
            # order (NaN after them, up to the deepest sensor's).
            extended = np.empty((sensors, length + deepest), self._dtype)
            extended[:, :length] = stored
            extended[:, length:] = np.nan
            extended[group, length + rank] = values
            # Row i's window starts at column rank[i] of its sensor's extended row; one gather
            # over a strided view instead of a 2-D fancy index. With every sensor once, that
            # is the stored window itself.
            sliding = np.lib.stride_tricks.sliding_window_view(extended, length, axis=1)
            windows = stored if once else sliding[group, rank]
            if deepest == int(counts.min(initial=0)):
                # Every sensor moved on by the same count: its new window is a plain slice.
                moved_on = extended[:, deepest:]
            else:
                moved_on = sliding[np.arange(sensors), counts]
        else:
            # Lopsided (a few sensors with many readings beside many with few): rows padded to
            # the deepest sensor's would take sensors x deepest values. One flat timeline
            # instead, each sensor's history followed by its readings, and no compact form
            # (it would not be smaller than the windows row by row).
            extended = None
            begin = np.arange(sensors) * length + (np.cumsum(counts) - counts)
            history = np.ones(sensors * length + rows, dtype=bool)
            history[begin[group] + length + rank] = False
            timeline = np.empty(history.size, self._dtype)
            timeline[history] = stored.ravel()
            timeline[~history] = values[order]
            flat = np.lib.stride_tricks.sliding_window_view(timeline, length)
            windows = flat[begin[group] + rank]
            moved_on = flat[begin + counts]
        old_fill = self._fill[slots]
        fill = np.minimum(old_fill[group] + rank, length)
        self._values[slots] = moved_on
        self._fill[slots] = np.minimum(old_fill + counts, length)
        row_slots = slots[group]
        return BatchWindows(
            windows=windows,
            fill=fill,
            evicted=len(evicted),
            evicted_ids=tuple(evicted),
            slots=row_slots,
            rank=rank,
            generation=self._generation[row_slots],
            extended=extended,
            group=group,
            sensors=unique_ids,
            order=order,
            counts=counts,
            sensor_slots=slots,
        )

    def _slots_for(self, sensor_ids: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
        slots = np.empty(len(sensor_ids), dtype=np.int64)
        fresh: list[int] = []
        present = self._slots
        evicted: list[str] = []
        # Known sensors of this batch first move to the recent end, so that eviction (which takes
        # from the least recent end) never picks a sensor of this batch that comes later in it.
        try:
            # The steady state, all seen before, in one pass at C speed (no Python per sensor).
            deque(map(present.move_to_end, sensor_ids), maxlen=0)
        except KeyError:
            # Some are new: move the known ones (again: the order is that of the last moves,
            # so moving those before the new one twice changes nothing).
            for sensor_id in sensor_ids:
                if sensor_id in present:
                    present.move_to_end(sensor_id)
        else:
            # They are now the most recent, in batch order, exactly as the loop below would
            # leave them.
            slots[:] = np.fromiter(map(present.__getitem__, sensor_ids), np.int64, len(slots))
            return slots, evicted, np.zeros(0, dtype=np.int64)
        for index, sensor_id in enumerate(sensor_ids):
            slot = present.get(sensor_id)
            if slot is not None:
                present.move_to_end(sensor_id)
            else:
                if not self._free:
                    self._grow_capacity()
                if not self._free:
                    # Full at max_sensors: reuse the least recently seen sensor's slot. Sensors of
                    # this batch were moved to the end above, so (by the size check) the victim
                    # is never one of them.
                    victim, slot = next(iter(present.items()))
                    del present[victim]
                    evicted.append(victim)
                    self.id_bytes -= sys.getsizeof(victim)
                else:
                    slot = self._free.pop()
                self._values[slot] = np.nan
                self._fill[slot] = 0
                present[sensor_id] = slot
                self.id_bytes += sys.getsizeof(sensor_id)
                fresh.append(slot)
            slots[index] = slot
        return slots, evicted, np.asarray(fresh, dtype=np.int64)

    def _grow_capacity(self) -> None:
        capacity = self._values.shape[0]
        if capacity >= self.max_sensors:
            return
        new_capacity = min(self.max_sensors, capacity * 2)
        values = np.full((new_capacity, self.length), np.nan, dtype=self._dtype)
        values[:capacity] = self._values
        fill = np.zeros(new_capacity, dtype=np.int64)
        fill[:capacity] = self._fill
        generation = np.zeros(new_capacity, dtype=np.int64)
        generation[:capacity] = self._generation
        self._values, self._fill, self._generation = values, fill, generation
        self._free.extend(range(new_capacity - 1, capacity - 1, -1))
        for state in self._states:
            state.grow(new_capacity)

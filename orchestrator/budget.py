"""Memory budgets in bytes: what a batch in flight costs, the two shared in-flight budgets, and
the plan of the whole orchestrator that startup checks against `memory_budget_bytes`.

What clients can make the orchestrator hold is bounded in bytes, not only in counts:
- received batches (`InflightBudget`): a batch from the moment it is decoded until its last
  event is sent — its columns and ids while queued, then its verdicts — over all streams and
  Detect calls. One that does not fit is refused (RESOURCE_EXHAUSTED, the client backs off);
  before that, a stream holding `stream_budget_bytes` is not read further (backpressure).
- scoring rounds (`ScoringBudget`): the working memory of a round (its rows of windows and
  views, the votes). A round waits for room: rounds always end (their calls have deadlines),
  so waiting holds back its own stream's queue, which is what the autoscaler reads.
- dedup memory and open incidents: their own budgets, kept by their owners (oldest out first).
- histories: `max_sensors` × the per-sensor worst case (the longest id, the largest history
  a specialist may declare), and as much again while a checkpoint copies them.
Transport-free: the servicer and the session turn `Overloaded` into RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sentinel.errors import Overloaded
from sentinel.v1 import orchestrator_pb2

from .batches import (
    READING_COLUMNS_BYTES,
    STR_OBJECT_BYTES,
    DecodedBatch,
    Limits,
    WireCount,
    largest_batch_bytes,
)

MIB = 1024 * 1024
# One verdict with three votes, in its batch's result and again in the event that carries it.
VERDICT_BYTES = 1_536
# Per row of a scoring round beside its copy of the sensor's history (windows and views, at
# most max_history_bytes_per_sensor): three engines' votes, combine's arrays, row indices.
ROUND_BYTES_PER_READING = 1_024
# A window value as the window store keeps it (float32).
WINDOW_VALUE_BYTES = 4
# Per sensor of the window store beside its history and id: the OrderedDict entry and slot int
# (~120 bytes, measured with tracemalloc), fill and generation (16).
SENSOR_INDEX_BYTES = 136


def str_bytes(characters: int) -> int:
    """Most a CPython str of `characters` takes: 76 bytes of header, 4 bytes per character."""
    return 76 + 4 * characters


class ByteBudget:
    """Bytes that holders take and give back; `used` never counts a size twice."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def has_room(self, size: int) -> bool:
        return self.used + size <= self.limit

    def try_take(self, size: int) -> bool:
        if not self.has_room(size):
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class InflightBudget(ByteBudget):
    """Received batches, from decode until their last event is sent (all streams and calls)."""

    def __init__(self, limit: int, limits: Limits) -> None:
        super().__init__(limit)
        self._header = largest_batch_bytes(replace(limits, max_batch_readings=0))

    @classmethod
    def unlimited(cls) -> InflightBudget:
        return cls(2**62, Limits())

    def cost(self, batch: DecodedBatch) -> int:
        """Its columns and ids; unless it asks for no verdicts, a verdict per reading (each
        with its id again). Reserved up front: a round's anomalies are not known before."""
        if batch.verdict_mode == orchestrator_pb2.VERDICT_MODE_NONE:
            return batch.nbytes
        return 2 * batch.nbytes + batch.rows * VERDICT_BYTES

    def least_cost(self, wire_bytes: int, counted: WireCount | None = None) -> int:
        """The least a batch of `wire_bytes` costs once decoded, checked before it is parsed:
        a reading of w wire bytes decodes to more than w / 2 (its id takes at least one byte
        in memory per two of UTF-8, its other ~24 bytes become 104). With the readings and
        verdict mode `counted` from the wire, as `cost` reckons them."""
        least = max(0, wire_bytes - self._header) // 2
        if counted is None:
            return least
        least = max(least, counted.readings * (READING_COLUMNS_BYTES + STR_OBJECT_BYTES))
        if counted.verdict_mode == orchestrator_pb2.VERDICT_MODE_NONE:
            return least
        return 2 * least + counted.readings * VERDICT_BYTES

    def refusal(self, size: int) -> Overloaded:
        return Overloaded(
            f"in-flight memory budget full: {self.used:,} of {self.limit:,} bytes held by "
            f"batches being scored or answered, this batch needs {size:,}; back off and "
            "resend (SENTINEL_INFLIGHT_BUDGET_BYTES)"
        )


@dataclass(frozen=True, slots=True)
class RoundLayout:
    """What a scoring round copies, given the engines declared now (History.round_layout)."""

    window_bytes: int  # one row's window (the longest declared, float32)
    view_bytes: int  # one row's view values (float64)


class ScoringBudget(ByteBudget):
    """Working memory of scoring rounds. `take` waits for room, first come first served; a
    round alone in the budget is let in whatever its size (the settings check keeps the
    largest uniform round within it).

    Without the round's shape, a reading costs max_history_bytes_per_sensor plus 1 KB (what
    the settings check reckons with). Given the declared `layout` and the shape, a round is
    charged what it builds: per reading its votes and indices, its window and view values;
    per distinct sensor its history once more in the compact form and the engines' requests;
    and the compact form's padding (each sensor's row as long as the deepest sensor's, or a
    flat timeline where that would more than double it). Measured with tracemalloc,
    orchestrator only (tests/reliability/test_memory_budget.py): 8,100 readings of 100 sensors
    peak at ~1.8 KB per reading, 8,000 of 8,000 sensors at ~4.2 KB; charged 2.1 and 5.7. 2,000
    sensors once and one of them 2,000 times more: 13 MB, charged 19 (31 MB when its rows were
    padded to the deepest sensor's)."""

    def __init__(
        self,
        limit: int,
        history_bytes_per_reading: int,
        layout: Callable[[], RoundLayout] | None = None,
    ) -> None:
        super().__init__(limit)
        self._per_reading = history_bytes_per_reading + ROUND_BYTES_PER_READING
        self._layout = layout
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @classmethod
    def unlimited(cls) -> ScoringBudget:
        return cls(2**62, 0)

    def round_cost(self, batches: Sequence[DecodedBatch]) -> int:
        """`cost` of scoring `batches` as one round: their distinct sensors and deepest
        sensors added up are at least the round's (a batch that did not count them is taken
        as one sensor per reading, all of one sensor)."""
        return self.cost(
            sum(b.rows for b in batches),
            sum(b.sensors or b.rows for b in batches),
            sum(b.deepest or b.rows for b in batches),
        )

    def cost(self, rows: int, sensors: int | None = None, deepest: int | None = None) -> int:
        """Bytes a round of `rows` readings, of at most `sensors` distinct sensors with at most
        `deepest` readings each, may use."""
        if self._layout is None or sensors is None:
            return rows * self._per_reading
        sensors = min(sensors, rows)
        deepest = rows if deepest is None else min(deepest, rows)
        layout = self._layout()
        # Views: their values, their encodings and the engines' answers derived from them;
        # a history: the compact form, the engines' requests and what builds them.
        per_reading = ROUND_BYTES_PER_READING + layout.window_bytes + 4 * layout.view_bytes
        # The compact form pads each sensor's row to the deepest's, unless that would more
        # than double it (WindowStore.append): then it is a flat timeline with a mask.
        window = layout.window_bytes // WINDOW_VALUE_BYTES
        padded = min(sensors * deepest, sensors * window + 2 * rows)
        padding = 2 * padded * WINDOW_VALUE_BYTES
        return rows * per_reading + sensors * 4 * layout.window_bytes + padding

    async def take(self, size: int) -> None:
        if not self._waiting and (self.has_room(size) or not self.used):
            self.used += size
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((size, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give(size)  # let in just as the round was cancelled
            else:
                self._waiting.remove((size, waiter))
                self._let_in()
            raise

    def give(self, size: int) -> None:
        super().give(size)
        self._let_in()

    def _let_in(self) -> None:
        while self._waiting:
            size, waiter = self._waiting[0]
            if not (self.has_room(size) or not self.used):
                return
            self._waiting.popleft()
            self.used += size
            waiter.set_result(None)


def largest_batch_cost(limits: Limits) -> int:
    """`InflightBudget.cost` of the largest batch `limits` accept (every id of the longest
    length in 4-byte characters, verdicts asked for): no batch costs more."""
    rows = limits.max_batch_readings
    per_id = READING_COLUMNS_BYTES + STR_OBJECT_BYTES + 4 * (limits.max_sensor_id_length + 1)
    decoded = rows * per_id + str_bytes(0)
    return 2 * decoded + rows * VERDICT_BYTES


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Most each part of the orchestrator's client-driven state may take, in bytes."""

    histories: int
    checkpoint_copy: int
    incidents: int
    dedup: int
    inflight: int
    scoring: int

    @property
    def total(self) -> int:
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        return {
            "histories": self.histories,
            "checkpoint_copy": self.checkpoint_copy,
            "incidents": self.incidents,
            "dedup": self.dedup,
            "inflight": self.inflight,
            "scoring": self.scoring,
        }

    def describe(self) -> str:
        return " + ".join(
            f"{name.replace('_', ' ')} {size / MIB:,.0f} MiB" for name, size in self.parts().items()
        )

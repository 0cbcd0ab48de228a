"""Memory budgets: what a batch costs, what may be checked before parsing, and how rounds wait."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.batches import Limits, count_readings, parse_batch
from sentinel.orchestrator.budget import (
    ROUND_BYTES_PER_READING,
    InflightBudget,
    RoundLayout,
    ScoringBudget,
    largest_batch_cost,
)

from sentinel.v1 import orchestrator_pb2 as pb

NOW = 1_750_000_000 * 10**9
LONGEST = "\U0001f525" * 256


def serialized(ids, mode) -> bytes:
    readings = [pb.Reading(sensor_id=s, value=1.0, timestamp_unix_nanos=NOW) for s in ids]
    return pb.TelemetryBatch(batch_id=3, readings=readings, verdicts=mode).SerializeToString()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(st.characters(codec="utf-8", categories=["L", "N", "S"]), min_size=1),
            st.just(LONGEST),
            st.just("é" * 256),
        ),
        min_size=0,
        max_size=40,
    ),
    st.sampled_from([0, 1, 2, 3]),
)
def test_what_is_checked_before_parsing_never_exceeds_the_cost_after(ids, mode):
    ids = [s[:256] for s in ids if s[:256].strip() and s[:256].isprintable()]
    budget = InflightBudget(2**40, Limits())
    data = serialized(ids, mode)
    batch = parse_batch(data, Limits(), now_ns=NOW)
    assert budget.least_cost(len(data)) <= budget.cost(batch)
    assert budget.least_cost(len(data), count_readings(data, 10_000)) <= budget.cost(batch)
    assert budget.cost(batch) <= largest_batch_cost(Limits(max_batch_readings=max(len(ids), 1)))


def test_the_largest_batch_costs_what_the_settings_check_reckons():
    limits = Limits(max_batch_readings=200)
    ids = [chr(0x1F300 + i) + LONGEST[1:] for i in range(200)]
    batch = parse_batch(serialized(ids, pb.VERDICT_MODE_ALL), limits, now_ns=NOW)
    budget = InflightBudget(2**40, limits)
    assert 0.95 * largest_batch_cost(limits) < budget.cost(batch) <= largest_batch_cost(limits)


def test_verdicts_are_reserved_unless_the_batch_asks_for_none():
    budget = InflightBudget(2**40, Limits())
    none = parse_batch(serialized(["a"] * 100, pb.VERDICT_MODE_NONE), Limits(), now_ns=NOW)
    anomalies = parse_batch(serialized(["a"] * 100, 0), Limits(), now_ns=NOW)
    assert budget.cost(none) == none.nbytes
    assert budget.cost(anomalies) > budget.cost(none) + 100 * 1_000


def test_a_full_in_flight_budget_refuses_and_says_what_to_do():
    budget = InflightBudget(1_000, Limits())
    assert budget.try_take(600) and not budget.try_take(500)
    assert budget.used == 600
    message = str(budget.refusal(500))
    assert message.startswith("in-flight memory budget full: 600 of 1,000 bytes")
    assert "back off and resend" in message and "larger than max" not in message
    budget.give(600)
    assert budget.try_take(1_000)


async def test_rounds_wait_for_room_first_come_first_served() -> None:
    budget = ScoringBudget(100, 0)
    await budget.take(70)
    order: list[str] = []

    async def round_of(name: str, size: int) -> None:
        await budget.take(size)
        order.append(name)

    big = asyncio.create_task(round_of("big", 60))
    await asyncio.sleep(0)
    small = asyncio.create_task(round_of("small", 10))  # would fit, but waits its turn
    await asyncio.sleep(0)
    assert order == [] and budget.used == 70
    budget.give(70)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and budget.used == 70


async def test_a_round_larger_than_the_budget_runs_alone_and_a_cancelled_wait_gives_way() -> None:
    budget = ScoringBudget(100, 0)
    await budget.take(150)  # alone: let in
    assert budget.used == 150
    waiting = asyncio.create_task(budget.take(10))
    later = asyncio.create_task(budget.take(20))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    budget.give(150)
    await later
    assert budget.used == 20


def test_a_round_is_charged_by_its_shape() -> None:
    layout = RoundLayout(window_bytes=916, view_bytes=32)
    budget = ScoringBudget(64 * 2**20, 4096, lambda: layout)
    assert budget.cost(8_000) == 8_000 * (4096 + ROUND_BYTES_PER_READING)  # shape unknown
    per_reading = ROUND_BYTES_PER_READING + 916 + 4 * 32
    # Many readings per sensor: each history is charged once per sensor, not per reading.
    assert budget.cost(8_000, 100, 80) == 8_000 * per_reading + 100 * 4 * 916 + 100 * 80 * 8
    # One reading per sensor: each history once per reading.
    assert budget.cost(8_000, 8_000, 1) == 8_000 * (per_reading + 4 * 916) + 8_000 * 8
    # Lopsided: rows padded to the deepest sensor's would be 4,097 x 4,096 values; the window
    # store keeps a flat timeline instead (each history, then its readings), charged so.
    lopsided = budget.cost(8_192, 4_097, 4_096)
    timeline = 4_097 * 229 + 2 * 8_192
    assert lopsided == 8_192 * per_reading + 4_097 * 4 * 916 + timeline * 8
    assert lopsided < budget.limit
    # Counts above the readings are taken as the readings; no depth given: all of them.
    assert budget.cost(8_000, 50_000, 1) == budget.cost(8_000, 8_000, 1)
    assert budget.cost(100, 10) == budget.cost(100, 10, 100)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 4096),
    st.integers(0, 64),
)
def test_the_shaped_cost_grows_with_its_shape(rows, sensors, deepest, window, views) -> None:
    budget = ScoringBudget(2**30, 4096, lambda: RoundLayout(window, views))
    cost = budget.cost(rows, sensors, deepest)
    assert cost >= rows * ROUND_BYTES_PER_READING
    assert budget.cost(rows + 1, sensors, deepest) >= cost
    assert budget.cost(rows, sensors + 1, deepest) >= cost
    assert budget.cost(rows, sensors, deepest + 1) >= cost

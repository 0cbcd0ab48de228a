"""DedupWindow: resent batches are recognised, memory is bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.dedup import DedupWindow


def test_new_batch_is_not_seen_and_remembered_batch_is():
    dedup = DedupWindow(capacity=10)
    assert dedup.seen("client", 1) is None
    dedup.remember("client", 1, 250)
    assert dedup.seen("client", 1) == 250
    assert dedup.seen("client", 2) is None


def test_batches_of_different_clients_are_distinct():
    dedup = DedupWindow()
    dedup.remember("a", 1, 5)
    assert dedup.seen("b", 1) is None
    assert dedup.seen("a", 1) == 5


def test_zero_readings_is_remembered_as_zero_not_none():
    dedup = DedupWindow()
    dedup.remember("a", 9, 0)
    assert dedup.seen("a", 9) == 0


def test_batches_without_client_id_are_never_deduplicated():
    dedup = DedupWindow()
    dedup.remember("", 1, 5)
    assert dedup.seen("", 1) is None


def test_capacity_keeps_the_most_recent_batches():
    dedup = DedupWindow(capacity=3)
    for batch_id in range(5):
        dedup.remember("c", batch_id, batch_id * 10)
    assert [dedup.seen("c", b) for b in range(5)] == [None, None, 20, 30, 40]


def test_capacity_zero_disables_deduplication():
    dedup = DedupWindow(capacity=0)
    dedup.remember("c", 1, 5)
    assert dedup.seen("c", 1) is None


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(1, 5),
    pairs=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 6)), max_size=30),
)
def test_remembers_exactly_the_last_distinct_pairs(capacity, pairs):
    dedup = DedupWindow(capacity=capacity)
    order: list[tuple[str, int]] = []  # insertion order of distinct pairs, like the window's
    readings: dict[tuple[str, int], int] = {}
    for n, (client, batch_id) in enumerate(pairs):
        dedup.remember(client, batch_id, n)
        key = (client, batch_id)
        if key not in readings:
            order.append(key)
        readings[key] = n
        while len(order) > capacity:
            readings.pop(order.pop(0))
    for client in ("a", "b"):
        for batch_id in range(7):
            assert dedup.seen(client, batch_id) == readings.get((client, batch_id))


def test_a_batch_id_with_another_digest_is_a_conflict_not_a_duplicate():
    import pytest

    from sentinel.errors import BatchConflict

    dedup = DedupWindow()
    dedup.begin("a", 1, 3, b"x" * 16)
    with pytest.raises(BatchConflict, match="batch_id 1"):
        dedup.seen("a", 1, b"y" * 16)  # pending
    dedup.commit("a", 1)
    assert dedup.seen("a", 1, b"x" * 16) == 3
    with pytest.raises(BatchConflict):
        dedup.seen("a", 1, b"y" * 16)  # scored
    restored = DedupWindow()
    restored.restore(dedup.items())
    with pytest.raises(BatchConflict):
        restored.seen("a", 1, b"y" * 16)


def test_xfcc_uri_is_taken_from_the_nearest_hop_outside_quotes():
    from sentinel.orchestrator.identity import xfcc_uri

    value = (
        "By=spiffe://a;URI=spiffe://cluster.local/ns/x/sa/far,"
        'By=spiffe://b;Subject="CN=c,O=d;URI=fake";URI=spiffe://cluster.local/ns/y/sa/near'
    )
    assert xfcc_uri(value) == "spiffe://cluster.local/ns/y/sa/near"
    assert xfcc_uri("By=spiffe://b;Hash=1") == ""
    assert xfcc_uri("") == ""


def test_memory_is_bounded_in_bytes_however_long_the_client_ids():
    """Client ids of 7.6 KB (e.g. a long authenticated identity and sub-client) made entries
    cost ~8 KB each while the bound counted entries: 100,000 of them were ~800 MB."""
    budget = 2 * 1024 * 1024
    dedup = DedupWindow(capacity=100_000, max_bytes=budget)
    for client in range(2_000):
        long_id = f"{client:05d}" + "x" * 7_600
        for batch_id in range(3):
            dedup.remember(long_id, batch_id, 10)
        assert dedup.bytes <= budget
    kept = sum(1 for c in range(2_000) if dedup.seen(f"{c:05d}" + "x" * 7_600, 2) == 10)
    assert 100 < kept < 2_000  # the most recent clients, as many as the bytes allow
    assert dedup.seen("01999" + "x" * 7_600, 0) == 10


def test_a_client_id_shared_by_many_entries_is_kept_and_counted_once():
    dedup = DedupWindow(max_bytes=10**9)
    client = "gateway-" + "y" * 1_000
    for batch_id in range(1_000):
        dedup.remember("".join(client), batch_id, 1)  # a new str each time, as per stream
    assert dedup.bytes < 1_000 * DedupWindow.ENTRY_BYTES + 2 * len(client)
    # In-flight entries count too, and a forgotten round gives its bytes back.
    before = dedup.bytes
    dedup.begin("other-client", 1, 5)
    assert dedup.bytes > before
    dedup.abandon("other-client", 1)
    assert dedup.bytes == before
    dedup.begin("other-client", 2, 5)
    dedup.commit("other-client", 2)
    assert dedup.seen("other-client", 2) == 5 and dedup.bytes > before

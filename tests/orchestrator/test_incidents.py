"""IncidentTracker: one alert per incident, hysteresis on resolve, bounded memory."""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentinel.orchestrator.incidents import IncidentTracker


def feed(tracker, rows, trace_id="trace", reasons=None, versions=None):
    """rows: (sensor, anomalous, value, score[, timestamp]) tuples; returns the events."""
    sensors = [r[0] for r in rows]
    anomaly = np.array([r[1] for r in rows], dtype=bool)
    values = np.array([r[2] if len(r) > 2 else 0.0 for r in rows], dtype=np.float64)
    score = np.array([r[3] if len(r) > 3 else (0.9 if r[1] else 0.1) for r in rows])
    stamps = np.array([r[4] if len(r) > 4 else i + 1 for i, r in enumerate(rows)], dtype=np.int64)

    def explain(row):
        return (reasons or {}).get(row, ["reason"]), (versions or {}).get(row, ["threshold@1"])

    return tracker.update(sensors, stamps, values, anomaly, score, explain, trace_id=trace_id)


def states(events):
    return [(e.state, e.incident.sensor_id) for e in events]


def test_opens_on_first_anomalous_verdict_and_only_once():
    tracker = IncidentTracker(resolve_after=3)
    assert feed(tracker, [("s", False)]) == []
    events = feed(tracker, [("s", True, 95.0, 0.7, 10)] + [("s", True)] * 20, trace_id="t-open")
    assert states(events) == [("open", "s")]
    opened = events[0].incident
    assert opened.first_timestamp == opened.last_timestamp == 10
    assert opened.anomalous_readings == 1
    assert opened.trace_id == "t-open"
    assert opened.alert_id
    assert tracker.open_count == 1
    current = tracker.open_incident("s")
    assert current.anomalous_readings == 21
    assert current.alert_id == opened.alert_id
    # The open snapshot does not change afterwards.
    assert opened.anomalous_readings == 1
    assert states(feed(tracker, [("s", True)] * 5, trace_id="t-later")) == []
    assert tracker.open_incident("s").trace_id == "t-open"


@pytest.mark.parametrize("resolve_after", [1, 2, 5])
def test_resolves_after_exactly_resolve_after_normal_verdicts(resolve_after):
    tracker = IncidentTracker(resolve_after=resolve_after)
    feed(tracker, [("s", True)])
    assert feed(tracker, [("s", False)] * (resolve_after - 1)) == []
    assert tracker.open_incident("s") is not None
    events = feed(tracker, [("s", False)])
    assert states(events) == [("resolved", "s")]
    assert tracker.open_incident("s") is None
    assert tracker.open_count == 0


def test_anomalous_reading_inside_a_burst_resets_the_quiet_streak():
    tracker = IncidentTracker(resolve_after=3)
    rows = [("s", True), ("s", False), ("s", False), ("s", True), ("s", False), ("s", False)]
    assert states(feed(tracker, rows)) == [("open", "s")]
    events = feed(tracker, [("s", False)])
    assert states(events) == [("resolved", "s")]
    assert events[0].incident.anomalous_readings == 2


def test_resolve_and_reopen_within_one_batch_gives_a_new_alert():
    tracker = IncidentTracker(resolve_after=1)
    events = feed(tracker, [("s", True), ("s", False), ("s", True)])
    assert states(events) == [("open", "s"), ("resolved", "s"), ("open", "s")]
    assert events[0].incident.alert_id == events[1].incident.alert_id
    assert events[2].incident.alert_id != events[0].incident.alert_id


def test_sensors_are_independent():
    tracker = IncidentTracker(resolve_after=2)
    events = feed(tracker, [("a", True), ("b", False), ("b", True), ("a", False), ("c", False)])
    assert states(events) == [("open", "a"), ("open", "b")]
    events = feed(tracker, [("b", True), ("a", False), ("b", False)])
    assert states(events) == [("resolved", "a")]
    assert tracker.open_incident("b") is not None
    assert tracker.open_incident("c") is None


def test_peak_value_and_score_and_last_timestamp_are_tracked():
    tracker = IncidentTracker(resolve_after=1)
    feed(
        tracker,
        [("s", True, 91.0, 0.6, 1), ("s", True, 120.0, 0.9, 2), ("s", True, 100.0, 0.7, 3)],
    )
    incident = tracker.open_incident("s")
    assert (incident.peak_value, incident.peak_score) == (120.0, 0.9)
    assert (incident.first_timestamp, incident.last_timestamp) == (1, 3)
    resolved = feed(tracker, [("s", False, 50.0, 0.1, 4)])[0].incident
    assert resolved.peak_value == 120.0 and resolved.peak_score == 0.9
    assert resolved.last_timestamp == 3  # the last anomalous reading
    assert resolved.anomalous_readings == 3


def test_reasons_and_engine_versions_are_collected_without_duplicates():
    tracker = IncidentTracker()
    reasons = {0: ["too high"], 1: ["too high", "z=9"], 2: ["z=9"]}
    versions = {0: ["threshold@1"], 1: ["threshold@1", "statistical@1"], 2: ["statistical@1"]}
    events = feed(tracker, [("s", True)] * 3, reasons=reasons, versions=versions)
    assert events[0].incident.reasons == ["too high"]
    assert events[0].incident.engine_versions == ["threshold@1"]
    incident = tracker.open_incident("s")
    assert incident.reasons == ["too high", "z=9"]
    assert incident.engine_versions == ["threshold@1", "statistical@1"]


def test_reasons_are_capped():
    tracker = IncidentTracker()
    feed(tracker, [("s", True)] * 40, reasons={i: [f"r{i}"] for i in range(40)})
    assert len(tracker.open_incident("s").reasons) == 16


def test_explain_is_not_called_for_normal_rows():
    tracker = IncidentTracker()
    calls = []

    def explain(row):
        calls.append(row)
        return [], []

    sensors = ["a", "b", "a"]
    tracker.update(
        sensors, np.arange(3), np.zeros(3), np.array([False, True, False]), np.zeros(3), explain
    )
    assert calls == [1]


def test_beyond_max_open_the_oldest_incident_resolves_as_evicted():
    tracker = IncidentTracker(resolve_after=1, max_open=2)
    events = feed(tracker, [("a", True), ("b", True), ("c", True)])
    assert states(events) == [("open", "a"), ("open", "b"), ("open", "c"), ("resolved", "a")]
    assert events[-1].incident.resolve_reason == "evicted"
    assert tracker.open_count == 2
    assert tracker.open_incident("a") is None
    assert feed(tracker, [("a", False)]) == []  # resolved already: nothing more for it
    assert states(feed(tracker, [("a", True)])) == [("open", "a"), ("resolved", "b")]


def test_open_incidents_are_bounded_in_bytes_long_ids_and_reasons_included():
    long_id = "\U0001f525" * 256  # 1,100 bytes as a Python str
    reasons = {0: [f"statistical: level z={i}.5 beyond the reference" for i in range(16)]}
    budget = 20_000
    tracker = IncidentTracker(resolve_after=1, max_bytes=budget)
    events = []
    for i in range(40):
        events += feed(tracker, [(f"{i:03d}{long_id}", True)], reasons=reasons)
        assert tracker.bytes <= budget
    opened = sum(e.state == "open" for e in events)
    evicted = [e for e in events if e.state == "resolved"]
    assert opened == 40 and 0 < tracker.open_count < 40
    assert len(evicted) == 40 - tracker.open_count  # every eviction is an alert, none silent
    assert {e.incident.resolve_reason for e in evicted} == {"evicted"}
    # The count kept is what the budget holds: each incident is ~3.3 KB here.
    each = tracker.bytes / tracker.open_count
    assert 3_000 < each < 4_000 and budget - each < tracker.bytes
    # Resolving gives it all back.
    for i in range(40 - tracker.open_count, 40):
        feed(tracker, [(f"{i:03d}{long_id}", False)])
    assert tracker.open_count == 0 and tracker.bytes == 0


def test_an_open_incident_that_collects_reasons_counts_its_growth():
    tracker = IncidentTracker(resolve_after=1)
    feed(tracker, [("x", True)], reasons={0: ["first"]})
    opened = tracker.bytes
    more = ["second reason, longer than the first", "third"]
    feed(tracker, [("x", True)], reasons={0: ["first", *more]})
    assert tracker.bytes == opened + sum(sys.getsizeof(r) for r in more)
    assert tracker.bytes == tracker.open_incident("x").footprint()


def test_empty_and_all_normal_batches():
    tracker = IncidentTracker()
    empty = np.empty(0)
    assert tracker.update([], empty.astype(np.int64), empty, empty.astype(bool), empty, None) == []
    assert feed(tracker, [("a", False), ("b", False)]) == []
    assert tracker.open_count == 0


def test_some_resolve_rule_must_be_set():
    with pytest.raises(ValueError):
        IncidentTracker(resolve_after=0)
    with pytest.raises(ValueError):
        IncidentTracker(resolve_after=0, resolve_after_seconds=0.0)
    with pytest.raises(ValueError):
        IncidentTracker(resolve_after=-1, resolve_after_seconds=10.0)
    with pytest.raises(ValueError):
        IncidentTracker(resolve_after=3, resolve_after_seconds=-1.0)
    assert IncidentTracker(resolve_after=0, resolve_after_seconds=60.0).resolve_after == 0


def test_default_resolves_after_ten_quiet_readings():
    tracker = IncidentTracker()
    feed(tracker, [("s", True)])
    assert feed(tracker, [("s", False)] * 9) == []
    assert states(feed(tracker, [("s", False)])) == [("resolved", "s")]


# ---------------------------------------------------------------- lifecycle in time

S = 1_000_000_000  # nanoseconds per second


def test_resolves_on_the_first_normal_reading_a_quiet_duration_after_the_last_anomaly():
    tracker = IncidentTracker(resolve_after=0, resolve_after_seconds=60.0)
    events = feed(tracker, [("s", True, 95.0, 0.9, 1000 * S), ("s", True, 96.0, 0.9, 1010 * S)])
    assert states(events) == [("open", "s")]
    assert events[0].incident.resolved_timestamp == 0
    # Quiet, but not for 60 s since the last anomalous reading (1010 s): still open.
    assert feed(tracker, [("s", False, 50.0, 0.1, (1010 + t) * S) for t in (1, 30, 59)]) == []
    almost = 1010 * S + 60 * S - 1
    assert feed(tracker, [("s", False, 50.0, 0.1, almost)]) == []
    events = feed(tracker, [("s", False, 50.0, 0.1, 1070 * S), ("s", False, 50.0, 0.1, 1071 * S)])
    assert states(events) == [("resolved", "s")]
    resolved = events[0]
    assert resolved.row == 0
    assert resolved.incident.resolved_timestamp == 1070 * S
    assert resolved.incident.last_timestamp == 1010 * S
    assert tracker.open_count == 0


def test_time_only_never_resolves_by_count():
    tracker = IncidentTracker(resolve_after=0, resolve_after_seconds=3600.0)
    feed(tracker, [("s", True, 95.0, 0.9, 0)])
    # 1 s data: a thousand quiet readings within the hour do not resolve it.
    assert feed(tracker, [("s", False, 50.0, 0.1, t * S) for t in range(1, 1001)]) == []
    assert tracker.open_incident("s").quiet_streak == 1000
    assert states(feed(tracker, [("s", False, 50.0, 0.1, 3600 * S)])) == [("resolved", "s")]


def test_an_anomaly_restarts_the_quiet_clock():
    tracker = IncidentTracker(resolve_after=0, resolve_after_seconds=60.0)
    feed(tracker, [("s", True, 95.0, 0.9, 0), ("s", False, 0.0, 0.1, 50 * S),
                   ("s", True, 95.0, 0.9, 55 * S)])  # fmt: skip
    assert feed(tracker, [("s", False, 0.0, 0.1, 100 * S)]) == []  # 45 s after the last one
    assert states(feed(tracker, [("s", False, 0.0, 0.1, 115 * S)])) == [("resolved", "s")]


@pytest.mark.parametrize(
    ("step_seconds", "resolving_quiet_reading"),
    [
        (1, 3),  # 1 s data: three quiet readings come long before 300 s
        (300, 1),  # 5-minute data: the first quiet reading is already 300 s later
        (120, 3),  # 120 s data: count (3rd, at 360 s) and time (3rd, >= 300 s) agree
        (200, 2),  # 200 s data: the 2nd quiet reading is 400 s later, before the 3rd
    ],
)
def test_count_or_time_whichever_comes_first(step_seconds, resolving_quiet_reading):
    tracker = IncidentTracker(resolve_after=3, resolve_after_seconds=300.0)
    feed(tracker, [("s", True, 95.0, 0.9, 0)])
    quiet = [("s", False, 50.0, 0.1, k * step_seconds * S) for k in range(1, 6)]
    events = feed(tracker, quiet)
    assert states(events) == [("resolved", "s")]
    assert events[0].row == resolving_quiet_reading - 1
    assert events[0].incident.resolved_timestamp == resolving_quiet_reading * step_seconds * S


def test_alert_events_name_the_row_that_emitted_them():
    tracker = IncidentTracker(resolve_after=2)
    rows = [
        ("a", False), ("b", True), ("a", True), ("b", False), ("c", False),
        ("b", False), ("a", False), ("b", True), ("a", False),
    ]  # fmt: skip
    events = feed(tracker, rows)
    assert [(e.state, e.incident.sensor_id, e.row) for e in events] == [
        ("open", "b", 1),
        ("open", "a", 2),
        ("resolved", "b", 5),
        ("open", "b", 7),
        ("resolved", "a", 8),
    ]
    resolved_b = events[2].incident
    assert resolved_b.resolved_timestamp == 6  # feed() stamps row i with i + 1
    assert events[0].incident.resolved_timestamp == 0


@settings(max_examples=150, deadline=None)
@given(
    resolve_after=st.integers(0, 4),
    quiet_seconds=st.sampled_from([0, 1, 5, 30]),
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("ab"), st.booleans(), st.integers(0, 20)), max_size=12),
        max_size=8,
    ),
)
def test_lifecycle_matches_a_reference_with_both_rules(resolve_after, quiet_seconds, batches):
    if resolve_after == 0 and quiet_seconds == 0:
        quiet_seconds = 5
    tracker = IncidentTracker(resolve_after=resolve_after, resolve_after_seconds=quiet_seconds)
    clock = 0
    is_open: dict[str, bool] = {}
    quiet: dict[str, int] = {}
    last_anomaly: dict[str, int] = {}
    for batch in batches:
        rows, expected = [], []
        for index, (sensor, anomalous, step) in enumerate(batch):
            clock += step * S  # time never goes backwards here
            rows.append((sensor, anomalous, 0.0, 0.9 if anomalous else 0.1, clock))
            if anomalous:
                if not is_open.get(sensor):
                    expected.append(("open", sensor, index, 0))
                    is_open[sensor] = True
                quiet[sensor] = 0
                last_anomaly[sensor] = clock
            elif is_open.get(sensor):
                quiet[sensor] += 1
                by_count = resolve_after and quiet[sensor] >= resolve_after
                by_time = quiet_seconds and clock - last_anomaly[sensor] >= quiet_seconds * S
                if by_count or by_time:
                    expected.append(("resolved", sensor, index, clock))
                    is_open[sensor] = False
        events = feed(tracker, rows)
        got = [(e.state, e.incident.sensor_id, e.row, e.incident.resolved_timestamp)
               for e in events]  # fmt: skip
        assert got == expected


@settings(max_examples=150, deadline=None)
@given(
    resolve_after=st.integers(1, 4),
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=12), max_size=10
    ),
)
def test_alerts_alternate_and_match_a_reference(resolve_after, batches):
    tracker = IncidentTracker(resolve_after=resolve_after)
    is_open: dict[str, bool] = {}
    quiet: dict[str, int] = {}
    per_sensor: dict[str, list[str]] = {}
    opened = resolved = 0
    for index, batch in enumerate(batches):
        expected = []
        for sensor, anomalous in batch:
            if anomalous:
                if not is_open.get(sensor):
                    expected.append(("open", sensor))
                    is_open[sensor] = True
                quiet[sensor] = 0
            elif is_open.get(sensor):
                quiet[sensor] += 1
                if quiet[sensor] == resolve_after:
                    expected.append(("resolved", sensor))
                    is_open[sensor] = False
        events = feed(tracker, [(s, a) for s, a in batch], trace_id=f"batch-{index}")
        assert states(events) == expected
        for event in events:
            per_sensor.setdefault(event.incident.sensor_id, []).append(event.state)
            if event.state == "open":
                opened += 1
                assert event.incident.trace_id == f"batch-{index}"
            else:
                resolved += 1
        assert resolved <= opened
    for history in per_sensor.values():
        assert history[0::2] == ["open"] * len(history[0::2])
        assert history[1::2] == ["resolved"] * len(history[1::2])
    assert tracker.open_count == sum(is_open.values())


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_quiet_resolution_says_quiet():
    tracker = IncidentTracker(resolve_after=2)
    feed(tracker, [("s", True)])
    (event,) = feed(tracker, [("s", False), ("s", False)])
    assert event.state == "resolved" and event.incident.resolve_reason == "quiet"


def test_a_silent_sensor_resolves_as_stale_and_a_talking_one_does_not():
    clock = FakeClock()
    tracker = IncidentTracker(resolve_after=100, clock=clock)
    feed(tracker, [("silent", True), ("talking", True)])
    clock.now += 50
    feed(tracker, [("talking", False)])  # a normal reading still counts as a sign of life
    assert tracker.sweep_stale(60.0) == []
    clock.now += 20  # silent: 70 s without a reading; talking: 20 s
    (event,) = tracker.sweep_stale(60.0)
    assert (event.state, event.incident.sensor_id) == ("resolved", "silent")
    assert event.incident.resolve_reason == "stale"
    assert event.incident.resolved_timestamp == int(clock.now * 1e9)
    assert [i.sensor_id for i in tracker.open_incidents()] == ["talking"]
    assert tracker.sweep_stale(60.0) == []  # resolved once


def test_open_incidents_are_snapshots_filtered_by_prefix():
    tracker = IncidentTracker(resolve_after=3)
    feed(tracker, [("pump-1", True), ("fan-1", True), ("pump-2", True)])
    pumps = list(tracker.open_incidents("pump-"))
    assert [i.sensor_id for i in pumps] == ["pump-1", "pump-2"]
    pumps[0].reasons.append("edited")  # a snapshot: the tracker's incident is unchanged
    assert tracker.open_incident("pump-1").reasons == ["reason"]


def test_restored_incidents_resolve_normally():
    old = IncidentTracker(resolve_after=2)
    feed(old, [("s", True, 99.0, 0.9, 5)])
    new = IncidentTracker(resolve_after=2)
    new.restore(list(old.open_incidents()))
    (event,) = feed(new, [("s", False), ("s", False)])
    assert event.incident.alert_id == old.open_incident("s").alert_id
    assert event.incident.first_timestamp == 5


class CountingDict(OrderedDict):
    lookups = 0

    def __contains__(self, key) -> bool:
        CountingDict.lookups += 1
        return super().__contains__(key)


def test_a_round_costs_its_own_sensors_not_the_open_incidents():
    tracker = IncidentTracker(resolve_after=3)
    feed(tracker, [(f"s{i}", True) for i in range(5_000)])
    assert tracker.open_count == 5_000
    tracker._open = CountingDict(tracker._open)
    CountingDict.lookups = 0
    events = feed(tracker, [("new", False), ("s7", False), ("new", False), ("s7", False)])
    assert events == []
    assert CountingDict.lookups == 2  # one per distinct sensor of the batch


def test_incidents_of_evicted_sensors_resolve_as_evicted():
    tracker = IncidentTracker(resolve_after=3)
    feed(tracker, [("gone", True), ("kept", True)])
    (event,) = tracker.resolve_evicted(["gone", "never-open"])
    assert (event.state, event.incident.sensor_id) == ("resolved", "gone")
    assert event.incident.resolve_reason == "evicted" and event.row is None
    assert [i.sensor_id for i in tracker.open_incidents()] == ["kept"]

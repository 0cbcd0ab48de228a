"""History: what the orchestrator keeps per sensor (windows, views, calibrators), sized by the
engines' declarations, refused over the limits, and the same whatever the batching."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_fixtures import running_mesh, start_specialist
from readings import batch, collect, noise
from sentinel.orchestrator.calibration import CalibrationParams, ChannelKey
from sentinel.orchestrator.combine import EngineVotes
from sentinel.orchestrator.history import (
    ChannelDecl,
    Declaration,
    DeclarationRefused,
    History,
    HistoryLimits,
)
from sentinel.orchestrator.specialist_pool import (
    SpecialistClient,
    SpecialistTarget,
    channel_options,
    parse_declaration,
)
from sentinel.orchestrator.views import NANOS, RangeSpec, RangeView, SeasonalSpec, SeasonalView
from sentinel.orchestrator.windows import WindowStore
from sentinel.specialists.model import load_model_engine
from sentinel.specialists.statistical import StatisticalEngine
from sentinel.specialists.threshold import AdaptiveLimits, ThresholdEngine
from signals import declare

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import specialist_pb2

# Small enough that calibrated likelihoods appear after a few readings.
QUICK = CalibrationParams(average=3, refit_every=5, blocks=4, min_history=8, standardize_after=3)
T0 = 1_700_000_000 * NANOS

ENGINE = Declaration(
    window_length=3,
    views={"r": RangeSpec(readings=8, block=2), "d": SeasonalSpec(10.0, 1.0, 2, 1)},
    channels={"c": ChannelDecl(standardize=True, flag_below=1e-3),
              "z": ChannelDecl(standardize=False, flag_below=1e-3)},
)  # fmt: skip


def quick_history(max_sensors: int = 8, **kwargs) -> History:
    history = History(WindowStore(0, max_sensors), calibration=QUICK, **kwargs)
    history.check("e", ENGINE)
    history.declare("e", ENGINE)
    return history


def votes_for(values: np.ndarray, warming: np.ndarray | None = None) -> EngineVotes:
    rows = values.shape[0]
    return EngineVotes(
        name="e",
        version="1",
        scores=np.zeros(rows),
        anomalies=np.zeros(rows, dtype=bool),
        warming_up=np.zeros(rows, dtype=bool) if warming is None else warming,
        reasons={},
        channels={"c": values.copy(), "z": (values - 50.0) / 3.0},
    )


def feed(history: History, sensors, values, seconds):
    """One batch through append + calibrate; returns (views of 'e', the calibrated vote)."""
    values = np.asarray(values, dtype=np.float64)
    stamps = T0 + np.asarray(seconds, dtype=np.int64) * NANOS
    stored, views = history.append(list(sensors), values, stamps)
    (vote,) = history.calibrate(stored, [votes_for(values)])
    return history.views_for("e", views), vote


# ---------------------------------------------------------------- memory


def default_history() -> History:
    """The orchestrator's history with the three default engines declared (via Describe)."""
    history = History(WindowStore(0, 100_000))
    for engine in (
        ThresholdEngine(adaptive=AdaptiveLimits()),
        StatisticalEngine(),
        load_model_engine(None),
    ):
        declare(history, engine)
    return history


def measured_bytes_per_slot(history: History) -> float:
    """numpy bytes of every per-sensor array (windows, views, calibrators) per slot."""
    store = history.windows
    total = store._values.nbytes + store._fill.nbytes + store._generation.nbytes
    for state in store._states:
        total += sum(a.nbytes for a in vars(state).values() if isinstance(a, np.ndarray)
                     and a.shape[:1] == (store.capacity,))  # fmt: skip
    return total / store.capacity


def test_default_engines_fit_the_per_sensor_budget():
    history = default_history()
    reported = history.bytes_per_sensor()
    assert reported <= 4096  # 100,000 sensors in well under 1 GB
    assert history.windows.length == 229  # the statistical window is the longest
    assert set(history.views.views) == {"threshold/range/0", "statistical/daily/1"}
    assert {str(k) for k in history.channels} == {
        "statistical.level", "statistical.daily", "model.forest",
    }  # fmt: skip
    # What the arrays really take per sensor (the id → slot map comes on top).
    measured = measured_bytes_per_slot(history)
    assert measured <= 4096
    assert abs(measured - reported) <= 0.01 * reported


def test_bytes_grow_with_declarations_and_only_once_per_view():
    history = History(WindowStore(0, 10))
    empty = history.bytes_per_sensor()
    declaration = Declaration(5, {"r": RangeSpec(100, 10)}, {"c": ChannelDecl(False, 1e-3)})
    history.declare("e", declaration)
    grown = history.bytes_per_sensor()
    calibrator = CalibrationParams().bytes_per_channel
    assert grown == empty + 5 * 4 + RangeSpec(100, 10).bytes_per_sensor + calibrator
    history.declare("e", declaration)  # described again (a reconnect): nothing new
    assert history.bytes_per_sensor() == grown


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (Declaration(5000, {}, {}), "window_length 5000 exceeds max_window_length 4096"),
        (Declaration(0, {"wide": RangeSpec(100_000, 16)}, {}),
         "views[0] 'wide': 6250 blocks exceed the limit of 1024"),
        (Declaration(0, {"ok": RangeSpec(10, 1), "zero": RangeSpec(10, 0)}, {}),
         "views[1] 'zero': readings and block must be >= 1"),
        (Declaration(0, {"fine": SeasonalSpec(86_400.0, 1.0, 12, 5)}, {}),
         "views[0] 'fine': 86406 buckets exceed the limit of 4096"),
        # a block counts its readings in an int16: a bigger one would never complete
        (Declaration(0, {"huge": RangeSpec(1_000_000, 40_000)}, {}),
         "views[0] 'huge': block 40000 exceeds the limit of 32767"),
        # one period is 2 buckets: a tolerance of 2 would reach the row's own bucket
        (Declaration(0, {"short": SeasonalSpec(600.0, 300.0, 12, 2)}, {}),
         "views[0] 'short': tolerance 2 must be below the 2 buckets of one period"),
        (Declaration(0, {"daily": SeasonalSpec(86_400.0, 0.0, 12, 5)}, {}),
         "views[0] 'daily': period and bucket must be positive"),
        (Declaration(0, {"daily": SeasonalSpec(86_400.0, 300.0, 5000, 5)}, {}),
         "views[0] 'daily': smoothing 5000 out of range"),
        (Declaration(0, {}, {"level": ChannelDecl(False, 1.5)}),
         "channels[0] 'level': flag_below must be in (0, 1)"),
        (Declaration(2000, {"r": RangeSpec(1000, 16)}, {}),
         "over the budget of 4096 (max_history_bytes_per_sensor)"),
    ],
)  # fmt: skip
def test_declarations_over_the_limits_are_refused_naming_the_view(declaration, message):
    history = History(WindowStore(0, 10))
    before = history.bytes_per_sensor()
    with pytest.raises(DeclarationRefused) as refused:
        history.check("big", declaration)
    assert message in str(refused.value)
    # A refused declaration leaves nothing behind.
    assert history.bytes_per_sensor() == before and not history.views.views


def test_the_budget_counts_what_is_declared_already():
    history = History(WindowStore(0, 10), HistoryLimits(max_bytes_per_sensor=2000))
    first = Declaration(0, {"r": RangeSpec(1600, 16)}, {})  # 812 bytes
    history.check("a", first)
    history.declare("a", first)
    history.check("a", first)  # the same again: fits
    with pytest.raises(DeclarationRefused, match="budget of 2000"):
        history.check("b", Declaration(0, {"r": RangeSpec(2400, 16)}, {}))


def describe(**fields) -> specialist_pb2.DescribeResponse:
    return specialist_pb2.DescribeResponse(engine="x", engine_version="1", **fields)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (describe(views=[specialist_pb2.ViewSpec(name="r", kind=specialist_pb2.VIEW_KIND_RANGE,
                                                 readings=4, block=2)] * 2),
         "views[1] 'r': empty or repeated name"),
        (describe(views=[specialist_pb2.ViewSpec(name="v")]), "views[0] 'v': unknown kind 0"),
        (describe(channels=[specialist_pb2.ChannelSpec(name="c", flag_below=1e-3)]),
         "channels[0] 'c': unknown calibration 0"),
        (describe(channels=[specialist_pb2.ChannelSpec(
            name="", calibration=specialist_pb2.CALIBRATION_LIKELIHOOD, flag_below=1e-3)]),
         "channels[0] '': empty or repeated name"),
    ],
)  # fmt: skip
def test_malformed_describe_is_refused_naming_the_field(response, message):
    with pytest.raises(DeclarationRefused) as refused:
        parse_declaration(response)
    assert message in str(refused.value)


async def test_a_real_specialist_declaring_a_huge_view_is_refused_and_logged(caplog):
    caplog.set_level(logging.ERROR, logger="sentinel.orchestrator.specialist_pool")
    # 100,000 readings in blocks of 16: 6250 blocks, over the orchestrator's limit of 1024.
    process = await start_specialist("threshold", adaptive_readings=100_000)
    history = History(WindowStore(0, 10))
    client = SpecialistClient(
        SpecialistTarget("wide", f"127.0.0.1:{process.server.port}"),
        channel_options(False, 1 << 20),
        check=history.check,
    )
    try:
        assert await client.describe(timeout=5) is False
        assert not client.described and client.declaration is None
    finally:
        await client.close()
        await process.stop(drain_delay=0, grace=0)
    assert not history.views.views  # nothing kept for it
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.specialist == "wide"
    assert "views[0] 'range': 6250 blocks exceed the limit of 1024" in record.getMessage()


async def test_a_refused_specialist_is_left_out_and_verdicts_name_it(caplog):
    caplog.set_level(logging.ERROR, logger="sentinel.orchestrator.specialist_pool")
    async with running_mesh(
        engines=("threshold", "statistical"),
        # one-second buckets for a daily period: 86,406 buckets per sensor
        specialist_overrides={"statistical": {"statistical_bucket_seconds": 1.0}},
    ) as mesh:
        response = await mesh.stub.Detect(batch(1, [1.0, 95.0], mode=pb.VERDICT_MODE_ALL))
        assert [list(v.missing) for v in response.verdicts] == [["statistical"]] * 2
        assert [v.status for v in response.verdicts] == [pb.VERDICT_STATUS_DEGRADED] * 2
        assert [v.anomaly for v in response.verdicts] == [False, True]  # threshold still votes
        assert not [k for k in mesh.orchestrator.history.channels if k.specialist == "statistical"]
    messages = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert messages and "views[0] 'daily': 86406 buckets exceed the limit of 4096" in messages[0]


# ---------------------------------------------------------------- nothing is lost


async def test_verdict_counts_equal_readings_sent_and_memory_fits():
    async with running_mesh() as mesh:
        sent = [
            batch(i, noise(37, seed=i), sensor=f"s{i % 5}", mode=pb.VERDICT_MODE_ALL)
            for i in range(1, 41)
        ]

        async def requests():
            for item in sent:
                yield item

        events = await collect(mesh.stub.StreamTelemetry(requests()))
        readings = sum(len(b.readings) for b in sent)
        assert sum(a.readings_accepted for a in events["ack"]) == readings
        verdicts = events["verdicts"]
        assert len(verdicts) == readings
        # Every reading exactly once, in order per batch.
        got = [(v.batch_id, v.sensor_id, v.value) for v in verdicts]
        assert got == [(b.batch_id, r.sensor_id, r.value) for b in sent for r in b.readings]
        detect = await mesh.stub.Detect(batch(99, noise(250, seed=99), sensor="s0"))
        assert len(detect.verdicts) == 250
        metrics = mesh.orchestrator.metrics
        assert metrics.readings._value.get() == readings + 250
        history = mesh.orchestrator.history
        assert len(history.channels) == 3  # statistical level + daily, model forest
        assert history.bytes_per_sensor() <= 4096


# ---------------------------------------------------------------- eviction


def test_eviction_starts_the_new_sensor_afresh_and_keeps_the_others():
    history = quick_history(max_sensors=2)
    reference = quick_history(max_sensors=2)  # sees b only
    rng = np.random.default_rng(0)
    a, b = 50.0 + rng.standard_normal(30), 50.0 + rng.standard_normal(30)
    for i in range(30):
        feed(history, ["a", "b"], [a[i], b[i]], [i, i])
        feed(reference, ["b"], [b[i]], [i])
    slot_a = history.windows.slot_of("a")
    a_range = history.views.views["e/r/0"]
    assert isinstance(a_range, RangeView) and a_range._complete[slot_a] > 0

    # "a" was seen least recently (before "b" in the last batch): "c" takes its slot.
    stored, _ = history.append(["c"], np.array([7.0]), np.array([T0 + 30 * NANOS]))
    assert stored.evicted == 1 and history.windows.slot_of("a") is None
    assert history.windows.slot_of("c") == slot_a
    # ... whose views and calibrators start empty
    range_c = history.views.views["e/r/0"]
    seasonal_c = history.views.views["e/d/1"]
    assert isinstance(seasonal_c, SeasonalView)
    assert range_c._complete[slot_a] == 0 and range_c._part_n[slot_a] == 1
    assert np.isnan(seasonal_c._ring[slot_a]).sum() == seasonal_c.spec.buckets - 1
    for channel in history.channels.values():
        bank = history.bank
        assert bank._count[slot_a, channel.index] == 0 and bank._seen[slot_a, channel.index] == 0

    # The next readings of "c" see nothing of "a"; "b" goes on as if "c" never came.
    rows = [feed(history, ["c", "b"], [8.0, b[i % 30]], [31 + i, 31 + i]) for i in range(12)]
    refs = [feed(reference, ["b"], [b[i % 30]], [31 + i]) for i in range(12)]
    first_views, first_vote = rows[0]
    np.testing.assert_array_equal(first_views["r"][0], [7.0, 7.0, 1.0])  # c's one value
    assert np.isnan(first_views["d"][0, 0])
    assert first_vote.warming_up[0] and first_vote.likelihood[0] == 1.0
    for (views, vote), (ref_views, ref_vote) in zip(rows, refs, strict=True):
        np.testing.assert_array_equal(views["r"][1], ref_views["r"][0])
        np.testing.assert_array_equal(views["d"][1], ref_views["d"][0])
        assert vote.likelihood[1] == ref_vote.likelihood[0]
        assert vote.warming_up[1] == ref_vote.warming_up[0]
    assert not rows[-1][1].warming_up[1]  # b is calibrated


def test_a_stale_batch_does_not_touch_the_calibrator_of_a_slot_taken_over_meanwhile():
    history = quick_history(max_sensors=1)
    for i in range(20):
        feed(history, ["a"], [50.0 + (i % 3)], [i])
    # Pipelined: "a" is appended, then "c" evicts it before the first batch is calibrated.
    stored_a, _ = history.append(["a"], np.array([51.0]), np.array([T0 + 20 * NANOS]))
    history.append(["c"], np.array([5.0]), np.array([T0 + 21 * NANOS]))
    (vote,) = history.calibrate(stored_a, [votes_for(np.array([51.0]))])
    assert vote.warming_up[0] and vote.likelihood[0] == 1.0
    for channel in history.channels.values():
        assert history.bank._count[0, channel.index] == 0  # "c" has not been calibrated yet


# ---------------------------------------------------------------- calibrate


def test_calibrate_flags_unlikely_rows_and_keeps_the_engines_own_flags():
    history = quick_history()
    rng = np.random.default_rng(1)
    for i in range(40):
        feed(history, ["s"], [50.0 + rng.standard_normal()], [i])
    values = np.array([50.0, 90.0, 95.0, 92.0])
    stored, _ = history.append(["s"] * 4, values, T0 + np.arange(40, 44) * NANOS)
    engine = replace(votes_for(values), anomalies=np.array([True, False, False, False]),
                     reasons={0: "engine said so"},
                     scores=np.array([0.7, 0.0, 0.0, 0.0]))  # fmt: skip
    (vote,) = history.calibrate(stored, [engine])
    assert vote.anomalies[0] and vote.reasons[0] == "engine said so"
    assert vote.anomalies[1:].all()
    assert "c likelihood" in vote.reasons[2] and "< 0.001" in vote.reasons[2]
    assert (vote.likelihood[1:] < 1e-3).all() and vote.likelihood[0] > 1e-3
    assert (vote.scores[1:] > 0.5).all() and vote.scores[0] >= 0.7
    assert not vote.warming_up.any()


def test_rows_the_engine_could_not_judge_are_not_calibrated():
    history = quick_history()
    values = np.full(20, 50.0)
    stored, _ = history.append(["s"] * 20, values, T0 + np.arange(20) * NANOS)
    warming = np.ones(20, dtype=bool)
    (vote,) = history.calibrate(stored, [votes_for(values, warming)])
    assert vote.warming_up.all() and (vote.likelihood == 1.0).all()
    assert all(history.bank._count[0, c.index] == 0 for c in history.channels.values())


def test_a_vote_without_declared_channels_is_unchanged_and_thresholds_can_be_overridden():
    history = quick_history(flag_below={"e.c": 0.5})
    assert history.channels[ChannelKey("e", "c")].flag_below == 0.5
    assert history.channels[ChannelKey("e", "z")].flag_below == 1e-3
    values = np.array([1.0])
    stored, _ = history.append(["s"], values, np.array([T0]))
    other = replace(votes_for(values), name="other")
    (vote,) = history.calibrate(stored, [other])
    assert vote is other


# ---------------------------------------------------------------- batching does not matter


@st.composite
def streams(draw):
    count = draw(st.integers(1, 80))
    sensors = draw(st.lists(st.sampled_from("abcd"), min_size=count, max_size=count))
    values = draw(
        st.lists(
            st.one_of(st.floats(40.0, 60.0), st.floats(-1e4, 1e4), st.just(50.0)),
            min_size=count,
            max_size=count,
        )
    )
    jumps = draw(st.lists(st.integers(-1, 3), min_size=count, max_size=count))
    seconds = np.cumsum(jumps).tolist()
    cuts = sorted(set(draw(st.lists(st.integers(1, max(count - 1, 1)), max_size=10))))
    return sensors, values, seconds, cuts


@settings(max_examples=60, deadline=None)
@given(streams())
def test_batch_at_once_equals_reading_by_reading(stream):
    """Any interleaving of sensors and any split into batches: the same view values, the
    same calibrated likelihoods and flags as one reading per batch."""
    sensors, values, seconds, cuts = stream
    batched, single = quick_history(), quick_history()
    got_views: dict[str, list] = {"r": [], "d": []}
    got = {"likelihood": [], "anomalies": [], "warming_up": [], "scores": []}
    for start, stop in zip([0, *cuts], [*cuts, len(values)], strict=True):
        if start == stop:
            continue
        views, vote = feed(batched, sensors[start:stop], values[start:stop], seconds[start:stop])
        for name in got_views:
            got_views[name].extend(views[name].tolist())
        for name in got:
            got[name].extend(np.asarray(getattr(vote, name)).tolist())
    for i in range(len(values)):
        views, vote = feed(single, sensors[i : i + 1], values[i : i + 1], seconds[i : i + 1])
        for name in got_views:
            np.testing.assert_array_equal(got_views[name][i], views[name][0])
        for name in got:
            assert got[name][i] == np.asarray(getattr(vote, name))[0] or (
                np.isnan(got[name][i]) and np.isnan(np.asarray(getattr(vote, name))[0])
            ), (name, i)


# ---------------------------------------------------------------- re-declarations (review fixes)


def test_a_view_declared_while_a_round_is_in_flight_is_left_out_of_that_round():
    history = quick_history()
    _, views = history.append(["s"], np.array([1.0]), np.array([T0]))
    late = Declaration(window_length=0, views={"range": RangeSpec(1000, 16)}, channels={})
    history.check("late", late)
    history.declare("late", late)
    # The round was prepared before "late" existed: no KeyError, the view is absent (so the
    # pool sees views != declaration and skips "late" for this one round).
    assert history.views_for("late", views) == {}
    assert set(history.views_for("e", views)) == {"r", "d"}


def test_an_engine_flipping_between_two_view_specs_does_not_grow_history():
    history = quick_history()
    base = history.bytes_per_sensor()
    for i in range(12):
        spec = RangeSpec(1000, 16 if i % 2 else 32)
        declaration = Declaration(window_length=0, views={"range": spec}, channels={})
        history.check("canary", declaration)
        history.declare("canary", declaration)
        assert len(history.views.views) == 3  # e's two views + canary's current one
    assert history.bytes_per_sensor() == base + RangeSpec(1000, 16).bytes_per_sensor


def test_engines_declaring_the_same_spec_share_one_view():
    history = quick_history()
    same = Declaration(window_length=0, views={"rr": RangeSpec(8, 2)}, channels={})
    before = history.bytes_per_sensor()
    history.check("twin", same)
    history.declare("twin", same)
    assert history.bytes_per_sensor() == before


async def test_describing_together_cannot_exceed_the_budget():
    """Each declaration fits alone; checked again one by one, the second is refused."""
    history = History(WindowStore(0, 10), HistoryLimits(max_bytes_per_sensor=1_000))
    one = Declaration(window_length=0, views={"r": RangeSpec(1000, 16)}, channels={})
    two = Declaration(window_length=0, views={"r": RangeSpec(2000, 32)}, channels={})
    options = channel_options(False, 1 << 20)
    first = SpecialistClient(SpecialistTarget("a", "127.0.0.1:1"), options, check=history.check)
    second = SpecialistClient(SpecialistTarget("b", "127.0.0.1:1"), options, check=history.check)
    for client, declaration in ((first, one), (second, two)):
        history.check(client.name, declaration)  # as each concurrent Describe did
        client.declaration, client.window_length = declaration, 0
    assert first.recheck()
    history.declare("a", one)
    assert not second.recheck()
    assert second.declaration is None and not second.described
    assert history.bytes_per_sensor() <= 1_000
    await first.close()
    await second.close()


def test_a_zero_threshold_never_flags_even_when_the_tail_underflows():
    history = quick_history(flag_below={"e.z": 0.0, "e.c": 0.0})
    for i in range(40):
        feed(history, ["s"], [50.0 + (i % 3)], [i])
    _, vote = feed(history, ["s"], [1e30], [40])  # z ~ 3e29: its tail probability is 0
    assert vote.likelihood[0] == 0.0 and not vote.anomalies[0]

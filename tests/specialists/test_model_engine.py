"""The ONNX model engine: bundled models, warm-up, scoring semantics and the feature contract."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import signals
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sentinel.specialists.engine import Engine, ScoreInput
from sentinel.specialists.model import ModelEngine, bundled_models, load_model_engine
from sentinel.specialists.model import metadata as model_metadata
from sentinel.specialists.model.features import CLIP, FEATURE_SET, robust_window_features
from sentinel.specialists.model.synthetic import normal_series
from signals import Bench

BUNDLED_VERSIONS = {"iforest-v1": "iforest-1.2.0", "iforest-v2": "iforest-2.0.0"}
MODELS_DIR = Path(__file__).resolve().parents[2] / "specialists" / "model" / "models"


@pytest.fixture(scope="module")
def engine() -> ModelEngine:
    return load_model_engine(None)


def batch(
    windows: np.ndarray, values: np.ndarray, fill: np.ndarray | int | None = None
) -> ScoreInput:
    windows = np.asarray(windows, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    rows = values.shape[0]
    if fill is None:
        fill = windows.shape[1] if windows.ndim == 2 else 0
    return ScoreInput(
        values=values,
        windows=windows,
        window_fill=np.broadcast_to(np.asarray(fill, dtype=np.int64), (rows,)).copy(),
    )


def noisy_window(length: int, seed: int = 3) -> np.ndarray:
    return 100.0 + 2.0 * np.random.default_rng(seed).standard_normal(length)


def robust_sd(window: np.ndarray) -> float:
    median = np.median(window)
    return float(1.4826 * np.median(np.abs(window - median)))


# --- bundled models ---------------------------------------------------------------------


def test_bundled_models_are_listed() -> None:
    assert set(BUNDLED_VERSIONS) <= set(bundled_models())


@pytest.mark.parametrize(("name", "version"), sorted(BUNDLED_VERSIONS.items()))
def test_bundled_models_load_with_version_and_window(name: str, version: str) -> None:
    model = load_model_engine(name)
    assert isinstance(model, Engine)
    assert model.name == "model"
    assert model.version == version
    assert model.window_length == 32
    params = model.parameters()
    assert params["model"] == f"bundled:{name}"
    assert params["features"] == FEATURE_SET
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


@pytest.mark.parametrize("reference", [None, ""])
def test_default_is_iforest_v1(reference: str | None) -> None:
    assert load_model_engine(reference).version == "iforest-1.2.0"


@pytest.mark.parametrize("name", sorted(BUNDLED_VERSIONS))
def test_bundled_files_are_small(name: str) -> None:
    assert (MODELS_DIR / f"{name}.onnx").stat().st_size < 1_000_000


def test_model_loads_from_a_path() -> None:
    model = load_model_engine(str(MODELS_DIR / "iforest-v2.onnx"))
    assert model.version == "iforest-2.0.0"
    assert model.parameters()["model"].endswith("iforest-v2.onnx")


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a bundled model"):
        load_model_engine(str(tmp_path / "nope.onnx"))


def test_non_onnx_file_is_rejected(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        load_model_engine(str(junk))


def test_model_without_sentinel_metadata_is_rejected(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(MODELS_DIR / "iforest-v1.onnx"))
    del model.metadata_props[:]
    stripped = tmp_path / "stripped.onnx"
    stripped.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match="lacks metadata sentinel.engine_version"):
        load_model_engine(str(stripped))


def test_bundled_metadata_has_every_key_train_writes() -> None:
    train = pytest.importorskip("sentinel.specialists.model.train")
    onnx = pytest.importorskip("onnx")
    written = train.metadata_props(
        train.TrainConfig(version="x"),
        train.Calibration(score_threshold=0.6, score_saturation=0.7, holdout_anomaly_rate=0.0),
    )
    assert set(model_metadata.REQUIRED_KEYS) <= set(written)
    for name, version in BUNDLED_VERSIONS.items():
        model = onnx.load(str(MODELS_DIR / f"{name}.onnx"))
        props = {prop.key: prop.value for prop in model.metadata_props}
        assert set(props) == set(written), name
        assert props[model_metadata.ENGINE_VERSION] == version
        assert props[model_metadata.FEATURES] == FEATURE_SET


def test_training_is_deterministic(tmp_path: Path) -> None:
    train = pytest.importorskip("sentinel.specialists.model.train")
    args = ["--version", "t-1", "--trees", "10", "--max-samples", "64", "--samples", "4000"]
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert train.main(["--out", str(first), *args]) == 0
    assert train.main(["--out", str(second), *args]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert load_model_engine(str(first)).version == "t-1"


@pytest.mark.parametrize("name", sorted(BUNDLED_VERSIONS))
def test_bundled_models_are_one_tree_ensemble(name: str) -> None:
    """Scoring speed rests on this: every tree in one node, not ~27 graph nodes per tree."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(MODELS_DIR / f"{name}.onnx")).graph
    ops = [(node.domain, node.op_type) for node in graph.node]
    assert ops.count(("ai.onnx.ml", "TreeEnsembleRegressor")) == 1
    assert len(ops) <= 8


@pytest.fixture(scope="module")
def small_forest() -> tuple[object, object, np.ndarray]:
    """A quick forest, its config and its training features."""
    train = pytest.importorskip("sentinel.specialists.model.train")
    config = train.TrainConfig(version="t-2", trees=12, max_samples=64, samples=4000)
    features = train.synthetic_features(np.random.default_rng(5), config.samples, 32)
    return train.fit_forest(config, features), config, features


def exported(small_forest: tuple[object, object, np.ndarray]) -> object:
    train = pytest.importorskip("sentinel.specialists.model.train")
    forest, config, _ = small_forest
    calibration = train.Calibration(
        score_threshold=float(-forest.offset_), score_saturation=0.99, holdout_anomaly_rate=0.0
    )
    return train.export(forest, config, train.metadata_props(config, calibration))


def test_export_matches_sklearn_decision_function(
    small_forest: tuple[object, object, np.ndarray],
) -> None:
    train = pytest.importorskip("sentinel.specialists.model.train")
    forest, config, features = small_forest
    model = exported(small_forest)
    rng = np.random.default_rng(6)
    rows = [train.check_rows(rng, features, config.window_length)]
    # Inputs exactly on a split's float32 threshold and one float32 step either side: the
    # branch sklearn takes there (x <= float64 threshold) is the one the export must take.
    base = train.synthetic_features(rng, 200, config.window_length)
    for estimator in forest.estimators_[:4]:
        tree = estimator.tree_
        for node in np.flatnonzero(tree.children_left >= 0)[:25]:
            at = np.float32(tree.threshold[node])
            below, above = np.nextafter(at, np.float32(-1e9)), np.nextafter(at, np.float32(1e9))
            for value in (below, at, above):
                row = base[node % 200].copy()
                row[tree.feature[node]] = value
                rows.append(row[None, :])
    rows = np.concatenate(rows)
    error = train.verify_export(model, forest, rows)
    assert error <= train.EXPORT_TOLERANCE
    decision = forest.decision_function(rows)
    engine = ModelEngine(model.SerializeToString(), source="test")
    (onnx_decision,) = engine._session.run(None, {"X": rows})
    # Identical verdicts wherever sklearn is not within the tolerance of its boundary.
    clear = np.abs(decision) > train.EXPORT_TOLERANCE
    assert ((onnx_decision[:, 0] < 0) == (decision < 0))[clear].all()


def test_export_check_rejects_a_wrong_model(
    small_forest: tuple[object, object, np.ndarray],
) -> None:
    train = pytest.importorskip("sentinel.specialists.model.train")
    numpy_helper = pytest.importorskip("onnx.numpy_helper")
    forest, config, features = small_forest
    model = exported(small_forest)
    for constant in model.graph.initializer:
        if constant.name == "threshold":
            shifted = numpy_helper.to_array(constant) + np.float32(1e-3)
            constant.CopyFrom(numpy_helper.from_array(shifted, constant.name))
    rows = train.check_rows(np.random.default_rng(7), features, config.window_length)
    with pytest.raises(RuntimeError, match="differs from sklearn"):
        train.verify_export(model, forest, rows)


# --- scoring ----------------------------------------------------------------------------


def test_zero_rows(engine: ModelEngine) -> None:
    for windows in (np.empty((0, 0)), np.empty((0, engine.window_length))):
        out = engine.score(batch(windows, np.empty(0), fill=0))
        assert out.scores.shape == out.anomalies.shape == out.warming_up.shape == (0,)
        assert out.reasons == {}
        assert out.channels["forest"].shape == (0,)


def test_warming_up_rows_carry_no_vote(engine: ModelEngine) -> None:
    length = engine.window_length
    windows = np.tile(noisy_window(length), (3, 1))
    windows[0, :5] = np.nan  # 5 unfilled leading positions
    windows[1, :] = np.nan  # nothing yet
    fill = np.array([length - 5, 0, length])
    values = np.array([1e6, 1e6, 100.0])  # huge values must not matter while warming up
    out = engine.score(batch(windows, values, fill))
    assert out.warming_up.tolist() == [True, True, False]
    assert out.scores[:2].tolist() == [0.0, 0.0]
    assert out.anomalies[:2].tolist() == [False, False]
    assert not {0, 1} & out.reasons.keys()
    assert np.isnan(out.channels["forest"][:2]).all() and np.isfinite(out.channels["forest"][2])


def test_rows_with_gaps_count_as_warming_up(engine: ModelEngine) -> None:
    window = noisy_window(engine.window_length)
    window[10] = np.nan
    out = engine.score(batch(window[None, :], np.array([100.0])))
    assert out.warming_up.tolist() == [True]


def test_ready_rows_score_the_same_next_to_warming_rows(engine: ModelEngine) -> None:
    length = engine.window_length
    series, _ = normal_series(np.random.default_rng(21), 6, length + 1)
    windows, values = series[:, :-1].copy(), series[:, -1].copy()
    values[2] = np.median(windows[2]) + 30 * robust_sd(windows[2])  # one anomaly
    alone = engine.score(batch(windows, values))
    mixed_windows = np.concatenate([windows[:3], np.full((2, length), np.nan), windows[3:]])
    mixed_values = np.concatenate([values[:3], [5.0, 6.0], values[3:]])
    fill = np.array([length] * 3 + [0, 0] + [length] * 3)
    mixed = engine.score(batch(mixed_windows, mixed_values, fill))
    ready = np.array([True] * 3 + [False] * 2 + [True] * 3)
    assert mixed.warming_up.tolist() == (~ready).tolist()
    np.testing.assert_array_equal(mixed.scores[ready], alone.scores)
    mixed_rows = np.flatnonzero(ready)  # row i of `alone` is mixed row mixed_rows[i]
    assert mixed.reasons == {int(mixed_rows[i]): r for i, r in alone.reasons.items()}
    forest = mixed.channels["forest"]
    np.testing.assert_array_equal(forest[ready], alone.channels["forest"])
    assert np.isnan(forest[~ready]).all()
    assert alone.scores[2] >= 0.5 and alone.reasons[2]
    assert mixed.scores.dtype == alone.scores.dtype == np.float64


def test_session_is_not_run_when_no_row_is_ready(
    engine: ModelEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoRun:
        def run(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("session.run called for a batch with no ready rows")

    monkeypatch.setattr(engine, "_session", NoRun())
    windows = np.full((2, engine.window_length), np.nan)
    out = engine.score(batch(windows, np.array([1.0, 2.0]), fill=0))
    assert out.warming_up.all()


@pytest.mark.parametrize("name", sorted(BUNDLED_VERSIONS))
def test_normal_window_is_normal_and_spike_is_anomalous(name: str) -> None:
    model = load_model_engine(name)
    window = noisy_window(model.window_length)
    median, sd = float(np.median(window)), robust_sd(window)
    values = np.array([window[-1] + 0.5 * sd, median + 20 * sd, median - 20 * sd])
    out = model.score(batch(np.tile(window, (3, 1)), values))
    # The engine flags nothing itself: the orchestrator calibrates its `forest` channel per
    # sensor. Its score still puts the forest's own cut-off at 0.5 and explains rows above it.
    assert not out.anomalies.any()
    assert out.scores[0] < 0.5 and 0 not in out.reasons
    assert (out.scores[1:] >= 0.5).all()
    forest = out.channels["forest"]  # minus the forest's decision: higher = more isolated
    assert (forest[1:] > forest[0]).all()
    assert out.reasons[1].startswith("isolation-forest score ")
    assert "20.0 robust-sd above window median" in out.reasons[1]
    assert "20.0 robust-sd below window median" in out.reasons[2]


@pytest.mark.parametrize("name", sorted(BUNDLED_VERSIONS))
def test_constant_window(name: str) -> None:
    model = load_model_engine(name)
    window = np.full(model.window_length, 42.0)
    out = model.score(batch(np.tile(window, (3, 1)), np.array([42.0, 50.0, 0.0])))
    assert out.anomalies.tolist() == [False, False, False]
    assert (out.scores[1:] >= 0.5).all() and out.scores[0] < 0.5
    assert np.isfinite(out.channels["forest"]).all()
    assert (out.channels["forest"][1:] > out.channels["forest"][0]).all()
    assert "more than 50 robust-sd" in out.reasons[1]


def test_synthetic_normal_series_are_rarely_flagged(engine: ModelEngine) -> None:
    length = engine.window_length
    series, _ = normal_series(np.random.default_rng(12345), 2000, length + 1)
    out = engine.score(batch(series[:, :-1], series[:, -1]))
    assert (out.scores >= 0.5).mean() < 0.02


def test_longer_windows_use_the_last_columns(engine: ModelEngine) -> None:
    length = engine.window_length
    rng = np.random.default_rng(8)
    exact = rng.standard_normal((4, length))
    values = np.array([0.1, 30.0, -0.2, 12.0])
    longer = np.concatenate([np.full((4, 7), np.nan), exact], axis=1)
    expected = engine.score(batch(exact, values))
    got = engine.score(batch(longer, values, fill=length))
    np.testing.assert_array_equal(got.scores, expected.scores)
    assert got.reasons == expected.reasons


def test_shorter_windows_are_rejected(engine: ModelEngine) -> None:
    short = np.zeros((1, engine.window_length - 1))
    with pytest.raises(ValueError, match="windows"):
        engine.score(batch(short, np.array([0.0]), fill=engine.window_length - 1))


def test_float32_windows_are_accepted(engine: ModelEngine) -> None:
    window = noisy_window(engine.window_length).astype(np.float32)
    out = engine.score(
        ScoreInput(
            values=np.array([100.0]),
            windows=window[None, :],
            window_fill=np.array([engine.window_length]),
        )
    )
    assert not out.warming_up[0]
    assert 0.0 <= out.scores[0] <= 1.0


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scores_are_in_unit_interval(engine: ModelEngine, data: st.DataObject) -> None:
    rows = data.draw(st.integers(min_value=1, max_value=6))
    windows = data.draw(hnp.arrays(np.float64, (rows, engine.window_length), elements=finite))
    values = data.draw(hnp.arrays(np.float64, (rows,), elements=finite))
    out = engine.score(batch(windows, values))
    assert np.isfinite(out.scores).all()
    assert ((out.scores >= 0.0) & (out.scores <= 1.0)).all()
    assert not out.anomalies.any()
    assert sorted(out.reasons) == np.flatnonzero(out.scores >= 0.5).tolist()
    assert all(out.reasons.values())
    assert np.isfinite(out.channels["forest"]).all()


# --- feature contract -------------------------------------------------------------------


def test_features_shape_dtype_and_finiteness() -> None:
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((5, 40)) * 1e3
    windows[1] = 7.0  # constant
    windows[2, -3] = np.inf  # hostile input still gives finite features
    latest = np.array([0.0, 7.0, 1.0, np.nan, 1e300])
    features = robust_window_features(windows, latest, 32)
    assert features.shape == (5, 33)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    assert (np.abs(features) <= CLIP).all()
    assert (features[1] == 0).all()  # constant window, same latest value


def test_features_are_offset_and_scale_invariant() -> None:
    rng = np.random.default_rng(1)
    windows = rng.standard_normal((3, 32))
    latest = rng.standard_normal(3)
    base = robust_window_features(windows, latest, 32)
    moved = robust_window_features(1e4 + 250.0 * windows, 1e4 + 250.0 * latest, 32)
    np.testing.assert_allclose(moved, base, rtol=1e-4, atol=1e-4)


def test_features_columns_follow_the_contract() -> None:
    window = np.arange(32, dtype=np.float64)
    median = np.median(window)
    scale = 1.4826 * np.median(np.abs(window - median))
    features = robust_window_features(window[None, :], np.array([40.0]), 32)[0]
    np.testing.assert_allclose(features[:-1], (window - 40.0) / scale, rtol=1e-6)
    assert features[-1] == pytest.approx((40.0 - median) / scale, rel=1e-6)


def test_features_of_no_rows() -> None:
    features = robust_window_features(np.empty((0, 32)), np.empty(0), 32)
    assert features.shape == (0, 33) and features.dtype == np.float32


def reference_features(windows: np.ndarray, latest: np.ndarray, length: int) -> np.ndarray:
    """robust-window-v1 written out as its docstring states it, with np.median."""
    history = np.asarray(windows[:, -length:], dtype=np.float64)
    x = np.asarray(latest, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.median(history, axis=1, keepdims=True)
        mad = 1.4826 * np.median(np.abs(history - m), axis=1, keepdims=True)
        sd = history.std(axis=1, keepdims=True)
        tiny = np.maximum(1e-12, 1e-9 * np.abs(m))
        floor = np.maximum(1e-6, 1e-3 * np.abs(m))
        scale = np.where(mad > tiny, mad, np.where(sd > tiny, sd, floor))
        z = np.concatenate([history - x, x - m], axis=1) / scale
    z = np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(z, -CLIP, CLIP).astype(np.float32)


@pytest.mark.parametrize("length", [1, 2, 5, 32])
def test_features_equal_the_contract_formula_exactly(length: int) -> None:
    rng = np.random.default_rng(length)
    series, _ = normal_series(rng, 400, length + 1)
    steps = np.round(rng.standard_normal((200, length + 1))) * rng.integers(0, 2, (200, 1))
    hostile = rng.standard_normal((200, length + 1)) * 10.0 ** rng.uniform(-300, 300, (200, 1))
    hostile[rng.random(hostile.shape) < 0.05] = np.inf
    hostile[rng.random(hostile.shape) < 0.05] = -np.inf
    hostile[rng.random(hostile.shape) < 0.05] = np.nan
    rows = np.concatenate([series, steps, np.full((5, length + 1), 3.0), hostile])
    windows, latest = rows[:, :-1], rows[:, -1].copy()
    expected = reference_features(windows, latest, length)
    got = robust_window_features(windows, latest, length)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    # Exactly equal values; only the sign of a zero may differ (sorting and np.median's
    # partition may order -0.0 and 0.0 either way), and no split can tell those apart.
    np.testing.assert_array_equal(got, expected)


def test_declares_one_standardized_forest_channel_and_no_view(engine: ModelEngine) -> None:
    (channel,) = engine.channels
    assert (channel.name, channel.standardize) == ("forest", True)
    assert 0.0 < channel.flag_below < 1e-6
    assert engine.views == ()


# --- constructed signals through the orchestrator's windows and calibration (signals.py) ---


def test_spike_is_the_most_isolated_reading_and_unlikely(engine: ModelEngine) -> None:
    values = signals.noise(1500, seed=0)
    values[1400] += 15.0
    out = Bench(engine).run(values)["model"]
    forest = out.channels["forest"]
    length = engine.window_length
    assert np.isnan(forest[:length]).all() and np.isfinite(forest[length:]).all()
    assert forest[1400] > np.nanmax(np.delete(forest, 1400))
    assert out.scores[1400] >= 0.5 and out.reasons[1400].startswith("isolation-forest")
    # Calibrated against this sensor's own forest scores (the mean of the last 10), the spike
    # is a rare event (though plain noise has its rare stretches too). The engine flags
    # nothing itself; the orchestrator flags what is below the channel's threshold.
    assert out.likelihood[1400] < 1e-3
    assert not out.anomalies.any()
    assert out.flagged.tolist() == (out.likelihood < engine.flag_below).tolist()


@pytest.mark.parametrize("kind", ["flat", "quantised"])
def test_flat_and_quantised_series_stay_finite_and_unflagged(engine: ModelEngine, kind) -> None:
    values = np.full(800, 3.0) if kind == "flat" else signals.quantised(800, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = Bench(engine).run(values)["model"]
    length = engine.window_length
    assert np.isfinite(out.channels["forest"][length:]).all()
    assert np.isfinite(out.scores).all()
    assert not out.flagged.any()
    assert out.judged[-1]

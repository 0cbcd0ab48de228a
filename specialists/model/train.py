"""Train an IsolationForest on synthetic normal windows and export it as an engine-ready ONNX file.

Needs the ``train`` extra (scikit-learn, skl2onnx, onnx); the engine itself does not. Runs are
deterministic: the same arguments and library versions give byte-identical files. The bundled
models were made with::

    python -m specialists.model.train --out specialists/model/models/iforest-v1.onnx \
        --version iforest-1.0.0
    python -m specialists.model.train --out specialists/model/models/iforest-v2.onnx \
        --version iforest-2.0.0 --trees 150 --max-samples 128 --contamination 0.005
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import skl2onnx
import sklearn
from sklearn.ensemble import IsolationForest

from . import metadata
from .features import CLIP, FEATURE_SET, robust_scale, robust_window_features
from .synthetic import REGIMES, normal_series

# ai.onnx.ml 3 and opset 17 load in every onnxruntime the project supports (>= 1.20).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
DECISION_OUTPUT = "scores"  # skl2onnx's name for decision_function


@dataclass(frozen=True, slots=True)
class TrainConfig:
    version: str
    window_length: int = 32
    trees: int = 100
    max_samples: int = 256
    contamination: float = 0.002
    samples: int = 50_000
    seed: int = 20_240_601


@dataclass(frozen=True, slots=True)
class Calibration:
    score_threshold: float  # raw anomaly score at the decision boundary
    score_saturation: float  # raw anomaly score of a spike at the feature clip
    holdout_anomaly_rate: float  # share of fresh normal windows flagged


def synthetic_features(rng: np.random.Generator, rows: int, window_length: int) -> np.ndarray:
    series, _ = normal_series(rng, rows, window_length + 1)
    return robust_window_features(series[:, :-1], series[:, -1], window_length)


def clip_spike_features(rng: np.random.Generator, rows: int, window_length: int) -> np.ndarray:
    """Normal windows whose latest value sits CLIP robust-sd from the median (either side)."""
    history, _ = normal_series(rng, rows, window_length)
    median = np.median(history, axis=1, keepdims=True)
    sign = np.where(rng.random((rows, 1)) < 0.5, -1.0, 1.0)
    latest = median + sign * CLIP * robust_scale(history, median)
    return robust_window_features(history, latest[:, 0], window_length)


def fit_forest(config: TrainConfig, features: np.ndarray) -> IsolationForest:
    forest = IsolationForest(
        n_estimators=config.trees,
        max_samples=config.max_samples,
        contamination=config.contamination,
        random_state=config.seed,
    )
    return forest.fit(features)


def calibrate(
    forest: IsolationForest, config: TrainConfig, rng: np.random.Generator
) -> Calibration:
    threshold = float(-forest.offset_)
    holdout = -forest.score_samples(synthetic_features(rng, 20_000, config.window_length))
    spikes = -forest.score_samples(clip_spike_features(rng, 2_000, config.window_length))
    saturation = float(np.median(spikes))
    if not saturation > threshold:
        raise RuntimeError(
            f"clip-sized spikes score {saturation:.4f}, not above the threshold {threshold:.4f}"
        )
    return Calibration(
        score_threshold=threshold,
        score_saturation=saturation,
        holdout_anomaly_rate=float(np.mean(holdout >= threshold)),
    )


def metadata_props(config: TrainConfig, calibration: Calibration) -> dict[str, str]:
    training = {
        "seed": str(config.seed),
        "n_samples": str(config.samples),
        "trees": str(config.trees),
        "max_samples": str(config.max_samples),
        "contamination": repr(config.contamination),
        "regimes": ",".join(REGIMES),
        "holdout_anomaly_rate": f"{calibration.holdout_anomaly_rate:.6f}",
        "sklearn_version": sklearn.__version__,
        "skl2onnx_version": skl2onnx.__version__,
    }
    return {
        metadata.ENGINE_VERSION: config.version,
        metadata.WINDOW_LENGTH: str(config.window_length),
        metadata.FEATURES: FEATURE_SET,
        metadata.DECISION_OUTPUT: DECISION_OUTPUT,
        # repr keeps every bit of the float, so the engine's boundary is sklearn's.
        metadata.SCORE_THRESHOLD: repr(calibration.score_threshold),
        metadata.SCORE_SATURATION: repr(calibration.score_saturation),
        **{metadata.TRAINING_PREFIX + key: value for key, value in training.items()},
    }


def export(forest: IsolationForest, config: TrainConfig, props: dict[str, str]) -> onnx.ModelProto:
    sample = np.zeros((1, config.window_length + 1), dtype=np.float32)
    model = skl2onnx.to_onnx(forest, sample, target_opset=TARGET_OPSET)
    if DECISION_OUTPUT not in {output.name for output in model.graph.output}:
        raise RuntimeError(f"skl2onnx produced no {DECISION_OUTPUT!r} output")
    # skl2onnx emits opset imports in set order, which varies with PYTHONHASHSEED.
    opsets = sorted((opset.domain, opset.version) for opset in model.opset_import)
    del model.opset_import[:]
    for domain, version in opsets:
        model.opset_import.add(domain=domain, version=version)
    model.doc_string = f"Sentinel Mesh model engine {config.version} ({FEATURE_SET})"
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def train(config: TrainConfig) -> onnx.ModelProto:
    rng = np.random.default_rng(config.seed)
    features = synthetic_features(rng, config.samples, config.window_length)
    forest = fit_forest(config, features)
    calibration = calibrate(forest, config, rng)
    return export(forest, config, metadata_props(config, calibration))


def parse_args(argv: Sequence[str] | None) -> tuple[Path, TrainConfig]:
    defaults = TrainConfig(version="")
    parser = argparse.ArgumentParser(
        prog="python -m specialists.model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--version", required=True, help="engine version tag, e.g. iforest-1.0.0")
    parser.add_argument("--window-length", type=int, default=defaults.window_length)
    parser.add_argument("--trees", type=int, default=defaults.trees)
    parser.add_argument("--max-samples", type=int, default=defaults.max_samples)
    parser.add_argument("--contamination", type=float, default=defaults.contamination)
    parser.add_argument(
        "--samples", type=int, default=defaults.samples, help="synthetic training windows"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    config = TrainConfig(
        version=args.version,
        window_length=args.window_length,
        trees=args.trees,
        max_samples=args.max_samples,
        contamination=args.contamination,
        samples=args.samples,
        seed=args.seed,
    )
    return args.out, config


def main(argv: Sequence[str] | None = None) -> int:
    out, config = parse_args(argv)
    model = train(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString())
    props = {prop.key: prop.value for prop in model.metadata_props}
    print(
        f"wrote {out} ({out.stat().st_size} bytes): {config.version}, "
        f"threshold {props[metadata.SCORE_THRESHOLD]}, "
        f"saturation {props[metadata.SCORE_SATURATION]}, "
        f"holdout anomaly rate {props[metadata.TRAINING_PREFIX + 'holdout_anomaly_rate']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

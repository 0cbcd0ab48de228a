"""The `model` engine: an isolation forest in ONNX Runtime scoring robust-window features."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from sentinel.errors import InvalidArgument

from ..engine import ChannelSpec, RowColumn, ScoreInput, ScoreOutput
from .features import CLIP, FEATURE_SET, feature_count, robust_window_features
from .metadata import ModelMetadata

FOREST_CHANNEL = "forest"
DEFAULT_FLAG_BELOW = 1e-20


def decision_to_score(decision: np.ndarray, threshold: float, saturation: float) -> np.ndarray:
    """Map sklearn's decision_function (< 0 = anomalous) to [0, 1] with the boundary at 0.5.

    The raw anomaly score s = threshold - decision is mapped piecewise linearly:
    [0, threshold] -> [0, 0.5] and [threshold, saturation] -> [0.5, 1], clipped above.
    Two segments because the anomalous side of s is narrow; one line would squash every
    anomaly into 0.5-0.6.
    """
    raw = threshold - np.asarray(decision, dtype=np.float64)
    below = 0.5 * raw / threshold
    above = 0.5 + 0.5 * (raw - threshold) / (saturation - threshold)
    return np.clip(np.where(raw < threshold, below, above), 0.0, 1.0)


def explain(score: float, latest_deviation: float) -> str:
    side = "above" if latest_deviation >= 0 else "below"
    distance = abs(latest_deviation)
    size = f"more than {CLIP:g}" if distance >= CLIP else f"{distance:.1f}"
    return (
        f"isolation-forest score {score:.2f} (latest value {size} robust-sd {side} window median)"
    )


def cpu_session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Specialists scale out by replicas; one thread each keeps replicas from contending.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class ModelEngine:
    """Engine protocol over one ONNX Runtime session; safe to call from several threads."""

    def __init__(self, model: bytes, source: str, flag_below: float = DEFAULT_FLAG_BELOW) -> None:
        """`model` is a serialized ONNX model; `source` names it (path or bundled name)."""
        self.flag_below = flag_below
        session = cpu_session(model)
        meta = ModelMetadata.parse(session.get_modelmeta().custom_metadata_map, source)
        if meta.features != FEATURE_SET:
            raise ValueError(
                f"model {source} expects features {meta.features!r}; "
                f"this engine computes {FEATURE_SET!r}"
            )
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] != feature_count(meta.window_length):
            raise ValueError(
                f"model {source} must take one [rows, {feature_count(meta.window_length)}] "
                f"input, has {[(i.name, i.shape) for i in inputs]}"
            )
        if meta.decision_output not in {output.name for output in session.get_outputs()}:
            raise ValueError(f"model {source} has no output {meta.decision_output!r}")
        self._session = session
        self._input_name = inputs[0].name
        self._output_names = [meta.decision_output]
        self._meta = meta
        self._source = source

    @property
    def name(self) -> str:
        return "model"

    @property
    def version(self) -> str:
        return self._meta.engine_version

    @property
    def window_length(self) -> int:
        return self._meta.window_length

    views: tuple = ()
    row_columns: frozenset[RowColumn] = frozenset()  # the features are of the window alone

    @property
    def channels(self) -> tuple[ChannelSpec, ...]:
        return (ChannelSpec(FOREST_CHANNEL, True, self.flag_below),)

    def parameters(self) -> Mapping[str, str]:
        meta = self._meta
        return {
            "model": self._source,
            "features": meta.features,
            "score_threshold": repr(meta.score_threshold),
            "score_saturation": repr(meta.score_saturation),
            "anomaly_at_score": "0.5",
            **{f"training.{key}": value for key, value in meta.training.items()},
        }

    def score(self, batch: ScoreInput) -> ScoreOutput:
        rows = batch.rows
        length = self.window_length
        if rows == 0:
            empty = np.zeros(0, dtype=bool)
            return ScoreOutput(
                np.zeros(0, dtype=np.float64),
                empty,
                {},
                warming_up=empty,
                channels={FOREST_CHANNEL: np.zeros(0)},
            )

        windows = batch.windows
        if windows.ndim != 2 or windows.shape[0] != rows or windows.shape[1] < length:
            raise InvalidArgument(
                "windows",
                f"shape {list(windows.shape)}; the model needs [{rows}, >= {length}]",
            )
        recent = windows[:, -length:]
        # A row whose last L positions hold a gap cannot be judged any more than a short one.
        ready = (batch.window_fill >= length) & np.isfinite(recent).all(axis=1)
        reasons: dict[int, str] = {}
        if ready.all():  # the steady state: score the batch as it is, no row selection
            ready_rows = None
            features = robust_window_features(recent, batch.values, length)
        elif ready.any():
            ready_rows = np.flatnonzero(ready)
            features = robust_window_features(recent[ready_rows], batch.values[ready_rows], length)
        else:
            return ScoreOutput(
                np.zeros(rows, dtype=np.float64),
                np.zeros(rows, dtype=bool),
                reasons,
                ~ready,
                channels={FOREST_CHANNEL: np.full(rows, np.nan)},
            )

        # One run per batch; the features are C-contiguous float32 already, so ONNX Runtime
        # reads them in place.
        (decision,) = self._session.run(self._output_names, {self._input_name: features})
        ready_scores = decision_to_score(
            decision.reshape(-1), self._meta.score_threshold, self._meta.score_saturation
        )
        flagged = np.flatnonzero(ready_scores >= 0.5)
        if ready_rows is None:
            scores = ready_scores
            flagged_rows = flagged
        else:
            scores = np.zeros(rows, dtype=np.float64)
            scores[ready_rows] = ready_scores
            flagged_rows = ready_rows[flagged]
        for i, row in zip(flagged.tolist(), flagged_rows.tolist(), strict=True):
            reasons[row] = explain(float(ready_scores[i]), float(features[i, -1]))
        raw = np.full(rows, np.nan)
        if ready_rows is None:
            raw[:] = decision.reshape(-1)
        else:
            raw[ready_rows] = decision.reshape(-1)
        # The forest's own cut-off is global; the orchestrator judges its decision per sensor
        # (lower decision = more isolated, hence the sign).
        return ScoreOutput(
            scores,
            np.zeros(rows, dtype=bool),
            reasons,
            warming_up=~ready,
            channels={FOREST_CHANNEL: -raw},
        )

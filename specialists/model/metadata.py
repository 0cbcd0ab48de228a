"""The ONNX metadata_props contract between `train.py` and the model engine.

Required keys (the engine refuses a model without them):

- ``sentinel.engine_version``: version tag reported by Describe, e.g. ``iforest-1.0.0``.
- ``sentinel.window_length``: L, the past values per row the model needs.
- ``sentinel.features``: feature contract name; the engine implements ``robust-window-v1``.
- ``sentinel.decision_output``: ONNX output holding sklearn's ``decision_function`` (< 0 means
  anomalous).
- ``sentinel.score_threshold``: raw isolation-forest anomaly score ``s = 2^(-E[h]/c)`` at the
  decision boundary (``-IsolationForest.offset_``), so ``s = threshold - decision``.
- ``sentinel.score_saturation``: raw anomaly score mapped to 1.0 (calibrated in training on
  spikes at the feature clip).

Keys under ``sentinel.training.`` describe how the model was made; they are informative only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ENGINE_VERSION = "sentinel.engine_version"
WINDOW_LENGTH = "sentinel.window_length"
FEATURES = "sentinel.features"
DECISION_OUTPUT = "sentinel.decision_output"
SCORE_THRESHOLD = "sentinel.score_threshold"
SCORE_SATURATION = "sentinel.score_saturation"
REQUIRED_KEYS = (
    ENGINE_VERSION,
    WINDOW_LENGTH,
    FEATURES,
    DECISION_OUTPUT,
    SCORE_THRESHOLD,
    SCORE_SATURATION,
)
TRAINING_PREFIX = "sentinel.training."


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    engine_version: str
    window_length: int
    features: str
    decision_output: str
    score_threshold: float
    score_saturation: float
    training: Mapping[str, str]

    @classmethod
    def parse(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Validate a model's metadata_props; `source` only names the model in errors."""
        missing = [key for key in REQUIRED_KEYS if not props.get(key)]
        if missing:
            raise ValueError(f"model {source} lacks metadata {', '.join(missing)}")
        try:
            window_length = int(props[WINDOW_LENGTH])
            threshold = float(props[SCORE_THRESHOLD])
            saturation = float(props[SCORE_SATURATION])
        except ValueError as exc:
            raise ValueError(f"model {source} has malformed metadata: {exc}") from exc
        if window_length < 1:
            raise ValueError(f"model {source}: {WINDOW_LENGTH} must be >= 1, got {window_length}")
        # The score mapping divides by threshold and by (saturation - threshold).
        if not 0.0 < threshold < saturation <= 1.0:
            raise ValueError(
                f"model {source}: need 0 < {SCORE_THRESHOLD} < {SCORE_SATURATION} <= 1, "
                f"got {threshold} and {saturation}"
            )
        training = {
            key.removeprefix(TRAINING_PREFIX): value
            for key, value in sorted(props.items())
            if key.startswith(TRAINING_PREFIX)
        }
        return cls(
            engine_version=props[ENGINE_VERSION],
            window_length=window_length,
            features=props[FEATURES],
            decision_output=props[DECISION_OUTPUT],
            score_threshold=threshold,
            score_saturation=saturation,
            training=training,
        )

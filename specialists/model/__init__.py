"""The `model` specialist engine: ONNX Runtime scoring of sensor windows."""

from __future__ import annotations

from .engine import ModelEngine
from .loader import bundled_models, load_model_engine

__all__ = ["ModelEngine", "bundled_models", "load_model_engine"]

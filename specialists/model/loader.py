"""Resolve a model reference (bundled name or filesystem path) to a ready ModelEngine.

Models only ever come from the package or the local filesystem; nothing is downloaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .engine import ModelEngine

DEFAULT_MODEL = "iforest-v1"
_BUNDLED_PACKAGE = "sentinel.specialists.model.models"


def bundled_models() -> list[str]:
    """Names accepted by `load_model_engine` without a path, e.g. ["iforest-v1", ...]."""
    package = resources.files(_BUNDLED_PACKAGE)
    return sorted(
        entry.name.removesuffix(".onnx")
        for entry in package.iterdir()
        if entry.name.endswith(".onnx")
    )


def load_model_engine(model: str | None = None) -> ModelEngine:
    """None or "" -> the default bundled model; a bundled name -> that model; else a path."""
    reference = model or DEFAULT_MODEL
    if reference in bundled_models():
        resource = resources.files(_BUNDLED_PACKAGE) / f"{reference}.onnx"
        return ModelEngine(resource.read_bytes(), source=f"bundled:{reference}")

    path = Path(reference).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {reference!r} is neither a bundled model ({', '.join(bundled_models())}) "
            "nor an existing file"
        )
    try:
        return ModelEngine(path.read_bytes(), source=str(path))
    except ValueError:
        raise
    except Exception as exc:  # onnxruntime raises its own types for unparseable files
        raise ValueError(f"model {path} is not a loadable ONNX model: {exc}") from exc

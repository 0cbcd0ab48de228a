"""Settings of a specialist process (env prefix SENTINEL_)."""

from __future__ import annotations

from pydantic import Field

from sentinel.settings import ServerSettings


class SpecialistSettings(ServerSettings):
    engine: str = "threshold"
    """Engine to serve: threshold, statistical or model."""
    threshold_rules_file: str | None = None
    """TOML file of threshold rules (pattern/low/high); unset = default high limit 90."""
    statistical_window: int = Field(default=60, ge=3, le=10_000)
    """Past values the statistical engine needs per sensor."""
    statistical_cutoff: float = Field(default=4.0, gt=0)
    """Robust |z| above which the statistical engine flags a value."""
    model_path: str | None = None
    """ONNX model: a bundled name (iforest-v1, iforest-v2) or a file path; unset = iforest-v1."""

"""Settings of a specialist process (env prefix SENTINEL_)."""

from __future__ import annotations

from pydantic import Field

from sentinel.settings import ServerSettings


class SpecialistSettings(ServerSettings):
    engine: str = "threshold"
    """Engine to serve: threshold, statistical or model."""
    threshold_rules_file: str | None = None
    """TOML file of hard limit rules (pattern/low/high/adaptive); unset = no hard limits."""
    adaptive_limits: bool = True
    """threshold: flag new extremes beyond each sensor's recent range."""
    adaptive_margin: float = Field(default=0.05, ge=0)
    """threshold: how far beyond the recent range (as a fraction of it) is a new extreme."""
    adaptive_readings: int = Field(default=1000, ge=16, le=100_000)
    """threshold: recent values the range covers."""
    adaptive_min_history: int = Field(default=150, ge=1)
    """threshold: values a sensor needs before its adaptive limits apply."""
    statistical_short: int = Field(default=30, ge=1, le=1_000)
    """statistical: latest values whose median is the sensor's current level."""
    statistical_reference: int = Field(default=200, ge=3, le=4_000)
    """statistical: values before those that the level is compared with."""
    statistical_daily: bool = True
    """statistical: compare each reading's average with the same time the day before."""
    statistical_period_seconds: float = Field(default=86_400.0, gt=0)
    """statistical: period of the seasonal comparison."""
    statistical_bucket_seconds: float = Field(default=300.0, gt=0)
    """statistical: time resolution of the seasonal history the orchestrator keeps."""
    model_path: str | None = None
    """ONNX model: a bundled name (iforest-v1, iforest-v2) or a file path; unset = iforest-v1."""
    version_tag: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=64)
    """Appended to the engine version Describe and Score report (statistical-1.0.0+TAG), to
    tell two deployments of one engine with different settings apart (e.g. primary and shadow)."""

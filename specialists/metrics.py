"""Prometheus metrics of a specialist, in a registry owned by the process (or the test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SpecialistMetrics:
    def __init__(self, registry: CollectorRegistry, engine: str, version: str) -> None:
        labels = ("engine", "version")
        self.registry = registry
        self._rows = Counter(
            "sentinel_specialist_rows_scored", "Rows scored.", labels, registry=registry
        ).labels(engine, version)
        self._anomalies = Counter(
            "sentinel_specialist_anomalies", "Rows flagged anomalous.", labels, registry=registry
        ).labels(engine, version)
        self._warming = Counter(
            "sentinel_specialist_rows_warming_up",
            "Rows not judged because the window is not full.",
            labels,
            registry=registry,
        ).labels(engine, version)
        self._latency = Histogram(
            "sentinel_specialist_score_duration_seconds",
            "Time to score one request (decode, engine, encode).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(engine, version)
        self._rejected = Counter(
            "sentinel_specialist_requests_rejected",
            "Score requests rejected as invalid.",
            labels,
            registry=registry,
        ).labels(engine, version)

    def scored(self, rows: int, anomalies: int, warming_up: int, seconds: float) -> None:
        self._rows.inc(rows)
        self._anomalies.inc(anomalies)
        self._warming.inc(warming_up)
        self._latency.observe(seconds)

    def rejected(self) -> None:
        self._rejected.inc()

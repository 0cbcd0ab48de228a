"""Prometheus metrics of the orchestrator, in a registry owned by the process (or the test)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .agreement import Agreement

CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Shadow minus specialist score; symmetric, finer near 0 where most rows land.
DIFFERENCE_BUCKETS = (-0.5, -0.25, -0.1, -0.05, -0.01, 0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
SHADOW_LABELS = ("specialist", "primary_version", "shadow_version")


class ArrayHistogram:
    """A labelled Prometheus histogram observed a whole numpy array at a time
    (prometheus_client's Histogram takes one value per call: a Python loop per row).

    Its buckets may be negative, so it has no `_sum` (a sum that can fall is no counter:
    rate() would read every fall as a reset); `_count` and the buckets are counters."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = np.asarray(buckets, dtype=np.float64)
        # labels -> per-bucket counts, the last one +Inf
        self._series: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()  # scrapes run on the metrics endpoint's thread
        registry.register(self)

    def observe(self, labels: Sequence[str], values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        # Bucket i counts bounds[i - 1] < v <= bounds[i] (Prometheus' `le`).
        index = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(index, minlength=self._bounds.size + 1)
        key = tuple(labels)
        with self._lock:
            self._series[key] = self._series.get(key, 0) + counts

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            series = list(self._series.items())
        bounds = [floatToGoString(b) for b in self._bounds.tolist()] + ["+Inf"]
        for labels, counts in series:
            cumulative = np.cumsum(counts).tolist()
            values = dict(zip(self._labelnames, labels, strict=True))
            for bound, count in zip(bounds, cumulative, strict=True):
                family.samples.append(
                    Sample(f"{self._name}_bucket", {**values, "le": bound}, count)
                )
            family.samples.append(Sample(f"{self._name}_count", values, cumulative[-1]))
        yield family


class OrchestratorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.readings = Counter(
            "sentinel_orchestrator_readings_received",
            "Readings accepted for scoring.",
            registry=registry,
        )
        self.batches = Counter(
            "sentinel_orchestrator_batches_received", "Client batches accepted.", registry=registry
        )
        self.duplicate_batches = Counter(
            "sentinel_orchestrator_duplicate_batches",
            "Resent batches acked again without scoring.",
            registry=registry,
        )
        self.stalled_streams = Counter(
            "sentinel_orchestrator_stalled_streams",
            "Streams ended because their client stopped reading (stream_write_timeout_seconds).",
            registry=registry,
        )
        self.internal_errors = Counter(
            "sentinel_orchestrator_internal_errors",
            "Scoring rounds that failed unexpectedly (their stream or call ended with INTERNAL).",
            registry=registry,
        )
        self.incidents_evicted = Counter(
            "sentinel_orchestrator_incidents_evicted",
            "Open incidents resolved (reason evicted): max_sensors evicted their sensor, or the "
            "incident budget (count or bytes) was full.",
            registry=registry,
        )
        self.checkpoints = Counter(
            "sentinel_orchestrator_checkpoints",
            "Checkpoints of sensor state attempted, by result (written, failed).",
            ("result",),
            registry=registry,
        )
        for result in ("written", "failed"):  # exported at 0 before the first checkpoint
            self.checkpoints.labels(result)
        self.checkpoint_duration = Histogram(
            "sentinel_orchestrator_checkpoint_duration_seconds",
            "Duration of checkpoints (copy with scoring held back, then the file), in seconds.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.checkpoint_bytes = Gauge(
            "sentinel_orchestrator_checkpoint_bytes",
            "Size of the last checkpoint written, in bytes.",
            registry=registry,
        )
        self.rejected = Counter(
            "sentinel_orchestrator_batches_rejected",
            "Client batches rejected, by gRPC status code.",
            ("code",),
            registry=registry,
        )
        self.verdicts = Counter(
            "sentinel_orchestrator_verdicts",
            "Verdicts produced, by status.",
            ("status",),
            registry=registry,
        )
        self.anomalies = Counter(
            "sentinel_orchestrator_anomalous_verdicts",
            "Verdicts flagged anomalous.",
            registry=registry,
        )
        self.alerts = Counter(
            "sentinel_orchestrator_alerts",
            "Alerts emitted, by state.",
            ("state",),
            registry=registry,
        )
        self.specialist_latency = Histogram(
            "sentinel_orchestrator_specialist_call_duration_seconds",
            "Score call latency per specialist and engine version.",
            ("specialist", "version"),
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.specialist_errors = Counter(
            "sentinel_orchestrator_specialist_errors",
            "Failed Score calls, by specialist, engine version and gRPC code.",
            ("specialist", "version", "code"),
            registry=registry,
        )
        self.batch_latency = Histogram(
            "sentinel_orchestrator_batch_duration_seconds",
            "Time from a batch's window update to its verdicts (fan-out + combine + incidents).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.evicted_sensors = Counter(
            "sentinel_orchestrator_sensors_evicted",
            "Sensors dropped from the window store (least recently seen) to stay within the cap.",
            registry=registry,
        )
        self.alert_watchers_dropped = Counter(
            "sentinel_orchestrator_alert_watchers_dropped",
            "WatchAlerts subscribers ended because they could not keep up.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "sentinel_orchestrator_queue_depth",
            "Batches waiting in ingest queues (autoscaling signal).",
            registry=registry,
        )
        self.active_streams = Gauge(
            "sentinel_orchestrator_active_streams",
            "Open StreamTelemetry streams.",
            registry=registry,
        )
        self.sensors_tracked = Gauge(
            "sentinel_orchestrator_sensors_tracked",
            "Sensors with a window in memory.",
            registry=registry,
        )
        self.open_incidents = Gauge(
            "sentinel_orchestrator_open_incidents", "Incidents currently open.", registry=registry
        )
        self.memory_used = Gauge(
            "sentinel_orchestrator_memory_used_bytes",
            "Estimated bytes held by each part of the memory budget: histories, incidents, "
            "dedup, inflight (batches being received, scored or answered).",
            ("part",),
            registry=registry,
        )
        self.memory_budget = Gauge(
            "sentinel_orchestrator_memory_budget_bytes",
            "Most each part may hold (histories: max_sensors at the worst case per sensor; "
            "checkpoint_copy: while a checkpoint copies them), and the total budget.",
            ("part",),
            registry=registry,
        )
        self.specialist_up = Gauge(
            "sentinel_orchestrator_specialist_up",
            "1 while the specialist answers (its last Describe or Score succeeded), 0 while it is "
            "unreachable, failing or refused: its verdicts are then degraded.",
            ("specialist",),
            registry=registry,
        )

        self.shadow_rows_compared = Counter(
            "sentinel_orchestrator_shadow_rows_compared",
            "Rows both a specialist and its shadow voted on (neither warming up), by specialist "
            "and the two engine versions.",
            SHADOW_LABELS,
            registry=registry,
        )
        self.shadow_both_anomalous = Counter(
            "sentinel_orchestrator_shadow_both_anomalous",
            "Compared rows flagged by both the specialist and its shadow.",
            SHADOW_LABELS,
            registry=registry,
        )
        self.shadow_only_primary = Counter(
            "sentinel_orchestrator_shadow_only_primary_anomalous",
            "Compared rows flagged by the specialist but not by its shadow.",
            SHADOW_LABELS,
            registry=registry,
        )
        self.shadow_only_shadow = Counter(
            "sentinel_orchestrator_shadow_only_shadow_anomalous",
            "Compared rows flagged by the shadow but not by its specialist.",
            SHADOW_LABELS,
            registry=registry,
        )
        self.shadow_score_difference = ArrayHistogram(
            "sentinel_orchestrator_shadow_score_difference",
            "Shadow score minus specialist score on compared rows (calibrated, in [0, 1]).",
            SHADOW_LABELS,
            DIFFERENCE_BUCKETS,
            registry,
        )
        self.shadow_latency = Histogram(
            "sentinel_orchestrator_shadow_call_duration_seconds",
            "Score call latency per shadow (named by its specialist) and shadow engine version.",
            ("specialist", "version"),
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.shadow_errors = Counter(
            "sentinel_orchestrator_shadow_errors",
            "Failed shadow Score calls, by specialist, shadow engine version and gRPC code.",
            ("specialist", "version", "code"),
            registry=registry,
        )
        self.shadow_skipped = Counter(
            "sentinel_orchestrator_shadow_calls_skipped",
            "Shadow calls not made: busy (the stream's in-flight shadow calls at the limit), "
            "not_ready (shadow or specialist not described) or mismatch (the shadow declares "
            "another window or views than its specialist).",
            ("specialist", "reason"),
            registry=registry,
        )
        self.shadow_incidents = Counter(
            "sentinel_orchestrator_shadow_incidents_opened",
            "Incidents the verdict with the shadow in its specialist's place would have opened "
            "(counted, never sent).",
            ("specialist", "shadow_version"),
            registry=registry,
        )
        self.shadow_up = Gauge(
            "sentinel_orchestrator_shadow_up",
            "1 while the shadow answers (its last Describe or Score succeeded), else 0.",
            ("specialist",),
            registry=registry,
        )

    def bind_gauges(
        self,
        queue_depth: Callable[[], float],
        active_streams: Callable[[], float],
        sensors_tracked: Callable[[], float],
        open_incidents: Callable[[], float],
    ) -> None:
        """Gauges read live state at scrape time rather than being pushed on every change."""
        self.queue_depth.set_function(queue_depth)
        self.active_streams.set_function(active_streams)
        self.sensors_tracked.set_function(sensors_tracked)
        self.open_incidents.set_function(open_incidents)

    def bind_memory(self, used: dict[str, Callable[[], float]], budgets: dict[str, int]) -> None:
        """Bytes in use per part of the memory plan (read at scrape time), and the budgets."""
        for part, read in used.items():
            self.memory_used.labels(part).set_function(read)
        for part, budget in budgets.items():
            self.memory_budget.labels(part).set(budget)

    def bind_specialists(self, names: Sequence[str], is_up: Callable[[str], bool]) -> None:
        """One `specialist_up` series per configured specialist, read at scrape time."""
        for name in names:
            self.specialist_up.labels(name).set_function(functools.partial(_as_float, is_up, name))

    def observe_call(self, specialist: str, version: str, seconds: float, code: str) -> None:
        self.specialist_latency.labels(specialist, version or "unknown").observe(seconds)
        if code != "OK":
            self.specialist_errors.labels(specialist, version or "unknown", code).inc()

    def bind_shadows(self, names: Sequence[str], is_up: Callable[[str], bool]) -> None:
        """One `shadow_up` series per configured shadow, read at scrape time."""
        for name in names:
            self.shadow_up.labels(name).set_function(functools.partial(_as_float, is_up, name))

    def observe_shadow_call(self, specialist: str, version: str, seconds: float, code: str) -> None:
        self.shadow_latency.labels(specialist, version or "unknown").observe(seconds)
        if code != "OK":
            self.shadow_errors.labels(specialist, version or "unknown", code).inc()

    def touch_shadow(self, specialist: str, primary_version: str, shadow_version: str) -> None:
        """A shadow is ready: its series exist at 0 before its first call, so that the first
        increase() over them counts from 0 (Prometheus extrapolates a series that starts late)."""
        labels = (specialist, primary_version or "unknown", shadow_version or "unknown")
        for counter in (
            self.shadow_rows_compared,
            self.shadow_both_anomalous,
            self.shadow_only_primary,
            self.shadow_only_shadow,
        ):
            counter.labels(*labels)
        self.shadow_score_difference.observe(labels, np.empty(0))
        self.shadow_latency.labels(specialist, labels[2])
        self.shadow_incidents.labels(specialist, labels[2])

    def count_agreement(
        self, specialist: str, primary_version: str, shadow_version: str, agreement: Agreement
    ) -> None:
        labels = (specialist, primary_version or "unknown", shadow_version or "unknown")
        # Every series is touched, zero or not, so rates over them exist from the first batch.
        self.shadow_rows_compared.labels(*labels).inc(agreement.compared)
        self.shadow_both_anomalous.labels(*labels).inc(agreement.both)
        self.shadow_only_primary.labels(*labels).inc(agreement.only_primary)
        self.shadow_only_shadow.labels(*labels).inc(agreement.only_shadow)
        self.shadow_score_difference.observe(labels, agreement.differences)


def _as_float(is_up: Callable[[str], bool], name: str) -> float:
    return float(is_up(name))


# sample(name, labels) -> value or None: a registry's get_sample_value, or a lookup in
# Prometheus text scraped or written by another process.
SampleLookup = Callable[[str, dict[str, str] | None], float | None]


def lifetime_totals(sample: SampleLookup) -> dict[str, int]:
    """The counts a supervisor adds up over an orchestrator's restarts (`sentinel soak`):
    readings and batches received for scoring, duplicate batches, degraded verdicts."""

    def count(name: str, labels: dict[str, str] | None = None) -> int:
        return int(sample(f"sentinel_orchestrator_{name}_total", labels) or 0)

    return {
        "readings_received": count("readings_received"),
        "batches_received": count("batches_received"),
        "duplicate_batches": count("duplicate_batches"),
        "verdicts_degraded": count("verdicts", {"status": "degraded"}),
    }

"""Settings of the orchestrator process (env prefix SENTINEL_)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sentinel.settings import ServerSettings

from .alertmanager import check_url, parse_labels
from .batches import Limits, largest_batch_bytes
from .budget import (
    MIB,
    SENSOR_INDEX_BYTES,
    MemoryPlan,
    RoundLayout,
    ScoringBudget,
    largest_batch_cost,
    str_bytes,
)
from .combine import Policy
from .specialist_pool import parse_targets

COALESCE_DEFAULT = 8_192
DEFAULT_SPECIALISTS = "threshold=127.0.0.1:50061,statistical=127.0.0.1:50062,model=127.0.0.1:50063"


class OrchestratorSettings(ServerSettings):
    specialists: str = DEFAULT_SPECIALISTS
    """Comma-separated name=target pairs, e.g. threshold=dns:///threshold.sentinel.svc:50051."""
    combine_policy: Policy = Policy.ANY
    """How votes become a verdict: any (default), majority or weighted."""
    combine_weights: str = ""
    """Per-specialist weights for the weighted policy, e.g. model=2,threshold=1 (default 1)."""
    specialist_timeout_seconds: float = Field(default=1.0, gt=0)
    """Deadline of each Score call; a specialist slower than this is missing from the verdict."""
    shadows: str = ""
    """Shadow engines as name=target pairs, name a configured specialist (e.g.
    model=dns:///model-v2.sentinel.svc:50051): sent that specialist's Score requests, compared
    with it row by row (sentinel_orchestrator_shadow_* metrics); they never vote."""
    shadow_inflight_per_stream: int = Field(default=4, ge=1)
    """Shadow calls of one stream in flight or awaiting comparison; beyond it they are skipped
    (counted), so a slow shadow never holds a stream back."""
    max_shadow_bytes_per_sensor: int = Field(default=1_024, ge=0)
    """Per-sensor budget for the shadows' calibration state (apart from the history's, so a
    shadow never crowds out a specialist); a shadow needing more is left out."""
    shadow_verdicts: bool = False
    """Verdicts wait for the shadows (up to specialist_timeout_seconds) and carry their votes,
    for replay/evaluate --shadow. A shadow can then delay verdicts: not for production."""
    client_retries: bool = True
    """gRPC-level retries of Score calls; turn off inside Istio, which retries itself."""
    resolve_after: int = Field(default=10, ge=0)
    """Consecutive normal verdicts that resolve a sensor's open incident (0 = by time only)."""
    resolve_after_seconds: float = Field(default=0.0, ge=0)
    """Quiet time after the last anomalous reading that resolves an incident (0 = count only)."""
    stale_after_seconds: float = Field(default=900.0, gt=0)
    """Wall-clock silence after which a sensor's open incident resolves as `stale`."""
    state_dir: str = ""
    """Directory for checkpoints of sensor state, incidents and dedup memory (empty = none)."""
    checkpoint_seconds: float = Field(default=60.0, gt=0)
    """Seconds between checkpoints (one is also written on drain)."""
    final_metrics_file: str = ""
    """Write the metrics here (Prometheus text) once stopped: counts a supervisor sums over
    restarts, e.g. `sentinel soak` (empty = none)."""
    likelihood_thresholds: str = ""
    """Per-channel likelihood thresholds over the engines' defaults, e.g. statistical.level=1e-7."""
    calibration: Literal["likelihood", "raw"] = "likelihood"
    """Channels judged against the sensor's own past (likelihood), or single-reading z (raw)."""
    max_history_bytes_per_sensor: int = Field(default=4_096, ge=256)
    """Per-sensor budget for windows, views and calibration; larger declarations are refused."""
    max_sensors: int = Field(default=100_000, ge=1)
    """Sensors whose windows are kept; the least recently seen is evicted beyond this."""
    max_window_length: int = Field(default=1_000, ge=0)
    """Longest raw window a specialist may ask for; one asking for more is left out (degraded)."""
    max_batch_readings: int = Field(default=10_000, ge=1)
    """Readings allowed in one batch; larger batches are rejected with INVALID_ARGUMENT."""
    max_sensor_id_length: int = Field(default=256, ge=1)
    """Longest sensor id accepted, in characters."""
    max_future_seconds: float = Field(default=86_400.0, ge=0)
    """How far in the future a reading's timestamp may be before it is rejected."""
    min_timestamp_unix_nanos: int = Field(default=10**17, ge=0)
    """Nonzero timestamps before this (default 1973-03-03) are rejected: in nanoseconds they are
    implausibly old, and they are what seconds or milliseconds look like. 0 accepts them."""
    stream_write_timeout_seconds: float = Field(default=30.0, gt=0)
    """A stream whose client takes no event for this long (it stopped reading) is ended."""
    stream_queue_batches: int = Field(default=8, ge=1)
    """Batches buffered per stream before the orchestrator stops reading (backpressure)."""
    stream_inflight_batches: int = Field(default=2, ge=1)
    """Scoring rounds of one stream in flight at once (pipelining of fan-out calls)."""
    busy_rounds: int = Field(default=2, ge=1)
    """Rounds open across all streams from which a stream keeps to one round at a time (its
    queued batches coalesce into larger rounds instead); raise with many specialist replicas."""
    coalesce_max_readings: int = Field(default=COALESCE_DEFAULT, ge=1)
    """Queued batches of one stream are scored together up to this many readings (at most
    max_sensors; left at its default, it follows a smaller max_sensors)."""
    max_streams: int = Field(default=1_000, ge=1)
    """Concurrent StreamTelemetry streams; more are refused with RESOURCE_EXHAUSTED."""
    max_streams_per_client: int = Field(default=16, ge=1)
    """Concurrent streams per x-sentinel-client-id; more are refused with RESOURCE_EXHAUSTED."""
    max_anonymous_streams: int = Field(default=64, ge=1)
    """Concurrent streams without a client identity, all together; more: RESOURCE_EXHAUSTED."""
    client_identity: Literal["header", "mtls", "xfcc"] = "header"
    """Who a client is, for dedup and per-client limits. header: x-sentinel-client-id as sent
    (trusted network only: anyone may claim any id). mtls: the verified TLS client certificate
    (needs tls_client_ca_file). xfcc: the URI (SPIFFE id) in x-forwarded-client-cert, set by an
    Istio/Envoy sidecar that owns that header. With mtls and xfcc the header only names a
    sub-client within the authenticated identity; calls without an identity: UNAUTHENTICATED."""
    max_client_id_length: int = Field(default=128, ge=1)
    """Longest x-sentinel-client-id accepted (characters); longer ones: INVALID_ARGUMENT."""
    max_detect_readings: int = Field(default=2_000, ge=1)
    """Readings in one Detect call: its response carries a verdict per reading and has to fit
    a client's default 4 MiB receive limit. Larger: INVALID_ARGUMENT, use StreamTelemetry."""
    max_concurrent_detect: int = Field(default=64, ge=1)
    """Concurrent unary Detect calls; more are refused with RESOURCE_EXHAUSTED."""
    heartbeat_seconds: float = Field(default=30.0, gt=0, le=60)
    """An idle stream gets a heartbeat event at least this often (proxies reset silent ones)."""
    max_stream_age_seconds: float = Field(default=1_800.0, gt=0)
    """Streams are ended with a reconnect hint after this long, so load rebalances."""
    dedup_batches: int = Field(default=100_000, ge=0)
    """Recent (client id, batch id) pairs remembered so resent batches are not scored twice."""
    memory_budget_bytes: int = Field(default=768 * MIB, ge=16 * MIB)
    """Memory planned for what clients can make the orchestrator hold: histories (and their
    copy while a checkpoint is taken), incidents, dedup memory, batches in flight. Startup
    refuses limits whose worst case exceeds it. Leave ~1/4 of the container limit spare."""
    inflight_budget_bytes: int = Field(default=48 * MIB, ge=MIB)
    """Batches received and not yet answered (columns and ids while queued, then verdicts until
    sent), all streams and Detect calls together; one that does not fit: RESOURCE_EXHAUSTED."""
    stream_budget_bytes: int = Field(default=16 * MIB, ge=MIB)
    """Received bytes after which one stream is not read further until some are answered
    (backpressure); a stream holding nothing may always take one batch."""
    scoring_budget_bytes: int = Field(default=56 * MIB, ge=MIB)
    """Working memory of scoring rounds (each row's copy of its sensor's history, the votes);
    a round waits for room, holding back its own stream (backpressure, queue depth rises)."""
    dedup_budget_bytes: int = Field(default=16 * MIB, ge=0)
    """Memory of remembered batch ids; beyond it (or dedup_batches) the oldest are forgotten."""
    incident_budget_bytes: int = Field(default=32 * MIB, ge=MIB)
    """Memory of open incidents (shared equally with the shadows' trackers); beyond it the
    oldest one resolves with reason `evicted`."""
    alert_watch_queue: int = Field(default=1_000, ge=1)
    """Alerts buffered per WatchAlerts subscriber before it is ended as too slow."""
    alertmanager_url: str = ""
    """Alertmanager base URL, e.g. http://alertmanager:9093, to post alerts to (empty = off)."""
    alertmanager_severity: str = Field(default="warning", min_length=1)
    """Value of the `severity` label of every alert sent to Alertmanager."""
    alertmanager_labels: str = ""
    """Static labels added to every Alertmanager alert, e.g. cluster=prod,team=plant."""
    alertmanager_generator_url: str = ""
    """Alert link (generatorURL); {sensor_id}, {alert_id} and {trace_id} are filled in."""
    alertmanager_resend_seconds: float = Field(default=60.0, gt=0)
    """Open incidents whose sensor still reports are re-sent to Alertmanager this often."""
    alertmanager_queue: int = Field(default=10_000, ge=1)
    """Alerts waiting for Alertmanager at most; newer ones are dropped (and counted)."""
    alertmanager_timeout_seconds: float = Field(default=5.0, gt=0)
    """Timeout of each HTTP request to Alertmanager."""
    alertmanager_backoff_seconds: float = Field(default=0.5, gt=0)
    """First retry delay while Alertmanager is unreachable; doubles up to the maximum."""
    alertmanager_max_backoff_seconds: float = Field(default=30.0, gt=0)
    """Longest retry delay while Alertmanager is unreachable."""
    alertmanager_flush_seconds: float = Field(default=2.0, ge=0)
    """On shutdown, time given to deliver the alerts still queued for Alertmanager."""

    @field_validator("specialists", "shadows")
    @classmethod
    def _targets_parse(cls, value: str) -> str:
        parse_targets(value)
        return value

    @field_validator("alertmanager_url")
    @classmethod
    def _alertmanager_url(cls, value: str) -> str:
        return check_url(value.strip())

    @field_validator("alertmanager_labels")
    @classmethod
    def _alertmanager_labels(cls, value: str) -> str:
        parse_labels(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _coalesce_within_max_sensors(cls, data: object) -> object:
        # Coalescing left at its default follows a smaller max_sensors; set explicitly, a
        # contradiction is refused below.
        if isinstance(data, dict) and "coalesce_max_readings" not in data:
            try:
                max_sensors = int(data.get("max_sensors", COALESCE_DEFAULT))
            except (TypeError, ValueError):
                return data  # the field's own validation reports it
            if max_sensors < COALESCE_DEFAULT:
                data = {**data, "coalesce_max_readings": max(max_sensors, 1)}
        return data

    @model_validator(mode="after")
    def _consistent_limits(self) -> OrchestratorSettings:
        # A scoring round holds one batch, or queued batches coalesced up to
        # coalesce_max_readings: the window store must be able to hold either at once.
        if self.max_sensors < self.max_batch_readings:
            raise ValueError(
                f"max_sensors ({self.max_sensors}) must be at least max_batch_readings "
                f"({self.max_batch_readings}): one batch may name that many sensors"
            )
        if self.max_sensors < self.coalesce_max_readings:
            raise ValueError(
                f"max_sensors ({self.max_sensors}) must be at least coalesce_max_readings "
                f"({self.coalesce_max_readings}): a coalesced round may name that many sensors"
            )
        self._check_memory()
        if self.client_identity == "mtls" and not self.tls_client_ca_file:
            raise ValueError(
                "client_identity=mtls needs tls_client_ca_file (client certificates to verify)"
            )
        parse_weights(self.combine_weights)
        parse_thresholds(self.likelihood_thresholds)
        names = [t.name for t in parse_targets(self.specialists)]
        for shadow in parse_targets(self.shadows):
            if shadow.name not in names:
                raise ValueError(
                    f"shadows: {shadow.name!r} is not a configured specialist "
                    f"(specialists: {', '.join(names) or 'none'})"
                )
        if self.resolve_after == 0 and self.resolve_after_seconds == 0:
            raise ValueError("resolve_after or resolve_after_seconds must be set")
        return self

    def _check_memory(self) -> None:
        largest = largest_batch_cost(self.ingest_limits())
        if largest > self.inflight_budget_bytes:
            raise ValueError(
                f"inflight_budget_bytes ({self.inflight_budget_bytes:,}) must hold the largest "
                f"batch ({largest:,} bytes: max_batch_readings {self.max_batch_readings:,} "
                f"with sensor ids of max_sensor_id_length {self.max_sensor_id_length}, and "
                "their verdicts)"
            )
        rows = max(self.max_batch_readings, self.coalesce_max_readings)
        largest = self.scoring_budget().cost(rows)
        if largest > self.scoring_budget_bytes:
            raise ValueError(
                f"scoring_budget_bytes ({self.scoring_budget_bytes:,}) must hold the largest "
                f"round ({largest:,} bytes: {rows:,} readings, the most of max_batch_readings "
                "and coalesce_max_readings, with up to max_history_bytes_per_sensor "
                f"({self.max_history_bytes_per_sensor:,}) of history each)"
            )
        plan = self.memory_plan()
        if plan.total > self.memory_budget_bytes:
            per_sensor = plan.histories // self.max_sensors + (
                self.max_history_bytes_per_sensor if self.state_dir else 0
            )
            room = self.memory_budget_bytes - plan.total + plan.histories + plan.checkpoint_copy
            raise ValueError(
                f"the memory plan ({plan.describe()}: {plan.total / MIB:,.0f} MiB) exceeds "
                f"memory_budget_bytes ({self.memory_budget_bytes / MIB:,.0f} MiB); at most "
                f"{max(room, 0) // per_sensor:,} sensors fit (max_sensors), or raise the budget "
                "with the container's memory limit"
            )

    def memory_plan(self) -> MemoryPlan:
        """The most each part of the client-driven state may take (bytes), from these limits.
        Shadows add their calibration state per sensor (their incident trackers share the
        incident budget)."""
        shadows = self.shadow_count()
        per_sensor = (
            self.max_history_bytes_per_sensor
            + (self.max_shadow_bytes_per_sensor if shadows else 0)
            + SENSOR_INDEX_BYTES
            + str_bytes(self.max_sensor_id_length)
        )
        copy = self.max_sensors * self.max_history_bytes_per_sensor if self.state_dir else 0
        return MemoryPlan(
            histories=self.max_sensors * per_sensor,
            checkpoint_copy=copy,
            incidents=self.incident_budget_bytes,
            dedup=self.dedup_budget_bytes,
            inflight=self.inflight_budget_bytes,
            scoring=self.scoring_budget_bytes,
        )

    def shadow_count(self) -> int:
        return len(parse_targets(self.shadows)) if self.shadows else 0

    def incident_bytes_per_tracker(self) -> int:
        """The incident budget, shared equally by the incidents and each shadow's."""
        return self.incident_budget_bytes // (1 + self.shadow_count())

    def scoring_budget(self, layout: Callable[[], RoundLayout] | None = None) -> ScoringBudget:
        """The budget of scoring rounds: a row copies at most max_history_bytes_per_sensor
        (less, by the shape of the round, given the declared `layout`)."""
        return ScoringBudget(self.scoring_budget_bytes, self.max_history_bytes_per_sensor, layout)

    def max_receive_message_bytes(self) -> int:
        """gRPC's receive limit: no larger than the largest valid batch, so a bigger message is
        refused by gRPC before anything of it is parsed (and no larger than max_message_bytes)."""
        return min(self.max_message_bytes, largest_batch_bytes(self.ingest_limits()))

    def ingest_limits(self) -> Limits:
        """What a client batch must satisfy (decode_batch), for every servicer that decodes."""
        return Limits(
            max_batch_readings=self.max_batch_readings,
            max_sensor_id_length=self.max_sensor_id_length,
            max_future_seconds=self.max_future_seconds,
            min_timestamp_unix_nanos=self.min_timestamp_unix_nanos,
        )

    def thresholds(self) -> dict[str, float]:
        return parse_thresholds(self.likelihood_thresholds)

    def weights(self) -> dict[str, float]:
        return parse_weights(self.combine_weights)


def parse_weights(spec: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"weight {part!r}: expected name=number")
        if name in weights:
            raise ValueError(f"weight of {name!r} given twice")
        value = float(raw)
        # An infinite weight would turn every weighted score into NaN.
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"weight of {name!r} must be a finite number >= 0")
        weights[name] = value
    return weights


def parse_thresholds(spec: str) -> dict[str, float]:
    """`specialist.channel=p,...` → {"specialist.channel": p}, p in [0, 1) (0 = never flags)."""
    thresholds: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or "." not in name:
            raise ValueError(f"likelihood threshold {part!r}: expected specialist.channel=p")
        value = float(raw)
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"likelihood threshold of {name!r} must be in [0, 1) (0 = never flags)"
            )
        thresholds[name] = value
    return thresholds

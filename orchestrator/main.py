"""Composition root of the orchestrator process: settings → objects → server."""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import CollectorRegistry, write_to_textfile

from sentinel.allocator import keep_freed_memory
from sentinel.server import (
    GrpcServer,
    drain_and_stop,
    parse_bind,
    serve_until_signalled,
    server_credentials,
)
from sentinel.telemetry import MetricsEndpoint, Tracing, configure_logging, configure_tracing
from sentinel.v1 import orchestrator_pb2

from .alert_hub import AlertHub
from .alertmanager import AlertmanagerOptions, AlertmanagerSender
from .budget import SENSOR_INDEX_BYTES, InflightBudget
from .calibration import CalibrationParams
from .checkpointer import Checkpointer
from .combine import Combiner
from .dedup import DedupWindow
from .history import History, HistoryLimits
from .incidents import IncidentTracker
from .metrics import OrchestratorMetrics, lifetime_totals
from .pipeline import ScoringPipeline
from .servicer import OrchestratorServicer, add_to_server
from .session import StreamOptions
from .settings import OrchestratorSettings
from .shadows import Shadows
from .specialist_pool import SpecialistClient, SpecialistPool, channel_options, parse_targets
from .windows import WindowStore

log = logging.getLogger(__name__)

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name
# HTTP/2 flow control of client streams: a fixed 1 MiB window instead of one grown by BDP
# probing. gRPC reads a stream ahead of the orchestrator up to its window, outside any budget:
# measured on loopback, grown windows let 12 streams of 10 MB batches add ~30 MiB each while
# they waited to be read (+535 MiB in all), 1 MiB ones +183 MiB in all. Batches up to 1 MiB
# are written whole before a refusal can cut them off, as with the grown windows.
STREAM_WINDOW_OPTIONS = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024 * 1024))
# A health service name that turns SERVING once every configured specialist has described
# itself (Kubernetes' startupProbe asks for it). Readiness ("" and SERVICE_NAME) does not wait
# for the specialists: one sick specialist must not take every orchestrator out of service.
STARTUP_SERVICE = "sentinel.startup"


class OrchestratorProcess:
    """Everything one orchestrator needs, wired by constructor; start/stop are awaitable."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        tracing: Tracing,
        registry: CollectorRegistry | None = None,
        specialist_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = OrchestratorMetrics(self.registry)
        tracer = tracing.tracer("sentinel.orchestrator")
        self.windows = WindowStore(0, settings.max_sensors)
        self.history = History(
            self.windows,
            HistoryLimits(
                max_window_length=settings.max_window_length,
                max_bytes_per_sensor=settings.max_history_bytes_per_sensor,
            ),
            CalibrationParams(likelihood=settings.calibration == "likelihood"),
            flag_below=settings.thresholds(),
        )
        options = channel_options(settings.client_retries, settings.max_message_bytes)
        self.pool = SpecialistPool(
            [
                SpecialistClient(t, options, specialist_credentials, self.history.check)
                for t in parse_targets(settings.specialists)
            ],
            timeout_seconds=settings.specialist_timeout_seconds,
            observe=self.metrics.observe_call,
            on_declared=self.history.declare,
            tracer=tracer,
            propagator=tracing.propagator,
        )
        clients = {c.name: c for c in self.pool.clients}
        self.metrics.bind_specialists(self.pool.names, lambda name: clients[name].up)
        self.incidents = self._incident_tracker()
        combiner = Combiner(settings.combine_policy, settings.weights())
        self.shadows: Shadows | None = None
        if settings.shadows:
            self.shadows = Shadows(
                parse_targets(settings.shadows),
                options,
                specialist_credentials,
                primaries=self.pool,
                windows=self.windows,
                calibration=self.history.calibration,
                flag_below=settings.thresholds(),
                combiner=combiner,
                new_incidents=self._incident_tracker,
                metrics=self.metrics,
                tracer=tracer,
                propagator=tracing.propagator,
                timeout_seconds=settings.specialist_timeout_seconds,
                inflight=settings.shadow_inflight_per_stream,
                max_bytes_per_sensor=settings.max_shadow_bytes_per_sensor,
                in_verdicts=settings.shadow_verdicts,
            )
        self.hub = AlertHub(
            settings.alert_watch_queue, on_drop=self.metrics.alert_watchers_dropped.inc
        )
        self.dedup = dedup = DedupWindow(settings.dedup_batches, settings.dedup_budget_bytes)
        self.pipeline = ScoringPipeline(
            history=self.history,
            pool=self.pool,
            combiner=combiner,
            incidents=self.incidents,
            hub=self.hub,
            dedup=dedup,
            metrics=self.metrics,
            tracer=tracer,
            propagator=tracing.propagator,
            shadows=self.shadows,
        )
        self.checkpointer = (
            Checkpointer(
                settings.state_dir,
                settings.checkpoint_seconds,
                self.history,
                self.incidents,
                dedup,
                self.pipeline,
                self.metrics,
            )
            if settings.state_dir
            else None
        )
        self.alertmanager: AlertmanagerSender | None = None
        if settings.alertmanager_url:
            self.alertmanager = AlertmanagerSender(
                AlertmanagerOptions.from_settings(settings), self.incidents, self.registry
            )
            self.pipeline.sinks.append(self.alertmanager)
        limits = settings.ingest_limits()
        self.inflight = InflightBudget(settings.inflight_budget_bytes, limits)
        self.scoring = settings.scoring_budget(self.history.round_layout)
        self.servicer = OrchestratorServicer(
            self.pipeline,
            self.hub,
            StreamOptions(
                limits=limits,
                queue_batches=settings.stream_queue_batches,
                inflight_batches=settings.stream_inflight_batches,
                busy_rounds=settings.busy_rounds,
                coalesce_max_readings=settings.coalesce_max_readings,
                heartbeat_seconds=settings.heartbeat_seconds,
                max_age_seconds=settings.max_stream_age_seconds,
                budget_bytes=settings.stream_budget_bytes,
            ),
            max_streams=settings.max_streams,
            max_streams_per_client=settings.max_streams_per_client,
            max_concurrent_detect=settings.max_concurrent_detect,
            propagator=tracing.propagator,
            client_identity=settings.client_identity,
            max_client_id_length=settings.max_client_id_length,
            max_anonymous_streams=settings.max_anonymous_streams,
            max_detect_readings=settings.max_detect_readings,
            write_timeout_seconds=settings.stream_write_timeout_seconds,
            inflight=self.inflight,
            scoring=self.scoring,
        )
        self.metrics.bind_gauges(
            queue_depth=lambda: self.servicer.queue_depth,
            active_streams=lambda: self.servicer.active_streams,
            sensors_tracked=lambda: self.windows.sensors,
            open_incidents=lambda: self.incidents.open_count,
        )
        self.metrics.bind_memory(
            {
                "histories": self._history_bytes,
                "incidents": lambda: self.incidents.bytes,
                "dedup": lambda: self.dedup.bytes,
                "inflight": lambda: self.inflight.used,
                "scoring": lambda: self.scoring.used,
            },
            {**settings.memory_plan().parts(), "total": settings.memory_budget_bytes},
        )
        self.server = GrpcServer(
            bind_address=parse_bind(settings.host, settings.port),
            service_names=(SERVICE_NAME,),
            add_servicers=lambda s: add_to_server(self.servicer, s),
            max_message_bytes=settings.max_message_bytes,
            max_receive_bytes=settings.max_receive_message_bytes(),
            extra_options=STREAM_WINDOW_OPTIONS,
            server_credentials=server_credentials(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            ),
        )
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._housekeeping: list[asyncio.Task] = []

    def _incident_tracker(self) -> IncidentTracker:
        settings = self.settings
        return IncidentTracker(
            settings.resolve_after,
            max_open=settings.max_sensors,
            resolve_after_seconds=settings.resolve_after_seconds,
            max_bytes=settings.incident_bytes_per_tracker(),
        )

    @property
    def port(self) -> int:
        return self.server.port

    def _history_bytes(self) -> int:
        """Memory of the window store and what is kept beside it (views, calibration)."""
        windows = self.windows
        return (
            windows.capacity * self.history.bytes_per_sensor()
            + windows.sensors * SENSOR_INDEX_BYTES
            + windows.id_bytes
        )

    async def start(self) -> int:
        if self.checkpointer is not None:
            # Before the specialists describe themselves: their declarations then find the
            # restored views and keep them.
            self.checkpointer.restore()
        await self.pool.start()
        if self.shadows is not None:
            await self.shadows.start()
        port = await self.server.start()
        await self.server.set_serving(STARTUP_SERVICE, False)
        self._housekeeping.append(asyncio.create_task(self._announce_startup()))
        if self.checkpointer is not None:
            self._housekeeping.append(asyncio.create_task(self.checkpointer.run()))
        self._housekeeping.append(asyncio.create_task(self._sweep_stale_incidents()))
        if self.alertmanager is not None:
            self.alertmanager.start()
        if self.settings.metrics_port is not None:
            self.metrics_endpoint = MetricsEndpoint(
                self.registry, self.settings.host, self.settings.metrics_port
            )
        log.info(
            "orchestrator serving",
            extra={
                "port": port,
                "metrics_port": self.metrics_endpoint.port if self.metrics_endpoint else None,
                "specialists": ",".join(self.pool.names),
                "shadows": self.settings.shadows,
                "window": self.windows.length,
                "memory_plan": self.settings.memory_plan().describe(),
                "memory_budget_mib": self.settings.memory_budget_bytes // 2**20,
                "max_receive_message_bytes": self.settings.max_receive_message_bytes(),
            },
        )
        return port

    async def stop(self, drain_delay: float | None = None, grace: float | None = None) -> None:
        await drain_and_stop(
            self.server,
            self.settings.drain_delay_seconds if drain_delay is None else drain_delay,
            self.settings.shutdown_grace_seconds if grace is None else grace,
            end_streams=self.servicer.end_streams,
        )
        for task in self._housekeeping:
            task.cancel()
        await asyncio.gather(*self._housekeeping, return_exceptions=True)
        self._housekeeping.clear()
        if self.checkpointer is not None:
            await self.checkpointer.save()
        if self.alertmanager is not None:
            # After the drain, so the alerts of the last batches are in the flush.
            await self.alertmanager.stop()
        await self.pool.close()
        if self.shadows is not None:
            await self.shadows.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        if self.settings.final_metrics_file:
            write_to_textfile(self.settings.final_metrics_file, self.registry)
        log.info("orchestrator stopped", extra=self.totals())

    async def _announce_startup(self) -> None:
        await self.pool.all_described.wait()
        await self.server.set_serving(STARTUP_SERVICE, True)
        log.info("startup complete: every specialist described", extra={"port": self.port})

    async def _sweep_stale_incidents(self) -> None:
        stale_after = self.settings.stale_after_seconds
        # Checked a few times per stale period, so a silent sensor's incident resolves within
        # stale_after * 1.25 (at most 30 s late).
        interval = min(stale_after / 4, 30.0)
        while True:
            await asyncio.sleep(interval)
            self.pipeline.sweep_stale(stale_after)

    def totals(self) -> dict[str, int]:
        """Counts since this process started (see `lifetime_totals`)."""
        return lifetime_totals(self.registry.get_sample_value)


async def serve(
    settings: OrchestratorSettings, ready_file: str | None = None, console_spans: bool = False
) -> None:
    tracing = configure_tracing("sentinel-orchestrator", console=console_spans)
    await serve_until_signalled(
        OrchestratorProcess(settings, tracing), ready_file, tracing.shutdown
    )


def main(
    settings: OrchestratorSettings, ready_file: str | None = None, console_spans: bool = False
) -> None:
    configure_logging(settings.log_level, settings.log_format)
    keep_freed_memory(settings.allocator_keep_bytes)
    asyncio.run(serve(settings, ready_file, console_spans))

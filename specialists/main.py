"""Composition root of a specialist process: settings → engine → servicer → server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from sentinel.allocator import keep_freed_memory
from sentinel.server import (
    GrpcServer,
    drain_and_stop,
    parse_bind,
    serve_until_signalled,
    server_credentials,
)
from sentinel.telemetry import MetricsEndpoint, Tracing, configure_logging, configure_tracing
from sentinel.v1 import specialist_pb2, specialist_pb2_grpc

from .engine import Engine, VersionTagged
from .metrics import SpecialistMetrics
from .servicer import SpecialistServicer
from .settings import SpecialistSettings

log = logging.getLogger(__name__)

SERVICE_NAME = specialist_pb2.DESCRIPTOR.services_by_name["Specialist"].full_name


def build_engine(settings: SpecialistSettings) -> Engine:
    engine = _untagged_engine(settings)
    return VersionTagged(engine, settings.version_tag) if settings.version_tag else engine


def _untagged_engine(settings: SpecialistSettings) -> Engine:
    if settings.engine == "threshold":
        from .threshold import AdaptiveLimits, ThresholdEngine, load_rules

        rules = (
            load_rules(Path(settings.threshold_rules_file)) if settings.threshold_rules_file else []
        )
        adaptive = (
            AdaptiveLimits(
                margin=settings.adaptive_margin,
                readings=settings.adaptive_readings,
                min_history=settings.adaptive_min_history,
            )
            if settings.adaptive_limits
            else None
        )
        return ThresholdEngine(rules, adaptive)
    if settings.engine == "statistical":
        from .statistical import StatisticalEngine, StatisticalParams

        params = StatisticalParams(
            short=settings.statistical_short,
            reference=settings.statistical_reference,
            min_reference=min(60, settings.statistical_reference),
            period_seconds=settings.statistical_period_seconds,
            bucket_seconds=settings.statistical_bucket_seconds,
        )
        return StatisticalEngine(params, daily=settings.statistical_daily)
    if settings.engine == "model":
        from .model import load_model_engine

        return load_model_engine(settings.model_path)
    raise ValueError(f"unknown engine {settings.engine!r} (threshold, statistical, model)")


class SpecialistProcess:
    """One specialist server with its metrics endpoint; start/stop are awaitable."""

    def __init__(self, settings: SpecialistSettings, engine: Engine, tracing: Tracing) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = CollectorRegistry()
        self.metrics = SpecialistMetrics(self.registry, engine.name, engine.version)
        servicer = SpecialistServicer(
            engine, self.metrics, tracing.tracer("sentinel.specialist"), tracing.propagator
        )
        self.server = GrpcServer(
            bind_address=parse_bind(settings.host, settings.port),
            service_names=(SERVICE_NAME,),
            add_servicers=lambda s: specialist_pb2_grpc.add_SpecialistServicer_to_server(
                servicer, s
            ),
            max_message_bytes=settings.max_message_bytes,
            server_credentials=server_credentials(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            ),
        )
        self.metrics_endpoint: MetricsEndpoint | None = None

    async def start(self) -> int:
        port = await self.server.start()
        if self.settings.metrics_port is not None:
            self.metrics_endpoint = MetricsEndpoint(
                self.registry, self.settings.host, self.settings.metrics_port
            )
        log.info(
            "specialist serving",
            extra={"engine": self.engine.name, "version": self.engine.version, "port": port},
        )
        return port

    async def stop(self, drain_delay: float | None = None, grace: float | None = None) -> None:
        await drain_and_stop(
            self.server,
            self.settings.drain_delay_seconds if drain_delay is None else drain_delay,
            self.settings.shutdown_grace_seconds if grace is None else grace,
        )
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


async def serve(
    settings: SpecialistSettings, ready_file: str | None = None, console_spans: bool = False
) -> None:
    tracing = configure_tracing(f"sentinel-{settings.engine}", console=console_spans)
    process = SpecialistProcess(settings, build_engine(settings), tracing)
    await serve_until_signalled(process, ready_file, tracing.shutdown)


def main(
    settings: SpecialistSettings, ready_file: str | None = None, console_spans: bool = False
) -> None:
    configure_logging(settings.log_level, settings.log_format)
    keep_freed_memory(settings.allocator_keep_bytes)
    asyncio.run(serve(settings, ready_file, console_spans))

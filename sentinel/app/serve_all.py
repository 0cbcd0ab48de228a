"""`sentinel serve all`: the orchestrator on the given port plus local specialist processes.

With `--metrics-port M` every role has a /metrics endpoint: the orchestrator on M, the
specialists on M+1.. (see `specialist_metrics_ports`); the specialists' listen on loopback."""

from __future__ import annotations

import asyncio
import logging

from sentinel.app.local_mesh import DEFAULT_ENGINES, LocalMesh
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.server import install_stop_signals, write_ready_file
from sentinel.telemetry import configure_logging, configure_tracing

log = logging.getLogger(__name__)


async def serve_all(
    settings: OrchestratorSettings, ready_file: str | None, console_spans: bool
) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    tracing = configure_tracing("sentinel-orchestrator", console=console_spans)
    mesh = LocalMesh(
        log_level=settings.log_level,
        metrics_ports=specialist_metrics_ports(settings.metrics_port, DEFAULT_ENGINES),
    )
    try:
        await mesh.start_specialists()
        orchestrator = await mesh.start_orchestrator(settings, tracing)
        endpoint = orchestrator.metrics_endpoint
        write_ready_file(ready_file, orchestrator.port, endpoint.port if endpoint else None)
        metrics = {
            "orchestrator": endpoint.port if endpoint is not None else None,
            **{name: c.metrics_port for name, c in mesh.specialists.items()},
        }
        log.info(
            "mesh serving",
            extra={
                "port": orchestrator.port,
                "specialists": mesh.specialist_targets,
                **(
                    {"metrics": ",".join(f"{k}={v}" for k, v in metrics.items())}
                    if endpoint is not None
                    else {}
                ),
            },
        )
        await stop.wait()
    finally:
        await mesh.stop()
        tracing.shutdown()


def specialist_metrics_ports(base: int | None, engines: tuple[str, ...]) -> dict[str, int]:
    """`serve all --metrics-port M`: the orchestrator on M, the specialists on M+1, M+2, ... in
    engine order (threshold, statistical, model); M = 0 gives every role a free port."""
    if base is None:
        return {}
    return {name: base + 1 + i if base else 0 for i, name in enumerate(engines)}


def main(settings: OrchestratorSettings, ready_file: str | None, console_spans: bool) -> None:
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve_all(settings, ready_file, console_spans))

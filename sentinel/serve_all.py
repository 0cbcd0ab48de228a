"""`sentinel serve all`: the orchestrator on the given port plus local specialist processes."""

from __future__ import annotations

import asyncio
import logging

from sentinel.local_mesh import LocalSpecialists
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.server import install_stop_signals, write_ready_file
from sentinel.telemetry import configure_logging, configure_tracing

log = logging.getLogger(__name__)


async def serve_all(
    settings: OrchestratorSettings, ready_file: str | None, console_spans: bool
) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    specialists = LocalSpecialists(log_level=settings.log_level)
    await specialists.start()
    tracing = configure_tracing("sentinel-orchestrator", console=console_spans)
    orchestrator = OrchestratorProcess(
        settings.model_copy(update={"specialists": specialists.targets}), tracing
    )
    try:
        port = await orchestrator.start()
        write_ready_file(ready_file, port)
        log.info("mesh serving", extra={"port": port, "specialists": specialists.targets})
        await stop.wait()
    finally:
        await orchestrator.stop()
        await specialists.stop()
        tracing.shutdown()


def main(settings: OrchestratorSettings, ready_file: str | None, console_spans: bool) -> None:
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve_all(settings, ready_file, console_spans))

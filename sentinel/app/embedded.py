"""An orchestrator in this process plus specialist child processes, for one-shot commands."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sentinel.app.local_mesh import LocalSpecialists
from sentinel.telemetry import Tracing, configure_tracing


@contextlib.asynccontextmanager
async def embedded_mesh(
    tracing: Tracing | None = None, **orchestrator_settings
) -> AsyncIterator[str]:
    """Yields the orchestrator's target (127.0.0.1:port)."""
    from sentinel.orchestrator.main import OrchestratorProcess
    from sentinel.orchestrator.settings import OrchestratorSettings

    specialists = LocalSpecialists()
    await specialists.start()
    owned_tracing = tracing is None
    tracing = tracing or configure_tracing("sentinel-embedded")
    orchestrator = None
    try:
        settings = OrchestratorSettings(
            **{"port": 0, "drain_delay_seconds": 0, **orchestrator_settings},
            specialists=specialists.targets,
        )
        orchestrator = OrchestratorProcess(settings, tracing)
        await orchestrator.start()
        yield f"127.0.0.1:{orchestrator.port}"
    finally:
        if orchestrator is not None:
            await orchestrator.stop(drain_delay=0, grace=1)
        await specialists.stop()
        if owned_tracing:
            tracing.shutdown()  # flush spans (bounded even when the collector is down)

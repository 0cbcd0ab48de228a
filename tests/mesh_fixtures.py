"""Real in-process servers on loopback ports for tests (imported by conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.main import SpecialistProcess, build_engine
from sentinel.specialists.settings import SpecialistSettings

from sentinel.telemetry import Tracing, build_propagator
from sentinel.v1 import orchestrator_pb2_grpc, specialist_pb2, specialist_pb2_grpc

# The demo's rule (a hard high limit of 90 for every sensor): the threshold specialist of a test
# mesh uses it unless the test passes its own `threshold_rules_file` (None = no hard limits), so
# a reading above 90 is an instant, deterministic anomaly while the other engines warm up.
LIMIT_90_RULES = str(Path(__file__).resolve().parent / "data" / "limit_90.toml")

# Settings that choose what an engine computes (kept when a specialist is restarted).
ENGINE_FIELDS = tuple(
    name
    for name in SpecialistSettings.model_fields
    if name.startswith(("threshold_", "adaptive_", "statistical_", "model_"))
)


class HeldSpecialist(specialist_pb2_grpc.SpecialistServicer):
    """Describes itself, then answers Score only once `release` is set: the orchestrator's
    rounds stay open and its queues fill. `waiting` counts the Score calls held."""

    def __init__(self, name: str = "held") -> None:
        self.name = name
        self.release = asyncio.Event()
        self.waiting = 0

    async def Describe(self, request, context):  # noqa: N802
        return specialist_pb2.DescribeResponse(
            engine=self.name, engine_version="0", window_length=0
        )

    async def Score(self, request, context):  # noqa: N802
        self.waiting += 1
        await self.release.wait()
        rows = len(request.values)
        return specialist_pb2.ScoreResponse(
            scores=[0.0] * rows,
            anomalies=[False] * rows,
            reasons=[""] * rows,
            warming_up=[False] * rows,
        )


def metric_samples(url: str) -> dict[tuple[str, tuple], float]:
    """A /metrics endpoint's samples: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def no_tracing() -> Tracing:
    return Tracing(trace.NoOpTracerProvider(), build_propagator())


async def start_specialist(engine: str, port: int = 0, **overrides) -> SpecialistProcess:
    settings = SpecialistSettings(engine=engine, port=port, drain_delay_seconds=0, **overrides)
    process = SpecialistProcess(settings, build_engine(settings), no_tracing())
    await process.start()
    return process


@dataclass
class Mesh:
    orchestrator: OrchestratorProcess
    specialists: dict[str, SpecialistProcess]
    channel: grpc.aio.Channel
    stub: orchestrator_pb2_grpc.OrchestratorStub
    extra: list = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.orchestrator.port}"

    async def restart_specialist(self, name: str) -> SpecialistProcess:
        """Start `name` again on the same port it had (after it was stopped)."""
        old = self.specialists[name]
        process = await start_specialist(
            old.settings.engine, port=old.server.port, **_engine_overrides(old.settings)
        )
        self.specialists[name] = process
        return process


def _engine_overrides(settings: SpecialistSettings) -> dict:
    return {name: getattr(settings, name) for name in ENGINE_FIELDS}


@contextlib.asynccontextmanager
async def running_mesh(
    engines: Sequence[str] = ("threshold", "statistical", "model"),
    specialist_overrides: dict[str, dict] | None = None,
    tracing: Tracing | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    **orchestrator_overrides,
) -> AsyncIterator[Mesh]:
    overrides = {name: dict(o) for name, o in (specialist_overrides or {}).items()}
    overrides.setdefault("threshold", {}).setdefault("threshold_rules_file", LIMIT_90_RULES)
    specialists: dict[str, SpecialistProcess] = {}
    for engine in engines:
        specialists[engine] = await start_specialist(engine, **overrides.get(engine, {}))
    targets = ",".join(f"{name}=127.0.0.1:{p.server.port}" for name, p in specialists.items())
    orchestrator_overrides.setdefault("resolve_after", 5)  # incidents resolve within a test
    settings = OrchestratorSettings(
        port=0,
        specialists=targets,
        drain_delay_seconds=0,
        shutdown_grace_seconds=1,
        **orchestrator_overrides,
    )
    orchestrator = OrchestratorProcess(settings, tracing or no_tracing())
    orchestrator.server.interceptors = tuple(interceptors)
    await orchestrator.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}")
    try:
        yield Mesh(
            orchestrator, specialists, channel, orchestrator_pb2_grpc.OrchestratorStub(channel)
        )
    finally:
        await channel.close()
        await orchestrator.stop(drain_delay=0, grace=0.5)
        for process in specialists.values():
            with contextlib.suppress(Exception):
                await process.stop(drain_delay=0, grace=0)

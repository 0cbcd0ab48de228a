"""The mesh on this machine: the one launcher behind `serve all`, `demo`, `evaluate`, `bench`
and `soak` (and the tests that need real processes).

- Specialists always run as child processes (`sentinel serve ENGINE`), as in a cluster: the
  engines use every core and a crashed engine does not take the orchestrator down.
- The orchestrator runs in this process (`start_orchestrator`: serve all, demo, evaluate — one
  process to stop, its state in reach) or as a child too (`start_orchestrator_child`: bench and
  soak — its CPU measured apart, restartable on its port, killable).

A child binds the port it is given (0 = a free one) and reports its gRPC and metrics ports in
a ready file, so the parent never guesses free ports; what a parent learns from a running child
it learns from the child's /metrics (or, once it stopped, from the final metrics it wrote), never
from its log. The ready file lives in a `sentinel-mesh-*` directory only while the child starts.
Every child dies with this process however it ends (`sentinel.lifeline`). An orchestrator counts
as started once it has described every specialist (its startup health service).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from sentinel.lifeline import child_env
from sentinel.orchestrator.main import STARTUP_SERVICE, OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.telemetry import Tracing, configure_tracing

DEFAULT_ENGINES = ("threshold", "statistical", "model")
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# Settings of the process that starts a local mesh which its children must not inherit: the
# internal hops are plaintext on loopback, and each child picks its own ports and files.
PARENT_ONLY_SETTINGS = frozenset(
    {
        "SENTINEL_HOST",
        "SENTINEL_PORT",
        "SENTINEL_METRICS_PORT",
        "SENTINEL_TLS_CERT_FILE",
        "SENTINEL_TLS_KEY_FILE",
        "SENTINEL_TLS_CLIENT_CA_FILE",
        "SENTINEL_ALLOW_INSECURE",
        "SENTINEL_FINAL_METRICS_FILE",
    }
)
# A local mesh's children stop at once unless told otherwise: no router has to notice them go.
QUICK_STOP_ENV = {"SENTINEL_DRAIN_DELAY_SECONDS": "0", "SENTINEL_SHUTDOWN_GRACE_SECONDS": "1"}


@dataclass
class RoleChild:
    """`sentinel serve ROLE` as a child process on loopback, restartable on the same ports."""

    role: str
    args: Sequence[str] = ()
    """Extra `serve` arguments (--pass-through, --rules FILE, --specialists ...)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """On top of this process's environment (less PARENT_ONLY_SETTINGS)."""
    output: int | None = None
    """Where the child's stdout and stderr (its logs) go; None = this process's."""
    port: int = 0
    """gRPC port; 0 = a free one at the first start (restarts reuse the port bound)."""
    metrics_port: int | None = None
    """/metrics port (0 = a free one at the first start); None = no endpoint."""
    record_final_metrics: bool = False
    """Have each incarnation write its metrics when it stops (`final_metrics`): counts over a
    whole run across restarts. Needs SENTINEL_FINAL_METRICS_FILE support (the orchestrator)."""
    process: subprocess.Popen | None = field(default=None, init=False)
    exit_codes: list[int] = field(default_factory=list, init=False)
    final_metrics: list[str | None] = field(default_factory=list, init=False)
    """Per stopped incarnation, the Prometheus text it wrote (None: it wrote none — killed)."""
    _records: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self, timeout: float = 30.0) -> int:
        """Start (again), wait for the ready file; returns the gRPC port."""
        if self.running:
            raise RuntimeError(f"serve {self.role} is already running")
        env = {k: v for k, v in os.environ.items() if k not in PARENT_ONLY_SETTINGS}
        env.update(self.env)
        if self.record_final_metrics:
            env["SENTINEL_FINAL_METRICS_FILE"] = str(self._final_metrics_file())
        env.update(child_env())
        with tempfile.TemporaryDirectory(prefix="sentinel-mesh-") as workdir:
            ready = Path(workdir) / "ready"
            self.process = subprocess.Popen(
                self._command(ready),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=None if self.output is None else subprocess.STDOUT,
            )
            try:
                self.port, self.metrics_port = await ready_ports(
                    self.process, ready, time.monotonic() + timeout
                )
            except BaseException:
                _kill(self.process)
                raise
        return self.port

    def _command(self, ready: Path) -> list[str]:
        metrics = () if self.metrics_port is None else ("--metrics-port", str(self.metrics_port))
        return serve_command(self.role, ready, "--port", str(self.port), *metrics, *self.args)

    def send_signal(self, sig: int) -> None:
        """E.g. SIGSTOP / SIGCONT to hang and resume the child."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the child and wait for it to exit (SIGKILL after `timeout`); its exit code."""
        if self.process is None:
            raise RuntimeError(f"serve {self.role} was never started")
        self.send_signal(sig)
        try:
            code = await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = await asyncio.to_thread(self.process.wait)
        self.exit_codes.append(code)
        if self.record_final_metrics:
            written = self._final_metrics_file()
            self.final_metrics.append(written.read_text() if written.exists() else None)
            written.unlink(missing_ok=True)
        return code

    async def restart(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop with `sig`, start again on the same ports; the old incarnation's exit code."""
        code = await self.stop(sig, timeout)
        await self.start(timeout)
        return code

    async def close(self) -> None:
        """Stop if running; remove what the child left for us."""
        if self.running:
            await self.stop()
        if self._records is not None:
            self._records.cleanup()
            self._records = None

    def metrics_text(self, timeout: float = 5.0) -> str | None:
        """The child's /metrics now (None without an endpoint, or if it does not answer)."""
        if self.metrics_port is None:
            return None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read().decode()
        except OSError:
            return None

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample of the child's /metrics now (None if absent or unreachable)."""
        text = self.metrics_text()
        return None if text is None else sample_value(text, name, labels)

    def _final_metrics_file(self) -> Path:
        # Kept for the child's life (not only while it starts): it is written when it stops.
        if self._records is None:
            self._records = tempfile.TemporaryDirectory(prefix="sentinel-mesh-")
        return Path(self._records.name) / "final.prom"


@dataclass
class LocalMesh:
    """Specialists as child processes, plus an orchestrator in this process or as a child.

    `async with LocalMesh() as mesh:` starts the specialists and stops everything at the end."""

    engines: Sequence[str] = DEFAULT_ENGINES
    specialist_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Per engine, extra `serve` arguments."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Every child's environment, on top of this process's."""
    log_level: str = "WARNING"
    """The children's SENTINEL_LOG_LEVEL (unless `env` sets it)."""
    metrics_ports: Mapping[str, int] = field(default_factory=dict)
    """Per specialist, its /metrics port (0 = a free one); those not named have no endpoint."""
    output: int | None = None
    """Where the children's logs go; None = this process's stdout."""
    specialists: dict[str, RoleChild] = field(default_factory=dict, init=False)
    orchestrator: OrchestratorProcess | RoleChild | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        env = {"SENTINEL_LOG_LEVEL": self.log_level, **QUICK_STOP_ENV, **self.env}
        self.specialists = {
            name: RoleChild(
                name,
                self.specialist_args.get(name, ()),
                env=env,
                output=self.output,
                metrics_port=self.metrics_ports.get(name),
            )
            for name in self.engines
        }

    @property
    def specialist_targets(self) -> str:
        """The orchestrator's SENTINEL_SPECIALISTS: `name=127.0.0.1:port,...`."""
        return ",".join(f"{name}={c.target}" for name, c in self.specialists.items())

    @property
    def target(self) -> str:
        """The orchestrator's address."""
        if self.orchestrator is None:
            raise RuntimeError("no orchestrator started")
        return f"127.0.0.1:{self.orchestrator.port}"

    async def __aenter__(self) -> LocalMesh:
        await self.start_specialists()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start_specialists(self, timeout: float = 30.0) -> None:
        """Start every specialist (concurrently); if one fails, none is left running."""
        started = await asyncio.gather(
            *(child.start(timeout) for child in self.specialists.values()), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(c.close() for c in self.specialists.values()))
            raise failed[0]

    async def start_orchestrator(
        self, settings: OrchestratorSettings, tracing: Tracing, timeout: float = 30.0
    ) -> OrchestratorProcess:
        """An orchestrator in this process scoring on the specialists (`settings.specialists`
        is replaced); returns once it has described every one."""
        orchestrator = OrchestratorProcess(
            settings.model_copy(update={"specialists": self.specialist_targets}), tracing
        )
        self.orchestrator = orchestrator
        await orchestrator.start()
        try:
            await asyncio.wait_for(orchestrator.pool.all_described.wait(), timeout)
        except TimeoutError:
            missing = [c.name for c in orchestrator.pool.clients if not c.described]
            raise TimeoutError(
                f"specialists {missing} did not describe themselves within {timeout:g}s"
            ) from None
        return orchestrator

    async def start_orchestrator_child(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
        record_final_metrics: bool = False,
        wait_described: bool = True,
        timeout: float = 30.0,
    ) -> RoleChild:
        """`sentinel serve orchestrator ARGS` as a child scoring on the specialists; returns
        once it has described every one (unless `wait_described` is False: the pass-through
        orchestrator describes nothing)."""
        child = RoleChild(
            "orchestrator",
            ("--specialists", self.specialist_targets, *args),
            env={"SENTINEL_LOG_LEVEL": self.log_level, **QUICK_STOP_ENV, **self.env, **(env or {})},
            output=self.output,
            metrics_port=metrics_port,
            record_final_metrics=record_final_metrics,
        )
        self.orchestrator = child
        await child.start(timeout)
        if wait_described:
            await wait_started(child.target, timeout)
        return child

    def pids(self) -> dict[str, int]:
        """{role: pid} of the child processes running now."""
        children = dict(self.specialists)
        if isinstance(self.orchestrator, RoleChild):
            children["orchestrator"] = self.orchestrator
        return {n: c.process.pid for n, c in children.items() if c.running and c.process}

    async def stop(self) -> None:
        """The orchestrator first (it drains onto live specialists), then the specialists."""
        if isinstance(self.orchestrator, OrchestratorProcess):
            await self.orchestrator.stop()
        elif isinstance(self.orchestrator, RoleChild):
            await self.orchestrator.close()
        await asyncio.gather(*(c.close() for c in self.specialists.values()))


@contextlib.asynccontextmanager
async def embedded_mesh(**orchestrator_settings: Any) -> AsyncIterator[str]:
    """The whole mesh for a one-shot command (replay, evaluate): specialist children and an
    orchestrator in this process; yields the orchestrator's target."""
    quick = {"port": 0, "drain_delay_seconds": 0, "shutdown_grace_seconds": 1}
    settings = OrchestratorSettings(**{**quick, **orchestrator_settings})
    tracing = configure_tracing("sentinel-embedded")
    try:
        async with LocalMesh() as mesh:
            await mesh.start_orchestrator(settings, tracing)
            yield mesh.target
    finally:
        tracing.shutdown()  # flush spans (bounded even when the collector is down)


async def wait_started(target: str, timeout: float = 30.0) -> None:
    """Wait until the orchestrator at `target` reports its startup service SERVING: it has
    described every specialist. Raises TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    request = health_pb2.HealthCheckRequest(service=STARTUP_SERVICE)
    async with grpc.aio.insecure_channel(target) as channel:
        # (Not HealthStub: its type stubs lack the methods.)
        check = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while True:
            try:
                response = await check(request, timeout=2)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the orchestrator at {target} did not describe every specialist "
                    f"within {timeout:g}s (health service {STARTUP_SERVICE!r})"
                )
            await asyncio.sleep(0.05)


def serve_command(role: str, ready: Path, *args: str) -> list[str]:
    """`sentinel serve ROLE` on loopback, reporting its ports through `ready` (for a caller
    that runs the process itself; RoleChild does all of it)."""
    return [
        # -P: the working directory is not put on sys.path, so no file there can shadow us.
        sys.executable, "-P", "-m", "sentinel", "serve", role,
        "--host", "127.0.0.1", "--ready-file", str(ready), *args,
    ]  # fmt: skip


async def wait_ready(process: subprocess.Popen, ready: Path, deadline: float) -> int:
    """The gRPC port a `serve_command` child wrote to `ready` (see `ready_ports`)."""
    return (await ready_ports(process, ready, deadline))[0]


async def ready_ports(
    process: subprocess.Popen, ready: Path, deadline: float
) -> tuple[int, int | None]:
    """The gRPC port and the metrics port (None without an endpoint) a `serve_command` child
    wrote to `ready`; raises if it exits first or has not started by `deadline` (monotonic)."""
    what = " ".join(map(str, process.args[4:6])) if isinstance(process.args, list) else "child"
    while time.monotonic() < deadline:
        if ready.exists():
            lines = ready.read_text(encoding="utf-8").split()
            return int(lines[0]), int(lines[1]) if len(lines) > 1 else None
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} did not start in time")


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def sample_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of sample `name` (with exactly `labels`, or the first of any labels) in
    Prometheus text; None if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == dict(labels)):
                return sample.value
    return None


def sample_sum(text: str, name: str) -> float:
    """The sum of sample `name` over all its label sets in Prometheus text (0 if absent)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )

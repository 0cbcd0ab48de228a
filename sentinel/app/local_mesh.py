"""The whole mesh on one machine: specialists as child processes on loopback ports.

Each specialist is its own process (as in a cluster), so the engines use every core and a
crashed engine does not take the orchestrator down. Children bind port 0 and report the port
through a ready file; the parent never guesses free ports. The ready files live in a
`sentinel-mesh-*` directory only while children start (it is removed once they reported), and
every child dies with this process however it ends (`sentinel.lifeline`).
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
from dataclasses import dataclass, field
from pathlib import Path

from sentinel.lifeline import child_env

DEFAULT_ENGINES = ("threshold", "statistical", "model")


@dataclass
class SpecialistChild:
    name: str
    process: subprocess.Popen
    port: int
    metrics_port: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalSpecialists:
    """Start/stop specialist processes; `targets` is the orchestrator's SENTINEL_SPECIALISTS."""

    engines: tuple[str, ...] = DEFAULT_ENGINES
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    log_level: str = "WARNING"
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Per engine, the /metrics port (0 = a free one); engines not named get no endpoint."""
    stdout: int | None = None
    """Where the children's stdout (their logs) goes; None = this process's stdout."""
    children: dict[str, SpecialistChild] = field(default_factory=dict)

    @property
    def targets(self) -> str:
        return ",".join(f"{c.name}={c.target}" for c in self.children.values())

    async def start(self, timeout: float = 30.0) -> None:
        with tempfile.TemporaryDirectory(prefix="sentinel-mesh-") as workdir:
            pending = {name: self._spawn(name, Path(workdir)) for name in self.engines}
            deadline = time.monotonic() + timeout
            try:
                for name, (process, ready) in pending.items():
                    ports = await wait_ready_ports(process, ready, deadline)
                    self.children[name] = SpecialistChild(name, process, *ports)
            except BaseException:
                for process, _ in pending.values():
                    _terminate(process)
                raise

    def _spawn(self, name: str, workdir: Path, port: int = 0) -> tuple[subprocess.Popen, Path]:
        ready = workdir / f"{name}.port"
        env = {
            # The parent's public-facing settings are not the children's: the internal hops
            # are plaintext on loopback, each child picks its own ports.
            **{k: v for k, v in os.environ.items() if k not in PARENT_ONLY_SETTINGS},
            "SENTINEL_LOG_LEVEL": self.log_level,
            "SENTINEL_DRAIN_DELAY_SECONDS": "0",
            "SENTINEL_SHUTDOWN_GRACE_SECONDS": "1",
            **self.env,
            **child_env(),
        }
        metrics = self.metrics_ports.get(name)
        if name in self.children and self.children[name].metrics_port is not None:
            metrics = self.children[name].metrics_port  # a restart keeps its ports
        command = serve_command(
            name,
            ready,
            "--port",
            str(port),
            *(("--metrics-port", str(metrics)) if metrics is not None else ()),
            *self.extra_args.get(name, []),
        )
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self.stdout)
        return process, ready

    async def restart(self, name: str, timeout: float = 30.0) -> SpecialistChild:
        """Start `name` again on its previous port (after it was killed)."""
        old = self.children[name]
        with tempfile.TemporaryDirectory(prefix="sentinel-mesh-") as workdir:
            process, ready = self._spawn(name, Path(workdir), old.port)
            try:
                ports = await wait_ready_ports(process, ready, time.monotonic() + timeout)
            except BaseException:
                _terminate(process)
                raise
        self.children[name] = SpecialistChild(name, process, *ports)
        return self.children[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.children[name]
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(sig)
        child.process.wait(timeout=10)

    async def stop(self) -> None:
        for child in self.children.values():
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                await asyncio.to_thread(child.process.wait, 10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


# Settings of the process that starts a local mesh which its children must not inherit.
PARENT_ONLY_SETTINGS = frozenset(
    {
        "SENTINEL_HOST",
        "SENTINEL_PORT",
        "SENTINEL_METRICS_PORT",
        "SENTINEL_TLS_CERT_FILE",
        "SENTINEL_TLS_KEY_FILE",
        "SENTINEL_TLS_CLIENT_CA_FILE",
        "SENTINEL_ALLOW_INSECURE",
    }
)


def serve_command(role: str, ready: Path, *args: str) -> list[str]:
    """`sentinel serve ROLE` on loopback, reporting its bound port through `ready`."""
    return [
        # -P: the working directory is not put on sys.path, so no file there can shadow us.
        sys.executable, "-P", "-m", "sentinel", "serve", role,
        "--host", "127.0.0.1", "--ready-file", str(ready), *args,
    ]  # fmt: skip


async def wait_ready(process: subprocess.Popen, ready: Path, deadline: float) -> int:
    """The port a `serve_command` child wrote to `ready`; raises if it exits or times out."""
    return (await wait_ready_ports(process, ready, deadline))[0]


async def wait_ready_ports(
    process: subprocess.Popen, ready: Path, deadline: float
) -> tuple[int, int | None]:
    """The gRPC port and the metrics port (None without an endpoint) a child reported."""
    while time.monotonic() < deadline:
        if ready.exists():
            lines = ready.read_text(encoding="utf-8").split()
            return int(lines[0]), int(lines[1]) if len(lines) > 1 else None
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(process.args[3:5])} exited with {process.returncode}")
        await asyncio.sleep(0.05)
    process.kill()
    raise TimeoutError(f"{' '.join(process.args[3:5])} did not start in time")

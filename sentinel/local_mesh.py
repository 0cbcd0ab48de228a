"""The whole mesh on one machine: specialists as child processes on loopback ports.

Each specialist is its own process (as in a cluster), so the engines use every core and a
crashed engine does not take the orchestrator down. Children bind port 0 and report the port
through a ready file; the parent never guesses free ports.
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

DEFAULT_ENGINES = ("threshold", "statistical", "model")


@dataclass
class SpecialistChild:
    name: str
    process: subprocess.Popen
    port: int

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
    stdout: int | None = None
    """Where the children's stdout (their logs) goes; None = this process's stdout."""
    children: dict[str, SpecialistChild] = field(default_factory=dict)
    _workdir: tempfile.TemporaryDirectory | None = None

    @property
    def targets(self) -> str:
        return ",".join(f"{c.name}={c.target}" for c in self.children.values())

    async def start(self, timeout: float = 30.0) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="sentinel-mesh-")
        pending = {name: self._spawn(name) for name in self.engines}
        deadline = time.monotonic() + timeout
        for name, (process, ready) in pending.items():
            port = await wait_ready(process, ready, deadline)
            self.children[name] = SpecialistChild(name, process, port)

    def _spawn(self, name: str, port: int = 0) -> tuple[subprocess.Popen, Path]:
        assert self._workdir is not None
        ready = Path(self._workdir.name) / f"{name}.port"
        ready.unlink(missing_ok=True)
        env = {
            **os.environ,
            "SENTINEL_LOG_LEVEL": self.log_level,
            "SENTINEL_DRAIN_DELAY_SECONDS": "0",
            "SENTINEL_SHUTDOWN_GRACE_SECONDS": "1",
            **self.env,
        }
        command = serve_command(name, ready, "--port", str(port), *self.extra_args.get(name, []))
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self.stdout)
        return process, ready

    async def restart(self, name: str, timeout: float = 30.0) -> SpecialistChild:
        """Start `name` again on its previous port (after it was killed)."""
        old = self.children[name]
        process, ready = self._spawn(name, old.port)
        port = await wait_ready(process, ready, time.monotonic() + timeout)
        self.children[name] = SpecialistChild(name, process, port)
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
        if self._workdir is not None:
            self._workdir.cleanup()


def serve_command(role: str, ready: Path, *args: str) -> list[str]:
    """`sentinel serve ROLE` on loopback, reporting its bound port through `ready`."""
    return [
        # -P: the working directory is not put on sys.path, so no file there can shadow us.
        sys.executable, "-P", "-m", "sentinel", "serve", role,
        "--host", "127.0.0.1", "--ready-file", str(ready), *args,
    ]  # fmt: skip


async def wait_ready(process: subprocess.Popen, ready: Path, deadline: float) -> int:
    """The port a `serve_command` child wrote to `ready`; raises if it exits or times out."""
    while time.monotonic() < deadline:
        if ready.exists():
            return int(ready.read_text(encoding="utf-8"))
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(process.args[3:5])} exited with {process.returncode}")
        await asyncio.sleep(0.05)
    process.kill()
    raise TimeoutError(f"{' '.join(process.args[3:5])} did not start in time")

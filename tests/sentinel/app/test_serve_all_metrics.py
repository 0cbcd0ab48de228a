"""`sentinel serve all --metrics-port M`: every role's metrics are reachable (the orchestrator on
M, the specialists on M+1, M+2, M+3); it used to serve only the orchestrator's."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sentinel.app.serve_all import specialist_metrics_ports


def free_run(length: int) -> int:
    """A base port with `length` consecutive free ports."""
    for _ in range(200):
        base = random.randint(20_000, 60_000)
        sockets = []
        try:
            for port in range(base, base + length):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port run")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_every_role_of_serve_all_has_its_metrics_port(tmp_path: Path) -> None:
    base = free_run(4)
    ready = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "serve", "all", "--port", "0",
         "--metrics-port", str(base), "--ready-file", str(ready)],
        env={**os.environ, "SENTINEL_LOG_LEVEL": "INFO", "SENTINEL_LOG_FORMAT": "json",
             "SENTINEL_DRAIN_DELAY_SECONDS": "0"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert ready.read_text().split()[1] == str(base)
        assert "sentinel_orchestrator_queue_depth" in scrape(base)
        for offset, engine in enumerate(("threshold", "statistical", "model"), start=1):
            text = scrape(base + offset)
            assert "sentinel_specialist_score_duration_seconds" in text
            assert "sentinel_orchestrator_" not in text and f'engine="{engine}"' in text
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    serving = next(json.loads(line) for line in out.splitlines() if '"mesh serving"' in line)
    assert serving["metrics"] == (
        f"orchestrator={base},threshold={base + 1},statistical={base + 2},model={base + 3}"
    )


def test_metrics_port_layout() -> None:
    engines = ("threshold", "statistical", "model")
    assert specialist_metrics_ports(None, engines) == {}
    assert specialist_metrics_ports(9100, engines) == {
        "threshold": 9101,
        "statistical": 9102,
        "model": 9103,
    }
    assert specialist_metrics_ports(0, engines) == dict.fromkeys(engines, 0)

"""A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port, with a
webhook receiver in this process that records every notification it sends (firing/resolved)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

BINARY = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")


def require_alertmanager() -> str:
    """The binary's path; skips without it, but fails in CI (.ci/run installs it)."""
    if BINARY is None:
        message = "alertmanager not installed (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; .ci/run installs it, so CI must have it")
        pytest.skip(message)
    return BINARY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.notifications.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class AlertmanagerServer:
    """start()/stop() may be repeated: the port and the webhook stay, alerts (memory) do not."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = require_alertmanager()
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._webhook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self._webhook.notifications = []  # type: ignore[attr-defined]
        threading.Thread(target=self._webhook.serve_forever, daemon=True).start()
        # Group by everything and flush fast, so each alert's notifications come within ~0.1 s.
        (workdir / "alertmanager.yml").write_text(
            f"""
route:
  receiver: recorder
  group_by: ['...']
  group_wait: 0s
  group_interval: 100ms
  repeat_interval: 1h
receivers:
  - name: recorder
    webhook_configs:
      - url: http://127.0.0.1:{self._webhook.server_port}/
        send_resolved: true
"""
        )

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return self._webhook.notifications  # type: ignore[attr-defined]

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.workdir / "alertmanager.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            "alertmanager did not become ready:\n"
            + (self.workdir / "alertmanager.log").read_text()[-2000:]
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        self._webhook.shutdown()
        self._webhook.server_close()

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Active alerts (the v2 API lists no resolved ones) whose labels include `labels`."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in labels.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as response:
            return json.loads(response.read())

    def post(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            json.dumps(alerts).encode(),
            {"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()

    def notified(self, status: str, **labels: str) -> list[dict[str, Any]]:
        """Alerts the receiver was notified of with `status` (firing/resolved), oldest first."""
        return [
            alert
            for notification in list(self.notifications)
            for alert in notification["alerts"]
            if alert["status"] == status
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]

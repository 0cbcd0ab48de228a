"""Children die with their parent on every exit path, and leave no temporary directory.

`sentinel serve all` used to leave its three specialists running with parent 1 (and their
`sentinel-mesh-*` directory behind) when it was SIGKILLed or got SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel.lifeline import PARENT_ENV, die_with_parent


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found.update(int(p) for p in text.split())
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def start_serve_all(tmp_path: Path) -> tuple[subprocess.Popen, set[int], Path]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    ready = tmp_path / "port"
    env = {**os.environ, "TMPDIR": str(scratch), "SENTINEL_DRAIN_DELAY_SECONDS": "0"}
    env.pop(PARENT_ENV, None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentinel",
            "serve",
            "all",
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    assert wait_until(ready.exists, 60), "serve all did not start"
    children = children_of(process.pid)
    assert len(children) == 3, children
    return process, children, scratch


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM])
def test_specialists_die_with_serve_all_and_leave_no_temporary_directory(tmp_path, sig) -> None:
    process, children, scratch = start_serve_all(tmp_path)
    try:
        # The ready files were needed only while the children started.
        assert not list(scratch.glob("sentinel-mesh-*"))
        process.send_signal(sig)
        process.wait(timeout=30)
        assert wait_until(lambda: not any(alive(pid) for pid in children), 10), [
            pid for pid in children if alive(pid)
        ]
        assert not list(scratch.glob("sentinel-*"))
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()


def test_without_a_parent_variable_nothing_is_watched() -> None:
    assert die_with_parent({}) is False
    assert die_with_parent({PARENT_ENV: "not a pid"}) is False

"""`sentinel evaluate` scores the same whether the mesh is embedded or separate processes.

A tiny labelled corpus in NAB layout (two generated series in two category directories and a
`windows.json`) is evaluated twice: through an embedded mesh (orchestrator in this process,
specialists as child processes) and with `target=` through a `sentinel serve all` subprocess.
Detection is deterministic given the readings, so both runs must detect the same rows and earn
identical scores under every NAB profile.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from nab_files import stamp, write_series

from sentinel.app.evaluate import PROFILES, evaluate, probationary_length, verdict_file_name
from sentinel.app.local_mesh import serve_command, wait_ready

ROWS = 2000
# Both meshes: default detection settings, and a Score deadline no loaded CI machine misses
# (a late specialist would make one run's verdicts degraded and the comparison meaningless).
MESH_ENV = {"SENTINEL_SPECIALIST_TIMEOUT_SECONDS": "10"}


def mesh_environ() -> dict[str, str]:
    """This environment without its SENTINEL_* settings, plus MESH_ENV."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
        **MESH_ENV,
    }


def nab_window(center: int, width: int = 100) -> list[str]:
    """A NAB-style window (timestamps with microseconds, as in NAB's windows.json)."""
    half = width // 2
    return [f"{stamp(center - half)}.000000", f"{stamp(center + half - 1)}.000000"]


def write_corpus(root: Path) -> Path:
    """Two 5-minute series of ROWS readings (probation: the first 300) with anomalies injected
    after probation and the engines' warm-up; one labelled window centred on each."""
    t = np.arange(ROWS)
    rng = np.random.default_rng(1234)
    # plant/boiler.csv: daily wave plus noise; two spikes, the second higher (a new extreme).
    boiler = 60.0 + 6.0 * np.sin(2 * np.pi * t / 288) + rng.normal(0.0, 1.0, ROWS)
    boiler[700:703] += 35.0
    boiler[1500:1503] += 50.0
    # grid/feeder.csv: flat noise; a level shift up for a while, later a deep dip.
    feeder = 20.0 + rng.normal(0.0, 0.5, ROWS)
    feeder[1000:1100] += 6.0
    feeder[1700:1704] -= 12.0
    write_series(root / "plant" / "boiler.csv", boiler)
    write_series(root / "grid" / "feeder.csv", feeder)
    assert probationary_length(ROWS) == 300  # every window below lies after it
    windows = {
        "grid/feeder.csv": [nab_window(1000), nab_window(1700)],
        "plant/boiler.csv": [nab_window(700), nab_window(1500)],
    }
    path = root / "windows.json"
    path.write_text(json.dumps(windows, indent=4))
    return path


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def serve_all(tmp_path: Path) -> AsyncIterator[str]:
    """`sentinel serve all` as a separate process (which starts its specialists as children);
    yields its target. On the way out: SIGTERM, wait, and check that it exited cleanly and took
    its specialists with it. It runs in a session of its own, so that if it has to be killed,
    its specialists (same process group) go too instead of being orphaned."""
    ready = tmp_path / "serve-all.port"
    process = subprocess.Popen(
        serve_command("all", ready, "--port", "0"),
        env={
            **mesh_environ(),
            "SENTINEL_LOG_LEVEL": "WARNING",
            "SENTINEL_DRAIN_DELAY_SECONDS": "0",
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    returncode = None
    try:
        port = await wait_ready(process, ready, time.monotonic() + 60)
        yield f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        leftovers = _group_alive(process.pid)
        if returncode is None or leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert returncode == 0, f"serve all exited with {returncode} after SIGTERM"
    assert not leftovers, "serve all exited but left specialist processes running"


def verdict_columns(path: Path) -> list[dict[str, str]]:
    """A verdict file's rows without the sensor id (the --target run prefixes it)."""
    with path.open(newline="") as handle:
        return [
            {k: v for k, v in row.items() if k != "sensor_id"} for row in csv.DictReader(handle)
        ]


async def test_embedded_and_separate_process_meshes_score_the_same(
    tmp_path: Path, serve_all: str, monkeypatch
) -> None:
    # The embedded mesh (and its specialist children) read this process's environment.
    for name in list(os.environ):
        if name.startswith("SENTINEL_"):
            monkeypatch.delenv(name)
    for name, value in MESH_ENV.items():
        monkeypatch.setenv(name, value)
    corpus = tmp_path / "corpus"
    windows = write_corpus(corpus)

    embedded = await evaluate(corpus, windows, verdicts_dir=tmp_path / "embedded")
    separate = await evaluate(corpus, windows, verdicts_dir=tmp_path / "separate", target=serve_all)

    assert embedded.target is None and separate.target == serve_all
    assert separate.sensor_prefix  # its own sensor ids on the shared mesh
    keys = ["grid/feeder.csv", "plant/boiler.csv"]
    assert [f.key for f in embedded.files] == [f.key for f in separate.files] == keys
    for mine, theirs in zip(embedded.files, separate.files, strict=True):
        assert (mine.rows, mine.missing, mine.windows) == (ROWS, 0, theirs.windows)
        assert mine.detections == theirs.detections, mine.key
        assert theirs.missing == 0
        for profile in PROFILES:
            assert mine.scores[profile] == theirs.scores[profile], (mine.key, profile)
        # Row for row the same verdicts, not only the same detections; none degraded.
        name = verdict_file_name(mine.key)
        rows = verdict_columns(tmp_path / "embedded" / name)
        assert rows == verdict_columns(tmp_path / "separate" / name), mine.key
        assert {r["status"] for r in rows} == {"warming_up", "ok"}, mine.key
    for profile in PROFILES:
        mine, theirs = embedded.corpora[profile], separate.corpora[profile]
        assert (mine.raw, mine.null, mine.perfect) == (theirs.raw, theirs.null, theirs.perfect)
        assert mine.normalised == theirs.normalised, profile
    # Not vacuous: the mesh caught labelled windows (in both files).
    for result in embedded.files:
        assert result.scores["standard"].tp_windows >= 1, (result.key, result.detections)

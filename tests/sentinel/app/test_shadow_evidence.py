"""Evidence on labelled data from one pass: `sentinel replay --shadow` and `sentinel evaluate
--shadow`, with the shadow a separate `sentinel serve model --model iforest-v2` process.

What the shadow columns and the shadow's NAB scores must equal: those of a replay / evaluation
where iforest-v2 is the primary model (SENTINEL_MODEL_PATH=iforest-v2 for the embedded mesh's
specialist processes). So the one-pass evidence is exactly what promoting v2 would give.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from nab_files import stamp, write_series

from sentinel.app.evaluate import PROFILES, evaluate, render
from sentinel.app.local_mesh import serve_command, wait_ready

ROWS = 1400


def clean_environ(**extra: str) -> dict[str, str]:
    """This environment without SENTINEL_* settings; a Score deadline no busy box misses."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
        "SENTINEL_SPECIALIST_TIMEOUT_SECONDS": "30",
        **extra,
    }


def write_corpus(root: Path) -> Path:
    """Two series with spikes, a level shift and a dip after warm-up; a window on each."""
    rng = np.random.default_rng(77)
    pump = 50.0 + rng.normal(0.0, 1.0, ROWS)
    for at, size in ((500, 4.0), (650, 7.0), (800, 12.0), (950, 25.0)):
        pump[at] += size
    pump[1100:] += 6.0
    valve = 10.0 + 2.0 * np.sin(np.arange(ROWS) / 40.0) + rng.normal(0.0, 0.3, ROWS)
    valve[600:602] -= 4.0
    valve[1000:1004] += 8.0
    write_series(root / "plant" / "pump.csv", pump)
    write_series(root / "plant" / "valve.csv", valve)
    windows = {
        "plant/pump.csv": [
            [stamp(780), stamp(830)],
            [stamp(930), stamp(980)],
            [stamp(1090), stamp(1170)],
        ],
        "plant/valve.csv": [[stamp(590), stamp(620)], [stamp(990), stamp(1020)]],
    }
    path = root / "windows.json"
    path.write_text(json.dumps(windows))
    return path


@pytest.fixture
def shadow(tmp_path: Path) -> Iterator[str]:
    """`sentinel serve model --model iforest-v2` as its own process; yields its target."""
    ready = tmp_path / "shadow.port"
    process = subprocess.Popen(
        serve_command("model", ready, "--port", "0", "--model", "iforest-v2"),
        env=clean_environ(SENTINEL_LOG_LEVEL="WARNING", SENTINEL_DRAIN_DELAY_SECONDS="0"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        import asyncio

        port = asyncio.run(wait_ready(process, ready, time.monotonic() + 60))
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def replay(source: Path, out: Path, *args: str, **env: str) -> list[dict[str, str]]:
    result = subprocess.run(
        [sys.executable, "-P", "-m", "sentinel", "replay", str(source), "--out", str(out), *args],
        env=clean_environ(**env),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_replay_with_a_shadow_writes_what_the_shadow_would_have_said(
    tmp_path: Path, shadow: str
) -> None:
    write_corpus(tmp_path / "corpus")
    source = tmp_path / "corpus" / "plant" / "pump.csv"
    shadowed = replay(source, tmp_path / "shadowed.csv", "--shadow", f"model={shadow}")
    promoted = replay(source, tmp_path / "v2.csv", SENTINEL_MODEL_PATH="iforest-v2")

    assert len(shadowed) == len(promoted) == ROWS
    for row, v2 in zip(shadowed, promoted, strict=True):
        assert row["model_shadow_score"] == v2["model_score"]
        assert row["model_shadow_verdict"] == v2["anomaly"]
        assert row["model_shadow_alert"] == v2["alert"]
        # Warming up exactly when v2 as the primary was (its score cell is empty then).
        assert (row["model_shadow_flag"] == "") == (v2["model_score"] == "")
    # Both engines voted (past warm-up) on most rows; v2's anomalies show in the verdict column.
    flags = [(r["model_flag"], r["model_shadow_flag"]) for r in shadowed]
    assert flags.count(("0", "0")) > ROWS // 2
    assert any(r["model_shadow_verdict"] == "1" for r in shadowed)
    # Shadows never vote: the verdict columns are v1's, not v2's.
    assert any(r["model_score"] != r["model_shadow_score"] for r in shadowed)
    assert any(r["alert"] == "open" for r in shadowed)


def test_replay_shadow_names_its_mistakes() -> None:
    result = subprocess.run(
        [sys.executable, "-P", "-m", "sentinel", "replay", __file__, "--target", "127.0.0.1:1",
         "--shadow", "model=127.0.0.1:2"],
        env=clean_environ(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--shadow" in result.stderr and "SENTINEL_SHADOWS" in result.stderr


async def test_evaluate_scores_the_verdict_with_the_shadow_in_place_from_one_pass(
    tmp_path: Path, shadow: str, monkeypatch
) -> None:
    for name, value in clean_environ().items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("SENTINEL_")]:
        if name != "SENTINEL_SPECIALIST_TIMEOUT_SECONDS":
            monkeypatch.delenv(name)
    windows = write_corpus(tmp_path / "corpus")
    one_pass = await evaluate(tmp_path / "corpus", windows, shadows=[f"model={shadow}"])
    monkeypatch.setenv("SENTINEL_MODEL_PATH", "iforest-v2")  # the embedded children read it
    promoted = await evaluate(tmp_path / "corpus", windows)

    assert set(one_pass.shadow_corpora) == {"model"}
    for profile in PROFILES:
        assert one_pass.shadow_corpora["model"][profile] == promoted.corpora[profile], profile
    for mine, theirs in zip(one_pass.files, promoted.files, strict=True):
        assert mine.shadow_scores["model"] == theirs.scores, mine.key
        assert mine.shadow_unanswered["model"] == 0
    agreement = one_pass.agreement("model")
    assert agreement.compared > ROWS
    text = render(one_pass)
    assert "verdict with model's shadow" in text
    assert f"model and its shadow both voted on {agreement.compared} rows" in text
    assert "SENTINEL_SHADOWS=model=" in text
    # Not vacuous: the primary verdict and the shadow's each caught a labelled window.
    assert one_pass.corpora["standard"].normalised is not None
    assert promoted.corpora["standard"].normalised is not None
    assert any(f.scores["standard"].tp_windows for f in one_pass.files)

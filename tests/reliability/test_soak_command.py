"""`sentinel soak` as users run it: separate processes, randomised faults, exact counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def _soak(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentinel", "soak", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_soak_help() -> None:
    result = _soak("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--seconds", "--sensors", "--seed"):
        assert option in result.stdout


def test_short_soak_survives_its_faults_and_counts_every_reading() -> None:
    # Seed 1 starts with an orchestrator SIGTERM + restart, then SIGKILLs a specialist.
    result = _soak("--seconds", "12", "--sensors", "8", "--seed", "1")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "SIGTERM orchestrator (exit 0); started again on port" in out
    assert re.search(r"SIGKILL \w+; restarted on the same port", out)

    def count(label: str) -> int:
        line = next(line for line in out.splitlines() if line.strip().startswith(label))
        return int(line.split()[len(label.split())].replace(",", ""))

    sent, acked, scored = count("readings sent"), count("readings acked"), count("readings scored")
    assert sent == acked == scored > 0
    assert count("lost readings") == 0 and count("scored twice") == 0
    assert "peak memory (VmHWM)" in out and "orchestrator" in out
    assert "result                OK: no reading lost, none scored twice" in out

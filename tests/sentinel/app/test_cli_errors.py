"""Errors a person reads: one line naming the file, row and column (or the setting), exit 2;
tracebacks only with --debug. Also --version and -h."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.app.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


def csv_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "series.csv"
    path.write_text(text, encoding="utf-8")
    return path


H = "timestamp,value\n"
DAY = "2014-01-01 00:00:00"
BAD_CSVS = [
    (f"{H}{DAY},1\n{DAY},\n", "row 3, column 'value': empty"),
    (f"{H}{DAY},nan\n", "row 2, column 'value': 'nan' is not a finite number"),
    (f"{H}{DAY},1\n{DAY}\n", "row 3, column 'value': missing"),
    (f"time,val\n{DAY},1\n", "row 1 (header): need columns timestamp,value"),
    (f"{H}2014-13-01,1\n", "row 2, column 'timestamp': '2014-13-01' is neither an ISO-8601"),
    (f"{H},1\n", "row 2, column 'timestamp': empty"),
    (f"{H}{DAY},1\n2999-01-01,2\n", "row 3, column 'timestamp': '2999-01-01' is more than"),
    (f"{H}1750000000000,1\n", "row 2, column 'timestamp': 1750000000000 is out of range as"),
    (f"{H}1970-01-02,1\n", "row 2, column 'timestamp': '1970-01-02' is before 1973-03-03"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CSVS)
def test_replay_of_a_bad_csv_is_one_line_naming_file_row_and_column(
    tmp_path, capsys, text, expected
) -> None:
    path = csv_file(tmp_path, text)
    code, out, err = run(capsys, "replay", str(path))
    assert code == 2
    assert err == f"sentinel: error: {path}, {expected}" + err.split(expected, 1)[1]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "series.verdicts.csv").exists()


def test_a_refused_setting_names_it_without_a_traceback(capsys, monkeypatch) -> None:
    monkeypatch.delenv("SENTINEL_ALLOW_INSECURE", raising=False)
    code, _, err = run(capsys, "serve", "all", "--host", "0.0.0.0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("sentinel: error: settings: refusing plaintext gRPC on '0.0.0.0'")
    assert "SENTINEL_ALLOW_INSECURE=true" in err and "ValidationError" not in err
    code, _, err = run(capsys, "serve", "threshold", "--port", "70000")
    assert code == 2
    assert err.strip() == (
        "sentinel: error: setting port (SENTINEL_PORT or --port): "
        "Input should be less than or equal to 65535"
    )


def sentinel(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_ALLOW_INSECURE"}
    return subprocess.run(
        [sys.executable, "-m", "sentinel", *args], capture_output=True, text=True, env=env
    )


def test_debug_anywhere_shows_the_traceback() -> None:
    quiet = sentinel("serve", "all", "--host", "0.0.0.0")
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    for args in (("--debug", "serve", "all"), ("serve", "all", "--debug")):
        loud = sentinel(*args, "--host", "0.0.0.0")
        assert loud.returncode != 0
        assert (
            "Traceback (most recent call last)" in loud.stderr and "ValidationError" in loud.stderr
        )


def test_version_and_short_help() -> None:
    from importlib.metadata import version

    result = sentinel("--version")
    assert (
        result.returncode == 0
        and result.stdout.strip() == f"sentinel-mesh {version('sentinel-mesh')}"
    )
    for args in (("-h",), ("replay", "-h"), ("serve", "-h")):
        result = sentinel(*args)
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout and "-h, --help" in result.stdout

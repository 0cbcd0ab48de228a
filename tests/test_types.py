"""The packages type-check with mypy (configuration in pyproject.toml, `[tool.mypy]`): the
shared core, both roles and the application, on a copy laid out as installed (see
installed_layout.py); the generated stubs are typed by their committed .pyi files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from installed_layout import REPO, in_checkout, installed_layout


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for this module's runs (the second one re-checks only what changed)."""
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(root: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(cache_dir), "-p", "sentinel"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip


def test_every_module_type_checks(tmp_path: Path, cache_dir: Path) -> None:
    result = _mypy(installed_layout(tmp_path), cache_dir)
    assert result.returncode == 0, in_checkout(result.stdout + result.stderr)
    # Every module of the checkout was checked (the roles too, not only sentinel/).
    modules = sum(
        1
        for folder in ("sentinel", "orchestrator", "specialists")
        for _ in (REPO / folder).rglob("*.py")
    )
    assert f"no issues found in {modules} source files" in result.stdout, result.stdout


def test_a_type_error_in_a_role_fails(tmp_path: Path, cache_dir: Path) -> None:
    root = installed_layout(tmp_path)
    combine = root / "sentinel" / "orchestrator" / "combine.py"
    combine.write_text(combine.read_text() + '\n\ndef _broken() -> int:\n    return "text"\n')
    result = _mypy(root, cache_dir)
    assert result.returncode == 1, result.stdout
    assert "orchestrator/combine.py" in in_checkout(result.stdout)
    assert "[return-value]" in result.stdout, result.stdout

"""Import layers, checked by import-linter: application → roles → shared core → generated stubs,
and neither role imports the other (contracts in pyproject.toml, `[tool.importlinter]`).

It runs on a copy of the source laid out as installed (see installed_layout.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from installed_layout import REPO, installed_layout

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        # The copy, not the editable install, is the `sentinel` grimp finds.
        env={**os.environ, "PYTHONPATH": str(root)},
    )


def test_the_source_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "reported"),
    [
        pytest.param(
            "orchestrator/pipeline.py",
            "import sentinel.specialists.codec",
            "sentinel.orchestrator.pipeline -> sentinel.specialists.codec",
            id="orchestrator-imports-specialists",
        ),
        pytest.param(
            "specialists/codec.py",
            "from sentinel.orchestrator import windows",
            "sentinel.specialists.codec -> sentinel.orchestrator.windows",
            id="specialists-import-orchestrator",
        ),
        pytest.param(
            "orchestrator/main.py",
            "from sentinel.app import cli",
            "sentinel.orchestrator.main -> sentinel.app.cli",
            id="role-imports-application",
        ),
        pytest.param(
            "client.py",
            "from sentinel.orchestrator import settings",
            "sentinel.client -> sentinel.orchestrator.settings",
            id="core-imports-role",
        ),
        pytest.param(
            "v1/__init__.py",
            "import sentinel.errors",
            "sentinel.v1 -> sentinel.errors",
            id="stubs-import-core",
        ),
        pytest.param(
            "helpers.py",
            "HELP = 1",
            "- sentinel.helpers",
            id="module-in-no-layer",
        ),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, reported: str
) -> None:
    root = installed_layout(tmp_path)
    path = root / "sentinel" / module
    source = path.read_text() if path.exists() else ""
    path.write_text(f"{source}\n{line}\n")
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported in result.stdout, result.stdout

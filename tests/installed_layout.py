"""The source laid out as installed, for tools that walk the filesystem (import-linter, mypy).

The roles install as `sentinel.orchestrator` / `sentinel.specialists` through setuptools'
package-dir mapping from the top-level folders `orchestrator/` and `specialists/`; an editable
install maps them with an import hook that neither grimp nor mypy follows. So these tools run on
a copy shaped like the installed package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Installed package → folder in the checkout.
ROLE_FOLDERS = {"sentinel/orchestrator": "orchestrator", "sentinel/specialists": "specialists"}


def installed_layout(root: Path) -> Path:
    """Copy the source under `root` (root/sentinel/..., roles inside it); returns `root`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx")
    shutil.copytree(REPO / "sentinel", root / "sentinel", ignore=ignore)
    for installed, folder in ROLE_FOLDERS.items():
        shutil.copytree(REPO / folder, root / installed, ignore=ignore)
    return root


def in_checkout(report: str) -> str:
    """A tool's report with the copy's role paths named as in the checkout."""
    for installed, folder in ROLE_FOLDERS.items():
        report = report.replace(f"{installed}/", f"{folder}/")
    return report

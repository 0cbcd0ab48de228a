"""Shared fixtures: real servers on loopback ports (see mesh_fixtures.py)."""

from __future__ import annotations

import os

import pytest
from mesh_fixtures import running_mesh


@pytest.fixture
async def mesh():
    """Orchestrator + threshold, statistical and model specialists, all in this process."""
    async with running_mesh() as running:
        yield running


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (`CI=true`, as `.ci/run` runs), a skipped test fails: `.ci/run` installs every
    tool and the workspace has the data, so a skip there means a test that did not run."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where it must run: {reason}"

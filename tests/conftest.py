"""Shared fixtures: real servers on loopback ports (see mesh_fixtures.py)."""

from __future__ import annotations

import pytest
from mesh_fixtures import running_mesh


@pytest.fixture
async def mesh():
    """Orchestrator + threshold, statistical and model specialists, all in this process."""
    async with running_mesh() as running:
        yield running

"""Fixtures for the manifest tests: rendered overlays, CRD schemas, CEL statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import manifest_checks as mc
import pytest

_CEL = mc.CelStats()
_REGISTRY: list[mc.CrdRegistry] = []


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = mc.kubectl_path()
    if not path:
        pytest.skip("kubectl not found on PATH (set KUBECTL=...): cannot render the kustomizations")
    return path


@pytest.fixture(scope="session")
def registry() -> mc.CrdRegistry:
    directory = mc.schemas_dir()
    if not directory.is_dir():
        pytest.skip(
            f"CRD schemas not found at {directory}: set SENTINEL_SCHEMAS_DIR to a directory "
            "with the Istio and Flagger CustomResourceDefinition bundles"
        )
    _REGISTRY.append(mc.CrdRegistry.from_dir(directory))
    return _REGISTRY[0]


@pytest.fixture(scope="session")
def cel_stats() -> mc.CelStats:
    return _CEL


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Every overlay, rendered once per session."""
    return {name: mc.render(mc.overlay_dir(name), kubectl) for name in mc.OVERLAYS}


@pytest.fixture(scope="session")
def adapter_metrics() -> set[str]:
    return mc.adapter_metric_names(mc.adapter_rules())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return mc.REPO_ROOT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _CEL.evaluated or _CEL.skipped:
        terminalreporter.write_line(f"manifests: {_CEL.summary()}")
    if _REGISTRY:
        rules = set().union(*(mc.schema_rules(v.schema) for v in _REGISTRY[0].versions.values()))
        unsupported = {r for r in rules if mc.cel_rule_support(r)}
        terminalreporter.write_line(
            f"manifests: CRD bundles hold {len(rules)} distinct CEL rules; cel-python can evaluate "
            f"{len(rules) - len(unsupported)}, {len(unsupported)} need functions it lacks "
            f"({', '.join(sorted(set().union(*map(mc.cel_rule_support, unsupported))))})"
        )

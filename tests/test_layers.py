"""Import layers, checked on the source: application → roles → shared core → generated stubs.

(import-linter cannot see `sentinel.orchestrator` / `sentinel.specialists` in an editable
install — they are mapped from the top-level folders by setuptools' package-dir, which grimp's
filesystem walk does not follow — so the contracts are checked here with `ast`.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each installed package's source lives.
PACKAGES = {"sentinel.orchestrator": "orchestrator", "sentinel.specialists": "specialists"}
APPLICATION = {
    "sentinel.__main__", "sentinel.app", "sentinel.app.cli", "sentinel.app.demo",
    "sentinel.app.replay", "sentinel.app.evaluate", "sentinel.app.soak", "sentinel.app.bench",
    "sentinel.app.local_mesh", "sentinel.app.serve_all", "sentinel.app.embedded",
    "sentinel.app.tune", "sentinel.app.sizing", "sentinel.app.simulator",
}  # fmt: skip
CORE = {
    "sentinel.errors", "sentinel.tensors", "sentinel.client", "sentinel.server",
    "sentinel.telemetry", "sentinel.lifeline",
}  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in {"sentinel": "sentinel", **PACKAGES}.items():
        for path in (REPO / folder).rglob("*.py"):
            relative = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not name.startswith("sentinel.v1"):
                found[name] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of the modules `name` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def _violations(sources: set[str], forbidden: set[str]) -> list[str]:
    modules = _modules()
    bad = []
    for name in sorted(sources):
        for imported in sorted(_imports(name, modules[name])):
            if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                bad.append(f"{name} imports {imported}")
    return bad


def _in(prefix: str) -> set[str]:
    return {m for m in _modules() if m == prefix or m.startswith(prefix + ".")}


def test_the_source_map_finds_every_layer() -> None:
    modules = _modules()
    assert {
        "sentinel.orchestrator.pipeline",
        "sentinel.specialists.codec",
        "sentinel.app.cli",
    } <= set(modules)
    assert CORE | APPLICATION <= set(modules)


@pytest.mark.parametrize(
    ("sources", "forbidden"),
    [
        pytest.param(
            _in("sentinel.orchestrator"),
            {"sentinel.specialists"},
            id="orchestrator-not-specialists",
        ),
        pytest.param(
            _in("sentinel.specialists"),
            {"sentinel.orchestrator"},
            id="specialists-not-orchestrator",
        ),
        pytest.param(
            _in("sentinel.orchestrator") | _in("sentinel.specialists"),
            APPLICATION,
            id="roles-not-application",
        ),
        pytest.param(
            CORE,
            APPLICATION | {"sentinel.orchestrator", "sentinel.specialists"},
            id="core-not-roles-or-application",
        ),
    ],
)
def test_imports_only_point_down(sources: set[str], forbidden: set[str]) -> None:
    assert _violations(sources, forbidden) == []

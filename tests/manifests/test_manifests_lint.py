"""yamllint over k8s/ and istio/, and the container image's Dockerfile."""

from __future__ import annotations

import fnmatch
import tomllib

import manifest_checks as mc
import pytest


def yaml_files():
    return sorted(p for root in mc.YAML_ROOTS for p in root.rglob("*.y*ml"))


def test_yaml_is_lint_clean():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(mc.YAMLLINT_CONFIG))
    files = yaml_files()
    assert len(files) >= 20
    problems = [
        f"{path.relative_to(mc.REPO_ROOT)}:{p.line}:{p.column}: {p.message} ({p.rule})"
        for path in files
        for p in linter.run(path.read_text(), config, str(path))
    ]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def final_stage():
    return mc.dockerfile_final_stage()


def test_dockerfile_is_multi_stage(repo_root):
    text = (repo_root / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.upper().startswith("FROM ")]
    assert len(froms) >= 2
    assert " AS builder" in froms[0]
    assert "COPY --from=builder /opt/venv /opt/venv" in text


def test_both_stages_build_from_the_base_image_argument(repo_root):
    """CI, mirrors and air-gapped users pass `--build-arg BASE_IMAGE=...`; the default is the
    official slim Python image."""
    lines = (repo_root / "Dockerfile").read_text().splitlines()
    froms = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    default = next(line for line in lines if line.startswith("ARG BASE_IMAGE="))
    assert default == "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm"
    assert lines.index(default) < next(i for i, line in enumerate(lines) if line.startswith("FROM"))


def test_final_stage_runs_as_the_uid_the_pods_use(final_stage, rendered):
    assert mc.dockerfile_uid() == 10001
    for dep in (o for o in rendered["prod"] if o["kind"] in mc.WORKLOAD_KINDS):
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_final_stage_has_no_build_tools(final_stage):
    runs = " ".join(args for instr, args in final_stage if instr == "RUN")
    for tool in ("gcc", "g++", "build-essential", "make ", "clang", "pip install", "pip wheel"):
        assert tool not in runs, f"final stage installs/uses {tool!r}"
    assert not any(instr == "COPY" and "--from" not in args for instr, args in final_stage), (
        "the final stage copies only from the builder"
    )


def test_entrypoint_is_the_sentinel_cli(final_stage):
    entry = [args for instr, args in final_stage if instr == "ENTRYPOINT"]
    assert entry == ['["sentinel"]']
    cmd = [args for instr, args in final_stage if instr == "CMD"]
    assert cmd == ['["serve", "orchestrator"]']


def _dockerignore_allows(repo_root, rel: str) -> bool:
    allowed = True
    for line in (repo_root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_builder_copies_every_package_and_the_context_allows_it(repo_root):
    text = (repo_root / "Dockerfile").read_text()
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    folders = setuptools["package-dir"]

    # The folders holding the installed packages (sentinel.orchestrator lives in orchestrator/).
    def folder(package: str) -> str:
        mapped = [m for m in folders if package == m or package.startswith(m + ".")]
        return folders[max(mapped, key=len)] if mapped else package.split(".")[0]

    packages = sorted({folder(p) for p in setuptools["packages"]})
    assert packages == ["orchestrator", "sentinel", "specialists"]
    for package in packages:
        assert f"COPY {package} ./{package}" in text, f"Dockerfile does not copy {package}/"
        assert _dockerignore_allows(repo_root, package), f".dockerignore excludes {package}/"
    for needed in ("pyproject.toml", "README.md"):
        assert _dockerignore_allows(repo_root, needed)
    for excluded in ("tests", "k8s", "istio", ".git", "docs"):
        assert not _dockerignore_allows(repo_root, excluded), f"{excluded}/ is sent to the build"


def test_files_the_wheel_build_needs_exist(repo_root):
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    readme = pyproject["project"].get("readme")
    if readme and not (repo_root / readme).exists():
        pytest.skip(f"{readme} (pyproject's readme) is not written yet; the image build needs it")
    for package in ("sentinel", "orchestrator", "specialists"):
        assert (repo_root / package).is_dir()

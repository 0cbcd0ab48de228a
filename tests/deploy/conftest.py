"""Fixtures of the image lane (marker `image`): podman, the image built once per session, and
the figures it prints at the end (build, start-up and drain times)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from podman_mesh import Podman, PodmanError, base_image, build_image

_FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def lane_figures() -> dict[str, str]:
    """Figures the lane measured, printed after the run: name -> value with its unit."""
    return _FIGURES


@pytest.fixture(scope="session")
def podman() -> Podman:
    found = Podman.find()
    if found is None:
        pytest.skip(
            "podman not installed: the image lane builds and runs the image with it "
            "(.ci/run installs podman, runc and debootstrap; deselect with -m 'not image')"
        )
    return found


@pytest.fixture(scope="session")
def built_image(
    podman: Podman, tmp_path_factory: pytest.TempPathFactory, lane_figures: dict[str, str]
) -> Iterator[str]:
    """The Dockerfile built once per session on SENTINEL_IMAGE_BASE or the Debian-built base,
    removed at the end (runs use it by id: concurrent sessions on one machine cannot swap it)."""
    try:
        base = base_image()
    except PodmanError as error:
        pytest.skip(f"no base image to build on (set SENTINEL_IMAGE_BASE): {error}")
    started = time.monotonic()
    image = build_image(podman, base, tmp_path_factory.mktemp("image"))
    lane_figures["image build"] = f"{time.monotonic() - started:.1f} s on {base}"
    yield image
    podman("rmi", "--force", image, check=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, value in _FIGURES.items():
        terminalreporter.write_line(f"image lane: {name}: {value}")

"""Drift between k8s/ and the code: every Sentinel container's `args` must parse with the real
`sentinel serve` command line, and every variable its environment sets must be one the process
reads, with a value its settings accept.

What the process reads is taken from the code, not from a list kept here:

- the role's settings class (pydantic-settings: env prefix + field name, or the field's alias);
- OpenTelemetry's variables: the names the SDK and API declare in their
  `environment_variables` modules (sentinel.telemetry configures the SDK from the environment);
- a variable other variables of the same container refer to as `$(NAME)` (Kubernetes'
  expansion: POD_NAME and friends exist to build OTEL_RESOURCE_ATTRIBUTES).

Anything else — a renamed setting, a flag `serve` no longer takes, a setting given to the wrong
role — is reported, one line each.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import Any
from unittest import mock

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import typer.main
from k8s_pods import PodContainer, sentinel_containers
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.settings import SpecialistSettings

from sentinel.app.cli import Role, app

#: The settings class each `serve ROLE` builds (sentinel/app/cli.py); `all` builds both kinds.
ROLE_SETTINGS: dict[Role, tuple[type[BaseSettings], ...]] = {
    Role.orchestrator: (OrchestratorSettings,),
    Role.threshold: (SpecialistSettings,),
    Role.statistical: (SpecialistSettings,),
    Role.model: (SpecialistSettings,),
    Role.all: (OrchestratorSettings, SpecialistSettings),
}


def settings_env_names(settings: type[BaseSettings]) -> frozenset[str]:
    """The environment variables a pydantic-settings class reads (upper-cased unless it is
    case-sensitive)."""
    config = settings.model_config
    prefix = config.get("env_prefix", "")
    names = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        names.add(alias or f"{prefix}{name}")
    if config.get("case_sensitive"):
        return frozenset(names)
    return frozenset(n.upper() for n in names)


@functools.cache
def otel_env_names() -> frozenset[str]:
    """Variables OpenTelemetry's SDK and API declare (what Resource.create, the sampler, the
    OTLP exporter and the propagators read)."""
    modules = (opentelemetry.sdk.environment_variables, opentelemetry.environment_variables)
    return frozenset(
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, str) and value.startswith("OTEL_")
    )


def parse_serve(argv: tuple[str, ...]) -> tuple[Role | None, str | None]:
    """(role, None) when `argv` is a valid `sentinel serve ...` command line, else (None, why).

    Parsed by the CLI's own parser (typer/click), which rejects unknown flags and bad values
    the way `sentinel` would, without running the command."""
    if argv[:1] != ("sentinel",):
        return None, f"runs {argv[:1]}, not the image's `sentinel` entrypoint"
    if argv[1:2] != ("serve",):
        return None, f"command {list(argv[1:])} is not `sentinel serve ...`"
    serve = typer.main.get_command(app).commands["serve"]
    try:
        context = serve.make_context("sentinel serve", list(argv[2:]))
    except Exception as error:  # click's UsageError family; typer does not export its base
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        return None, f"`sentinel serve` refuses {list(argv[2:])}: {message}"
    return Role(context.params["role"]), None


def check_container(container: PodContainer) -> list[str]:
    """Problems of one Sentinel container (empty = the code runs it as written)."""
    where = f"{container.workload}"
    role, refused = parse_serve(container.argv)
    if refused:
        return [f"{where}: {refused}"]
    classes = ROLE_SETTINGS[role]
    readable = frozenset().union(*map(settings_env_names, classes)) | otel_env_names()
    errors = [
        f"{where}: {name} is not read by `serve {role.value}` (not a setting of "
        f"{' or '.join(c.__name__ for c in classes)}, not an OpenTelemetry variable, not "
        "referred to by another variable)"
        for name in sorted(container.env)
        if name not in readable and name not in container.referenced
    ]
    errors += _values_refused(where, container.env, classes)
    return errors


def _values_refused(
    where: str, env: dict[str, str], classes: Iterable[type[BaseSettings]]
) -> list[str]:
    """Build each settings class from exactly this environment, as the process would."""
    errors = []
    with mock.patch.dict(os.environ, env, clear=True):
        for settings in classes:
            try:
                settings()
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                    for e in error.errors()
                )
                errors.append(f"{where}: {settings.__name__} refuses the environment: {problems}")
    return errors


def check_drift(objects: list[dict[str, Any]]) -> list[str]:
    """Drift problems of every Sentinel container in a rendered overlay."""
    return [e for c in sentinel_containers(objects) for e in check_container(c)]

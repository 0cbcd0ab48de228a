"""k8s/ and the code agree: every overlay's Sentinel containers pass the drift check
(drift_checks.py), and the check does catch each kind of drift when one is planted."""

from __future__ import annotations

import copy
import re
from typing import Any

import manifest_checks as mc
import pytest
from drift_checks import check_drift, otel_env_names, settings_env_names
from k8s_pods import sentinel_containers
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.settings import SpecialistSettings

from sentinel import telemetry

ALL_OVERLAYS = sorted(p.name for p in (mc.REPO_ROOT / "k8s" / "overlays").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def overlays(rendered: dict[str, list], kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Every overlay under k8s/overlays (the shared fixture renders the usual four)."""
    return {
        name: rendered[name] if name in rendered else mc.render(mc.overlay_dir(name), kubectl)
        for name in ALL_OVERLAYS
    }


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_overlay_runs_as_the_code_reads_it(overlays: dict, overlay: str) -> None:
    objects = overlays[overlay]
    assert {c.argv[2] for c in sentinel_containers(objects)} == {
        "orchestrator",
        "threshold",
        "statistical",
        "model",
    }
    assert check_drift(objects) == []


def test_pod_environment_is_resolved_as_the_kubelet_does(overlays: dict) -> None:
    orchestrator = next(c for c in sentinel_containers(overlays["dev"]) if c.kind == "StatefulSet")
    assert orchestrator.env["OTEL_SERVICE_NAME"] == "sentinel-orchestrator"
    assert "k8s.pod.name=orchestrator-0" in orchestrator.env["OTEL_RESOURCE_ATTRIBUTES"]
    assert orchestrator.env["SENTINEL_LOG_LEVEL"] == "DEBUG"  # the dev overlay's merge wins
    assert {"POD_NAME", "SENTINEL_APP"} <= orchestrator.referenced


def test_settings_env_names_come_from_the_classes() -> None:
    orchestrator = settings_env_names(OrchestratorSettings)
    specialist = settings_env_names(SpecialistSettings)
    assert {"SENTINEL_PORT", "SENTINEL_SPECIALISTS", "SENTINEL_STATE_DIR"} <= orchestrator
    assert "SENTINEL_SPECIALISTS" not in specialist
    assert {"SENTINEL_PORT", "SENTINEL_MODEL_PATH"} <= specialist


def test_otel_names_cover_every_variable_the_telemetry_code_reads() -> None:
    source = open(telemetry.__file__).read()
    read = set(re.findall(r"\"(OTEL_[A-Z_]+)\"", source))
    assert read  # the module does read some directly
    assert read <= otel_env_names()
    assert {"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} <= otel_env_names()


# --------------------------------------------------------------------------- planted drift


def _workload(objects: list[dict], name: str) -> dict[str, Any]:
    return next(
        o
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == name
    )


def _container(objects: list[dict], name: str) -> dict[str, Any]:
    return _workload(objects, name)["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture
def dev(overlays: dict) -> list[dict[str, Any]]:
    objects = copy.deepcopy(overlays["dev"])
    assert check_drift(objects) == []
    return objects


def test_drift_catches_an_env_var_no_setting_reads(dev: list) -> None:
    _container(dev, "threshold")["env"].append({"name": "SENTINEL_ADAPTIVE_MARGN", "value": "0.1"})
    errors = check_drift(dev)
    assert len(errors) == 1
    assert (
        "Deployment/threshold: SENTINEL_ADAPTIVE_MARGN is not read by `serve threshold`"
        in errors[0]
    )


def test_drift_catches_a_configmap_key_no_setting_reads(dev: list) -> None:
    common = next(
        o for o in dev if o["kind"] == "ConfigMap" and "sentinel-common" in o["metadata"]["name"]
    )
    common["data"]["SENTINEL_LOGLEVEL"] = "INFO"
    errors = check_drift(dev)
    # Every workload takes sentinel-common.
    assert len(errors) == 5 and all("SENTINEL_LOGLEVEL is not read" in e for e in errors)


def test_drift_catches_a_setting_given_to_the_wrong_role(dev: list) -> None:
    _container(dev, "statistical")["env"].append(
        {"name": "SENTINEL_COMBINE_POLICY", "value": "any"}
    )
    assert check_drift(dev) == [
        "Deployment/statistical: SENTINEL_COMBINE_POLICY is not read by `serve statistical` (not "
        "a setting of SpecialistSettings, not an OpenTelemetry variable, not referred to by "
        "another variable)"
    ]


def test_drift_catches_a_helper_variable_nothing_refers_to(dev: list) -> None:
    env = _container(dev, "model-v1")["env"]
    env[:] = [e for e in env if e["name"] != "OTEL_RESOURCE_ATTRIBUTES"]
    errors = check_drift(dev)
    assert [e.split(" is not read")[0] for e in errors] == [
        "Deployment/model-v1: POD_NAME",
        "Deployment/model-v1: POD_NAMESPACE",
        "Deployment/model-v1: SENTINEL_DEPLOYMENT_VERSION",
    ]


def test_drift_catches_a_value_the_settings_refuse(dev: list) -> None:
    orchestrator = next(
        o
        for o in dev
        if o["kind"] == "ConfigMap" and "orchestrator-config" in o["metadata"]["name"]
    )
    orchestrator["data"]["SENTINEL_COMBINE_POLICY"] = "sometimes"
    errors = check_drift(dev)
    assert len(errors) == 1
    assert errors[0].startswith("StatefulSet/orchestrator: OrchestratorSettings refuses")
    assert "combine_policy" in errors[0]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["serve", "model", "--modle", "iforest-v2"], "No such option: --modle"),
        (["serve", "modle"], "'modle' is not one of"),
        (["demo", "--seconds", "5"], "is not `sentinel serve ...`"),
    ],
)
def test_drift_catches_args_serve_does_not_accept(dev: list, args: list, complaint: str) -> None:
    _container(dev, "model-v2")["args"] = args
    errors = check_drift(dev)
    assert len(errors) == 1 and errors[0].startswith("Deployment/model-v2: ")
    assert complaint in errors[0]

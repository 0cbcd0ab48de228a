"""The alerting option (k8s/optional/alertmanager, k8s/optional/prometheus-rules, composed in
k8s/overlays/alerting): it validates strictly, leaves the Sentinel install consistent, wires the
orchestrator to the Alertmanager it deploys, and its configuration and rules pass the real
`amtool` and `promtool` over metric names the mesh really exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import manifest_checks as mc
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sentinel.orchestrator.alertmanager import AlertmanagerMetrics
from sentinel.orchestrator.metrics import OrchestratorMetrics
from sentinel.orchestrator.settings import OrchestratorSettings

OVERLAY = mc.REPO_ROOT / "k8s" / "overlays" / "alerting"
AM_CONFIG = mc.REPO_ROOT / "k8s" / "optional" / "alertmanager" / "alertmanager.yml"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (apt-get install {package})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; .ci/run installs it, so CI must have it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def objects(kubectl: str) -> list[dict[str, Any]]:
    return mc.render(OVERLAY, kubectl)


def _one(objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _is_alertmanager(obj: dict[str, Any]) -> bool:
    name = obj["metadata"]["name"]
    return name == "alertmanager" or name.startswith(("alertmanager-", "alertmanager-config"))


def test_every_object_validates_strictly(objects, registry, cel_stats) -> None:
    errors = [e for o in objects if not registry.handles(o) for e in mc.validate_kubernetes(o)]
    stats = mc.CelStats()
    errors += [e for o in objects if registry.handles(o) for e in registry.validate(o, stats)]
    cel_stats.merge(stats)
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in objects}
    assert {"PrometheusRule", "Deployment", "AuthorizationPolicy", "NetworkPolicy"} <= kinds
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "sentinel"
    }


def test_the_sentinel_install_stays_consistent(objects, adapter_metrics) -> None:
    sentinel = [o for o in objects if not _is_alertmanager(o)]
    errors = mc.cross_check(
        sentinel, adapter_metrics=adapter_metrics, image_uid=mc.dockerfile_uid()
    )
    assert not errors, "\n".join(errors)


def test_the_orchestrator_posts_to_the_alertmanager_it_deploys(objects) -> None:
    config = _one(objects, "ConfigMap", "orchestrator-config")["data"]
    settings = OrchestratorSettings(
        **{k.removeprefix("SENTINEL_").lower(): v for k, v in config.items()},
        host="0.0.0.0",
        allow_insecure=True,
    )
    url = urllib.parse.urlsplit(settings.alertmanager_url)
    service = _one(objects, "Service", "alertmanager")
    assert url.hostname == "alertmanager.sentinel.svc.cluster.local"
    [port] = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    deployment = _one(objects, "Deployment", "alertmanager")
    pod = deployment["spec"]["template"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    [container] = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert f"--web.listen-address=:{container['ports'][0]['containerPort']}" in container["args"]
    assert settings.alertmanager_labels == "cluster=prod"
    # Layer 4 and layer 7 let the orchestrator in, on that port, for the v2 alerts API.
    policy = _one(objects, "NetworkPolicy", "alertmanager-from-orchestrator")
    assert {"podSelector": {"matchLabels": {"app": "orchestrator"}}} in policy["spec"]["ingress"][
        0
    ]["from"]
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == port["targetPort"]
    authz = _one(objects, "AuthorizationPolicy", "alertmanager-allow-orchestrator")
    [rule] = authz["spec"]["rules"]
    assert rule["from"][0]["source"]["principals"] == [
        f"cluster.local/ns/sentinel/sa/{_orchestrator_account(objects)}"
    ]
    assert rule["to"][0]["operation"] == {"methods": ["GET", "POST"], "paths": ["/api/v2/alerts"]}


def _orchestrator_account(objects) -> str:
    return _one(objects, "StatefulSet", "orchestrator")["spec"]["template"]["spec"][
        "serviceAccountName"
    ]


def test_the_alertmanager_config_passes_amtool(objects, tmp_path: Path) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    mounted = _one(objects, "ConfigMap", "alertmanager-config")["data"]
    assert mounted == {"alertmanager.yml": AM_CONFIG.read_text()}
    args = _one(objects, "Deployment", "alertmanager")["spec"]["template"]["spec"]["containers"][0]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in args["args"]
    result = subprocess.run(
        [amtool, "check-config", str(AM_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _exported_metrics() -> set[str]:
    registry = CollectorRegistry()
    OrchestratorMetrics(registry)
    AlertmanagerMetrics(registry)
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)  # gauges have samples even when unbound
    # Histograms and labelled counters without samples yet: their series names.
    names |= {f"{n}_total" for n in names} | {f"{n}_count" for n in names}
    return names


def test_health_rules_pass_promtool_and_use_exported_metrics(objects, tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    rule = _one(objects, "PrometheusRule", "sentinel-mesh-health")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "SentinelDegradedVerdicts",
        "SentinelSpecialistErrors",
        "SentinelIngestBacklog",
        "SentinelAlertsDropped",
    } <= set(alerts)
    used = {m for expr in alerts.values() for m in re.findall(r"sentinel_[a-z_]+", expr)}
    assert used <= _exported_metrics(), used - _exported_metrics()
    assert "sentinel_orchestrator_queue_depth" in used  # the HPA's own signal

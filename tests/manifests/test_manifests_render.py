"""Every kustomization renders offline, with what each overlay promises."""

from __future__ import annotations

from collections import Counter

import manifest_checks as mc
import pytest


def kinds(objects):
    return Counter(o["kind"] for o in objects)


def one(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def weights(vs, route_name):
    route = next(r for r in vs["spec"]["http"] if r.get("name") == route_name)
    return {d["destination"].get("subset"): d.get("weight") for d in route["route"]}


@pytest.mark.parametrize("path", ["k8s/base", "istio", "k8s/monitoring"])
def test_building_blocks_render(kubectl, repo_root, path):
    objects = mc.render(repo_root / path, kubectl)
    assert objects, f"{path} rendered nothing"


@pytest.mark.parametrize("overlay", mc.OVERLAYS)
def test_overlay_renders_a_complete_install(rendered, overlay):
    objects = rendered[overlay]
    k = kinds(objects)
    assert k["Namespace"] == 1
    assert k["ServiceAccount"] == 4  # one per role
    assert k["DestinationRule"] >= 3 and k["VirtualService"] >= 3
    for kind in (
        "Gateway",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "Telemetry",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ConfigMap",
        "Service",
        "Deployment",
        "StatefulSet",
    ):
        assert k[kind] >= 1, f"{overlay}: no {kind}"
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"sentinel"}


@pytest.mark.parametrize("overlay", ["dev", "prod", "canary"])
def test_deployments_per_role_and_version(rendered, overlay):
    deps = {
        o["metadata"]["name"]: o
        for o in rendered[overlay]
        if o["kind"] in ("Deployment", "StatefulSet")
    }
    assert set(deps) == {"orchestrator", "threshold", "statistical", "model-v1", "model-v2"}
    assert deps["orchestrator"]["kind"] == "StatefulSet"
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    assert (labels["model-v1"]["app"], labels["model-v1"]["version"]) == ("model", "v1")
    assert (labels["model-v2"]["app"], labels["model-v2"]["version"]) == ("model", "v2")
    args = {n: d["spec"]["template"]["spec"]["containers"][0]["args"] for n, d in deps.items()}
    assert args["model-v2"] == ["serve", "model", "--model", "iforest-v2"]
    assert args["model-v1"] == ["serve", "model"]
    assert args["orchestrator"] == ["serve", "orchestrator"]


def test_dev_has_one_replica_each_and_no_autoscaling(rendered):
    objects = rendered["dev"]
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == 5
    for dep in workloads:
        assert dep["spec"].get("replicas") == 1, dep["metadata"]["name"]


@pytest.mark.parametrize("overlay", ["prod", "canary"])
def test_autoscaled_overlays_leave_replicas_to_the_hpa(rendered, overlay):
    objects = rendered[overlay]
    hpas = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert set(hpas) == {"orchestrator", "threshold", "statistical", "model-v1", "model-v2"}
    assert hpas["orchestrator"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "orchestrator",
    }
    orch = hpas["orchestrator"]["spec"]["metrics"]
    assert {
        "type": "Pods",
        "pods": {
            "metric": {"name": "sentinel_orchestrator_queue_depth"},
            "target": {"type": "AverageValue", "averageValue": "4"},
        },
    } in orch


def test_model_split_is_90_10_with_header_route_and_mirror(rendered):
    vs = one(rendered["prod"], "VirtualService", "model")
    assert weights(vs, "score") == {"v1": 90, "v2": 10}
    assert weights(vs, "default") == {"v1": 90, "v2": 10}
    score = next(r for r in vs["spec"]["http"] if r["name"] == "score")
    assert score["mirror"]["subset"] == "v2" and 0 < score["mirrorPercentage"]["value"] <= 100
    header = vs["spec"]["http"][0]
    assert header["match"] == [{"headers": {"x-sentinel-canary": {"exact": "true"}}}]
    assert weights(vs, header["name"]) == {"v2": None}


def test_canary_overlay_raises_v2_and_stops_mirroring(rendered):
    vs = one(rendered["canary"], "VirtualService", "model")
    assert weights(vs, "score") == {"v1": 50, "v2": 50}
    assert weights(vs, "default") == {"v1": 50, "v2": 50}
    assert not any("mirror" in r for r in vs["spec"]["http"])
    hpa = one(rendered["canary"], "HorizontalPodAutoscaler", "model-v2")
    assert hpa["spec"]["minReplicas"] >= 2


def orchestrator_env(objects):
    config = one(objects, "StatefulSet", "orchestrator")["spec"]["template"]["spec"]
    refs = {e["configMapRef"]["name"] for e in config["containers"][0]["envFrom"]}
    return {
        k: v for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] in refs
        for k, v in (o.get("data") or {}).items()
    }  # fmt: skip


def test_shadow_overlay_shadows_v2_with_no_live_traffic(rendered):
    objects = rendered["shadow"]
    vs = one(objects, "VirtualService", "model")
    assert weights(vs, "score") == {"v1": 100, "v2": 0}
    assert weights(vs, "default") == {"v1": 100, "v2": 0}
    assert not any("mirror" in r for r in vs["spec"]["http"])
    assert orchestrator_env(objects)["SENTINEL_SHADOWS"] == (
        "model=dns:///model-v2.sentinel.svc.cluster.local:50051"
    )
    assert one(objects, "Service", "model-v2")["spec"]["selector"] == {
        "app": "model",
        "version": "v2",
    }
    assert one(objects, "HorizontalPodAutoscaler", "model-v2")["spec"]["minReplicas"] >= 3
    # Elsewhere nothing is shadowed but by Flagger's canary.
    for overlay in ("dev", "prod", "canary"):
        assert "SENTINEL_SHADOWS" not in orchestrator_env(rendered[overlay]), overlay


def test_flagger_overlay_hands_the_model_to_flagger(rendered):
    objects = rendered["flagger"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Canary", "model") in names and ("Deployment", "model") in names
    for gone in [
        ("Deployment", "model-v1"),
        ("Deployment", "model-v2"),
        ("Service", "model"),
        ("VirtualService", "model"),
        ("DestinationRule", "model"),
    ]:
        assert gone not in names, f"{gone} must be left to Flagger"
    # While a new version is analysed the orchestrators shadow it (Flagger's model-canary).
    assert orchestrator_env(objects)["SENTINEL_SHADOWS"] == (
        "model=dns:///model-canary.sentinel.svc.cluster.local:50051"
    )


@pytest.mark.parametrize("overlay", mc.OVERLAYS)
def test_orchestrator_shards_are_a_statefulset_with_a_volume_at_the_state_dir(rendered, overlay):
    shards = one(rendered[overlay], "StatefulSet", "orchestrator")
    spec = shards["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["SENTINEL_STATE_DIR"]
    # Per-pod DNS names (orchestrator-K.orchestrator-headless...) for the shards.
    headless = one(rendered[overlay], "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == {"app": "orchestrator"}
    # Keep a shard's checkpoint when scaling down: scaling up gives it back.
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    # No surge for a stateful shard: the Deployment rollout settings are not applied to it.
    assert "strategy" not in spec and spec["updateStrategy"]["type"] == "RollingUpdate"


def test_prod_patches_reach_the_statefulset(rendered):
    shards = one(rendered["prod"], "StatefulSet", "orchestrator")
    pod = shards["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    zone = pod["topologySpreadConstraints"][0]
    assert zone["topologyKey"] == "topology.kubernetes.io/zone"
    assert zone["whenUnsatisfiable"] == "DoNotSchedule"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_trace_service_names_match_the_processes_defaults(rendered, overlay):
    """OTEL_SERVICE_NAME in the pods is the name each role uses by default outside Kubernetes
    (`sentinel-orchestrator`, `sentinel-<engine>`), so traces look the same everywhere."""
    workloads = [o for o in rendered[overlay] if o["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for workload in workloads:
        template = workload["spec"]["template"]
        container = template["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["SENTINEL_APP"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.labels['app']"
        )
        assert env["OTEL_SERVICE_NAME"]["value"] == "sentinel-$(SENTINEL_APP)"
        names = [e["name"] for e in container["env"]]
        assert names.index("SENTINEL_APP") < names.index("OTEL_SERVICE_NAME")  # $() order
        role = container["args"][1]  # serve <role>
        assert template["metadata"]["labels"]["app"] == role, workload["metadata"]["name"]


def test_dev_overlay_uses_a_local_image_not_the_placeholder(rendered):
    images = {
        c["image"]
        for o in rendered["dev"]
        if o["kind"] in ("Deployment", "StatefulSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"sentinel-mesh/sentinel:dev"}

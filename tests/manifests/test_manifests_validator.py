"""Tests of the validator itself: deliberately broken copies must be reported."""

from __future__ import annotations

import copy
import shutil

import manifest_checks as mc
import pytest


def find(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def route(vs, name):
    return next(r for r in vs["spec"]["http"] if r.get("name") == name)


@pytest.fixture
def prod(rendered):
    return copy.deepcopy(rendered["prod"])


def all_problems(objects, registry, adapter_metrics):
    return mc.validate_objects(objects, registry) + mc.cross_check(
        objects, adapter_metrics=adapter_metrics, image_uid=mc.dockerfile_uid()
    )


def assert_reported(errors, *needles):
    assert errors, "the broken copy was accepted"
    for needle in needles:
        assert any(needle in e for e in errors), f"{needle!r} not in:\n" + "\n".join(errors)


def test_the_unbroken_copy_passes(prod, registry, adapter_metrics):
    assert all_problems(prod, registry, adapter_metrics) == []


def test_weight_of_110_is_reported(prod, registry, adapter_metrics):
    route(find(prod, "VirtualService", "model"), "score")["route"][0]["weight"] = 110
    assert_reported(all_problems(prod, registry, adapter_metrics), "sum to 120", "outside 0..100")


def test_missing_subset_is_reported(prod, registry, adapter_metrics):
    dr = find(prod, "DestinationRule", "model")
    dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] != "v2"]
    assert_reported(
        all_problems(prod, registry, adapter_metrics), "subset 'v2' of model is not defined"
    )


def test_subset_selecting_no_pods_is_reported(prod, registry, adapter_metrics):
    find(prod, "DestinationRule", "model")["spec"]["subsets"][1]["labels"]["version"] = "v3"
    assert_reported(all_problems(prod, registry, adapter_metrics), "selects no pods")


def test_unknown_field_in_istio_object_is_reported(prod, registry, adapter_metrics):
    route(find(prod, "VirtualService", "model"), "score")["retries"]["perTryTimeot"] = "1s"
    assert_reported(all_problems(prod, registry, adapter_metrics), "'perTryTimeot' was unexpected")


def test_unknown_field_in_kubernetes_object_is_reported(prod, registry, adapter_metrics):
    find(prod, "Deployment", "threshold")["spec"]["template"]["spec"]["containers"][0][
        "livenesProbe"
    ] = {}
    assert_reported(all_problems(prod, registry, adapter_metrics), "livenesProbe")


def test_unknown_field_in_flagger_canary_is_reported(rendered, registry):
    canary = copy.deepcopy(find(rendered["flagger"], "Canary", "model"))
    canary["spec"]["analysis"]["stepWieght"] = 10
    assert_reported(registry.validate(canary), "'stepWieght' was unexpected")


def test_timeout_on_the_streaming_route_is_reported(prod, registry, adapter_metrics):
    route(find(prod, "VirtualService", "orchestrator"), "stream-telemetry")["timeout"] = "30s"
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "streaming call /sentinel.v1.Orchestrator/StreamTelemetry must have no timeout",
    )


def test_zero_timeout_is_rejected_by_the_crd_cel_rule(prod, registry, adapter_metrics):
    """`timeout: 0s` is not how to disable a timeout: Istio's CRD rejects it (>= 1ms)."""
    route(find(prod, "VirtualService", "orchestrator"), "stream-telemetry")["timeout"] = "0s"
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "CEL rule failed: must be a valid duration greater than 1ms",
    )


def test_retries_on_the_streaming_route_are_reported(prod, registry, adapter_metrics):
    del route(find(prod, "VirtualService", "orchestrator"), "stream-telemetry")["retries"]
    assert_reported(all_problems(prod, registry, adapter_metrics), "must set retries.attempts: 0")


def test_retry_budget_over_the_timeout_is_reported(prod, registry, adapter_metrics):
    route(find(prod, "VirtualService", "threshold"), "score")["retries"]["perTryTimeout"] = "500ms"
    assert_reported(all_problems(prod, registry, adapter_metrics), "exceeds timeout 1s")


def test_route_timeout_beyond_the_orchestrator_deadline_is_reported(
    prod, registry, adapter_metrics
):
    score = route(find(prod, "VirtualService", "model"), "score")
    score["timeout"], score["retries"]["perTryTimeout"] = "3s", "1s"
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "exceeds the orchestrator's 2s deadline for model calls",
    )


def test_unknown_retry_condition_is_reported(prod, registry, adapter_metrics):
    route(find(prod, "VirtualService", "threshold"), "score")["retries"]["retryOn"] = "unavailabel"
    assert_reported(all_problems(prod, registry, adapter_metrics), "unknown retryOn condition")


def test_route_to_a_host_that_is_not_a_service_is_reported(prod, registry, adapter_metrics):
    route(find(prod, "VirtualService", "threshold"), "score")["route"][0]["destination"]["host"] = (
        "thresholds.sentinel.svc.cluster.local"
    )
    assert_reported(all_problems(prod, registry, adapter_metrics), "'thresholds.sentinel")


def test_authorization_path_not_from_the_protos_is_reported(prod, registry, adapter_metrics):
    pol = find(prod, "AuthorizationPolicy", "specialists-allow-orchestrator")
    pol["spec"]["rules"][0]["to"][0]["operation"]["paths"] = ["/sentinel.v1.Specialists/*"]
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "'/sentinel.v1.Specialists/*' is not /<proto service>/*",
    )


def test_specialists_callable_by_another_identity_is_reported(prod, registry, adapter_metrics):
    pol = find(prod, "AuthorizationPolicy", "specialists-allow-orchestrator")
    pol["spec"]["rules"][0]["from"][0]["source"]["principals"] = [
        "cluster.local/ns/sentinel/sa/model"
    ]
    assert_reported(
        all_problems(prod, registry, adapter_metrics), "only be called by the orchestrator"
    )


def test_specialist_target_with_wrong_port_is_reported(prod, registry, adapter_metrics):
    cm = next(
        o for o in prod if o["kind"] == "ConfigMap" and "SENTINEL_SPECIALISTS" in o.get("data", {})
    )
    cm["data"]["SENTINEL_SPECIALISTS"] = cm["data"]["SENTINEL_SPECIALISTS"].replace(
        "model.sentinel.svc.cluster.local:50051", "model.sentinel.svc.cluster.local:9464"
    )
    assert_reported(all_problems(prod, registry, adapter_metrics), "port 9464 is not the grpc port")


def test_specialist_missing_from_the_config_is_reported(prod, registry, adapter_metrics):
    cm = next(
        o for o in prod if o["kind"] == "ConfigMap" and "SENTINEL_SPECIALISTS" in o.get("data", {})
    )
    cm["data"]["SENTINEL_SPECIALISTS"] = ",".join(
        e for e in cm["data"]["SENTINEL_SPECIALISTS"].split(",") if not e.startswith("statistical=")
    )
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "Service 'statistical' is not in SENTINEL_SPECIALISTS",
    )


def test_unnamed_grpc_port_is_reported(prod, registry, adapter_metrics):
    port = find(prod, "Service", "statistical")["spec"]["ports"][0]
    port["name"] = "rpc"
    del port["appProtocol"]
    assert_reported(
        all_problems(prod, registry, adapter_metrics), "not grpc[-*]", "lacks appProtocol"
    )


def test_wrong_readiness_service_is_reported(prod, registry, adapter_metrics):
    c = find(prod, "Deployment", "model-v1")["spec"]["template"]["spec"]["containers"][0]
    c["readinessProbe"]["grpc"]["service"] = "sentinel.v1.Orchestrator"
    assert_reported(all_problems(prod, registry, adapter_metrics), "the model role serves")


def test_grace_period_shorter_than_the_drain_is_reported(prod, registry, adapter_metrics):
    find(prod, "StatefulSet", "orchestrator")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ] = 10
    assert_reported(
        all_problems(prod, registry, adapter_metrics), "does not fit terminationGracePeriodSeconds"
    )


def test_hpa_metric_not_served_by_the_adapter_is_reported(prod, registry, adapter_metrics):
    hpa = find(prod, "HorizontalPodAutoscaler", "orchestrator")
    hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] = "sentinel_queue_depth"
    assert_reported(
        all_problems(prod, registry, adapter_metrics), "not served by the prometheus-adapter"
    )


def test_port_level_mtls_without_selector_fails_the_crd_cel_rule(prod, registry):
    pa = copy.deepcopy(find(prod, "PeerAuthentication", "sentinel-metrics-port"))
    del pa["spec"]["selector"]
    assert_reported(registry.validate(pa), "portLevelMtls requires selector")


def test_broken_source_file_fails_end_to_end(kubectl, registry, adapter_metrics, tmp_path):
    """A weight of 110 typed into istio/ itself: rendered and reported like CI would."""
    for part in ("k8s", "istio"):
        shutil.copytree(mc.REPO_ROOT / part, tmp_path / part)
    vs = tmp_path / "istio" / "virtual-services.yaml"
    text = vs.read_text()
    assert "weight: 90" in text
    vs.write_text(text.replace("weight: 90", "weight: 110", 1))
    objects = mc.render(mc.overlay_dir("prod", tmp_path), kubectl)
    assert_reported(all_problems(objects, registry, adapter_metrics), "sum to 120")


def test_reordered_routes_make_the_canary_patch_fail(kubectl, tmp_path):
    """The canary overlay's JSON 6902 patches `test` before they `replace`."""
    for part in ("k8s", "istio"):
        shutil.copytree(mc.REPO_ROOT / part, tmp_path / part)
    vs = tmp_path / "istio" / "virtual-services.yaml"
    text = vs.read_text()
    assert text.count("- name: score") == 3
    vs.write_text(text.replace("- name: default", "- name: fallback"))
    mc.render(mc.overlay_dir("prod", tmp_path), kubectl)  # prod does not patch routes
    with pytest.raises(mc.RenderError, match="test"):
        mc.render(mc.overlay_dir("canary", tmp_path), kubectl)


def test_orchestrator_without_consistent_hashing_is_reported(prod, registry, adapter_metrics):
    find(prod, "DestinationRule", "orchestrator")["spec"]["trafficPolicy"]["loadBalancer"] = {
        "simple": "LEAST_REQUEST"
    }
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "consistentHash.httpHeaderName is None, not the client's partition header",
        "localityLbSetting.enabled must be false",
    )


def test_hashing_another_header_is_reported(prod, registry, adapter_metrics):
    lb = find(prod, "DestinationRule", "orchestrator")["spec"]["trafficPolicy"]["loadBalancer"]
    lb["consistentHash"]["httpHeaderName"] = "x-sentinel-client-id"
    assert_reported(all_problems(prod, registry, adapter_metrics), "'x-sentinel-client-id'")


def test_state_dir_not_on_the_shard_volume_is_reported(prod, registry, adapter_metrics):
    container = find(prod, "StatefulSet", "orchestrator")["spec"]["template"]["spec"]["containers"][
        0
    ]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "state"]
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "is not the mount of a volumeClaimTemplate",
    )


def test_orchestrator_as_a_deployment_is_reported(prod, registry, adapter_metrics):
    shards = find(prod, "StatefulSet", "orchestrator")
    shards["kind"] = "Deployment"
    for field in ("serviceName", "podManagementPolicy", "updateStrategy"):
        del shards["spec"][field]
    del (
        shards["spec"]["volumeClaimTemplates"],
        shards["spec"]["persistentVolumeClaimRetentionPolicy"],
    )
    assert_reported(
        all_problems(prod, registry, adapter_metrics),
        "run it as a StatefulSet of shards",
        "scaleTargetRef StatefulSet/orchestrator not in bundle",
    )


@pytest.fixture
def flagger(rendered):
    return copy.deepcopy(rendered["flagger"])


def orchestrator_config(objects):
    return next(
        o for o in objects if o["kind"] == "ConfigMap" and "SENTINEL_SHADOWS" in o.get("data", {})
    )


def test_unbroken_flagger_overlay_with_its_shadow_passes(flagger, registry, adapter_metrics):
    assert all_problems(flagger, registry, adapter_metrics) == []


@pytest.mark.parametrize(
    ("shadows", "needle"),
    [
        ("forest=dns:///model-canary.sentinel.svc.cluster.local:50051", "shadow 'forest' is not"),
        ("model=dns:///model.sentinel.svc.cluster.local:50051", "its own specialist's Service"),
        ("model=dns:///model-v3.sentinel.svc.cluster.local:50051", "is not a Service"),
        ("model=dns:///model-canary.sentinel.svc.cluster.local:9464", "no port 9464"),
        ("model=dns:///orchestrator.sentinel.svc.cluster.local:50051", "does not front"),
        ("model", "bad SENTINEL_SHADOWS entry"),
    ],
)
def test_a_broken_shadow_target_is_reported(flagger, registry, adapter_metrics, shadows, needle):
    orchestrator_config(flagger)["data"]["SENTINEL_SHADOWS"] = shadows
    assert_reported(all_problems(flagger, registry, adapter_metrics), needle)

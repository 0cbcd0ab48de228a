"""Cross-object consistency: what no single schema can see."""

from __future__ import annotations

import manifest_checks as mc
import pytest


def test_descriptors_name_the_services_the_manifests_use():
    services = mc.proto_services()
    assert {"sentinel.v1.Orchestrator", "sentinel.v1.Specialist"} <= set(services)
    streaming = {m.name for m in services["sentinel.v1.Orchestrator"] if m.streaming}
    assert {"StreamTelemetry", "WatchAlerts"} <= streaming
    assert {m.name for m in services["sentinel.v1.Specialist"]} >= {"Describe", "Score"}


@pytest.mark.parametrize("overlay", mc.OVERLAYS)
def test_overlay_is_consistent(rendered, adapter_metrics, overlay):
    errors = mc.cross_check(
        rendered[overlay], adapter_metrics=adapter_metrics, image_uid=mc.dockerfile_uid()
    )
    assert not errors, "\n".join(errors)


def test_streaming_ingest_route_has_no_timeout_and_no_retries(rendered):
    vs = next(
        o
        for o in rendered["prod"]
        if o["kind"] == "VirtualService" and o["metadata"]["name"] == "orchestrator"
    )
    path = next(
        m.path
        for m in mc.proto_services()["sentinel.v1.Orchestrator"]
        if m.name == "StreamTelemetry"
    )
    route = next(
        r
        for r in vs["spec"]["http"]
        if any(m.get("uri", {}).get("exact") == path for m in r.get("match", []))
    )
    assert "timeout" not in route
    assert route["retries"] == {"attempts": 0}


def test_specialist_policy_paths_come_from_the_descriptors(rendered):
    policies = {
        o["metadata"]["name"]: o for o in rendered["prod"] if o["kind"] == "AuthorizationPolicy"
    }
    specialist = mc.proto_services()["sentinel.v1.Specialist"][0].service
    paths = policies["specialists-allow-orchestrator"]["spec"]["rules"][0]["to"][0]["operation"][
        "paths"
    ]
    assert paths == [f"/{specialist}/*"]
    principals = policies["specialists-allow-orchestrator"]["spec"]["rules"][0]["from"][0]["source"]
    assert principals["principals"] == ["cluster.local/ns/sentinel/sa/orchestrator"]


def test_adapter_rule_serves_the_hpa_metric_and_renders_to_promql(adapter_metrics):
    assert adapter_metrics == {"sentinel_orchestrator_queue_depth"}
    rule = mc.adapter_rules()[0]
    assert mc.render_metrics_query(rule, 'namespace="sentinel"') == (
        'max(sentinel_orchestrator_queue_depth{namespace="sentinel"}) by (pod)'
    )


def test_keda_alternative_targets_the_orchestrator_and_the_same_metric(
    rendered, registry, adapter_metrics
):
    """The optional KEDA ScaledObject scales the orchestrator's StatefulSet on the HPA's
    metric, and validates against KEDA's CRD when that bundle is present."""
    (scaled,) = mc.load_yaml_objects(mc.KEDA_SCALED_OBJECT)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    ref = scaled["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "StatefulSet",
        "orchestrator",
    )
    assert any(
        o["kind"] == ref["kind"] and o["metadata"]["name"] == ref["name"] for o in rendered["prod"]
    )
    if registry.handles(scaled):
        assert registry.validate(scaled) == []
    queries = [
        t["metadata"]["query"] for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"
    ]
    assert queries and all(any(m in q for m in adapter_metrics) for q in queries)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("600ms", 0.6), ("1.5s", 1.5), ("1m30s", 90.0), ("25s", 25.0)],
)
def test_parse_duration(text, seconds):
    assert mc.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "2", "1x", "s", "1s2"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        mc.parse_duration(bad)


def test_orchestrator_destination_rule_hashes_the_header_the_client_sends(rendered):
    """One owner per sensor: Envoy picks the orchestrator shard by hashing the very header
    TelemetryClient sets (imported, not retyped), with locality balancing off."""
    from sentinel.client import PARTITION_HEADER

    for overlay in mc.OVERLAYS:
        dr = next(
            o
            for o in rendered[overlay]
            if o["kind"] == "DestinationRule" and o["metadata"]["name"] == "orchestrator"
        )
        lb = dr["spec"]["trafficPolicy"]["loadBalancer"]
        assert "simple" not in lb
        assert lb["consistentHash"]["httpHeaderName"] == PARTITION_HEADER
        assert lb["consistentHash"]["ringHash"]["minimumRingSize"] >= 1024
        assert lb["localityLbSetting"] == {"enabled": False}
        assert mc.partition_header() == PARTITION_HEADER

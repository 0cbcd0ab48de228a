"""Every rendered object validates strictly: Kubernetes objects with kubernetes-validate
(pinned version, strict), Istio and Flagger objects against their CRDs' openAPIV3Schema
(unknown fields rejected) and x-kubernetes-validations (CEL) rules."""

from __future__ import annotations

import manifest_checks as mc
import pytest


@pytest.mark.parametrize("overlay", mc.OVERLAYS)
def test_kubernetes_objects_validate_strictly(rendered, registry, overlay):
    builtin = [o for o in rendered[overlay] if not registry.handles(o)]
    assert len(builtin) >= 20
    errors = [e for o in builtin for e in mc.validate_kubernetes(o)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", mc.OVERLAYS)
def test_custom_resources_validate_against_crds(rendered, registry, cel_stats, overlay):
    custom = [o for o in rendered[overlay] if registry.handles(o)]
    assert len(custom) >= 10
    stats = mc.CelStats()
    errors = [e for o in custom for e in registry.validate(o, stats)]
    cel_stats.merge(stats)
    assert not errors, "\n".join(errors)
    # The CEL rules really ran (durations, selectors, portLevelMtls, ...).
    assert stats.evaluated >= 20 and len(stats.rules_evaluated) >= 5, stats.summary()


def test_monitoring_config_validates(kubectl, repo_root):
    objects = mc.render(repo_root / "k8s" / "monitoring", kubectl)
    errors = [e for o in objects for e in mc.validate_kubernetes(o)]
    assert not errors, "\n".join(errors)
    assert [o["metadata"]["name"] for o in objects] == ["sentinel-adapter-config"]


def test_every_istio_and_flagger_kind_used_has_a_schema(rendered, registry):
    for objects in rendered.values():
        for o in objects:
            if registry.handles(o):
                assert registry.lookup(o) is not None, mc.obj_id(o)


def test_most_crd_cel_rules_are_evaluable(registry):
    """cel-python evaluates the rules of the CRDs we use; the rest are skipped, by name."""
    used = {
        ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "DestinationRule"),
        ("networking.istio.io", "Gateway"),
        ("security.istio.io", "PeerAuthentication"),
        ("security.istio.io", "AuthorizationPolicy"),
        ("telemetry.istio.io", "Telemetry"),
        ("flagger.app", "Canary"),
        ("flagger.app", "MetricTemplate"),
    }
    rules_used = set()
    all_rules = set()
    for (group, _version, kind), crd in registry.versions.items():
        rules = mc.schema_rules(crd.schema)
        all_rules |= rules
        if (group, kind) in used:
            rules_used |= rules
    unsupported_used = {r for r in rules_used if mc.cel_rule_support(r)}
    assert not unsupported_used, unsupported_used
    unsupported_all = {r: mc.cel_rule_support(r) for r in all_rules if mc.cel_rule_support(r)}
    # Only the URL library (WasmPlugin / TrafficExtension) is missing from cel-python.
    assert all(missing <= {"isURL", "url", "getScheme"} for missing in unsupported_all.values())
    assert len(all_rules) - len(unsupported_all) >= 30


def test_unsupported_cel_functions_are_skipped_not_failed():
    assert mc.evaluate_cel("isURL(self) ? true : false", "http://x")[0] == "skip"
    assert mc.evaluate_cel("duration(self) >= duration('1ms')", "250ms")[0] == "pass"
    assert mc.evaluate_cel("duration(self) >= duration('1ms')", "0s")[0] == "fail"
    assert mc.evaluate_cel('self.substring(7, 8) == "/"', "unix:///run/x")[0] == "pass"

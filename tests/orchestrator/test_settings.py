"""OrchestratorSettings: env prefix SENTINEL_, specialist targets, weights, plaintext guard."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from sentinel.orchestrator.combine import Policy
from sentinel.orchestrator.settings import DEFAULT_SPECIALISTS, OrchestratorSettings, parse_weights
from sentinel.orchestrator.specialist_pool import SpecialistTarget, parse_targets


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("SENTINEL_"):
            monkeypatch.delenv(name)


def test_defaults():
    settings = OrchestratorSettings()
    assert settings.host == "127.0.0.1"
    assert settings.specialists == DEFAULT_SPECIALISTS
    names = [t.name for t in parse_targets(settings.specialists)]
    assert names == ["threshold", "statistical", "model"]
    # Per-engine likelihoods combined by `any` scored best on the dev split (issue 8).
    assert settings.combine_policy is Policy.ANY
    assert settings.weights() == {}
    # Resolve after ~10 quiet readings (about 1 h at 5-minute sampling); no time rule by default.
    assert settings.resolve_after == 10
    assert settings.resolve_after_seconds == 0
    assert settings.thresholds() == {}
    assert settings.max_history_bytes_per_sensor == 4096
    assert settings.max_window_length == 1000


def test_environment_with_sentinel_prefix(monkeypatch):
    monkeypatch.setenv("SENTINEL_SPECIALISTS", "threshold=dns:///threshold.sentinel.svc:50051")
    monkeypatch.setenv("SENTINEL_COMBINE_POLICY", "weighted")
    monkeypatch.setenv("SENTINEL_COMBINE_WEIGHTS", "threshold=2")
    monkeypatch.setenv("SENTINEL_PORT", "6000")
    monkeypatch.setenv("SENTINEL_RESOLVE_AFTER", "3")
    monkeypatch.setenv("RESOLVE_AFTER", "9")  # unprefixed: ignored
    settings = OrchestratorSettings()
    assert parse_targets(settings.specialists) == [
        SpecialistTarget("threshold", "dns:///threshold.sentinel.svc:50051")
    ]
    assert settings.combine_policy is Policy.WEIGHTED
    assert settings.weights() == {"threshold": 2.0}
    assert settings.port == 6000
    assert settings.resolve_after == 3


@pytest.mark.parametrize(
    "spec",
    [
        "threshold=a:1,threshold=b:2",  # duplicate name
        "threshold",  # no '='
        "=127.0.0.1:1",  # no name
        "threshold=",  # no target
        "threshold=a:1, statistical",  # one malformed part
    ],
)
def test_bad_specialists_are_rejected(monkeypatch, spec):
    monkeypatch.setenv("SENTINEL_SPECIALISTS", spec)
    with pytest.raises(ValidationError):
        OrchestratorSettings()
    with pytest.raises(ValueError):
        parse_targets(spec)


def test_parse_targets_trims_and_skips_empty_parts():
    assert parse_targets(" a = x:1 ,, b=dns:///b.svc:50051 ,") == [
        SpecialistTarget("a", "x:1"),
        SpecialistTarget("b", "dns:///b.svc:50051"),
    ]
    assert parse_targets("") == []


def test_target_may_contain_equals_signs():
    assert parse_targets("m=unix:///tmp/s?x=1") == [SpecialistTarget("m", "unix:///tmp/s?x=1")]


def test_parse_weights():
    assert parse_weights("") == {}
    assert parse_weights(" model = 2 , threshold=0.5,, statistical=0") == {
        "model": 2.0,
        "threshold": 0.5,
        "statistical": 0.0,
    }


@pytest.mark.parametrize("spec", ["model", "model=-1", "model=nan", "model=abc"])
def test_bad_weights_are_rejected(monkeypatch, spec):
    with pytest.raises(ValueError):
        parse_weights(spec)
    monkeypatch.setenv("SENTINEL_COMBINE_WEIGHTS", spec)
    with pytest.raises(ValidationError):
        OrchestratorSettings()


@pytest.mark.parametrize("spec", ["model=inf", "model=nan", "=2", "model=1,model=2", "model=-1"])
def test_unusable_weights_are_rejected(spec):
    with pytest.raises(ValueError):
        parse_weights(spec)


def test_unknown_policy_is_rejected(monkeypatch):
    monkeypatch.setenv("SENTINEL_COMBINE_POLICY", "unanimous")
    with pytest.raises(ValidationError):
        OrchestratorSettings()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "orchestrator.svc", ""])
def test_plaintext_on_non_loopback_host_is_refused(monkeypatch, host):
    monkeypatch.setenv("SENTINEL_HOST", host)
    with pytest.raises(ValidationError, match="plaintext"):
        OrchestratorSettings()
    monkeypatch.setenv("SENTINEL_ALLOW_INSECURE", "true")
    assert OrchestratorSettings().host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_plaintext_on_loopback_is_fine(host):
    assert OrchestratorSettings(host=host).allow_insecure is False


def test_tls_allows_any_host():
    settings = OrchestratorSettings(host="0.0.0.0", tls_cert_file="c.pem", tls_key_file="k.pem")
    assert settings.tls_enabled


def test_tls_cert_and_key_go_together():
    with pytest.raises(ValidationError):
        OrchestratorSettings(tls_cert_file="c.pem")


def test_settings_are_frozen():
    settings = OrchestratorSettings()
    with pytest.raises(ValidationError):
        settings.resolve_after = 7
    assert settings.resolve_after == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SENTINEL_RESOLVE_AFTER", "0"),
        ("SENTINEL_SPECIALIST_TIMEOUT_SECONDS", "0"),
        ("SENTINEL_PORT", "70000"),
        ("SENTINEL_MAX_SENSORS", "10"),  # fewer than max_batch_readings
    ],
)
def test_out_of_range_values_are_rejected(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        OrchestratorSettings()


def test_resolve_by_time_only(monkeypatch):
    monkeypatch.setenv("SENTINEL_RESOLVE_AFTER", "0")
    monkeypatch.setenv("SENTINEL_RESOLVE_AFTER_SECONDS", "3600")
    settings = OrchestratorSettings()
    assert (settings.resolve_after, settings.resolve_after_seconds) == (0, 3600.0)


def test_likelihood_thresholds_parse(monkeypatch):
    monkeypatch.setenv(
        "SENTINEL_LIKELIHOOD_THRESHOLDS", "statistical.level=1e-6, statistical.daily=1e-9"
    )
    assert OrchestratorSettings().thresholds() == {
        "statistical.level": 1e-6,
        "statistical.daily": 1e-9,
    }


@pytest.mark.parametrize(
    "spec",
    ["level=1e-6", "statistical.level=-1e-6", "statistical.level=1", "statistical.level"],
)
def test_bad_likelihood_thresholds_are_rejected(spec):
    with pytest.raises(ValidationError):
        OrchestratorSettings(likelihood_thresholds=spec)


def test_a_zero_threshold_switches_a_channel_off():
    settings = OrchestratorSettings(likelihood_thresholds="statistical.level=0")
    assert settings.thresholds() == {"statistical.level": 0.0}


def test_shadows_name_configured_specialists():
    settings = OrchestratorSettings(
        specialists="threshold=127.0.0.1:1,model=127.0.0.1:2", shadows="model=127.0.0.1:3"
    )
    assert parse_targets(settings.shadows) == [SpecialistTarget("model", "127.0.0.1:3")]
    assert settings.shadow_verdicts is False  # shadows never delay verdicts unless asked
    with pytest.raises(ValidationError, match="shadows: 'forest' is not a configured specialist"):
        OrchestratorSettings(specialists="model=127.0.0.1:2", shadows="forest=127.0.0.1:3")
    with pytest.raises(ValidationError, match="expected name=target"):
        OrchestratorSettings(shadows="model")
    with pytest.raises(ValidationError, match="configured twice"):
        OrchestratorSettings(shadows="model=127.0.0.1:3,model=127.0.0.1:4")


# -- the memory budget (issue 13) ---------------------------------------------------------------

MIB = 1024 * 1024


def test_the_default_memory_plan_fits_the_default_budget_and_the_receive_limit_follows_batches():
    settings = OrchestratorSettings()
    plan = settings.memory_plan()
    assert plan.total <= settings.memory_budget_bytes == 768 * MIB
    assert plan.checkpoint_copy == 0
    # 100,000 sensors at most 4,096 bytes of history plus a 256-character id of 4-byte characters.
    assert plan.histories == 100_000 * (4_096 + 136 + 76 + 4 * 256)
    # 10,000 readings of the widest kind (1,050 bytes each on the wire) plus the batch fields.
    assert settings.max_receive_message_bytes() == 10_000 * 1_050 + 537
    assert OrchestratorSettings(max_batch_readings=100).max_receive_message_bytes() == 105_537
    assert OrchestratorSettings(max_message_bytes=4096).max_receive_message_bytes() == 4096


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        # A single batch of the largest kind could never be admitted.
        ({"inflight_budget_bytes": 16 * MIB}, r"inflight_budget_bytes \(16,777,216\) must hold"),
        # ... nor a round of the largest batch be scored.
        ({"scoring_budget_bytes": 32 * MIB}, r"scoring_budget_bytes \(33,554,432\) must hold"),
        # The parts add up to more than the total.
        ({"max_sensors": 200_000}, r"exceeds memory_budget_bytes \(768 MiB\); at most 12\d,\d{3}"),
        # A checkpoint copies the histories: 100,000 sensors and their copy do not fit 768 MiB.
        ({"state_dir": "/tmp/state"}, r"checkpoint copy 391 MiB.*at most 6\d,\d{3} sensors"),
    ],
)
def test_budgets_that_contradict_each_other_are_refused_at_startup(fields, complaint):
    with pytest.raises(ValidationError, match=complaint):
        OrchestratorSettings(**fields)


def test_smaller_limits_make_room_for_checkpoints():
    settings = OrchestratorSettings(state_dir="/tmp/state", max_sensors=60_000)
    assert settings.memory_plan().checkpoint_copy == 60_000 * 4_096
    assert settings.memory_plan().total <= settings.memory_budget_bytes
    small = OrchestratorSettings(
        max_batch_readings=1_000, max_sensor_id_length=64, inflight_budget_bytes=4 * MIB
    )
    assert small.max_receive_message_bytes() < 300_000

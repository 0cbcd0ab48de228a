"""Flagger's shadow MetricTemplates (k8s/overlays/flagger/canary.yaml) run against a real
Prometheus scraping a real orchestrator whose model (iforest-v1) is shadowed by iforest-v2,
each its own server: every query returns one value, and that value is what the orchestrator's
own counters say (read from its registry), as Flagger would compare with the Canary's ranges."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from mesh_fixtures import LIMIT_90_RULES, no_tracing, start_specialist
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.model import load_model_engine

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
CANARY = REPO / "k8s" / "overlays" / "flagger" / "canary.yaml"
PROMETHEUS = shutil.which("prometheus")
LABELS = {"namespace": "sentinel", "pod": "orchestrator-0"}
SHADOW_TEMPLATES = ("shadow-rows-compared", "shadow-anomaly-rate-ratio", "shadow-error-rate")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (.ci/run installs Debian's package)"
)


def canary_documents() -> tuple[dict, dict[str, str]]:
    """The Canary and each MetricTemplate's query, by template name."""
    documents = list(yaml.safe_load_all(CANARY.read_text()))
    canary = next(d for d in documents if d["kind"] == "Canary")
    templates = {
        d["metadata"]["name"]: d["spec"]["query"]
        for d in documents
        if d["kind"] == "MetricTemplate"
    }
    return canary, templates


def flagger_render(query: str, target: str, interval: str) -> str:
    """What Flagger sends Prometheus: its template variables filled in."""
    rendered = (
        query.replace("{{ namespace }}", LABELS["namespace"])
        .replace("{{ target }}", target)
        .replace("{{ interval }}", interval)
    )
    assert "{{" not in rendered, rendered
    return rendered


def test_the_canary_is_gated_on_every_shadow_template() -> None:
    canary, templates = canary_documents()
    analysis = canary["spec"]["analysis"]
    # Blue/green: the primary keeps every live request while the canary is judged as a shadow.
    assert analysis["iterations"] > 0 and "stepWeight" not in analysis
    gates = {m["templateRef"]["name"]: m for m in analysis["metrics"] if "templateRef" in m}
    assert set(SHADOW_TEMPLATES) <= set(gates) and set(SHADOW_TEMPLATES) <= set(templates)
    assert gates["shadow-rows-compared"]["thresholdRange"]["min"] > 0
    band = gates["shadow-anomaly-rate-ratio"]["thresholdRange"]
    assert 0 < band["min"] < 1 < band["max"]
    assert gates["shadow-error-rate"]["thresholdRange"]["max"] <= 5
    for name in SHADOW_TEMPLATES:
        assert re.search(r'specialist="\{\{ target \}\}"', templates[name]), name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _query(base: str, promql: str, at: float | None = None) -> list:
    params = {"query": promql} | ({"time": repr(at)} if at is not None else {})
    url = f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    return json.loads(body)["data"]["result"]


def batches() -> list[pb.TelemetryBatch]:
    """4 sensors x 400 readings: noise, spikes and a level shift (both models flag some)."""
    rng = np.random.default_rng(5)
    values = 50.0 + rng.normal(0.0, 1.0, (4, 400))
    for at, size in ((210, 4.0), (240, 7.0), (270, 12.0), (330, 25.0)):
        values[:, at] += size
    values[:, 360:] += 6.0
    start = 1_700_000_000 * 1_000_000_000
    return [
        pb.TelemetryBatch(
            batch_id=b + 1,
            verdicts=pb.VERDICT_MODE_NONE,
            readings=[
                pb.Reading(
                    sensor_id=f"s-{s}",
                    value=float(values[s, i]),
                    timestamp_unix_nanos=start + i * 1_000_000_000,
                )
                for i in range(b * 10, b * 10 + 10)
                for s in range(4)
            ],
        )  # fmt: skip
        for b in range(40)
    ]


async def _until(predicate, what: str, tries: int = 200) -> None:
    """Poll an async predicate (a hang guard, not a timing)."""
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen")


@pytest.mark.timeout(120)
async def test_shadow_templates_read_the_orchestrators_counters_from_prometheus(
    tmp_path: Path,
) -> None:
    _, templates = canary_documents()
    specialists = [
        await start_specialist("threshold", threshold_rules_file=LIMIT_90_RULES),
        await start_specialist("model"),
        await start_specialist("model", model_path="iforest-v2"),
    ]
    threshold, v1, v2 = (f"127.0.0.1:{p.server.port}" for p in specialists)
    orchestrator = OrchestratorProcess(
        OrchestratorSettings(
            port=0,
            metrics_port=0,
            drain_delay_seconds=0,
            specialists=f"threshold={threshold},model={v1}",
            shadows=f"model={v2}",
        ),
        no_tracing(),
    )
    await orchestrator.start()
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{orchestrator.metrics_endpoint.port}"]}
                ],
                # What the kubernetes-pods job's relabelling attaches in a cluster.
                "relabel_configs": [
                    {"target_label": k, "replacement": v} for k, v in LABELS.items()
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    compared = 'sentinel_orchestrator_shadow_rows_compared_total{specialist="model"}'

    async def scraped(expected: float | None) -> bool:
        try:
            result = await _query(base, compared)
        except OSError:
            return False
        return bool(result) and (expected is None or float(result[0]["value"][1]) == expected)

    try:
        # The shadow's series exist at 0 before its first call: Prometheus saw them start.
        await _until(lambda: scraped(0.0), "the shadow's series at 0")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            async for _ in stub.StreamTelemetry(iter(batches())):
                pass
        for _ in range(600):
            if orchestrator.shadows.outstanding == 0:
                break
            await asyncio.sleep(0.05)
        value = orchestrator.registry.get_sample_value
        v1_version, v2_version = (
            load_model_engine(name).version for name in ("iforest-v1", "iforest-v2")
        )
        labels = {"specialist": "model", "primary_version": v1_version,
                  "shadow_version": v2_version}  # fmt: skip
        counts = {
            name: value(f"sentinel_orchestrator_shadow_{name}_total", labels)
            for name in ("rows_compared", "both_anomalous", "only_primary_anomalous",
                         "only_shadow_anomalous")
        }  # fmt: skip
        assert counts["rows_compared"] > 0 and counts["both_anomalous"] > 0
        await _until(lambda: scraped(counts["rows_compared"]), "the final count scraped")
        # Evaluated at the last scrape: increase() over the series' whole life is then exact.
        (stamp,) = await _query(base, f"timestamp({compared})")
        at = float(stamp["value"][1])

        results = {}
        for name in SHADOW_TEMPLATES:
            promql = flagger_render(templates[name], "model", "10m")
            result = await _query(base, promql, at)
            assert len(result) == 1, (name, result)
            results[name] = float(result[0]["value"][1])
        assert results["shadow-rows-compared"] == counts["rows_compared"]
        assert results["shadow-anomaly-rate-ratio"] == pytest.approx(
            (counts["both_anomalous"] + counts["only_shadow_anomalous"] + 1)
            / (counts["both_anomalous"] + counts["only_primary_anomalous"] + 1)
        )
        assert results["shadow-error-rate"] == 0.0  # no error series at all: `or vector(0)`
        # Another specialist has no shadow: no values, which Flagger counts as a failed check.
        for name in SHADOW_TEMPLATES:
            promql = flagger_render(templates[name], "threshold", "10m")
            assert await _query(base, promql, at) == [], name
    finally:
        server.terminate()
        server.wait(timeout=10)
        await orchestrator.stop(drain_delay=0, grace=0)
        for process in specialists:
            await process.stop(drain_delay=0, grace=0)

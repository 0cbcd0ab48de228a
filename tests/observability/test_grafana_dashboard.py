"""The Grafana dashboard shipped in k8s/grafana: valid, it queries only metrics (and labels) the
code exports, and against a real Prometheus scraping a running mesh every query returns data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sentinel.orchestrator.agreement import Agreement
from sentinel.orchestrator.metrics import OrchestratorMetrics
from sentinel.specialists.metrics import SpecialistMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "sentinel-dashboard.json"
# Labels Prometheus adds when scraping (target labels), usable in any query.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container"}
METRIC = re.compile(r"\bsentinel_[a-z0-9_]+\b")


def exported_metrics() -> dict[str, set[str]]:
    """Every series name a fresh orchestrator and specialist can expose → its label names."""
    orchestrator = OrchestratorMetrics(CollectorRegistry())
    # Touch each labelled metric once so its children (and label names) appear.
    orchestrator.observe_call("threshold", "1.0.0", 0.01, "UNAVAILABLE")
    orchestrator.verdicts.labels("ok").inc()
    orchestrator.alerts.labels("open").inc()
    orchestrator.rejected.labels("INVALID_ARGUMENT").inc()
    orchestrator.bind_specialists(["threshold"], lambda name: True)
    orchestrator.observe_shadow_call("model", "2.0.0", 0.01, "UNAVAILABLE")
    orchestrator.count_agreement("model", "1.0.0", "2.0.0", Agreement(1, 0, 1, 0, np.zeros(1)))
    orchestrator.shadow_skipped.labels("model", "busy").inc()
    orchestrator.shadow_incidents.labels("model", "2.0.0").inc()
    orchestrator.bind_shadows(["model"], lambda name: True)
    specialist = SpecialistMetrics(CollectorRegistry(), "threshold", "1.0.0")
    names: dict[str, set[str]] = {}
    for registry in (orchestrator.registry, specialist.registry):
        for family in registry.collect():
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def queries(dashboard: dict) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def test_dashboard_is_a_grafana_dashboard(dashboard: dict) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_covers_what_operators_need(dashboard: dict) -> None:
    exprs = "\n".join(e for _, e in queries(dashboard))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "throughput",
        "queue depth",
        "latency",
        "anomaly rate",
        "degraded",
        "errors",
        "alerts",
        "shadow",
    ):
        assert topic in titles, topic
    assert "rate(sentinel_orchestrator_readings_received_total" in exprs
    assert "sentinel_orchestrator_queue_depth" in exprs
    assert re.search(
        r"histogram_quantile\(0\.99, sum by \(le, specialist, version\) \(rate\("
        r"sentinel_orchestrator_specialist_call_duration_seconds_bucket",
        exprs,
    )
    assert re.search(
        r"histogram_quantile\(0\.99, sum by \(le, engine, version\) \(rate\("
        r"sentinel_specialist_score_duration_seconds_bucket",
        exprs,
    )
    assert re.search(
        r"sum by \(engine, version\) \(rate\(sentinel_specialist_anomalies_total[^\n]*\) / "
        r"sum by \(engine, version\) \(rate\(sentinel_specialist_rows_scored_total",
        exprs,
    )
    assert 'status="degraded"' in exprs
    assert (
        "sum by (specialist, version, code) (rate(sentinel_orchestrator_specialist_errors_total"
        in exprs
    )
    assert "sum by (state) (rate(sentinel_orchestrator_alerts_total" in exprs
    # The canary row: both engines' anomaly rates on the same compared rows, by version.
    assert re.search(
        r"sum by \(specialist, primary_version, shadow_version\) \(rate\("
        r"sentinel_orchestrator_shadow_only_shadow_anomalous_total[^\n]*\) / "
        r"sum by \(specialist, primary_version, shadow_version\) \(rate\("
        r"sentinel_orchestrator_shadow_rows_compared_total",
        exprs,
    )


def test_every_queried_metric_and_label_is_exported(dashboard: dict) -> None:
    exported = exported_metrics()
    used = set()
    for title, expr in queries(dashboard):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), title
        metrics = METRIC.findall(expr)
        assert metrics, title
        unknown = [m for m in metrics if m not in exported]
        assert not unknown, f"{title}: {unknown} not exported (have {sorted(exported)})"
        used.update(metrics)
        # rate()/increase() only over counters and histogram buckets, never over gauges.
        for metric in re.findall(r"\b(?:rate|increase)\((sentinel_[a-z0-9_]+)", expr):
            assert metric.endswith(("_total", "_bucket")), f"{title}: rate over {metric}"
        # Labels grouped by or matched on must exist on the metrics of the expression.
        available = set().union(*(exported[m] for m in metrics)) | TARGET_LABELS
        grouped = {
            label.strip()
            for group in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in group.split(",")
        }
        matched = set(re.findall(r"([a-z_]+)=~?\"", expr))
        assert grouped | matched <= available, f"{title}: {(grouped | matched) - available}"

    # Every exported metric appears on some panel.
    def base(name: str) -> str:
        return re.sub(r"_(bucket|count|sum)$", "", name)

    exported_bases = {base(n) for n in exported if not n.endswith("_created")}
    assert exported_bases - {base(n) for n in used} == set()


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian's prometheus)"
)
def test_every_query_is_valid_promql(dashboard: dict, tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced as Grafana would)."""
    rules = [
        {
            "record": f"sentinel:dashboard_query:{index}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$namespace", ".*"),
        }
        for index, (_, expr) in enumerate(queries(dashboard))
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _prometheus_query(base: str, promql: str) -> list:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    return json.loads(body)["data"]["result"]


@pytest.mark.timeout(90)
@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (Debian's package)"
)
async def test_every_panel_shows_data_from_a_real_prometheus(
    dashboard: dict, tmp_path: Path
) -> None:
    """A real Prometheus scrapes a running mesh with a shadow model (a spike, then a specialist
    and the shadow lost midway, so that alerts, degraded verdicts, errors and skipped shadow calls
    exist too); every query of the dashboard returns series."""
    from mesh_fixtures import running_mesh, start_specialist

    from sentinel.v1 import orchestrator_pb2 as pb

    engines = ("threshold", "statistical", "model")
    overrides = {engine: {"metrics_port": 0} for engine in engines}
    # windows fill sooner (model: 32); the spike is over the test mesh's hard limit (90)
    overrides["statistical"].update(statistical_short=5, statistical_reference=20)
    shadow = await start_specialist("model", model_path="iforest-v2")
    async with running_mesh(
        metrics_port=0,
        specialist_overrides=overrides,
        shadows=f"model=127.0.0.1:{shadow.server.port}",
    ) as mesh:
        targets = {"orchestrator": mesh.orchestrator.metrics_endpoint.port}
        targets.update({name: p.metrics_endpoint.port for name, p in mesh.specialists.items()})
        port = _free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": f"sentinel-{name}",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    # What the kubernetes-pods job's relabelling attaches in a cluster.
                    "relabel_configs": [
                        {"target_label": "namespace", "replacement": "sentinel"},
                        {"target_label": "pod", "replacement": f"{name}-0"},
                    ],
                }
                for name, metrics_port in targets.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))
        server = subprocess.Popen(
            [
                shutil.which("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(150):  # every target scraped once before the stream starts
                with contextlib.suppress(OSError):
                    up = await _prometheus_query(base, "up == 1")
                    if len(up) == len(targets):
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("prometheus did not scrape every target")
            outbox: asyncio.Queue = asyncio.Queue()

            async def requests():
                while (item := await outbox.get()) is not None:
                    yield item

            async def consume(call) -> list[str]:
                alerts = []
                async for event in call:
                    if event.WhichOneof("event") == "alert":
                        alerts.append(pb.AlertState.Name(event.alert.state))
                return alerts

            consumer = asyncio.create_task(consume(mesh.stub.StreamTelemetry(requests())))
            for i in range(1, 76):  # ~3 s at 25 batches/s: warm-up, spike, a specialist lost
                if i == 45:  # before its specialist: a shadow is called only beside it
                    await shadow.stop(drain_delay=0, grace=0)
                if i == 50:
                    await mesh.specialists["model"].stop(drain_delay=0, grace=0)
                values = [250.0 if (i == 40 and j == 0) else 40.0 + (i + j) % 3 for j in range(5)]
                readings = [pb.Reading(sensor_id=f"p-{j}", value=v) for j, v in enumerate(values)]
                outbox.put_nowait(pb.TelemetryBatch(batch_id=i, readings=readings))
                await asyncio.sleep(0.04)
            outbox.put_nowait(None)
            assert await consumer == ["ALERT_STATE_OPEN", "ALERT_STATE_RESOLVED"]
            await asyncio.sleep(2.0)  # two more scrapes of the final counts

            results: dict[str, list] = {}
            for title, expr in queries(dashboard):
                promql = expr.replace("$__rate_interval", "30s").replace("$namespace", "sentinel")
                results[expr] = await _prometheus_query(base, promql)
                # Nothing was rejected, so only that query may be empty.
                if "batches_rejected_total" not in expr:
                    assert results[expr], f"{title}: no data for {promql}"
        finally:
            server.terminate()
            server.wait(timeout=10)
            with contextlib.suppress(Exception):
                await shadow.stop(drain_delay=0, grace=0)

    def series(fragment: str) -> list:
        return next(r for e, r in results.items() if fragment in e)

    errors = series(
        "sum by (specialist, version, code) (rate(sentinel_orchestrator_specialist_errors_total"
    )
    assert {(s["metric"]["specialist"], s["metric"]["code"]) for s in errors} == {
        ("model", "UNAVAILABLE")
    }
    degraded = series('status="degraded"')
    assert 0 < float(degraded[0]["value"][1]) < 1
    anomaly_rate = series("sentinel_specialist_anomalies_total")
    assert {s["metric"]["engine"] for s in anomaly_rate} >= {"threshold", "statistical"}

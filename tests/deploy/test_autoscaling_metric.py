"""A real Prometheus scrapes a running orchestrator and the prometheus-adapter rule's PromQL
returns its ingest queue depth (the HPA signal)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from mesh_fixtures import HeldSpecialist, no_tracing
from readings import batch
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc, specialist_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
ADAPTER_RULES = REPO / "k8s" / "monitoring" / "adapter-config.yaml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (.ci/run installs Debian's package)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _adapter_query(namespace: str, pod: str) -> str:
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    rule = next(r for r in rules if "sentinel_orchestrator_queue_depth" in r["seriesQuery"])
    series = rule["seriesQuery"].split("{")[0]
    # What prometheus-adapter substitutes when the HPA asks for this pod's metric.
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod}"')
        .replace("<<.GroupBy>>", "pod")
    )


async def _query(base: str, promql: str) -> list:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    return json.loads(body)["data"]["result"]


async def test_adapter_query_returns_the_orchestrators_queue_depth(tmp_path: Path) -> None:
    stuck = HeldSpecialist("stuck")
    specialist = grpc.aio.server()
    specialist_pb2_grpc.add_SpecialistServicer_to_server(stuck, specialist)
    specialist_port = specialist.add_insecure_port("127.0.0.1:0")
    await specialist.start()
    settings = OrchestratorSettings(
        port=0,
        metrics_port=0,
        specialists=f"stuck=127.0.0.1:{specialist_port}",
        specialist_timeout_seconds=60,
        stream_queue_batches=8,
        stream_inflight_batches=4,
        coalesce_max_readings=1,
        drain_delay_seconds=0,
    )
    orchestrator = OrchestratorProcess(settings, no_tracing())
    await orchestrator.start()
    metrics_port = orchestrator.metrics_endpoint.port
    prometheus_port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                # What the kubernetes-pods job's relabelling attaches in a cluster.
                "relabel_configs": [
                    {"target_label": "namespace", "replacement": "sentinel"},
                    {"target_label": "pod", "replacement": "orchestrator-7d9f-abcde"},
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
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}")
    queue: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (item := await queue.get()) is not None:
            yield item

    call = orchestrator_pb2_grpc.OrchestratorStub(channel).StreamTelemetry(requests())
    try:
        for i in range(1, 40):
            await queue.put(batch(i, [1.0], sensor=f"s{i}", mode=pb.VERDICT_MODE_NONE))
        expected = None
        for _ in range(100):
            await asyncio.sleep(0.2)
            depth = orchestrator.servicer.queue_depth
            if depth >= 8 and depth == expected:
                break
            expected = depth
        assert expected and expected >= 8, f"queue never filled (depth {expected})"

        base = f"http://127.0.0.1:{prometheus_port}"
        promql = _adapter_query("sentinel", "orchestrator-7d9f-abcde")
        result: list = []
        for _ in range(100):
            try:
                result = await _query(base, promql)
            except OSError:
                result = []
            if result and float(result[0]["value"][1]) == expected:
                break
            await asyncio.sleep(0.3)
        assert result, f"no series for {promql}"
        assert result[0]["metric"]["pod"] == "orchestrator-7d9f-abcde"
        assert float(result[0]["value"][1]) == expected
    finally:
        stuck.release.set()
        call.cancel()
        await channel.close()
        server.terminate()
        server.wait(timeout=10)
        await orchestrator.stop(drain_delay=0, grace=0)
        await specialist.stop(0)

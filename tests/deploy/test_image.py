"""The image lane: the Dockerfile builds, and the mesh runs from the image the way
k8s/overlays/dev describes it (podman_mesh.py says how the cluster is stood in for). Its probes
answer, a client streams through it with every specialist voting, /metrics answers where
Prometheus is told to scrape, nothing runs as root or writes outside its declared volumes, and
SIGTERM drains every container within its grace period.

The tests run in file order on one mesh: the last one stops it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from k8s_pods import sentinel_containers
from manifests.manifest_checks import kubectl_path, overlay_dir, render
from mesh_fixtures import metric_samples
from podman_mesh import Podman, PodmanMesh, RunningPod
from sentinel.orchestrator.specialist_pool import parse_targets

from sentinel.client import TelemetryClient
from sentinel.v1 import orchestrator_pb2 as pb

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

OVERLAY = "dev"
ORCHESTRATOR_SERVICE = "sentinel.v1.Orchestrator"
SERVING = health_pb2.HealthCheckResponse.SERVING


def _health(address: str, service: str, timeout: float = 2.0) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return response.status


def _wait_started(mesh: PodmanMesh, running: RunningPod) -> None:
    """Poll the startup probe as the kubelet would, within its budget (period x threshold)."""
    probe = next((p for p in running.pod.probes if p.kind == "startupProbe"), None)
    assert probe is not None, f"{running.pod.workload} declares no gRPC startup probe"
    address = f"127.0.0.1:{running.published[probe.port]}"
    deadline = time.monotonic() + probe.period_seconds * probe.failure_threshold
    while _health(address, probe.service) != SERVING:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{running.pod.workload}: startup probe not SERVING within "
                f"{probe.period_seconds * probe.failure_threshold:g} s\n"
                f"{mesh.logs(running.pod.workload)}"
            )
        time.sleep(0.5)


def _metrics(running: RunningPod) -> dict[tuple[str, tuple], float]:
    """The container's /metrics, parsed: (sample name, sorted labels) -> value."""
    pod = running.pod
    return metric_samples(
        f"http://127.0.0.1:{running.published[pod.metrics_port]}{pod.metrics_path}"
    )


def _wait_specialists_up(mesh: PodmanMesh, orchestrator: RunningPod, budget: float) -> None:
    """Ready pods are not yet a working mesh: the orchestrator describes its specialists in the
    background (started before them, it retries every second). Wait until its own gauge says
    every one answers — what an operator would watch."""
    names = _specialists(orchestrator)
    deadline = time.monotonic() + budget
    up: dict[str, float] = {}
    while up != dict.fromkeys(names, 1.0):
        if time.monotonic() > deadline:
            pytest.fail(
                f"specialists not all up after {budget:g} s: {up}\n"
                f"{mesh.logs(orchestrator.pod.workload)}"
            )
        time.sleep(0.5)
        try:
            samples = _metrics(orchestrator)
        except OSError:  # /metrics opens just after the gRPC server
            continue
        up = {
            dict(labels)["specialist"]: value
            for (name, labels), value in samples.items()
            if name == "sentinel_orchestrator_specialist_up"
        }


def _orchestrator(mesh: PodmanMesh) -> RunningPod:
    return next(
        r
        for r in mesh.running.values()
        if any(p.service == ORCHESTRATOR_SERVICE for p in r.pod.probes)
    )


def _specialists(orchestrator: RunningPod) -> set[str]:
    return {t.name for t in parse_targets(orchestrator.pod.env["SENTINEL_SPECIALISTS"])}


@pytest.fixture(scope="module")
def dev_objects() -> list[dict[str, Any]]:
    kubectl = kubectl_path()
    if not kubectl:
        pytest.skip("kubectl not found on PATH: cannot render the dev overlay")
    return render(overlay_dir(OVERLAY), kubectl)


@pytest.fixture(scope="module")
def mesh(
    dev_objects: list[dict[str, Any]],
    podman: Podman,
    built_image: str,
    tmp_path_factory: pytest.TempPathFactory,
    lane_figures: dict[str, str],
) -> Iterator[PodmanMesh]:
    objects = dev_objects
    pods = sentinel_containers(objects)
    # The overlay names the image a cluster pulls; the lane runs the one it just built.
    assert len({p.image for p in pods}) == 1, "every Sentinel workload runs one image"
    running = PodmanMesh(podman, built_image, objects, pods, tmp_path_factory.mktemp("pods"))
    try:
        started = time.monotonic()
        running.start()
        for pod in running.running.values():
            _wait_started(running, pod)
        orchestrator = _orchestrator(running)
        startup = next(p for p in orchestrator.pod.probes if p.kind == "startupProbe")
        _wait_specialists_up(
            running, orchestrator, startup.period_seconds * startup.failure_threshold
        )
        lane_figures["mesh start"] = (
            f"{len(pods)} containers SERVING and every specialist up "
            f"{time.monotonic() - started:.1f} s after the first `podman run`"
        )
        yield running
    finally:
        running.remove()


@pytest.fixture
def live(mesh: PodmanMesh) -> PodmanMesh:
    assert not mesh.stopped, "the drain test stopped the mesh: keep file order"
    return mesh


def test_the_overlay_is_all_there(live: PodmanMesh) -> None:
    assert sorted(r.pod.args[1] for r in live.running.values()) == [
        "model",
        "model",
        "orchestrator",
        "statistical",
        "threshold",
    ]


def test_every_declared_grpc_probe_answers_serving(live: PodmanMesh) -> None:
    answers = {}
    for running in live.running.values():
        assert {p.kind for p in running.pod.probes} == {
            "startupProbe",
            "livenessProbe",
            "readinessProbe",
        }, running.pod.workload
        for probe in running.pod.probes:
            address = f"127.0.0.1:{running.published[probe.port]}"
            answers[(running.pod.workload, probe.kind, probe.service)] = _health(
                address, probe.service
            )
    assert answers == dict.fromkeys(answers, SERVING)


def test_metrics_answer_on_every_declared_scrape_port(live: PodmanMesh) -> None:
    for running in live.running.values():
        pod = running.pod
        assert pod.metrics_port in running.published, f"{pod.workload}: scrape port not declared"
        names = {name for name, _ in _metrics(running)}
        assert any(n.startswith("sentinel_") for n in names), f"{pod.workload}: {sorted(names)}"


async def test_a_client_streams_through_the_orchestrator_with_every_specialist_voting(
    live: PodmanMesh,
) -> None:
    orchestrator = _orchestrator(live)
    port = next(p.port for p in orchestrator.pod.probes if p.service == ORCHESTRATOR_SERVICE)
    specialists = _specialists(orchestrator)
    verdicts: list[pb.Verdict] = []
    start_ns = time.time_ns() - 3_600 * 10**9
    # The client reconnects forever: fail instead of hanging if the orchestrator never acks.
    async with (
        asyncio.timeout(120),
        TelemetryClient(
            f"127.0.0.1:{orchestrator.published[port]}",
            verdicts=pb.VERDICT_MODE_ALL,
            on_verdicts=lambda _, batch: verdicts.extend(batch),
        ) as client,
    ):
        for b in range(10):
            await client.send(
                [
                    pb.Reading(
                        sensor_id=f"lane-{s}",
                        value=20.0 + s + (b * 10 + i) % 3,
                        timestamp_unix_nanos=start_ns + (b * 10 + i) * 10**9,
                    )
                    for s in range(3)
                    for i in range(10)
                ]
            )
    assert len(verdicts) == 300
    degraded = [v for v in verdicts if v.status == pb.VERDICT_STATUS_DEGRADED or v.missing]
    assert degraded == [], f"{len(degraded)} degraded, e.g. missing {list(degraded[0].missing)}"
    assert {frozenset(vote.specialist for vote in v.votes) for v in verdicts} == {
        frozenset(specialists)
    }


def test_containers_run_as_a_non_root_user_on_a_read_only_root(
    live: PodmanMesh, podman: Podman, built_image: str
) -> None:
    # Without the manifests' runAsUser too: the image's own USER.
    image_user = podman("image", "inspect", "--format", "{{.Config.User}}", built_image)
    assert image_user.split(":")[0] not in ("", "0", "root")
    for running in live.running.values():
        pod, name = running.pod, running.container
        assert podman("exec", name, "id", "-u") == str(pod.run_as_user) != "0"
        refused = subprocess.run(
            [podman.executable, *podman.global_args, "exec", name, "touch", "/written"],
            capture_output=True,
            text=True,
        )
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        for volume in pod.volumes:  # the only writable places: what the manifest mounts
            written = f"{volume.mount_path}/written-by-the-lane"
            podman("exec", name, "sh", "-c", f"touch {written} && rm {written}")


def test_sigterm_drains_every_container_within_its_grace_period(
    live: PodmanMesh, podman: Podman, lane_figures: dict[str, str]
) -> None:
    # The kubelet runs preStop (a sleep, for routers) inside the grace period, then SIGTERM:
    # the process has what is left.
    live.stopped = True
    signalled = time.monotonic()
    for running in live.running.values():
        podman("kill", "--signal", "TERM", running.container)
    exits, seconds = {}, {}
    for workload, running in live.running.items():
        budget = running.pod.termination_grace_seconds - running.pod.pre_stop_sleep_seconds
        remaining = max(signalled + budget - time.monotonic(), 0.1)
        try:
            exits[workload] = podman("wait", running.container, timeout=remaining)
        except subprocess.TimeoutExpired:
            exits[workload] = f"still running {budget:g} s after SIGTERM"
        seconds[workload] = time.monotonic() - signalled
    assert exits == dict.fromkeys(exits, "0"), {w: live.logs(w, 5) for w in exits}
    lane_figures["drain after SIGTERM"] = ", ".join(
        f"{w.split('/')[1]} {s:.1f} s" for w, s in seconds.items()
    )
    # The orchestrator's shard checkpoint went to its claim, not the read-only root.
    orchestrator = _orchestrator(live)
    assert [
        "checkpoint.npz" in {p.name for p in claim.iterdir()}
        for claim in orchestrator.claims.values()
    ] == [True]

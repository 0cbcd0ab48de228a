"""Build the image and run the mesh from it with podman, as a rendered overlay describes it.

Every container is started from what k8s_pods reads out of the rendered objects — argv,
environment, ports, user, read-only root, dropped capabilities, emptyDir and claim volumes,
resource limits — and nothing else. How the cluster is stood in for (docs/deploy.md, "The image
lane"):

- Pod network: each container gets its own network namespace on podman's bridge network, so it
  listens on the ports the manifests give it (50051, 9464) exactly as in a pod. Each declared
  containerPort is published on a free loopback port of the host (podman picks it), where the
  tests reach probes, /metrics and the orchestrator.
- Service DNS: a Service's names (`threshold`, `threshold.sentinel`, `...svc`,
  `...svc.cluster.local`) are /etc/hosts entries (`--add-host`) pointing at the containers of
  the workloads it selects; containers are started after the Services their environment names.
  There is no kube-proxy, so a Service port must equal its target port (refused otherwise).
- Volumes: emptyDir is a tmpfs of its sizeLimit, a volumeClaimTemplate a fresh host directory
  owned by the pod's fsGroup. The root filesystem is read-only with nothing else writable
  (`--read-only --read-only-tmpfs=false`).
- The image: the overlay names the image a cluster would pull; the lane runs the image it just
  built instead (by id, so concurrent runs on one machine cannot swap tags under each other).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_pods import PodContainer

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE_SCRIPT = REPO / ".ci" / "base-image"
#: What this CI machine needs (crun and higher limits are refused in its sandbox; runc is
#: installed by .ci/run); harmless elsewhere.
RUNTIME_ARGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_DIALED = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9.-]*):(\d+)")


class PodmanError(RuntimeError):
    pass


@dataclass(frozen=True)
class Podman:
    executable: str
    global_args: tuple[str, ...] = ()

    @classmethod
    def find(cls) -> Podman | None:
        path = shutil.which("podman")
        if path is None:
            return None
        return cls(path, RUNTIME_ARGS if shutil.which("runc") else ())

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        proc = subprocess.run(
            [self.executable, *self.global_args, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:2])} failed:\n{proc.stderr.strip()}")
        return proc.stdout.strip()


def base_image() -> str:
    """SENTINEL_IMAGE_BASE, or the Debian-built base .ci/base-image makes (once per machine)."""
    if os.environ.get("SENTINEL_IMAGE_BASE"):
        return os.environ["SENTINEL_IMAGE_BASE"]
    proc = subprocess.run(
        [str(BASE_IMAGE_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        raise PodmanError(f"{BASE_IMAGE_SCRIPT} failed:\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def build_image(podman: Podman, base: str, workdir: Path) -> str:
    """`podman build` of the Dockerfile on `base`; returns the image id (untagged).

    No layer cache (`--layers=false`): a release is proven on a fresh install of its
    dependencies, and nothing but the image is left in podman's store (the caller removes it).
    The host's trust store is mounted into the build so pip trusts what the host trusts (CI
    behind a TLS-intercepting proxy)."""
    iidfile = workdir / "image-id"
    certs = (
        ("--volume", "/etc/ssl/certs:/etc/ssl/certs:ro") if Path("/etc/ssl/certs").is_dir() else ()
    )
    podman(
        "build",
        "--isolation=chroot",
        "--layers=false",
        "--network=host",
        *certs,
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--iidfile",
        str(iidfile),
        str(REPO),
        timeout=900,
    )
    return iidfile.read_text().strip()


# --------------------------------------------------------------------------- Services


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    selector: dict[str, str]
    ports: dict[int, int | str]
    """Service port -> targetPort (a number or a container port name)."""

    def hostnames(self) -> tuple[str, ...]:
        base = f"{self.name}.{self.namespace}"
        return (self.name, base, f"{base}.svc", f"{base}.svc.cluster.local")

    def selects(self, pod: PodContainer) -> bool:
        return pod.namespace == self.namespace and all(
            pod.labels.get(k) == v for k, v in self.selector.items()
        )


def services(objects: list[dict[str, Any]]) -> list[Service]:
    out = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") != "Service" or not spec.get("selector"):
            continue
        out.append(
            Service(
                obj["metadata"]["name"],
                obj["metadata"].get("namespace") or "default",
                dict(spec["selector"]),
                {p["port"]: p.get("targetPort", p["port"]) for p in spec.get("ports") or []},
            )
        )
    return out


def dialed(pod: PodContainer) -> set[tuple[str, int]]:
    """The HOST:PORT pairs in `pod`'s environment (targets, endpoints)."""
    return {
        (host, int(port)) for value in pod.env.values() for host, port in _DIALED.findall(value)
    }


def services_named_by(pod: PodContainer, all_services: list[Service]) -> list[Service]:
    """The Services `pod` dials by one of their DNS names."""
    by_host = {h: s for s in all_services for h in s.hostnames()}
    named = {by_host[h].name: by_host[h] for h, _ in dialed(pod) if h in by_host}
    return list(named.values())


def check_ports_reach_pods(pod: PodContainer, service: Service, pods: list[PodContainer]) -> None:
    """/etc/hosts stands in for Service DNS, not for kube-proxy: a port the pod dials on a
    Service must be the target port of the pods behind it."""
    for host, port in dialed(pod):
        if host not in service.hostnames():
            continue
        target = service.ports.get(port)
        if target is None:
            raise ValueError(f"{pod.workload} dials {host}:{port}, not a port of the Service")
        for backend in (p for p in pods if service.selects(p)):
            number = backend.ports.get(target) if isinstance(target, str) else target
            if number != port:
                raise ValueError(
                    f"Service {service.name} maps {port} to {backend.workload}'s {number}: "
                    "the lane resolves Service names to pods and cannot translate ports"
                )


# --------------------------------------------------------------------------- containers


def quantity(text: str) -> float:
    """A Kubernetes resource quantity (500m, 256Mi, 2) as a number."""
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"unsupported quantity {text!r}")
    number, unit = float(match.group(1)), match.group(2)
    if unit == "m":
        return number / 1000
    return number * _BINARY.get(unit, _DECIMAL.get(unit, 1))


def run_arguments(
    pod: PodContainer,
    image: str,
    name: str,
    hosts: list[tuple[str, str]],
    claims: dict[str, Path],
) -> list[str]:
    """`podman run` arguments that give `pod` what its manifest asks for."""
    args = ["run", "--detach", "--name", name, "--pull=never", *ULIMITS]
    for key, value in pod.env.items():
        args += ["--env", f"{key}={value}"]
    for port in pod.ports.values():
        args += ["--publish", f"127.0.0.1::{port}"]
    for hostname, address in hosts:
        args += ["--add-host", f"{hostname}:{address}"]
    if pod.run_as_user is not None:
        group = pod.run_as_group if pod.run_as_group is not None else pod.run_as_user
        args += ["--user", f"{pod.run_as_user}:{group}"]
    if pod.fs_group is not None:
        args += ["--group-add", str(pod.fs_group)]
    if pod.read_only_root:
        args += ["--read-only", "--read-only-tmpfs=false"]
    if pod.drop_all_capabilities:
        args += ["--cap-drop", "all"]
    if not pod.allow_privilege_escalation:
        args += ["--security-opt", "no-new-privileges"]
    if pod.memory_limit:
        args += ["--memory", str(int(quantity(pod.memory_limit)))]
    if pod.cpu_limit:
        args += ["--cpus", f"{quantity(pod.cpu_limit):g}"]
    for volume in pod.volumes:
        if volume.source == "emptyDir":
            size = f",size={int(quantity(volume.size_limit))}" if volume.size_limit else ""
            args += ["--tmpfs", f"{volume.mount_path}:rw,mode=1777{size}"]
        else:
            args += ["--volume", f"{claims[volume.name]}:{volume.mount_path}:rw"]
    if pod.command:
        args += ["--entrypoint", json.dumps(list(pod.command))]
    return [*args, image, *pod.args]


@dataclass
class RunningPod:
    pod: PodContainer
    container: str
    published: dict[int, int] = field(default_factory=dict)
    """containerPort -> loopback port on the host."""
    address: str = ""
    """The container's address on podman's network (its "pod IP")."""
    claims: dict[str, Path] = field(default_factory=dict)
    """Host directory behind each volumeClaimTemplate volume."""


@dataclass
class PodmanMesh:
    """The Sentinel containers of one rendered overlay, started in Service-dependency order."""

    podman: Podman
    image: str
    objects: list[dict[str, Any]]
    pods: list[PodContainer]
    workdir: Path
    prefix: str = field(default_factory=lambda: f"sentinel-lane-{uuid.uuid4().hex[:8]}")
    running: dict[str, RunningPod] = field(default_factory=dict)
    """By workload (kind/name), in start order."""
    stopped: bool = False

    def start(self) -> None:
        all_services = services(self.objects)
        needs = {p.workload: services_named_by(p, all_services) for p in self.pods}
        for pod in self.pods:
            for service in needs[pod.workload]:
                check_ports_reach_pods(pod, service, self.pods)
        pending = list(self.pods)
        while pending:
            startable = [
                p
                for p in pending
                if all(
                    all(q.workload in self.running for q in self.pods if s.selects(q))
                    for s in needs[p.workload]
                )
            ]
            if not startable:
                raise ValueError(f"Services name each other in a cycle: {needs}")
            for pod in startable:
                self._start(pod, self._hosts(needs[pod.workload]))
                pending.remove(pod)

    def _hosts(self, named: list[Service]) -> list[tuple[str, str]]:
        return [
            (hostname, running.address)
            for service in named
            for running in self.running.values()
            if service.selects(running.pod)
            for hostname in service.hostnames()
        ]

    def _start(self, pod: PodContainer, hosts: list[tuple[str, str]]) -> None:
        claims = {}
        for volume in pod.volumes:
            if volume.source == "claim":
                path = self.workdir / f"{pod.name}-{volume.name}"
                path.mkdir()
                # What a fsGroup does to a volume: group-owned, group-writable, setgid.
                if pod.fs_group is not None and os.geteuid() == 0:
                    os.chown(path, 0, pod.fs_group)
                path.chmod(0o2775)
                claims[volume.name] = path
        name = f"{self.prefix}-{pod.name}"
        self.podman(*run_arguments(pod, self.image, name, hosts, claims))
        running = RunningPod(pod, name, claims=claims)
        self.running[pod.workload] = running
        running.address = self.podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name)
        for port in pod.ports.values():
            mapping = self.podman("port", name, f"{port}/tcp")
            running.published[port] = int(mapping.rsplit(":", 1)[1])

    def logs(self, workload: str, lines: int = 40) -> str:
        running = self.running[workload]
        return self.podman("logs", "--tail", str(lines), running.container, check=False)

    def remove(self) -> None:
        for running in self.running.values():
            self.podman("rm", "--force", "--time", "0", running.container, check=False)

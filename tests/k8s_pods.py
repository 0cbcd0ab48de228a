"""What Kubernetes would run for each Sentinel workload of a rendered overlay, read from the
objects themselves: the container's argv, its environment as the kubelet builds it (ConfigMaps,
field references, `$(VAR)` expansion), ports, gRPC probes, volumes, security settings and
shutdown timing.

The image lane (tests/deploy/test_image.py) starts these containers with podman; the drift check
(tests/manifests/drift_checks.py) compares their argv and environment with the code. Neither
keeps its own list of what the manifests say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: The container every Sentinel workload runs (k8s/components/pod-defaults patches it by name).
SENTINEL_CONTAINER = "sentinel"
#: The image's ENTRYPOINT (Dockerfile): what `args` are appended to when `command` is unset.
IMAGE_ENTRYPOINT = ("sentinel",)
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
PROBE_KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
#: What a pod's IP-valued fields resolve to outside a cluster.
POD_IP = "127.0.0.1"

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


@dataclass(frozen=True)
class GrpcProbe:
    kind: str
    """startupProbe, livenessProbe or readinessProbe."""
    port: int
    service: str
    """Health service asked for ("" = the whole server)."""
    period_seconds: float
    failure_threshold: int


@dataclass(frozen=True)
class Volume:
    name: str
    mount_path: str
    source: str
    """emptyDir, or claim (a PersistentVolumeClaim, from volumeClaimTemplates)."""
    size_limit: str | None = None


@dataclass(frozen=True)
class PodContainer:
    """The `sentinel` container of one workload, as one of its pods would run it."""

    kind: str
    name: str
    namespace: str
    pod_name: str
    labels: dict[str, str]
    image: str
    command: tuple[str, ...] | None
    """The container's `command` (None: the image's ENTRYPOINT runs)."""
    args: tuple[str, ...]
    env: dict[str, str]
    """Resolved as the kubelet does: envFrom ConfigMaps, then env in order."""
    referenced: frozenset[str]
    """Variables other variables' values refer to as `$(NAME)`."""
    ports: dict[str, int]
    """containerPort by port name."""
    probes: tuple[GrpcProbe, ...]
    volumes: tuple[Volume, ...]
    run_as_user: int | None
    run_as_group: int | None
    fs_group: int | None
    read_only_root: bool
    drop_all_capabilities: bool
    allow_privilege_escalation: bool
    termination_grace_seconds: float
    pre_stop_sleep_seconds: float
    metrics_port: int | None
    """The port Prometheus scrapes (prometheus.io/port annotation)."""
    metrics_path: str | None
    """The path Prometheus scrapes (prometheus.io/path annotation)."""
    memory_limit: str | None
    cpu_limit: str | None

    @property
    def workload(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def argv(self) -> tuple[str, ...]:
        """What the container executes: its command, or the image's ENTRYPOINT, then args."""
        return (self.command or IMAGE_ENTRYPOINT) + self.args


def sentinel_containers(objects: list[dict[str, Any]]) -> list[PodContainer]:
    """The Sentinel container of every Deployment and StatefulSet among `objects`."""
    configmaps = {
        ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]): o.get("data") or {}
        for o in objects
        if o.get("kind") == "ConfigMap"
    }
    out = []
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        for container in obj["spec"]["template"]["spec"].get("containers") or []:
            if container.get("name") == SENTINEL_CONTAINER:
                out.append(_pod_container(obj, container, configmaps))
    return out


def _pod_container(
    workload: dict[str, Any], c: dict[str, Any], configmaps: dict[tuple[str, str], dict]
) -> PodContainer:
    md = workload["metadata"]
    namespace = md.get("namespace") or "default"
    template = workload["spec"]["template"]
    pod_md = template.get("metadata") or {}
    pod = template["spec"]
    # A StatefulSet's first pod is NAME-0; a Deployment's pods get a random suffix.
    pod_name = f"{md['name']}-0" if workload["kind"] == "StatefulSet" else f"{md['name']}-local"
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": namespace,
        "spec.serviceAccountName": pod.get("serviceAccountName") or "default",
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
    }
    env, referenced = container_env(
        c, lambda ref: _field(ref, fields, pod_md), lambda name: configmaps[(namespace, name)]
    )
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates") or []}
    pod_volumes = {v["name"]: v for v in pod.get("volumes") or []}
    volumes = []
    for mount in c.get("volumeMounts") or []:
        name = mount["name"]
        if name in claims:
            volumes.append(Volume(name, mount["mountPath"], "claim"))
        elif "emptyDir" in pod_volumes.get(name, {}):
            limit = (pod_volumes[name]["emptyDir"] or {}).get("sizeLimit")
            volumes.append(Volume(name, mount["mountPath"], "emptyDir", limit))
        else:
            raise ValueError(
                f"{workload['kind']}/{md['name']}: volume {name!r} is neither an "
                "emptyDir nor a volumeClaimTemplate"
            )
    probes = tuple(
        GrpcProbe(
            kind,
            int(p["grpc"]["port"]),
            p["grpc"].get("service", ""),
            float(p.get("periodSeconds", 10)),
            int(p.get("failureThreshold", 3)),
        )
        for kind in PROBE_KINDS
        if "grpc" in (p := c.get(kind) or {})
    )
    limits = (c.get("resources") or {}).get("limits") or {}
    scrape = pod_md.get("annotations") or {}
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    return PodContainer(
        kind=workload["kind"],
        name=md["name"],
        namespace=namespace,
        pod_name=pod_name,
        labels=dict(pod_md.get("labels") or {}),
        image=c.get("image", ""),
        command=tuple(c["command"]) if c.get("command") else None,
        args=tuple(c.get("args") or ()),
        env=env,
        referenced=frozenset(referenced),
        ports={p["name"]: int(p["containerPort"]) for p in c.get("ports") or []},
        probes=probes,
        volumes=tuple(volumes),
        run_as_user=sc.get("runAsUser", psc.get("runAsUser")),
        run_as_group=sc.get("runAsGroup", psc.get("runAsGroup")),
        fs_group=psc.get("fsGroup"),
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        drop_all_capabilities="ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
        allow_privilege_escalation=sc.get("allowPrivilegeEscalation", True) is not False,
        termination_grace_seconds=float(pod.get("terminationGracePeriodSeconds", 30)),
        pre_stop_sleep_seconds=float(pre_stop.get("seconds", 0)),
        metrics_port=int(scrape["prometheus.io/port"]) if "prometheus.io/port" in scrape else None,
        metrics_path=scrape.get("prometheus.io/path"),
        memory_limit=limits.get("memory"),
        cpu_limit=limits.get("cpu"),
    )


def container_env(
    container: dict[str, Any], field_value, configmap_data
) -> tuple[dict[str, str], set[str]]:
    """The environment the kubelet gives `container`, and the names `$(...)` refers to.

    envFrom sources first (in order, later keys win), then `env` in order; a `value` expands
    `$(NAME)` from the variables defined before it (unknown references stay as written, `$$`
    is a literal `$`). `field_value(path)` resolves a fieldRef, `configmap_data(name)` a
    ConfigMap's data.
    """
    env: dict[str, str] = {}
    referenced: set[str] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" not in source:
            raise ValueError(f"unsupported envFrom source {source}")
        prefix = source.get("prefix", "")
        for key, value in configmap_data(source["configMapRef"]["name"]).items():
            env[prefix + key] = str(value)
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env, referenced)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(source["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = str(configmap_data(ref["name"])[ref["key"]])
        else:
            raise ValueError(f"env {name}: unsupported valueFrom {source}")
    return env, referenced


def expand(value: str, env: dict[str, str], referenced: set[str]) -> str:
    """Kubernetes' `$(NAME)` expansion of one env value (records the names it refers to)."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        referenced.add(name)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(substitute, value)


def _field(path: str, fields: dict[str, str], pod_metadata: dict[str, Any]) -> str:
    if path in fields:
        return fields[path]
    keyed = _FIELD_KEY.match(path)
    if keyed:
        return str((pod_metadata.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path!r}")

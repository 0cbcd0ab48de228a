"""Offline validation of Sentinel's Kubernetes and Istio manifests.

Used by the tests in this folder, and usable on its own::

    PYTHONPATH=. python tests/manifests/manifest_checks.py k8s/overlays/prod

Three layers, each returning a list of human-readable problems (empty = valid):

1. Kubernetes objects: strict validation (unknown fields rejected) with
   ``kubernetes-validate`` against a pinned Kubernetes version
   (``SENTINEL_K8S_VERSION``, default :data:`DEFAULT_K8S_VERSION`).
2. Custom resources (Istio, Flagger): the served version's ``openAPIV3Schema``
   from the CRD bundles in ``SENTINEL_SCHEMAS_DIR`` (default ``tests/manifests/schemas``,
   pinned copies with their provenance), made strict the way the API server's strict
   field validation is (``additionalProperties: false`` wherever the schema does
   not say ``x-kubernetes-preserve-unknown-fields``), plus the CRDs'
   ``x-kubernetes-validations`` CEL rules evaluated with cel-python where it can
   (rules calling functions cel-python lacks are counted as skipped), plus
   ``x-kubernetes-list-type`` uniqueness.
3. Cross-object checks (:func:`cross_check`): what no schema can see — that
   routes point at Services and subsets that exist, weights add up, retry
   budgets fit their timeouts, streaming calls have no timeout, authorization
   paths are the real proto services (read from the generated descriptors), the
   orchestrator's specialist targets are real Services and ports, probes ask for
   the right health service, shutdown timings fit the grace period, ...
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sentinel.orchestrator.main import STARTUP_SERVICE

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Kubernetes version the manifests are validated against: the oldest one they
#: support (the preStop `sleep` action is on by default from 1.30).
DEFAULT_K8S_VERSION = "1.31.0"

#: Overlays a user deploys; each must render and validate.
OVERLAYS = ("dev", "prod", "canary", "shadow", "flagger")

#: Files that are YAML but not Kubernetes objects (linted only).
ADAPTER_CONFIG = REPO_ROOT / "k8s" / "monitoring" / "adapter-config.yaml"
KEDA_SCALED_OBJECT = REPO_ROOT / "k8s" / "optional" / "keda" / "scaledobject.yaml"
YAMLLINT_CONFIG = Path(__file__).with_name("yamllint.yaml")
YAML_ROOTS = (REPO_ROOT / "k8s", REPO_ROOT / "istio")

ROLES = ("orchestrator", "threshold", "statistical", "model")
#: Kinds that run Sentinel pods: stateless roles are Deployments, the orchestrator's shards
#: a StatefulSet.
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
METRICS_PATH = "/metrics"

#: Envoy `retryOn` conditions (HTTP and gRPC), as accepted by Istio.
RETRY_ON_CONDITIONS = frozenset(
    "5xx gateway-error reset reset-before-request connect-failure envoy-ratelimited "
    "retriable-4xx refused-stream retriable-status-codes retriable-headers "
    "http3-post-connect-failure cancelled deadline-exceeded internal resource-exhausted "
    "unavailable".split()
)


# --------------------------------------------------------------------------- paths


def schemas_dir() -> Path:
    """Directory of the CRD bundles (Istio, Flagger); ``SENTINEL_SCHEMAS_DIR`` wins."""
    env = os.environ.get("SENTINEL_SCHEMAS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "schemas"


def k8s_version() -> str:
    return os.environ.get("SENTINEL_K8S_VERSION", DEFAULT_K8S_VERSION)


def kubectl_path() -> str | None:
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


def overlay_dir(name: str, root: Path = REPO_ROOT) -> Path:
    return root / "k8s" / "overlays" / name


# --------------------------------------------------------------------------- render


class RenderError(RuntimeError):
    pass


def render(path: Path, kubectl: str | None = None) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH`` (offline), parsed into a list of objects."""
    kubectl = kubectl or kubectl_path()
    if not kubectl:
        raise RenderError("kubectl not found")
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed:\n{proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def load_yaml_objects(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def obj_id(obj: dict[str, Any]) -> str:
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


def api_group(obj: dict[str, Any]) -> str:
    api_version = obj.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


# --------------------------------------------------------------------------- protos


@dataclass(frozen=True)
class ProtoMethod:
    service: str
    name: str
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


@functools.cache
def proto_services() -> dict[str, tuple[ProtoMethod, ...]]:
    """Full service name -> methods, read from the generated descriptors."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from sentinel.v1 import orchestrator_pb2, specialist_pb2

    out: dict[str, tuple[ProtoMethod, ...]] = {}
    for module in (orchestrator_pb2, specialist_pb2):
        for svc in module.DESCRIPTOR.services_by_name.values():
            out[svc.full_name] = tuple(
                ProtoMethod(svc.full_name, m.name, m.client_streaming, m.server_streaming)
                for m in svc.methods
            )
    return out


def partition_header() -> str:
    """The header the client sends its ownership key in (sentinel.client.PARTITION_HEADER)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from sentinel.client import PARTITION_HEADER

    return PARTITION_HEADER


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | int | float) -> float:
    """A Go/protobuf duration string ("1.5s", "250ms", "1m30s") in seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    if not s:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {text!r}")
    return total


# --------------------------------------------------------------------------- Kubernetes


def validate_kubernetes(obj: dict[str, Any], version: str | None = None) -> list[str]:
    """Strict kubernetes-validate of a built-in object. [] = valid."""
    version = version or k8s_version()
    return list(_validate_kubernetes_cached(_freeze(obj), version))


def _freeze(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _validate_kubernetes_cached(frozen: str, version: str) -> tuple[str, ...]:
    import kubernetes_validate

    obj = json.loads(frozen)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        return (f"{obj_id(obj)}: {where}: {e.message} (Kubernetes {version}, strict)",)
    except kubernetes_validate.SchemaNotFoundError as e:
        return (f"{obj_id(obj)}: {e.message}",)
    except kubernetes_validate.VersionNotSupportedError as e:
        return (f"{obj_id(obj)}: {e.message}",)
    return ()


@functools.cache
def _object_meta_defs(version: str) -> dict[str, Any]:
    """ObjectMeta (strict) and the definitions it refers to, from kubernetes-validate."""
    import importlib.resources

    import kubernetes_validate.utils as kvu

    versions = [v for v in kvu.all_versions() if kvu.major_minor(v) <= kvu.major_minor(version)]
    chosen = versions[-1]
    ref = importlib.resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{chosen}-local-strict/_definitions.json"
    )
    defs = json.loads(ref.read_text())["$defs"]
    wanted: dict[str, Any] = {}
    todo = ["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted[name] = defs[name]
        todo.extend(re.findall(r'"#/\$defs/([^"]+)"', json.dumps(defs[name])))
    return wanted


# --------------------------------------------------------------------------- CRDs


@dataclass
class CelStats:
    """How the CRDs' x-kubernetes-validations rules fared."""

    evaluated: int = 0  # rule evaluations (rule x value) that ran
    failed: int = 0  # ... that returned false or raised a (non-"unsupported") error
    skipped: int = 0  # ... that needed a function cel-python lacks
    rules_evaluated: set[str] = field(default_factory=set)
    rules_skipped: Counter = field(default_factory=Counter)  # rule -> missing function
    list_checks: int = 0  # x-kubernetes-list-type uniqueness checks

    def merge(self, other: CelStats) -> None:
        self.evaluated += other.evaluated
        self.failed += other.failed
        self.skipped += other.skipped
        self.rules_evaluated |= other.rules_evaluated
        self.rules_skipped.update(other.rules_skipped)
        self.list_checks += other.list_checks

    def summary(self) -> str:
        return (
            f"CEL: {self.evaluated} evaluations of {len(self.rules_evaluated)} distinct rules "
            f"({self.failed} failed), {self.skipped} skipped (unsupported functions: "
            f"{len(self.rules_skipped)} distinct rules); {self.list_checks} list-type checks"
        )


def _strict(node: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema that rejects unknown fields."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: _strict(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _strict(value)
        elif key in ("x-kubernetes-validations", "description"):
            continue
        else:
            # oneOf/anyOf/allOf/not hold value validations only (structural schema
            # rule); copy them unchanged.
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    is_object = node.get("type") == "object" or "properties" in node
    if (
        is_object
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@dataclass
class CrdVersion:
    group: str
    kind: str
    version: str
    schema: dict[str, Any]  # raw openAPIV3Schema (for CEL)
    source: str

    @functools.cached_property
    def validator(self) -> Any:
        import jsonschema

        root = _strict(self.schema)
        props = root.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{self.group}/{self.version}"]}
        props["kind"] = {"type": "string", "enum": [self.kind]}
        props["metadata"] = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
        root["$defs"] = _object_meta_defs(k8s_version())
        root["required"] = sorted({*root.get("required", []), "apiVersion", "kind", "metadata"})
        return jsonschema.Draft202012Validator(root)


class CrdRegistry:
    """Served versions of the CRDs in a directory of bundles."""

    def __init__(self, crds: Iterable[tuple[dict[str, Any], str]]):
        self.versions: dict[tuple[str, str, str], CrdVersion] = {}
        self.groups: set[str] = set()
        self.rule_count: Counter = Counter()  # (group, kind) -> number of CEL rules
        for crd, source in crds:
            spec = crd["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            self.groups.add(group)
            for v in spec["versions"]:
                if not v.get("served", True):
                    continue
                schema = (v.get("schema") or {}).get("openAPIV3Schema") or {}
                self.versions[(group, v["name"], kind)] = CrdVersion(
                    group, kind, v["name"], schema, source
                )
                if v.get("storage"):
                    self.rule_count[(group, kind)] = json.dumps(schema).count('"rule":')

    @classmethod
    def from_dir(cls, directory: Path) -> CrdRegistry:
        found = []
        for path in sorted(directory.glob("*.y*ml")):
            for doc in load_yaml_objects(path):
                if doc.get("kind") == "CustomResourceDefinition":
                    found.append((doc, path.name))
        if not found:
            raise FileNotFoundError(f"no CustomResourceDefinitions in {directory}")
        return cls(found)

    def handles(self, obj: dict[str, Any]) -> bool:
        return api_group(obj) in self.groups

    def lookup(self, obj: dict[str, Any]) -> CrdVersion | None:
        group = api_group(obj)
        version = obj.get("apiVersion", "").split("/")[-1]
        return self.versions.get((group, version, obj.get("kind", "")))

    def validate(self, obj: dict[str, Any], stats: CelStats | None = None) -> list[str]:
        crd = self.lookup(obj)
        if crd is None:
            return [
                f"{obj_id(obj)}: no served CRD version for {obj.get('apiVersion')} "
                f"{obj.get('kind')} in {schemas_dir()}"
            ]
        errors = []
        for err in sorted(crd.validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in err.absolute_path) or "<root>"
            errors.append(f"{obj_id(obj)}: {where}: {err.message} ({crd.source})")
        local = CelStats()
        _walk_schema_rules(crd.schema, obj, obj_id(obj), "", errors, local)
        if stats is not None:
            stats.merge(local)
        return errors


# --------------------------------------------------------------------------- CEL


def _cel_substring(s: Any, start: Any, end: Any = None) -> Any:
    import celpy

    return celpy.celtypes.StringType(str(s)[int(start) : None if end is None else int(end)])


@functools.cache
def _cel_env() -> Any:
    import celpy

    return celpy.Environment()


@functools.lru_cache(maxsize=1024)
def _cel_program(rule: str) -> Any:
    env = _cel_env()
    return env.program(env.compile(rule), functions={"substring": _cel_substring})


def evaluate_cel(rule: str, value: Any) -> tuple[str, str]:
    """Evaluate one rule with `self` = value: ("pass"|"fail"|"skip", detail)."""
    import celpy

    missing = cel_rule_support(rule)
    if missing:  # e.g. Kubernetes' URL library: not in cel-python
        return "skip", ",".join(sorted(missing))
    program = _cel_program(rule)
    try:
        result = program.evaluate({"self": celpy.json_to_cel(value)})
    except Exception as e:  # e.g. duration("abc"): the API server rejects it too
        return "fail", f"error: {str(e)[:200]}"
    if isinstance(result, Exception):
        return "fail", f"error: {str(result)[:200]}"
    return ("pass", "") if bool(result) else ("fail", "returned false")


CEL_MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
CEL_EXTRA_FUNCTIONS = frozenset({"substring"})


@functools.lru_cache(maxsize=1024)
def cel_rule_support(rule: str) -> frozenset[str]:
    """Functions a rule calls that cel-python (plus our extras) lacks; empty = evaluable."""
    import celpy.evaluation

    try:
        _cel_program(rule)
    except Exception:
        return frozenset({"<does not compile>"})
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "''", rule)  # ignore string literals
    called = set(re.findall(r"([A-Za-z_]\w*)\s*\(", text))
    return frozenset(
        called - set(celpy.evaluation.base_functions) - CEL_MACROS - CEL_EXTRA_FUNCTIONS
    )


def schema_rules(schema: Any) -> set[str]:
    """Every x-kubernetes-validations rule in a schema."""
    found: set[str] = set()
    if isinstance(schema, dict):
        found |= {r["rule"] for r in schema.get("x-kubernetes-validations") or []}
        for v in schema.values():
            found |= schema_rules(v)
    elif isinstance(schema, list):
        for v in schema:
            found |= schema_rules(v)
    return found


def _walk_schema_rules(
    schema: dict[str, Any], value: Any, oid: str, path: str, errors: list[str], stats: CelStats
) -> None:
    if value is None or not isinstance(schema, dict):
        return
    for rule_def in schema.get("x-kubernetes-validations") or []:
        rule = rule_def["rule"]
        outcome, detail = evaluate_cel(rule, value)
        if outcome == "skip":
            stats.skipped += 1
            stats.rules_skipped[rule] += 1
            continue
        stats.evaluated += 1
        stats.rules_evaluated.add(rule)
        if outcome == "fail":
            stats.failed += 1
            msg = rule_def.get("message") or rule
            errors.append(f"{oid}: {path or '<root>'}: CEL rule failed: {msg} [{rule}] ({detail})")
    list_type = schema.get("x-kubernetes-list-type")
    if isinstance(value, list) and list_type in ("set", "map"):
        stats.list_checks += 1
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen = set()
        for item in value:
            key = (
                tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
                if list_type == "map" and isinstance(item, dict)
                else json.dumps(item, sort_keys=True)
            )
            if key in seen:
                errors.append(f"{oid}: {path}: duplicate entry {key} in list-type={list_type}")
            seen.add(key)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                _walk_schema_rules(props[k], v, oid, f"{path}.{k}".lstrip("."), errors, stats)
            elif isinstance(extra, dict):
                _walk_schema_rules(extra, v, oid, f"{path}.{k}".lstrip("."), errors, stats)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _walk_schema_rules(schema["items"], v, oid, f"{path}[{i}]", errors, stats)


# --------------------------------------------------------------------------- bundle


def validate_objects(
    objects: Iterable[dict[str, Any]], registry: CrdRegistry, stats: CelStats | None = None
) -> list[str]:
    """Schema validation of every object: built-ins strictly, custom resources by CRD."""
    errors: list[str] = []
    for obj in objects:
        if registry.handles(obj):
            errors += registry.validate(obj, stats)
        else:
            errors += validate_kubernetes(obj)
    return errors


# --------------------------------------------------------------------------- cross-object


def _labels_match(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def _env_of(container: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        ref = (src.get("configMapRef") or {}).get("name")
        if ref in configmaps:
            env.update({str(k): str(v) for k, v in (configmaps[ref].get("data") or {}).items()})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
    return env


@dataclass
class Bundle:
    """Rendered objects indexed for the cross-object checks."""

    objects: list[dict[str, Any]]

    def __post_init__(self) -> None:
        self.by_kind: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        for obj in self.objects:
            md = obj.get("metadata") or {}
            key = (md.get("namespace") or "", md.get("name") or "")
            self.by_kind.setdefault(obj.get("kind", ""), {})[key] = obj
        self.synthetic: set[tuple[str, str, str]] = set()
        self._expand_flagger()

    def kind(self, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.by_kind.get(kind, {})

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.kind(kind).get((ns, name))

    def _add_synthetic(self, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        key = (md.get("namespace") or "", md["name"])
        if key not in self.kind(obj["kind"]):
            self.by_kind.setdefault(obj["kind"], {})[key] = obj
            self.synthetic.add((obj["kind"], *key))

    def _expand_flagger(self) -> None:
        """Objects Flagger generates from a Canary (primary Deployment, Services)."""
        for (ns, _name), canary in list(self.kind("Canary").items()):
            spec = canary.get("spec") or {}
            target = (spec.get("targetRef") or {}).get("name")
            dep = self.get("Deployment", ns, target)
            svc_spec = spec.get("service") or {}
            svc_name = svc_spec.get("name") or target
            if dep is None:
                continue
            primary = copy.deepcopy(dep)
            primary["metadata"]["name"] = f"{target}-primary"
            for labels in (
                primary["spec"]["selector"].get("matchLabels") or {},
                primary["spec"]["template"]["metadata"].setdefault("labels", {}),
            ):
                for k in ("app", "name", "app.kubernetes.io/name"):
                    if labels.get(k) == target:
                        labels[k] = f"{target}-primary"
            self._add_synthetic(primary)
            selector_key = next(
                (
                    k
                    for k in ("app", "name", "app.kubernetes.io/name")
                    if (dep["spec"]["selector"].get("matchLabels") or {}).get(k) == target
                ),
                "app",
            )
            for suffix, selected in (
                ("", f"{target}-primary"),
                ("-primary", f"{target}-primary"),
                ("-canary", target),
            ):
                port = {
                    "name": svc_spec.get("portName", "http"),
                    "port": svc_spec.get("port"),
                    "targetPort": svc_spec.get("targetPort", svc_spec.get("port")),
                }
                if svc_spec.get("appProtocol"):
                    port["appProtocol"] = svc_spec["appProtocol"]
                self._add_synthetic(
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": f"{svc_name}{suffix}", "namespace": ns},
                        "spec": {"selector": {selector_key: selected}, "ports": [port]},
                    }
                )

    # -- helpers

    def workloads(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Deployments and StatefulSets (the orchestrator's shards)."""
        for kind in WORKLOAD_KINDS:
            for (ns, name), dep in self.kind(kind).items():
                yield ns, name, dep

    def pod_labels(self, dep: dict[str, Any]) -> dict[str, str]:
        return ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
            "labels"
        ) or {}

    def selected_workloads(self, ns: str, selector: dict[str, str] | None) -> list[dict]:
        if not selector:
            return []
        return [
            d
            for n, _, d in self.workloads()
            if n == ns and _labels_match(selector, self.pod_labels(d))
        ]

    def resolve_host(self, host: str, ns: str) -> tuple[str, str] | None:
        """Service (namespace, name) for a mesh host name, if it is in the bundle."""
        parts = host.split(".")
        if len(parts) == 1:
            key = (ns, parts[0])
        elif len(parts) == 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"]):
            key = (parts[1], parts[0])
        else:
            return None
        return key if key in self.kind("Service") else None

    def proto_service_of(self, dep: dict[str, Any]) -> str | None:
        for c in dep["spec"]["template"]["spec"].get("containers") or []:
            svc = ((c.get("readinessProbe") or {}).get("grpc") or {}).get("service")
            if svc:
                return svc
        return None

    def proto_services_behind(self, svc_key: tuple[str, str]) -> set[str]:
        svc = self.kind("Service")[svc_key]
        deps = self.selected_workloads(svc_key[0], (svc.get("spec") or {}).get("selector"))
        return {s for d in deps if (s := self.proto_service_of(d))}

    def configmaps(self, ns: str) -> dict[str, dict[str, Any]]:
        return {name: cm for (n, name), cm in self.kind("ConfigMap").items() if n == ns}


def cross_check(
    objects: list[dict[str, Any]],
    services: dict[str, tuple[ProtoMethod, ...]] | None = None,
    adapter_metrics: set[str] | None = None,
    image_uid: int | None = None,
    partition_header_name: str | None = None,
) -> list[str]:
    """Consistency checks across the rendered objects. [] = consistent."""
    services = services if services is not None else proto_services()
    header = partition_header_name or partition_header()
    b = Bundle(objects)
    errors: list[str] = []
    errors += _check_namespace(b)
    errors += _check_deployments(b, services, image_uid)
    errors += _check_services(b)
    errors += _check_specialist_targets(b, services)
    errors += _check_destination_rules(b)
    errors += _check_virtual_services(b, services)
    errors += _check_authorization(b, services)
    errors += _check_peer_authentication(b)
    errors += _check_network_policies(b)
    errors += _check_autoscaling(b, adapter_metrics)
    errors += _check_flagger(b)
    errors += _check_ownership(b, services, header)
    return errors


def _check_namespace(b: Bundle) -> list[str]:
    errors = []
    namespaces = {name for (_, name) in b.kind("Namespace")}
    used = {
        (o.get("metadata") or {}).get("namespace")
        for o in b.objects
        if o.get("kind") != "Namespace"
    } - {None}
    for ns in used - namespaces:
        errors.append(f"namespace {ns!r} is used but no Namespace object is in the bundle")
    for (_, name), nsobj in b.kind("Namespace").items():
        labels = (nsobj.get("metadata") or {}).get("labels") or {}
        if labels.get("istio-injection") != "enabled" and "istio.io/rev" not in labels:
            errors.append(f"Namespace/{name}: no Istio sidecar injection label")
    return errors


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    return (dep["spec"]["template"]["spec"].get("containers") or [{}])[0]


def _check_deployments(b: Bundle, services: dict, image_uid: int | None) -> list[str]:
    errors = []
    images = set()
    sas = {name for (_, name) in b.kind("ServiceAccount")}
    for ns, name, dep in b.workloads():
        if (dep["kind"], ns, name) in b.synthetic:
            continue
        oid = f"{dep['kind']}/{name}"
        pod = dep["spec"]["template"]["spec"]
        labels = b.pod_labels(dep)
        for key in ("app", "version"):
            if key not in labels:
                errors.append(f"{oid}: pod template has no {key!r} label")
        if not _labels_match(dep["spec"]["selector"].get("matchLabels"), labels):
            errors.append(f"{oid}: selector does not match the pod template labels")
        sa = pod.get("serviceAccountName")
        if not sa or sa == "default" or sa not in sas:
            errors.append(f"{oid}: serviceAccountName {sa!r} is not a ServiceAccount of the bundle")
        psc = pod.get("securityContext") or {}
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errors.append(f"{oid}: pod seccompProfile is not RuntimeDefault")
        if image_uid is not None and psc.get("runAsUser") != image_uid:
            errors.append(
                f"{oid}: runAsUser {psc.get('runAsUser')} != the image's USER {image_uid}"
            )
        env_cm = b.configmaps(ns)
        for c in pod.get("containers") or []:
            cid = f"{oid} container {c.get('name')}"
            images.add(c.get("image"))
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                errors.append(f"{cid}: runAsNonRoot not set")
            if not sc.get("readOnlyRootFilesystem"):
                errors.append(f"{cid}: readOnlyRootFilesystem not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cid}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{cid}: capabilities do not drop ALL")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        errors.append(f"{cid}: no {kind}.{r}")
            args = c.get("args") or c.get("command") or []
            if len(args) < 2 or args[0] != "serve" or args[1] not in ROLES:
                errors.append(f"{cid}: command {args} is not `serve <{'|'.join(ROLES)}>`")
                role = None
            else:
                role = args[1]
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            grpc_port = ports.get("grpc")
            if grpc_port is None:
                errors.append(f"{cid}: no container port named 'grpc'")
            env = _env_of(c, env_cm)
            if env.get("SENTINEL_PORT") and grpc_port and int(env["SENTINEL_PORT"]) != grpc_port:
                errors.append(
                    f"{cid}: SENTINEL_PORT {env['SENTINEL_PORT']} != grpc port {grpc_port}"
                )
            metrics_port = ports.get("http-metrics")
            if str(env.get("SENTINEL_METRICS_PORT")) != str(metrics_port):
                errors.append(
                    f"{cid}: SENTINEL_METRICS_PORT {env.get('SENTINEL_METRICS_PORT')} "
                    f"!= http-metrics port {metrics_port}"
                )
            ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
            if ann.get("prometheus.io/scrape") != "true" or str(
                ann.get("prometheus.io/port")
            ) != str(metrics_port):
                errors.append(
                    f"{oid}: prometheus.io scrape annotations do not point at the "
                    f"metrics port {metrics_port}"
                )
            if env.get("SENTINEL_HOST") not in ("0.0.0.0", "::"):
                errors.append(f"{cid}: SENTINEL_HOST must bind all interfaces in a pod")
            if env.get("SENTINEL_ALLOW_INSECURE", "").lower() != "true":
                errors.append(f"{cid}: SENTINEL_ALLOW_INSECURE must be true behind the sidecar")
            # probes: native gRPC on the grpc port; readiness names the role's service
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if not p or "grpc" not in p:
                    errors.append(f"{cid}: no native gRPC {probe}")
                elif p["grpc"].get("port") != grpc_port:
                    errors.append(f"{cid}: {probe} port {p['grpc'].get('port')} != grpc port")
            ready = ((c.get("readinessProbe") or {}).get("grpc") or {}).get("service")
            expected = _role_service(role, services)
            if role and ready != expected:
                errors.append(
                    f"{cid}: readiness probe asks for {ready!r}, the {role} role serves "
                    f"{expected!r}"
                )
            # the orchestrator is started once it has described its specialists
            started = ((c.get("startupProbe") or {}).get("grpc") or {}).get("service")
            if role == "orchestrator" and started != STARTUP_SERVICE:
                errors.append(
                    f"{cid}: startup probe asks for {started!r}, not {STARTUP_SERVICE!r} "
                    "(every specialist described)"
                )
            # shutdown timeline
            grace = pod.get("terminationGracePeriodSeconds", 30)
            pre_stop = (c.get("lifecycle") or {}).get("preStop") or {}
            sleep = (pre_stop.get("sleep") or {}).get("seconds", 0)
            if not sleep and "exec" in pre_stop:
                cmd = pre_stop["exec"].get("command") or []
                nums = [float(x) for x in cmd if re.fullmatch(r"\d+(\.\d+)?", str(x))]
                sleep = nums[-1] if nums else 0
            if not pre_stop:
                errors.append(f"{cid}: no preStop hook")
            app_stop = (
                sleep
                + float(env.get("SENTINEL_DRAIN_DELAY_SECONDS", 5))
                + float(env.get("SENTINEL_SHUTDOWN_GRACE_SECONDS", 10))
            )
            if app_stop + 2 > grace:
                errors.append(
                    f"{oid}: preStop {sleep}s + drain + shutdown grace = {app_stop}s "
                    f"does not fit terminationGracePeriodSeconds {grace}"
                )
            proxy_cfg = yaml.safe_load(ann.get("proxy.istio.io/config") or "{}") or {}
            drain = proxy_cfg.get("terminationDrainDuration")
            if drain is not None:
                d = parse_duration(drain)
                if not app_stop <= d < grace:
                    errors.append(
                        f"{oid}: sidecar terminationDrainDuration {drain} should cover "
                        f"the app's {app_stop}s stop and end before {grace}s"
                    )
    if len(images) > 1:
        errors.append(f"workloads use several images {sorted(images)}; Sentinel ships one")
    return errors


def _role_service(role: str | None, services: dict) -> str | None:
    if role is None:
        return None
    wanted = "Orchestrator" if role == "orchestrator" else "Specialist"
    return next((s for s in services if s.rsplit(".", 1)[-1] == wanted), None)


def _check_services(b: Bundle) -> list[str]:
    errors = []
    for (ns, name), svc in b.kind("Service").items():
        if ("Service", ns, name) in b.synthetic:
            continue
        spec = svc.get("spec") or {}
        deps = b.selected_workloads(ns, spec.get("selector"))
        if not deps:
            errors.append(f"Service/{name}: selector {spec.get('selector')} selects no workload")
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            container_ports = [
                p
                for d in deps
                for c in d["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports") or []
                if p.get("name") == target or p.get("containerPort") == target
            ]
            if deps and not container_ports:
                errors.append(
                    f"Service/{name} port {port.get('name')}: targetPort {target!r} "
                    "is not a container port of the selected pods"
                )
            is_grpc = any(p.get("name") == "grpc" for p in container_ports)
            pname = port.get("name") or ""
            if is_grpc or port.get("appProtocol") == "grpc" or pname.startswith("grpc"):
                if not (pname == "grpc" or pname.startswith("grpc-")):
                    errors.append(
                        f"Service/{name}: gRPC port {port.get('port')} is named "
                        f"{pname!r}, not grpc[-*] (Istio protocol selection)"
                    )
                if port.get("appProtocol") != "grpc":
                    errors.append(f"Service/{name}: gRPC port {pname!r} lacks appProtocol: grpc")
    # one `model` Service over all versions of a multi-version app
    versions: dict[tuple[str, str], set[str]] = {}
    for ns, _, dep in b.workloads():
        labels = b.pod_labels(dep)
        versions.setdefault((ns, labels.get("app", "")), set()).add(labels.get("version", ""))
    for (ns, app), vs in versions.items():
        if len(vs) > 1:
            svc = b.get("Service", ns, app)
            if svc is None or set(svc["spec"].get("selector") or {}) - {"app"}:
                errors.append(
                    f"app {app!r} has versions {sorted(vs)} but no Service {app!r} "
                    "selecting all of them by `app`"
                )
    return errors


_TARGET = re.compile(r"^(?:dns:(?://[^/]*)?/+)?(?P<host>[^:/]+):(?P<port>\d+)$")


def _specialist_deadlines(b: Bundle) -> dict[tuple[str, str], float]:
    """Service -> the orchestrator's deadline for calls to it (Describe, Score)."""
    out: dict[tuple[str, str], float] = {}
    for (ns, _), cm in b.kind("ConfigMap").items():
        data = cm.get("data") or {}
        if "SENTINEL_SPECIALISTS" not in data or "SENTINEL_SPECIALIST_TIMEOUT_SECONDS" not in data:
            continue
        deadline = float(data["SENTINEL_SPECIALIST_TIMEOUT_SECONDS"])
        for entry in str(data["SENTINEL_SPECIALISTS"]).split(","):
            m = _TARGET.match(entry.partition("=")[2].strip())
            key = m and b.resolve_host(m.group("host"), ns)
            if key:
                out[key] = deadline
    return out


def _specialist_target(
    b: Bundle, ns: str, oid: str, setting: str, entry: str, specialist_svc: str | None
) -> tuple[str, tuple[str, str] | None, list[str]]:
    """An entry `name=host:port` of SENTINEL_SPECIALISTS / SENTINEL_SHADOWS: its name, the
    Service it resolves to (None if none) and what is wrong with it."""
    entry = entry.strip()
    name, sep, target = entry.partition("=")
    m = _TARGET.match(target)
    if not sep or not m:
        return name, None, [f"{oid}: bad {setting} entry {entry!r} (want name=host:port)"]
    what = "shadow" if setting == "SENTINEL_SHADOWS" else "specialist"
    key = b.resolve_host(m.group("host"), ns)
    if key is None:
        return (
            name,
            None,
            [
                f"{oid}: {what} {name!r} target host {m.group('host')!r} is not a Service in the "
                "bundle"
            ],
        )
    errors = []
    svc = b.kind("Service")[key]
    port = int(m.group("port"))
    sport = next((p for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
    if sport is None:
        errors.append(f"{oid}: {what} {name!r}: Service {key[1]} has no port {port}")
    elif not str(sport.get("name", "")).startswith("grpc"):
        errors.append(f"{oid}: {what} {name!r}: port {port} is not the grpc port")
    if specialist_svc not in b.proto_services_behind(key):
        errors.append(
            f"{oid}: {what} {name!r}: Service {key[1]} does not front {specialist_svc} pods"
        )
    return name, key, errors


def _check_specialist_targets(b: Bundle, services: dict) -> list[str]:
    errors = []
    specialist_svc = _role_service("threshold", services)
    found = False
    for (ns, cm_name), cm in b.kind("ConfigMap").items():
        data = cm.get("data") or {}
        if "SENTINEL_SPECIALISTS" not in data:
            continue
        found = True
        oid = f"ConfigMap/{cm_name}"
        configured: dict[str, tuple[str, str]] = {}  # specialist name -> its Service
        shadows: set[tuple[str, str]] = set()
        for entry in str(data["SENTINEL_SPECIALISTS"]).split(","):
            name, key, problems = _specialist_target(
                b, ns, oid, "SENTINEL_SPECIALISTS", entry, specialist_svc
            )
            errors += problems
            if key is None:
                continue
            configured[name] = key
            if key[1] != name:
                errors.append(f"{oid}: specialist {name!r} points at Service {key[1]!r}")
        # Shadows (SENTINEL_SHADOWS): each of a configured specialist, at another Service that
        # fronts specialist pods (e.g. Flagger's <name>-canary).
        for entry in filter(None, str(data.get("SENTINEL_SHADOWS", "")).split(",")):
            name, key, problems = _specialist_target(
                b, ns, oid, "SENTINEL_SHADOWS", entry, specialist_svc
            )
            errors += problems
            if name not in configured:
                errors.append(f"{oid}: shadow {name!r} is not a specialist in SENTINEL_SPECIALISTS")
            elif key == configured[name]:
                errors.append(f"{oid}: shadow {name!r} is its own specialist's Service {key[1]!r}")
            if key is not None:
                shadows.add(key)
        # every specialist Service (not Flagger's -primary/-canary aliases) is configured
        for key in b.kind("Service"):
            if key[0] != ns or ("Service", *key) in b.synthetic:
                continue
            known = set(configured.values()) | shadows
            if specialist_svc in b.proto_services_behind(key) and key not in known:
                errors.append(
                    f"{oid}: specialist Service {key[1]!r} is not in SENTINEL_SPECIALISTS"
                )
        if "SENTINEL_SPECIALIST_TIMEOUT_SECONDS" not in data:
            errors.append(
                f"{oid}: set SENTINEL_SPECIALIST_TIMEOUT_SECONDS explicitly: the mesh's "
                "route timeouts are checked against it"
            )
        ns_obj = b.get("Namespace", "", ns)
        in_mesh = (
            ns_obj and (ns_obj["metadata"].get("labels") or {}).get("istio-injection") == "enabled"
        )
        if in_mesh and str(data.get("SENTINEL_CLIENT_RETRIES", "")).lower() != "false":
            errors.append(
                f"{oid}: SENTINEL_CLIENT_RETRIES must be false inside the mesh "
                "(Istio is the retry layer)"
            )
        users = [
            d
            for n, _, d in b.workloads()
            if n == ns
            and any(
                (s.get("configMapRef") or {}).get("name") == cm_name
                for c in d["spec"]["template"]["spec"]["containers"]
                for s in c.get("envFrom") or []
            )
        ]
        if not any(b.proto_service_of(d) == _role_service("orchestrator", services) for d in users):
            errors.append(f"{oid}: not used by the orchestrator workload")
    if not found:
        errors.append("no ConfigMap sets SENTINEL_SPECIALISTS")
    return errors


def _check_destination_rules(b: Bundle) -> list[str]:
    errors = []
    for (ns, name), dr in b.kind("DestinationRule").items():
        oid = f"DestinationRule/{name}"
        spec = dr.get("spec") or {}
        key = b.resolve_host(spec.get("host", ""), ns)
        if key is None:
            errors.append(f"{oid}: host {spec.get('host')!r} is not a Service in the bundle")
            continue
        tp = spec.get("trafficPolicy") or {}
        if (tp.get("tls") or {}).get("mode") != "ISTIO_MUTUAL":
            errors.append(f"{oid}: trafficPolicy.tls.mode is not ISTIO_MUTUAL")
        for part in ("connectionPool", "outlierDetection"):
            if part not in tp:
                errors.append(f"{oid}: no trafficPolicy.{part}")
        svc = b.kind("Service")[key]
        names = [s.get("name") for s in spec.get("subsets") or []]
        if len(names) != len(set(names)):
            errors.append(f"{oid}: duplicate subset names {names}")
        for subset in spec.get("subsets") or []:
            selector = {**(svc["spec"].get("selector") or {}), **(subset.get("labels") or {})}
            if not b.selected_workloads(key[0], selector):
                errors.append(
                    f"{oid}: subset {subset.get('name')!r} ({subset.get('labels')}) "
                    f"selects no pods behind Service {key[1]}"
                )
    return errors


def _subsets(b: Bundle, key: tuple[str, str]) -> set[str] | None:
    """Subsets defined for a Service host by DestinationRules (None: no DR)."""
    out: set[str] | None = None
    for (ns, _), dr in b.kind("DestinationRule").items():
        if b.resolve_host((dr.get("spec") or {}).get("host", ""), ns) == key:
            out = (out or set()) | {s.get("name") for s in dr["spec"].get("subsets") or []}
    return out


def _uri_matches(matcher: dict[str, str] | None, path: str) -> bool:
    if not matcher:
        return True
    if "exact" in matcher:
        return path == matcher["exact"]
    if "prefix" in matcher:
        return path.startswith(matcher["prefix"])
    if "regex" in matcher:
        return re.fullmatch(matcher["regex"], path) is not None
    return True


def _route_serves(route: dict[str, Any], path: str) -> tuple[bool, bool]:
    """(may serve `path`, unconditionally) under Istio's first-match semantics."""
    matches = route.get("match")
    if not matches:
        return True, True
    may = uncond = False
    for m in matches:
        if _uri_matches(m.get("uri"), path):
            may = True
            if not (set(m) - {"uri", "name", "ignoreUriCase"}):
                uncond = True
    return may, uncond


def check_retry_budget(where: str, timeout: Any, retries: dict[str, Any] | None) -> list[str]:
    """Retries must fit in the timeout: (attempts + 1) x perTryTimeout <= timeout."""
    errors = []
    retries = retries or {}
    attempts = int(retries.get("attempts", 0) or 0)
    for cond in filter(None, (retries.get("retryOn") or "").split(",")):
        if cond.strip() not in RETRY_ON_CONDITIONS and not cond.strip().isdigit():
            errors.append(f"{where}: unknown retryOn condition {cond!r}")
    if attempts <= 0:
        return errors
    if timeout is None:
        errors.append(f"{where}: {attempts} retries but no timeout bounds them")
        return errors
    if "perTryTimeout" not in retries:
        errors.append(
            f"{where}: retries without perTryTimeout (each try may use the whole timeout)"
        )
        return errors
    budget = (attempts + 1) * parse_duration(retries["perTryTimeout"])
    if budget > parse_duration(timeout) + 1e-9:
        errors.append(
            f"{where}: retry budget ({attempts} + 1) x {retries['perTryTimeout']} = "
            f"{budget:g}s exceeds timeout {timeout}"
        )
    return errors


def _check_virtual_services(b: Bundle, services: dict) -> list[str]:
    errors = []
    known_paths = {m.path for ms in services.values() for m in ms}
    deadlines = _specialist_deadlines(b)
    for (ns, name), vs in b.kind("VirtualService").items():
        oid = f"VirtualService/{name}"
        spec = vs.get("spec") or {}
        gateways = spec.get("gateways") or ["mesh"]
        gateway_hosts: set[str] = set()
        for gw in gateways:
            if gw == "mesh":
                continue
            gns, _, gname = gw.rpartition("/")
            gobj = b.get("Gateway", gns or ns, gname)
            if gobj is None:
                errors.append(f"{oid}: gateway {gw!r} is not in the bundle")
                continue
            for server in gobj["spec"].get("servers") or []:
                gateway_hosts |= {h.split("/")[-1] for h in server.get("hosts") or []}
        host_services: list[tuple[str, str]] = []
        for host in spec.get("hosts") or []:
            key = b.resolve_host(host, ns)
            if key:
                host_services.append(key)
            elif not (host in gateway_hosts or "*" in gateway_hosts):
                errors.append(
                    f"{oid}: host {host!r} is neither a Service in the bundle nor "
                    "served by one of its Gateways"
                )
        routes = spec.get("http") or []
        for i, route in enumerate(routes):
            rid = f"{oid} http[{i}] ({route.get('name', '')})"
            dests = route.get("route") or []
            if not dests:
                errors.append(f"{rid}: no route destinations")
            for m in route.get("match") or []:
                uri = m.get("uri") or {}
                value = uri.get("exact") or uri.get("prefix")
                if value and re.match(r"^/[\w.]+\.[A-Z]\w*/", value):
                    svc = value.split("/")[1]
                    if svc not in services:
                        errors.append(f"{rid}: matches unknown gRPC service {svc!r}")
                    elif "exact" in uri and value not in known_paths:
                        errors.append(f"{rid}: matches unknown gRPC method {value!r}")
            weights = [d.get("weight") for d in dests]
            if len(dests) > 1 or any(w is not None for w in weights):
                if any(w is None for w in weights):
                    errors.append(f"{rid}: some destinations lack a weight")
                else:
                    if any(not 0 <= w <= 100 for w in weights):
                        errors.append(f"{rid}: weights {weights} outside 0..100")
                    if sum(weights) != 100:
                        errors.append(
                            f"{rid}: route weights {weights} sum to {sum(weights)}, not 100"
                        )
            targets = [d.get("destination") or {} for d in dests]
            if route.get("mirror"):
                targets.append(route["mirror"])
            targets += [m.get("destination") or {} for m in route.get("mirrors") or []]
            mp = (route.get("mirrorPercentage") or {}).get("value")
            if mp is not None and not 0 <= float(mp) <= 100:
                errors.append(f"{rid}: mirrorPercentage {mp} outside 0..100")
            for dest in targets:
                key = b.resolve_host(dest.get("host", ""), ns)
                if key is None:
                    errors.append(
                        f"{rid}: destination host {dest.get('host')!r} is not a Service "
                        "in the bundle"
                    )
                    continue
                number = (dest.get("port") or {}).get("number")
                svc_ports = {
                    p.get("port") for p in b.kind("Service")[key]["spec"].get("ports") or []
                }
                if number is not None and number not in svc_ports:
                    errors.append(f"{rid}: Service {key[1]} has no port {number}")
                if dest.get("subset"):
                    subsets = _subsets(b, key)
                    if not subsets or dest["subset"] not in subsets:
                        errors.append(
                            f"{rid}: subset {dest['subset']!r} of {key[1]} is not defined "
                            f"by any DestinationRule (defined: {sorted(subsets or [])})"
                        )
            errors += check_retry_budget(rid, route.get("timeout"), route.get("retries"))
        # per gRPC method: which routes may serve it, and are they right for its kind?
        for key in host_services:
            for svc_name in b.proto_services_behind(key):
                for method in services.get(svc_name, ()):
                    serving = []
                    for i, route in enumerate(routes):
                        may, uncond = _route_serves(route, method.path)
                        if may:
                            serving.append((i, route))
                        if uncond:
                            break
                    else:
                        errors.append(
                            f"{oid}: {method.path} on {key[1]} is not routed by every "
                            "request (no unconditional matching route)"
                        )
                    for i, route in serving:
                        rid = f"{oid} http[{i}] ({route.get('name', '')})"
                        if method.streaming:
                            if "timeout" in route:
                                errors.append(
                                    f"{rid}: streaming call {method.path} must have no "
                                    f"timeout (has {route['timeout']})"
                                )
                            if int((route.get("retries") or {}).get("attempts", -1)) != 0:
                                errors.append(
                                    f"{rid}: streaming call {method.path} must set "
                                    "retries.attempts: 0 (Istio retries by default)"
                                )
                        elif "timeout" not in route:
                            errors.append(f"{rid}: unary call {method.path} has no timeout")
                        elif (
                            key in deadlines
                            and parse_duration(route["timeout"]) > deadlines[key] + 1e-9
                        ):
                            errors.append(
                                f"{rid}: timeout {route['timeout']} exceeds the orchestrator's "
                                f"{deadlines[key]:g}s deadline for {key[1]} calls "
                                "(SENTINEL_SPECIALIST_TIMEOUT_SECONDS): its retries cannot finish"
                            )
    return errors


def _principal_sa(principal: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"(?:spiffe://)?[^/]+/ns/([^/]+)/sa/([^/]+)", principal)
    return (m.group(1), m.group(2)) if m else None


def _check_authorization(b: Bundle, services: dict) -> list[str]:
    errors = []
    policies = b.kind("AuthorizationPolicy")
    namespaces = {name for (_, name) in b.kind("Namespace")}
    for ns in namespaces:
        if not any(p_ns == ns and not (p.get("spec") or {}) for (p_ns, _), p in policies.items()):
            errors.append(f"namespace {ns}: no deny-by-default (empty ALLOW) AuthorizationPolicy")
    orchestrator_svc = _role_service("orchestrator", services)
    orch_sas = {
        (ns, d["spec"]["template"]["spec"].get("serviceAccountName"))
        for ns, _, d in b.workloads()
        if b.proto_service_of(d) == orchestrator_svc
    }
    metrics_ports = {
        str(p.get("containerPort"))
        for _, _, d in b.workloads()
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports") or []
        if p.get("name") == "http-metrics"
    }
    for (ns, name), pol in policies.items():
        oid = f"AuthorizationPolicy/{name}"
        spec = pol.get("spec") or {}
        if not spec:
            continue
        selector = (spec.get("selector") or {}).get("matchLabels")
        deps = (
            b.selected_workloads(ns, selector)
            if selector
            else [d for n, _, d in b.workloads() if n == ns]
        )
        if not deps:
            errors.append(f"{oid}: selector {selector} selects no workload")
        served = {s for d in deps if (s := b.proto_service_of(d))}
        if spec.get("action", "ALLOW") != "ALLOW":
            continue
        rpc_paths: set[str] = set()
        for rule in spec.get("rules") or []:
            for to in rule.get("to") or []:
                op = to.get("operation") or {}
                ports = set(map(str, op.get("ports") or []))
                for path in op.get("paths") or []:
                    if ports and ports <= metrics_ports and path == METRICS_PATH:
                        continue
                    rpc_paths.add(path)
                    m = re.fullmatch(r"/([\w.]+)/(\*|\w+)", path)
                    if not m or m.group(1) not in services:
                        errors.append(
                            f"{oid}: path {path!r} is not /<proto service>/* of a real "
                            f"service ({sorted(services)})"
                        )
                    elif m.group(2) != "*" and m.group(2) not in {
                        x.name for x in services[m.group(1)]
                    }:
                        errors.append(f"{oid}: path {path!r} names no method of {m.group(1)}")
                    elif m.group(1) not in served:
                        errors.append(
                            f"{oid}: path {path!r} allows a service the selected pods "
                            f"do not serve ({sorted(served)})"
                        )
            for frm in rule.get("from") or []:
                for principal in (frm.get("source") or {}).get("principals") or []:
                    sa = _principal_sa(principal)
                    if sa is None:
                        errors.append(f"{oid}: principal {principal!r} is not a SPIFFE SA identity")
                    elif sa[0] in namespaces and b.get("ServiceAccount", *sa) is None:
                        errors.append(f"{oid}: principal {principal!r}: no such ServiceAccount")
                    elif sa[0] in namespaces and served - {orchestrator_svc} and sa not in orch_sas:
                        errors.append(
                            f"{oid}: specialists may only be called by the orchestrator's "
                            f"identity, not {principal!r}"
                        )
        if rpc_paths:
            expected = {f"/{s}/*" for s in served}
            if rpc_paths != expected:
                errors.append(
                    f"{oid}: allowed paths {sorted(rpc_paths)} != the proto services the "
                    f"selected pods serve {sorted(expected)}"
                )
    return errors


def _check_peer_authentication(b: Bundle) -> list[str]:
    errors = []
    pas = b.kind("PeerAuthentication")
    for _, ns in b.kind("Namespace"):
        if not any(
            p_ns == ns
            and not (p["spec"].get("selector"))
            and (p["spec"].get("mtls") or {}).get("mode") == "STRICT"
            for (p_ns, _), p in pas.items()
        ):
            errors.append(f"namespace {ns}: no namespace-wide STRICT PeerAuthentication")
    for (ns, name), pa in pas.items():
        spec = pa.get("spec") or {}
        deps = b.selected_workloads(ns, (spec.get("selector") or {}).get("matchLabels"))
        for port, setting in (spec.get("portLevelMtls") or {}).items():
            if (setting or {}).get("mode") in ("STRICT", None):
                continue
            for d in deps:
                for c in d["spec"]["template"]["spec"]["containers"]:
                    for p in c.get("ports") or []:
                        if (
                            str(p.get("containerPort")) == str(port)
                            and p.get("name") != "http-metrics"
                        ):
                            errors.append(
                                f"PeerAuthentication/{name}: relaxes mTLS on port {port} "
                                f"({p.get('name')}), only the metrics port may be"
                            )
    return errors


def _check_network_policies(b: Bundle) -> list[str]:
    errors = []
    nps = b.kind("NetworkPolicy")
    for _, ns in b.kind("Namespace"):
        if not any(
            n == ns
            and not (np["spec"].get("podSelector") or {})
            and "Ingress" in (np["spec"].get("policyTypes") or [])
            and not np["spec"].get("ingress")
            for (n, _), np in nps.items()
        ):
            errors.append(f"namespace {ns}: no default-deny ingress NetworkPolicy")
    for (ns, name), np in nps.items():
        sel = (np["spec"].get("podSelector") or {}).get("matchLabels")
        deps = b.selected_workloads(ns, sel) if sel else [d for n, _, d in b.workloads() if n == ns]
        if sel and not deps:
            errors.append(f"NetworkPolicy/{name}: podSelector {sel} selects no workload")
        names = {
            p.get("name")
            for d in deps
            for c in d["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports") or []
        }
        for rule in np["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                if isinstance(port.get("port"), str) and port["port"] not in names:
                    errors.append(
                        f"NetworkPolicy/{name}: named port {port['port']!r} is not a port "
                        "of the selected pods"
                    )
            for frm in rule.get("from") or []:
                psel = (frm.get("podSelector") or {}).get("matchLabels")
                if psel and "namespaceSelector" not in frm and not b.selected_workloads(ns, psel):
                    errors.append(f"NetworkPolicy/{name}: from podSelector {psel} selects no pods")
    return errors


def _check_autoscaling(b: Bundle, adapter_metrics: set[str] | None) -> list[str]:
    errors = []
    targeted = set()
    for (ns, name), hpa in b.kind("HorizontalPodAutoscaler").items():
        oid = f"HorizontalPodAutoscaler/{name}"
        ref = hpa["spec"].get("scaleTargetRef") or {}
        dep = b.get(ref.get("kind", ""), ns, ref.get("name", ""))
        if dep is None:
            errors.append(
                f"{oid}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} not in bundle"
            )
            continue
        targeted.add((ns, ref["name"]))
        if "replicas" in dep["spec"]:
            errors.append(
                f"{oid}: {ref.get('kind')} {ref['name']} sets replicas; the HPA owns that field"
            )
        metrics = hpa["spec"].get("metrics") or []
        if not any(
            m.get("type") == "Resource" and m["resource"].get("name") == "cpu" for m in metrics
        ):
            errors.append(f"{oid}: no CPU metric")
        for m in metrics:
            if m.get("type") == "Pods":
                metric = m["pods"]["metric"]["name"]
                if adapter_metrics is not None and metric not in adapter_metrics:
                    errors.append(
                        f"{oid}: Pods metric {metric!r} is not served by the "
                        f"prometheus-adapter rules ({sorted(adapter_metrics)})"
                    )
        if b.proto_service_of(dep) and b.proto_service_of(dep).endswith(".Orchestrator"):
            if not any(m.get("type") == "Pods" for m in metrics):
                errors.append(
                    f"{oid}: the orchestrator must scale on its queue depth (Pods metric)"
                )
    canary_targets = {
        (ns, (c["spec"].get("targetRef") or {}).get("name"))
        for (ns, _), c in b.kind("Canary").items()
    }
    pdbs = b.kind("PodDisruptionBudget")
    for ns, name, dep in b.workloads():
        if (ns, name) in canary_targets:
            continue  # Flagger scales the canary target to zero between releases
        if not any(
            n == ns and _labels_match(p["spec"]["selector"].get("matchLabels"), b.pod_labels(dep))
            for (n, _), p in pdbs.items()
        ):
            errors.append(f"{dep['kind']}/{name}: no PodDisruptionBudget covers it")
    for (ns, name), pdb in pdbs.items():
        if not b.selected_workloads(ns, pdb["spec"]["selector"].get("matchLabels")):
            errors.append(f"PodDisruptionBudget/{name}: selects no workload")
    return errors


def _is_headless(svc: dict[str, Any]) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def _check_ownership(b: Bundle, services: dict, header: str) -> list[str]:
    """One owner per sensor: the orchestrator is a StatefulSet of shards, each with its own
    volume at SENTINEL_STATE_DIR and a stable DNS name, and the mesh hashes the client's
    partition header to pick the shard."""
    errors = []
    orchestrator_svc = _role_service("orchestrator", services)
    shards = [
        (ns, name, w) for ns, name, w in b.workloads() if b.proto_service_of(w) == orchestrator_svc
    ]
    if not shards:
        errors.append("no orchestrator workload in the bundle")
    for ns, name, w in shards:
        oid = f"{w['kind']}/{name}"
        if w["kind"] != "StatefulSet":
            errors.append(
                f"{oid}: the orchestrator owns sensor state; run it as a StatefulSet of shards "
                "(stable names, a volume per shard)"
            )
            continue
        spec = w["spec"]
        headless = b.get("Service", ns, spec.get("serviceName", ""))
        if headless is None or not _is_headless(headless):
            errors.append(
                f"{oid}: serviceName {spec.get('serviceName')!r} is not a headless Service"
            )
        elif not _labels_match(headless["spec"].get("selector"), b.pod_labels(w)):
            errors.append(f"{oid}: headless Service {spec['serviceName']} does not select its pods")
        claims = {
            (t.get("metadata") or {}).get("name") for t in spec.get("volumeClaimTemplates") or []
        }
        container = _container(w)
        mounts = {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []}
        state_dir = _env_of(container, b.configmaps(ns)).get("SENTINEL_STATE_DIR")
        if not claims:
            errors.append(
                f"{oid}: no volumeClaimTemplates: a shard's checkpoint needs its own volume"
            )
        if not state_dir:
            errors.append(f"{oid}: SENTINEL_STATE_DIR is not set")
        elif mounts.get(state_dir) not in claims:
            errors.append(
                f"{oid}: SENTINEL_STATE_DIR {state_dir} is not the mount of a volumeClaimTemplate "
                f"(mounts: {sorted(p for p in mounts if p)})"
            )
    # Every (non-headless) Service in front of the shards hashes the partition header.
    for (ns, svc_name), svc in b.kind("Service").items():
        if _is_headless(svc) or orchestrator_svc not in b.proto_services_behind((ns, svc_name)):
            continue
        rules = [
            (name, dr)
            for (dns, name), dr in b.kind("DestinationRule").items()
            if b.resolve_host((dr.get("spec") or {}).get("host", ""), dns) == (ns, svc_name)
        ]
        if not rules:
            errors.append(f"Service/{svc_name}: no DestinationRule routes it by partition key")
        for name, dr in rules:
            lb = ((dr["spec"].get("trafficPolicy") or {}).get("loadBalancer")) or {}
            hashed = (lb.get("consistentHash") or {}).get("httpHeaderName")
            if hashed != header:
                errors.append(
                    f"DestinationRule/{name}: loadBalancer.consistentHash.httpHeaderName is "
                    f"{hashed!r}, not the client's partition header {header!r}"
                )
            if (lb.get("localityLbSetting") or {}).get("enabled") is not False:
                errors.append(
                    f"DestinationRule/{name}: localityLbSetting.enabled must be false: "
                    "locality-aware balancing sends one partition key to different shards"
                )
    return errors


def _check_flagger(b: Bundle) -> list[str]:
    errors = []
    templates = {name for (_, name) in b.kind("MetricTemplate")}
    for (ns, name), canary in b.kind("Canary").items():
        oid = f"Canary/{name}"
        spec = canary.get("spec") or {}
        target = (spec.get("targetRef") or {}).get("name")
        dep = b.get("Deployment", ns, target)
        if dep is None:
            errors.append(f"{oid}: targetRef Deployment {target!r} not in bundle")
            continue
        sel = dep["spec"]["selector"].get("matchLabels") or {}
        if (
            not any(sel.get(k) == target for k in ("app", "name", "app.kubernetes.io/name"))
            or len(sel) != 1
        ):
            errors.append(
                f"{oid}: Flagger needs Deployment {target} selected by a single "
                f"app/name label equal to its name (has {sel})"
            )
        aref = spec.get("autoscalerRef")
        if aref:
            hpa = b.get("HorizontalPodAutoscaler", ns, aref.get("name"))
            if hpa is None or hpa["spec"]["scaleTargetRef"].get("name") != target:
                errors.append(f"{oid}: autoscalerRef {aref.get('name')} does not scale {target}")
        svc = spec.get("service") or {}
        ports = {
            p.get("name"): p.get("containerPort")
            for c in dep["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports") or []
        }
        if svc.get("port") != ports.get("grpc"):
            errors.append(f"{oid}: service.port {svc.get('port')} != the grpc container port")
        if svc.get("appProtocol") != "grpc" or not str(svc.get("portName", "")).startswith("grpc"):
            errors.append(f"{oid}: service must be portName grpc / appProtocol grpc")
        errors += check_retry_budget(oid, svc.get("timeout"), svc.get("retries"))
        deadline = _specialist_deadlines(b).get((ns, svc.get("name") or target))
        if (
            deadline is not None
            and svc.get("timeout")
            and parse_duration(svc["timeout"]) > deadline
        ):
            errors.append(
                f"{oid}: service.timeout {svc['timeout']} exceeds the orchestrator's "
                f"{deadline:g}s deadline (SENTINEL_SPECIALIST_TIMEOUT_SECONDS)"
            )
        for m in (spec.get("analysis") or {}).get("metrics") or []:
            ref = (m.get("templateRef") or {}).get("name")
            if ref and ref not in templates:
                errors.append(
                    f"{oid}: metric {m.get('name')!r} uses missing MetricTemplate {ref!r}"
                )
    return errors


# --------------------------------------------------------------------------- adapter / image


def adapter_rules(path: Path = ADAPTER_CONFIG) -> list[dict[str, Any]]:
    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("rules") or []


def adapter_metric_names(rules: list[dict[str, Any]]) -> set[str]:
    """Metric names the adapter serves (`name.as`, else the series name)."""
    names = set()
    for rule in rules:
        series = re.match(r"\s*([a-zA-Z_:][\w:]*)", rule.get("seriesQuery", ""))
        as_ = (rule.get("name") or {}).get("as")
        names.add(as_ or (series.group(1) if series else ""))
    return names - {""}


def render_metrics_query(
    rule: dict[str, Any], label_matchers: str = "", group_by: str = "pod", series: str | None = None
) -> str:
    """The rule's metricsQuery as concrete PromQL (what the adapter sends Prometheus).

    E.g. ``render_metrics_query(rule, 'namespace="sentinel",pod=~"orchestrator-.*"')``.
    """
    if series is None:
        m = re.match(r"\s*([a-zA-Z_:][\w:]*)", rule["seriesQuery"])
        series = m.group(1) if m else ""
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", label_matchers)
        .replace("<<.GroupBy>>", group_by)
    )


def dockerfile_final_stage(path: Path = REPO_ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's last stage (continuations joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr.upper(), args.strip()))
    return stages[-1] if stages else []


def dockerfile_uid(path: Path = REPO_ROOT / "Dockerfile") -> int | None:
    users = [a for i, a in dockerfile_final_stage(path) if i == "USER"]
    if not users:
        return None
    uid = users[-1].split(":")[0]
    return int(uid) if uid.isdigit() else None


# --------------------------------------------------------------------------- CLI


def check_all(paths: Iterable[Path]) -> tuple[list[str], CelStats]:
    registry = CrdRegistry.from_dir(schemas_dir())
    stats = CelStats()
    errors: list[str] = []
    metrics = adapter_metric_names(adapter_rules())
    for path in paths:
        objects = render(path) if path.is_dir() else load_yaml_objects(path)
        errors += [f"{path}: {e}" for e in validate_objects(objects, registry, stats)]
        if path.is_dir() and any(o.get("kind") in WORKLOAD_KINDS for o in objects):
            errors += [
                f"{path}: {e}"
                for e in cross_check(objects, adapter_metrics=metrics, image_uid=dockerfile_uid())
            ]
    return errors, stats


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [overlay_dir(o) for o in OVERLAYS]
    errors, stats = check_all(paths)
    for e in errors:
        print(e)
    print(stats.summary())
    print(f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

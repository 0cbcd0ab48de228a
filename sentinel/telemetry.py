"""Process-level observability wiring: JSON logs, OpenTelemetry tracing, Prometheus endpoint.

Everything here is called from a role's `main` (the composition root), never at import.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import sys
import threading
import time
import typing
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_wsgi_server

# LogRecord attributes that are not user-supplied `extra` fields.
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the active trace/span id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            event["trace_id"] = format(span_context.trace_id, "032x")
            event["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                event[key] = _json_value(value)
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, separators=(",", ":"))


def _json_value(value: object) -> object:
    """Extras as JSON: scalars (numpy ones too) as numbers/strings, lists/tuples of them as
    arrays, non-finite floats and anything else as str — every line stays strict JSON."""
    if isinstance(value, (str, bool, type(None))):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if isinstance(value, (list, tuple)):
        items = [_json_value(v) for v in value]
        if all(isinstance(v, (str, int, float, bool, type(None))) for v in items):
            return items
    return str(value)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message k=v k=v`: for people; the same fields as the JSON lines
    (a value with spaces or quotes is quoted, lists as JSON)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: list[str] = []
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            fields.append(f"trace_id={span_context.trace_id:032x}")
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                fields.append(f"{key}={_text_value(_json_value(value))}")
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {' '.join(fields)}{newline}{rest}"


def _text_value(value: object) -> str:
    if isinstance(value, str):
        if value and not any(c.isspace() or c == '"' for c in value):
            return value
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def configure_logging(level: str, fmt: str = "json", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings (numpy's RuntimeWarnings among them) become log records (logger
    # "py.warnings") in the same format, instead of free text on stderr.
    logging.captureWarnings(True)


DEFAULT_PROPAGATORS = "tracecontext,b3multi"


def build_propagator() -> TextMapPropagator:
    """W3C trace context plus B3 multi-header (what Envoy sidecars read and write).

    The standard OTEL_PROPAGATORS variable overrides the list (e.g. `tracecontext,baggage`,
    `b3multi`, `none`); names are the `opentelemetry_propagator` entry points.
    """
    names = [
        n.strip().lower()
        for n in (os.environ.get("OTEL_PROPAGATORS") or DEFAULT_PROPAGATORS).split(",")
        if n.strip()
    ]
    propagators: list[TextMapPropagator] = []
    for name in names:
        if name == "none":
            continue
        if name == "tracecontext":
            propagators.append(TraceContextTextMapPropagator())
        elif name == "b3multi":
            propagators.append(B3MultiFormat())
        else:
            from importlib.metadata import entry_points

            found = entry_points(group="opentelemetry_propagator", name=name)
            if not found:
                raise ValueError(f"OTEL_PROPAGATORS: unknown propagator {name!r}")
            propagators.append(next(iter(found)).load()())
    return CompositePropagator(propagators)


@dataclass
class Tracing:
    provider: trace.TracerProvider
    propagator: TextMapPropagator
    exporters: tuple = ()
    """Span exporters behind the provider; shut down directly when a flush overruns."""

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    def shutdown(self, timeout_seconds: float = 2.0) -> None:
        """Flush queued spans, waiting at most about `timeout_seconds`.

        The SDK's own shutdown waits for the batch worker, which keeps retrying an unreachable
        collector for up to OTEL_EXPORTER_OTLP_TIMEOUT per batch (30 s and more in total): so it
        runs in a helper thread, and when it overruns the exporters are shut down, which
        aborts the retries and the in-flight export. Spans not yet sent are dropped.
        """
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is None:
            return
        worker = threading.Thread(target=shutdown, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_seconds)
        if worker.is_alive():
            for exporter in self.exporters:
                exporter.shutdown()
            worker.join(1.0)


def tracing_requested(console: bool = False) -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return console or any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(
    service_name: str, console: bool = False, console_out: typing.TextIO | None = None
) -> Tracing:
    """An SDK provider exporting over OTLP/gRPC when OTEL_* asks for it; otherwise a no-op.

    `console` adds a ConsoleSpanExporter: indented JSON on stdout, or, with `console_out`, one
    JSON object per line on that stream (the demo's spans file, away from its alert lines).

    The batch processor exports from a background thread with a bounded queue, so a collector
    that is down drops spans instead of slowing or stopping the service.
    """
    propagator = build_propagator()
    if not tracing_requested(console):
        return Tracing(trace.NoOpTracerProvider(), propagator)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; otherwise the role's own name.
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    exporters: list[SpanExporter] = []
    if any(
        os.environ.get(n)
        for n in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if console:
        if console_out is None:
            exporters.append(ConsoleSpanExporter())
        else:
            exporters.append(
                ConsoleSpanExporter(
                    out=console_out, formatter=lambda span: span.to_json(indent=None) + "\n"
                )
            )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, propagator, tuple(exporters))


class MetricsEndpoint:
    """Serves one registry as Prometheus text on http://host:port/metrics."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._httpd, self._thread = start_wsgi_server(port, addr=host, registry=registry)
        self.port: int = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

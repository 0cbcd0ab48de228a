"""Tracing follows the standard OTEL_* variables: service name, propagators, kill switch."""

from __future__ import annotations

import pytest

from sentinel.telemetry import build_propagator, configure_tracing

TRACE_ID, SPAN_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch):
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_PROPAGATORS",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)


def injected(monkeypatch, propagators: str | None) -> dict[str, str]:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    if propagators is not None:
        monkeypatch.setenv("OTEL_PROPAGATORS", propagators)
    context = SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), False, TraceFlags(1))
    carrier: dict[str, str] = {}
    build_propagator().inject(carrier, trace.set_span_in_context(NonRecordingSpan(context)))
    return carrier


def test_default_propagation_is_w3c_and_b3(monkeypatch) -> None:
    carrier = injected(monkeypatch, None)
    assert carrier["traceparent"] == f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert (carrier["x-b3-traceid"], carrier["x-b3-spanid"], carrier["x-b3-sampled"]) == (
        TRACE_ID,
        SPAN_ID,
        "1",
    )
    # Either header family alone is enough to continue the trace.
    from opentelemetry import trace

    for only in (
        {"traceparent": carrier["traceparent"]},
        {k: v for k, v in carrier.items() if "b3" in k},
    ):
        context = trace.get_current_span(build_propagator().extract(only)).get_span_context()
        assert (format(context.trace_id, "032x"), format(context.span_id, "016x")) == (
            TRACE_ID,
            SPAN_ID,
        )


def test_otel_propagators_overrides_the_list(monkeypatch) -> None:
    assert set(injected(monkeypatch, "b3multi")) == {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}
    assert set(injected(monkeypatch, "tracecontext")) == {"traceparent"}
    assert set(injected(monkeypatch, "b3")) == {"b3"}  # single-header B3, via its entry point
    assert injected(monkeypatch, "none") == {}
    with pytest.raises(ValueError, match="unknown propagator 'jaegr'"):
        injected(monkeypatch, "tracecontext,jaegr")


def test_service_name_is_the_role_unless_otel_says_otherwise(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    tracing = configure_tracing("sentinel-threshold")
    assert tracing.provider.resource.attributes["service.name"] == "sentinel-threshold"
    tracing.shutdown()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment=canary")
    tracing = configure_tracing("sentinel-threshold")
    assert tracing.provider.resource.attributes["service.name"] == "from-attributes"
    assert tracing.provider.resource.attributes["deployment"] == "canary"
    tracing.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "threshold-canary")
    tracing = configure_tracing("sentinel-threshold")
    assert tracing.provider.resource.attributes["service.name"] == "threshold-canary"
    tracing.shutdown()


def test_console_spans_need_no_collector(monkeypatch) -> None:
    tracing = configure_tracing("sentinel-demo", console=True)
    assert type(tracing.provider).__name__ == "TracerProvider"
    assert [type(e).__name__ for e in tracing.exporters] == ["ConsoleSpanExporter"]
    tracing.shutdown()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert type(configure_tracing("sentinel-demo", console=True).provider).__name__ == (
        "NoOpTracerProvider"
    )

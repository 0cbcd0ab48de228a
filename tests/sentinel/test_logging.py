"""Structured logs: one strict JSON object per line, trace ids where a span is active, level
from config, configured by a role's main and never at import."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sentinel.telemetry import JsonFormatter, configure_logging


def record(
    msg="hello %s", args=("world",), level=logging.INFO, exc_info=None, **extra
) -> logging.LogRecord:
    rec = logging.LogRecord("sentinel.test", level, __file__, 10, msg, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def formatted(rec: logging.LogRecord) -> dict:
    line = JsonFormatter().format(rec)
    assert "\n" not in line  # one event per line
    return json.loads(line)


def test_base_fields_and_message_arguments() -> None:
    event = formatted(record(level=logging.WARNING))
    assert event["msg"] == "hello world"
    assert event["level"] == "warning"
    assert event["logger"] == "sentinel.test"
    assert len(event["ts"]) == len("2024-01-02T03:04:05.678Z") and event["ts"].endswith("Z")
    time.strptime(event["ts"][:19], "%Y-%m-%dT%H:%M:%S")
    # No span active: no trace fields, and no LogRecord internals leak into the event.
    assert set(event) == {"ts", "level", "logger", "msg"}


def test_extras_become_json_fields() -> None:
    event = formatted(
        record(
            sensor_id="pump-7",
            rows=np.int64(12),
            score=np.float64(0.25),
            ratio=float("nan"),
            ok=True,
            nothing=None,
            reasons=["a", "b"],
            names=("threshold", "model"),
            path=Path("/x"),
        )
    )
    assert event["sensor_id"] == "pump-7"
    assert event["rows"] == 12 and event["score"] == 0.25
    assert event["ratio"] == "nan"  # strict JSON has no NaN
    assert event["ok"] is True and event["nothing"] is None
    assert event["reasons"] == ["a", "b"] and event["names"] == ["threshold", "model"]
    assert event["path"] == "/x"


def test_exceptions_are_one_field_of_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        event = formatted(record(exc_info=sys.exc_info()))
    assert event["exc"].startswith("Traceback") and "ValueError: boom" in event["exc"]


def test_active_span_adds_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("batch") as span:
        event = formatted(record())
    context = span.get_span_context()
    assert event["trace_id"] == format(context.trace_id, "032x")
    assert event["span_id"] == format(context.span_id, "016x")
    # A remote (non-recording) context counts too: e.g. a client's traceparent with no SDK.
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(remote)):
        event = formatted(record())
    assert event["trace_id"] == f"{0xABC:032x}" and event["span_id"] == f"{0xDEF:016x}"


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_sets_level_and_json_lines(root_logger) -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    configure_logging("warning", "json", stream=stream)  # idempotent: still one handler
    assert len(root_logger.handlers) == 1 and root_logger.level == logging.WARNING
    log = logging.getLogger("sentinel.test.configure")
    log.info("dropped")
    log.warning("kept %d", 1, extra={"sensor_id": "s-1"})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["kept 1"]
    assert json.loads(lines[0])["sensor_id"] == "s-1"
    configure_logging("DEBUG", "text", stream=stream)
    assert root_logger.level == logging.DEBUG
    assert not isinstance(root_logger.handlers[0].formatter, JsonFormatter)


def test_numpy_warnings_are_json_log_lines_not_stderr_text(root_logger, capfd) -> None:
    import warnings

    import numpy as np

    stream = io.StringIO()
    # Earlier tests configured logging while pytest's own warning capture was installed.
    logging.captureWarnings(False)
    configure_logging("warning", "json", stream=stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            np.mean(np.array([]))  # numpy's "Mean of empty slice" RuntimeWarning
    finally:
        logging.captureWarnings(False)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records and all(r["logger"] == "py.warnings" for r in records)
    assert any("Mean of empty slice" in r["msg"] for r in records)
    assert "Mean of empty slice" not in capfd.readouterr().err


def test_importing_the_roles_configures_no_logging() -> None:
    # -P: the installed roles (sentinel.orchestrator), not the checkout's top-level folders.
    code = (
        "import logging, sentinel.orchestrator.main, sentinel.specialists.main, sentinel.app.cli,"
        " sentinel.app.serve_all, sentinel.app.local_mesh;"
        "root = logging.getLogger(); print(len(root.handlers), root.level)"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", str(logging.WARNING)]


@pytest.mark.timeout(60)
def test_a_served_role_logs_json_at_the_configured_level(tmp_path: Path) -> None:
    """`sentinel serve` configures logging in main from SENTINEL_LOG_LEVEL / _FORMAT."""

    def serve(level: str) -> list[dict]:
        ready = tmp_path / f"{level}.port"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            SENTINEL_LOG_LEVEL=level, SENTINEL_LOG_FORMAT="json", SENTINEL_DRAIN_DELAY_SECONDS="0"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "serve", "threshold",
             "--port", "0", "--ready-file", str(ready)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]

    info = serve("INFO")
    assert "specialist serving" in [e["msg"] for e in info]
    serving = next(e for e in info if e["msg"] == "specialist serving")
    assert serving["engine"] == "threshold" and serving["level"] == "info"
    assert serve("WARNING") == []


def test_text_format_keeps_every_event_field_as_key_value() -> None:
    # SENTINEL_LOG_FORMAT=text used to print only the message: the port was invisible.
    from sentinel.telemetry import TextFormatter

    line = TextFormatter().format(
        record(
            "mesh serving",
            (),
            port=50051,
            specialists="threshold=127.0.0.1:1,model=127.0.0.1:2",
            detail="two words",
            ratio=np.float64(0.5),
            reasons=["a", "b"],
        )
    )
    assert "\n" not in line
    assert " INFO sentinel.test: mesh serving " in line
    assert "port=50051" in line
    assert "specialists=threshold=127.0.0.1:1,model=127.0.0.1:2" in line
    assert 'detail="two words"' in line
    assert "ratio=0.5" in line and 'reasons=["a","b"]' in line


def test_text_format_is_what_configure_logging_installs() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream=stream)
    try:
        logging.getLogger("sentinel.test").info("bound", extra={"port": 1234})
    finally:
        configure_logging("WARNING", "json")
    assert stream.getvalue().rstrip().endswith("sentinel.test: bound port=1234")

"""`sentinel bench`: its pure logic without processes, and one short run of real processes.

No assertion here is about speed: the figures depend on the machine and on what else runs on
it. The end-to-end run checks that every figure is present and that the counts add up.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sentinel.orchestrator.metrics import OrchestratorMetrics
from sentinel.specialists.passthrough import score_nothing

from sentinel.app.bench import (
    FAILED_CALLS,
    LOAD_GENERATOR,
    PASS_THROUGH,
    REAL,
    BenchReport,
    MeshResult,
    Segment,
    latency_summary_ms,
    make_batches,
    measurement_plan,
    open_loop_schedule,
    parse_stat_cpu_seconds,
    parse_vmhwm_bytes,
    payload_count,
    percentile,
    readings_in,
)
from sentinel.app.local_mesh import sample_sum
from sentinel.v1 import specialist_pb2

PROCESSES = {"orchestrator", "threshold", "statistical", "model", LOAD_GENERATOR}
MESH_FIELDS = {
    "readings_per_second", "seconds", "batches_sent", "batches_acked", "readings_sent",
    "readings_acked", "duplicate_acks", "verdicts", "latency_ms", "open_loop", "cpu_seconds",
    "cpu_ms_per_1000_readings", "mesh_cpu_ms_per_1000_readings", "cores_busy", "peak_rss_bytes",
    "specialist_calls_failed",
}  # fmt: skip


# -- open-loop schedule ----------------------------------------------------------------------
def test_open_loop_schedule_offers_the_rate_in_evenly_spaced_batches() -> None:
    schedule = open_loop_schedule(rate=10_000, batch_size=1000, producers=1, seconds=2.0)
    (times,) = schedule
    assert len(times) == 20  # 10 batches/s for 2 s
    assert np.allclose(np.diff(times), 0.1)
    assert times[0] == 0 and times[-1] < 2.0


def test_open_loop_schedule_deals_batches_round_robin_to_producers() -> None:
    schedule = open_loop_schedule(rate=3_000, batch_size=100, producers=3, seconds=1.0)
    assert [len(s) for s in schedule] == [10, 10, 10]
    merged = np.sort(np.concatenate(schedule))
    assert np.allclose(np.diff(merged), 100 / 3_000)  # the streams interleave, no bursts
    assert np.allclose(schedule[1] - schedule[0], 100 / 3_000)


def test_open_loop_schedule_of_a_rate_below_one_batch_per_run_sends_one() -> None:
    (times,) = open_loop_schedule(rate=100, batch_size=1000, producers=1, seconds=1.0)
    assert list(times) == [0.0]


# -- latency percentiles ---------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100  # fewer than 1000 samples: the maximum
    assert percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0
    assert math.isnan(percentile([], 50))


def test_latency_summary_in_milliseconds() -> None:
    summary = latency_summary_ms([0.003, 0.001, 0.002, 0.010])
    assert summary == pytest.approx(
        {"p50": 2.0, "p99": 10.0, "p999": 10.0, "max": 10.0, "samples": 4}
    )


# -- plan, payloads --------------------------------------------------------------------------
def test_baseline_plan_alternates_real_and_pass_through_abba() -> None:
    assert measurement_plan(10, baseline=False) == [(REAL, 10)]
    plan = measurement_plan(10, baseline=True)
    assert [name for name, _ in plan] == [REAL, PASS_THROUGH, PASS_THROUGH, REAL]
    for mesh in (REAL, PASS_THROUGH):
        assert sum(s for name, s in plan if name == mesh) == 10


def test_the_open_loop_counts_the_readings_of_columnar_payloads() -> None:
    """The payloads are columnar (no Reading messages): the schedule's batch size must count
    their columns (it counted `readings`, 0, and `--rate` divided by zero)."""
    assert readings_in(make_batches(1, 250, 100)[0]) == 250


def test_payloads_cover_every_sensor_at_100k() -> None:
    assert payload_count(1000, 100) == 64
    assert payload_count(100, 100_000) * 100 >= 100_000
    assert payload_count(4000, 100_000) * 4000 >= 100_000


# -- /proc parsing ---------------------------------------------------------------------------
def test_stat_cpu_seconds_with_a_command_containing_spaces_and_parentheses() -> None:
    fields_after = "S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 100 200 300"
    line = f"1234 (python (bench) x) {fields_after}"
    assert parse_stat_cpu_seconds(line, ticks_per_second=100) == pytest.approx(4.0)


def test_vmhwm_from_proc_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  500000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   80000 kB\n"
    assert parse_vmhwm_bytes(status) == 81234 * 1024
    assert parse_vmhwm_bytes("Name:\tkthreadd\n") is None


def test_own_process_figures_are_readable() -> None:
    from sentinel.app.bench import process_cpu_seconds, process_peak_rss_bytes

    assert process_cpu_seconds(os.getpid()) > 0
    assert process_peak_rss_bytes(os.getpid()) > 1 << 20


# -- report ----------------------------------------------------------------------------------
def _mesh(name: str, readings: int) -> MeshResult:
    mesh = MeshResult(name, batch_size=1000)
    mesh.add(
        Segment(
            seconds=2.0, batches_sent=readings // 1000, batches_acked=readings // 1000,
            readings_acked=readings, latencies=[0.01, 0.02],
            cpu_seconds={"orchestrator": 1.0, "model": 0.5, LOAD_GENERATOR: 0.1},
        )
    )  # fmt: skip
    mesh.peak_rss_bytes = {"orchestrator": 100 << 20}
    return mesh


def test_report_json_has_every_figure_and_the_ratio() -> None:
    report = BenchReport(
        config={"seconds": 2.0},
        meshes={REAL: _mesh(REAL, 100_000), PASS_THROUGH: _mesh(PASS_THROUGH, 400_000)},
        load_average={"start": [1.0, 1.0, 1.0], "end": [2.0, 1.5, 1.0]},
    )
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) == {"date", "machine", "config", "meshes", "ratio_real_to_pass_through"}
    assert data["ratio_real_to_pass_through"] == pytest.approx(0.25)
    assert data["machine"]["load_average"]["end"] == [2.0, 1.5, 1.0]
    real = data["meshes"][REAL]
    assert set(real) == MESH_FIELDS
    assert real["readings_per_second"] == pytest.approx(50_000)
    assert real["cpu_ms_per_1000_readings"]["orchestrator"] == pytest.approx(10.0)
    assert real["mesh_cpu_ms_per_1000_readings"] == pytest.approx(15.0)  # load generator apart
    assert real["open_loop"] is None
    assert "ratio real / pass-through readings/s: 0.25" in report.render()


def test_open_loop_report_says_how_much_of_the_offered_rate_was_achieved() -> None:
    mesh = _mesh(REAL, 80_000)
    mesh.rate = 50_000.0
    assert mesh.to_json()["open_loop"]["achieved_fraction"] == pytest.approx(0.8)
    report = BenchReport(
        config={"rate": 50_000.0},
        meshes={REAL: mesh, PASS_THROUGH: _mesh(PASS_THROUGH, 80_000)},
        load_average={"start": [0.0] * 3, "end": [0.0] * 3},
    )
    assert report.to_json()["ratio_real_to_pass_through"] is None  # both got what was offered


def test_failed_calls_are_the_orchestrators_exported_error_counter() -> None:
    """What `specialist_calls_failed` sums is what the orchestrator exports per failed Score
    call (every label set), and nothing else."""
    metrics = OrchestratorMetrics(CollectorRegistry())
    metrics.observe_call("threshold", "v1", 0.5, "DEADLINE_EXCEEDED")
    metrics.observe_call("model", "v2", 0.1, "UNAVAILABLE")
    metrics.observe_call("model", "v2", 0.1, "UNAVAILABLE")
    metrics.observe_call("model", "v2", 0.01, "OK")
    assert sample_sum(generate_latest(metrics.registry).decode(), FAILED_CALLS) == 3


def test_pass_through_specialist_answers_one_row_per_reading() -> None:
    request = specialist_pb2.ScoreRequest(sensor_ids=["a"] * 3, values=[1.0, 2.0, 3.0])
    response = score_nothing(request, "model")
    assert len(response.scores) == len(response.anomalies) == len(response.reasons) == 3
    assert len(response.warming_up) == 3 and not any(response.anomalies)
    assert response.engine == "model"


# -- one short run of real processes -----------------------------------------------------------
def test_bench_baseline_json_end_to_end() -> None:
    """Both meshes as real processes, one second each: every figure present, counts add up."""
    result = subprocess.run(
        [sys.executable, "-m", "sentinel", "bench", "--seconds", "1", "--baseline", "--json",
         "--warmup", "0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["machine"]["cores"] >= 1 and len(data["machine"]["load_average"]["start"]) == 3
    assert data["config"]["baseline"] is True
    assert set(data["meshes"]) == {REAL, PASS_THROUGH}
    for name, mesh in data["meshes"].items():
        assert set(mesh) == MESH_FIELDS, name
        assert mesh["batches_acked"] > 0, name
        # A closed loop ends with every sent batch acked, each whole, once, no verdicts asked.
        assert mesh["batches_sent"] == mesh["batches_acked"], name
        assert mesh["readings_acked"] == mesh["readings_sent"] == 1000 * mesh["batches_acked"]
        assert mesh["duplicate_acks"] == 0 and mesh["verdicts"] == 0, name
        assert mesh["latency_ms"]["samples"] == mesh["batches_acked"], name
        assert mesh["latency_ms"]["p50"] <= mesh["latency_ms"]["p99"] <= mesh["latency_ms"]["max"]
        assert set(mesh["cpu_ms_per_1000_readings"]) == PROCESSES, name
        assert set(mesh["peak_rss_bytes"]) == PROCESSES, name
        assert all(v > 1 << 20 for v in mesh["peak_rss_bytes"].values()), name
    real, base = data["meshes"][REAL], data["meshes"][PASS_THROUGH]
    # Read from the real orchestrator's /metrics; the pass-through one exports none.
    assert isinstance(real["specialist_calls_failed"], int) and real["specialist_calls_failed"] >= 0
    assert base["specialist_calls_failed"] is None
    assert data["ratio_real_to_pass_through"] == pytest.approx(
        real["readings_per_second"] / base["readings_per_second"]
    )

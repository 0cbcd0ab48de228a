"""The demo's alert lines: a RESOLVED line is stamped with the resolution time, so it prints in
order after its OPEN line and "after Xs" is how long the incident lasted (it used to show the
last anomalous reading's time and "after 0.0s" for a one-reading spike)."""

from __future__ import annotations

import time

from sentinel.app.demo import alert_line
from sentinel.v1 import orchestrator_pb2 as pb

NANOS = 1_000_000_000


def test_resolved_line_is_stamped_with_the_resolution_time() -> None:
    first = 1_750_000_000 * NANOS
    alert = pb.Alert(
        alert_id="abcdef0123",
        sensor_id="sensor-3",
        state=pb.ALERT_STATE_RESOLVED,
        first_timestamp_unix_nanos=first,
        last_timestamp_unix_nanos=first,  # a one-reading spike
        resolved_timestamp_unix_nanos=first + 12 * NANOS,
        anomalous_readings=1,
        peak_value=150.0,
    )
    line = alert_line(alert)
    clock = time.strftime("%H:%M:%S", time.localtime(first / NANOS + 12))
    assert line.startswith(f"[bold green]{clock} RESOLVED[/] sensor-3  after 12.0s,")
    # Without a resolution time (an older orchestrator): the last anomalous reading, as before.
    alert.resolved_timestamp_unix_nanos = 0
    assert "after 0.0s" in alert_line(alert)


def test_the_demo_fits_80_columns_and_explains_its_summary() -> None:
    """A real (unpaced, seeded) run on an 80-column console: no line is longer, the summary
    says why there are fewer verdicts than readings (the warm-up history asks for none), and
    lists each injected event with what became of it."""
    import asyncio
    import io

    from rich.console import Console

    from sentinel.app.demo import run_demo

    console = Console(file=io.StringIO(), width=80, color_system=None)
    tally = asyncio.run(run_demo(None, 3, 20.0, console=console, ticks=600, paced=False, seed=7))
    out = console.file.getvalue()
    assert all(len(line) <= 80 for line in out.splitlines()), out
    history = tally.history_ticks * 4  # 3 sensors + sensor-seed
    live = tally.readings_sent - history
    assert sum(tally.verdicts.values()) == live
    assert f"{tally.readings_sent} ({history} warm-up + {live} live)" in out
    assert "Readings vs verdicts:" in " ".join(out.split())
    assert tally.events, "seed 7 injected no event in 600 readings"
    listed = out[out.index("Injected events (live reading numbers):") :]
    shown = sorted(tally.events, key=lambda e: (e.start_tick, e.sensor))[:12]
    for event in shown:
        assert f"at reading {event.start_tick + 1}:" in listed
    assert listed.count(": caught ") == sum(e in tally.caught for e in shown)

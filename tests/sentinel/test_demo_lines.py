"""The demo's alert lines: a RESOLVED line is stamped with the resolution time, so it prints in
order after its OPEN line and "after Xs" is how long the incident lasted (it used to show the
last anomalous reading's time and "after 0.0s" for a one-reading spike)."""

from __future__ import annotations

import time

from sentinel.demo import alert_line
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

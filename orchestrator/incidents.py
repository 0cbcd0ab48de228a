"""Per-sensor incidents: one alert when an anomalous stretch opens, one when it resolves.

An incident opens on a sensor's first anomalous verdict and resolves once it has been quiet
long enough: `resolve_after` consecutive normal verdicts, or (if `resolve_after_seconds` is set)
a normal verdict at least that long after the incident's last anomalous reading — whichever
comes first; either rule can be switched off with 0. (Hysteresis: a single quiet reading
inside a burst does not split one event into many alerts.) An open incident whose sensor sends
nothing for `stale_after_seconds` of wall-clock time (it went silent, or its readings now go
to another orchestrator replica) resolves as `stale` at the next `sweep_stale`, so no incident
dangles. Only rows of sensors that are in an
incident or anomalous in this batch are visited, so the common all-normal batch costs a couple
of numpy calls. Open incidents are bounded in number (`max_open`) and in bytes (`max_bytes`):
beyond either, the oldest resolves with reason `evicted`.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

# An open incident beside its strings: the object, its two lists (up to 16 items each), the
# numbers and the tracker's OrderedDict entry (measured with tracemalloc: ~380 bytes).
INCIDENT_BYTES = 512


@dataclass(slots=True)
class Incident:
    alert_id: str
    sensor_id: str
    first_timestamp: int
    last_timestamp: int
    peak_value: float
    peak_score: float
    trace_id: str
    anomalous_readings: int = 1
    reasons: list[str] = field(default_factory=list)
    engine_versions: list[str] = field(default_factory=list)
    quiet_streak: int = 0
    resolved_timestamp: int = 0
    resolve_reason: str = ""  # "quiet" | "stale" | "evicted" once resolved
    last_seen: float = 0.0  # wall-clock time (Unix seconds) of the sensor's latest reading

    def snapshot(self) -> Incident:
        return replace(self, reasons=list(self.reasons), engine_versions=list(self.engine_versions))

    def note(self, items: Sequence[str], into: list[str], cap: int = 16) -> int:
        """Add the items `into` lacks, up to `cap`; returns the bytes added."""
        added = 0
        for item in items:
            if item not in into and len(into) < cap:
                into.append(item)
                added += sys.getsizeof(item)
        return added

    def footprint(self) -> int:
        """Bytes this incident holds, as its tracker counts them (INCIDENT_BYTES + strings)."""
        strings = (self.alert_id, self.sensor_id, self.trace_id, *self.reasons)
        return INCIDENT_BYTES + sum(map(sys.getsizeof, (*strings, *self.engine_versions)))


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A snapshot of an incident at the moment it opened or resolved."""

    state: str  # "open" | "resolved"
    incident: Incident
    row: int | None = None  # the batch row whose verdict emitted the event, if one did


# (row) -> (reasons, "specialist@version" of the anomalous votes)
Explain = Callable[[int], tuple[Sequence[str], Sequence[str]]]


class IncidentTracker:
    def __init__(
        self,
        resolve_after: int = 10,
        max_open: int = 100_000,
        resolve_after_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
        max_bytes: int | None = None,
    ) -> None:
        if resolve_after < 0 or resolve_after_seconds < 0:
            raise ValueError("resolve_after and resolve_after_seconds must be >= 0")
        if resolve_after == 0 and resolve_after_seconds == 0:
            raise ValueError("resolve_after or resolve_after_seconds must be set")
        self.resolve_after = resolve_after
        self._quiet_nanos = int(resolve_after_seconds * 1e9) if resolve_after_seconds else 0
        self.max_open = max_open
        self.max_bytes = max_bytes
        self.bytes = 0  # held by the open incidents (Incident.footprint)
        self._open: OrderedDict[str, Incident] = OrderedDict()
        self._clock = clock
        self.dropped = 0  # evicted while restoring a checkpoint (no alert can go out then)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_incident(self, sensor_id: str) -> Incident | None:
        return self._open.get(sensor_id)

    def open_incidents(self, prefix: str = "") -> Iterator[Incident]:
        """Snapshots of the open incidents whose sensor id starts with `prefix`, oldest first."""
        for sensor, incident in list(self._open.items()):
            if sensor.startswith(prefix):
                yield incident.snapshot()

    def restore(self, incidents: Sequence[Incident]) -> None:
        """Take over incidents that were open in a checkpoint (oldest first)."""
        for incident in incidents:
            self.dropped += len(self._remember(incident))

    def sweep_stale(self, stale_after_seconds: float) -> list[AlertEvent]:
        """Resolve (reason `stale`) the open incidents whose sensor has sent nothing for
        `stale_after_seconds` of wall-clock time."""
        now = self._clock()
        cutoff = now - stale_after_seconds
        events = []
        for sensor, incident in list(self._open.items()):
            if incident.last_seen <= cutoff:
                events.append(self._resolve(sensor, int(now * 1e9), "stale"))
        return events

    def update(
        self,
        sensor_ids: Sequence[str],
        timestamps: np.ndarray,
        values: np.ndarray,
        anomaly: np.ndarray,
        score: np.ndarray,
        explain: Explain,
        trace_id: str = "",
        group: np.ndarray | None = None,
    ) -> list[AlertEvent]:
        """Advance incidents over a batch; `group` (optional) numbers the batch's distinct
        sensors (row -> index), as the window store already computed it."""
        rows = self._hot_rows(sensor_ids, anomaly, group)
        if rows.size == 0:
            return []
        now = self._clock()
        events: list[AlertEvent] = []
        for row in rows.tolist():
            sensor = sensor_ids[row]
            incident = self._open.get(sensor)
            if anomaly[row]:
                reasons, versions = explain(row)
                if incident is None:
                    incident = Incident(
                        alert_id=str(uuid.uuid4()),
                        sensor_id=sensor,
                        first_timestamp=int(timestamps[row]),
                        last_timestamp=int(timestamps[row]),
                        peak_value=float(values[row]),
                        peak_score=float(score[row]),
                        trace_id=trace_id,
                        last_seen=now,
                    )
                    incident.note(reasons, incident.reasons)
                    incident.note(versions, incident.engine_versions)
                    events.append(AlertEvent("open", incident.snapshot(), row))
                    events += self._remember(incident)
                    continue
                incident.last_seen = now
                incident.quiet_streak = 0
                incident.anomalous_readings += 1
                incident.last_timestamp = int(timestamps[row])
                if score[row] > incident.peak_score:
                    incident.peak_score = float(score[row])
                    incident.peak_value = float(values[row])
                self.bytes += incident.note(reasons, incident.reasons)
                self.bytes += incident.note(versions, incident.engine_versions)
            elif incident is not None:
                incident.last_seen = now
                incident.quiet_streak += 1
                stamp = int(timestamps[row])
                by_count = self.resolve_after and incident.quiet_streak >= self.resolve_after
                by_time = self._quiet_nanos and stamp - incident.last_timestamp >= self._quiet_nanos
                if by_count or by_time:
                    events.append(self._resolve(sensor, stamp, "quiet", row))
        return events + self._evict_over_budget()

    def _hot_rows(
        self, sensor_ids: Sequence[str], anomaly: np.ndarray, group: np.ndarray | None
    ) -> np.ndarray:
        """Rows of sensors that are anomalous in this batch or have an open incident. Costs
        one set lookup per distinct sensor of the batch, however many incidents are open."""
        if not len(sensor_ids) or (not self._open and not anomaly.any()):
            return np.zeros(0, dtype=np.int64)
        if group is None:
            local: dict[str, int] = {}
            group = np.fromiter(
                (local.setdefault(s, len(local)) for s in sensor_ids), np.int64, len(sensor_ids)
            )
        sensors = int(group.max()) + 1
        hot = np.zeros(sensors, dtype=bool)
        hot[group[anomaly]] = True
        if self._open:
            first = np.empty(sensors, dtype=np.int64)
            first[group[::-1]] = np.arange(len(group) - 1, -1, -1)
            is_open = self._open.__contains__
            hot |= np.fromiter((is_open(sensor_ids[i]) for i in first.tolist()), bool, sensors)
        return np.flatnonzero(hot[group])

    def resolve_evicted(self, sensor_ids: Sequence[str]) -> list[AlertEvent]:
        """Resolve (reason `evicted`) the open incidents of sensors the window store dropped."""
        now = self._clock()
        events = []
        for sensor in sensor_ids:
            if sensor in self._open:
                events.append(self._resolve(sensor, int(now * 1e9), "evicted"))
        return events

    def _resolve(
        self, sensor: str, timestamp: int, reason: str, row: int | None = None
    ) -> AlertEvent:
        """Close the sensor's open incident: when (`resolved_timestamp`) and why."""
        incident = self._open.pop(sensor)
        self.bytes -= incident.footprint()
        incident.resolved_timestamp = timestamp
        incident.resolve_reason = reason
        return AlertEvent("resolved", incident, row)

    def _remember(self, incident: Incident) -> list[AlertEvent]:
        self._open[incident.sensor_id] = incident
        self.bytes += incident.footprint()
        return self._evict_over_budget()

    def _evict_over_budget(self) -> list[AlertEvent]:
        """Bounded memory: beyond `max_open` or `max_bytes` the oldest open incidents resolve
        (reason `evicted`). Evicted sensors' incidents resolve first (resolve_evicted), so the
        count bound needs more open incidents than sensors; the byte bound, long ids and many
        reasons per incident."""
        events = []
        while len(self._open) > 1 and (
            len(self._open) > self.max_open
            or (self.max_bytes is not None and self.bytes > self.max_bytes)
        ):
            oldest = next(iter(self._open))
            events.append(self._resolve(oldest, int(self._clock() * 1e9), "evicted"))
        return events

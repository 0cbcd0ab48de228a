"""Build the protobuf answers (verdicts, alerts) from numpy results."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentinel.v1 import orchestrator_pb2

from .combine import STATUS_CODES, Combined, EngineVotes, Status
from .incidents import AlertEvent, Incident

_STATUS_TO_PROTO = {
    STATUS_CODES[Status.OK]: orchestrator_pb2.VERDICT_STATUS_OK,
    STATUS_CODES[Status.DEGRADED]: orchestrator_pb2.VERDICT_STATUS_DEGRADED,
    STATUS_CODES[Status.WARMING_UP]: orchestrator_pb2.VERDICT_STATUS_WARMING_UP,
}
_ALERT_STATE = {
    "open": orchestrator_pb2.ALERT_STATE_OPEN,
    "resolved": orchestrator_pb2.ALERT_STATE_RESOLVED,
}


def encode_verdicts(
    rows: np.ndarray,
    batch_id: int,
    sensor_ids: Sequence[str],
    timestamps: np.ndarray,
    values: np.ndarray,
    combined: Combined,
    votes: Sequence[EngineVotes],
) -> list[orchestrator_pb2.Verdict]:
    """Verdict messages for the given row indices (only rows a client asked to see)."""
    if rows.size == 0:
        return []
    vote_columns = [
        (
            v.name,
            v.version,
            v.scores[rows].tolist(),
            v.anomalies[rows].tolist(),
            v.warming_up[rows].tolist(),
            v.reasons,
            (np.ones(rows.size) if v.likelihood is None else v.likelihood[rows]).tolist(),
        )
        for v in votes
    ]
    missing = list(combined.missing)
    out = []
    for k, (row, ts, value, anomaly, score, status) in enumerate(
        zip(
            rows.tolist(),
            timestamps[rows].tolist(),
            values[rows].tolist(),
            combined.anomaly[rows].tolist(),
            combined.score[rows].tolist(),
            combined.status[rows].tolist(),
            strict=True,
        )
    ):
        out.append(
            orchestrator_pb2.Verdict(
                sensor_id=sensor_ids[row],
                timestamp_unix_nanos=ts,
                value=value,
                anomaly=anomaly,
                score=score,
                status=_STATUS_TO_PROTO[status],
                votes=[
                    orchestrator_pb2.Vote(
                        specialist=name,
                        engine_version=version,
                        score=scores[k],
                        anomaly=flags[k],
                        warming_up=warming[k],
                        reason=reasons[row],
                        likelihood=likelihood[k],
                    )
                    for name, version, scores, flags, warming, reasons, likelihood in vote_columns
                ],
                missing=missing,
                batch_id=batch_id,
            )
        )
    return out


_RESOLVE_REASON = {
    "": orchestrator_pb2.RESOLVE_REASON_UNSPECIFIED,
    "quiet": orchestrator_pb2.RESOLVE_REASON_QUIET,
    "stale": orchestrator_pb2.RESOLVE_REASON_STALE,
    "evicted": orchestrator_pb2.RESOLVE_REASON_EVICTED,
}


def encode_open_incident(incident: Incident) -> orchestrator_pb2.Alert:
    """An incident open now, as the snapshot WatchAlerts starts with and ListAlerts returns."""
    alert = encode_alert(AlertEvent("open", incident))
    alert.snapshot = True
    return alert


def encode_alert(
    event: AlertEvent, batch_id: int = 0, reading_index: int = 0
) -> orchestrator_pb2.Alert:
    incident = event.incident
    return orchestrator_pb2.Alert(
        alert_id=incident.alert_id,
        sensor_id=incident.sensor_id,
        state=_ALERT_STATE[event.state],
        first_timestamp_unix_nanos=incident.first_timestamp,
        last_timestamp_unix_nanos=incident.last_timestamp,
        peak_value=incident.peak_value,
        peak_score=incident.peak_score,
        reasons=incident.reasons,
        engine_versions=incident.engine_versions,
        trace_id=incident.trace_id,
        anomalous_readings=incident.anomalous_readings,
        batch_id=batch_id,
        reading_index=reading_index,
        resolved_timestamp_unix_nanos=incident.resolved_timestamp,
        resolve_reason=_RESOLVE_REASON[incident.resolve_reason],
    )

"""Build the protobuf answers (verdicts, alerts) from numpy results."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentinel.v1 import orchestrator_pb2

from .combine import STATUS_CODES, Combined, EngineVotes, Status
from .incidents import AlertEvent, Incident
from .shadows import ALERT_OPENED, ALERT_RESOLVED, NO_ALERT, ShadowOutcome

_STATUS_TO_PROTO = {
    STATUS_CODES[Status.OK]: orchestrator_pb2.VERDICT_STATUS_OK,
    STATUS_CODES[Status.DEGRADED]: orchestrator_pb2.VERDICT_STATUS_DEGRADED,
    STATUS_CODES[Status.WARMING_UP]: orchestrator_pb2.VERDICT_STATUS_WARMING_UP,
}
_ALERT_STATE = {
    "open": orchestrator_pb2.ALERT_STATE_OPEN,
    "resolved": orchestrator_pb2.ALERT_STATE_RESOLVED,
}
_SHADOW_ALERT = {
    NO_ALERT: orchestrator_pb2.ALERT_STATE_UNSPECIFIED,
    ALERT_OPENED: orchestrator_pb2.ALERT_STATE_OPEN,
    ALERT_RESOLVED: orchestrator_pb2.ALERT_STATE_RESOLVED,
}


def encode_verdicts(
    rows: np.ndarray,
    batch_id: int,
    sensor_ids: Sequence[str],
    timestamps: np.ndarray,
    values: np.ndarray,
    combined: Combined,
    votes: Sequence[EngineVotes],
    shadows: Sequence[ShadowOutcome] = (),
) -> list[orchestrator_pb2.Verdict]:
    """Verdict messages for the given row indices (only rows a client asked to see); with
    `shadows` (SENTINEL_SHADOW_VERDICTS), each carries the shadows' votes too."""
    if rows.size == 0:
        return []
    vote_columns = [_vote_columns(v, rows) for v in votes]
    shadow_columns = [
        (
            _vote_columns(s.vote, rows),
            s.verdict.anomaly[rows].tolist(),
            s.verdict.score[rows].tolist(),
            [_SHADOW_ALERT[a] for a in s.alerts[rows].tolist()],
        )
        for s in shadows
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
                votes=[_vote(columns, k, row) for columns in vote_columns],
                missing=missing,
                batch_id=batch_id,
                shadows=[
                    orchestrator_pb2.ShadowVote(
                        vote=_vote(columns, k, row),
                        verdict_anomaly=verdict_anomaly[k],
                        verdict_score=verdict_score[k],
                        alert=alert[k],
                    )
                    for columns, verdict_anomaly, verdict_score, alert in shadow_columns
                ],
            )
        )
    return out


def _vote(columns: tuple, k: int, row: int) -> orchestrator_pb2.Vote:
    """The Vote of the k-th selected row (batch row `row`) from `_vote_columns`."""
    name, version, scores, flags, warming, reasons, likelihood = columns
    return orchestrator_pb2.Vote(
        specialist=name,
        engine_version=version,
        score=scores[k],
        anomaly=flags[k],
        warming_up=warming[k],
        reason=reasons.get(row, ""),
        likelihood=likelihood[k],
    )


def _vote_columns(vote: EngineVotes, rows: np.ndarray) -> tuple:
    """One engine's columns at `rows`, as Python lists (one conversion per column)."""
    likelihood = np.ones(rows.size) if vote.likelihood is None else vote.likelihood[rows]
    return (
        vote.name,
        vote.version,
        vote.scores[rows].tolist(),
        vote.anomalies[rows].tolist(),
        vote.warming_up[rows].tolist(),
        vote.reasons,
        likelihood.tolist(),
    )


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

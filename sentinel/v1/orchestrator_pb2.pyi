from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerdictMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_MODE_UNSPECIFIED: _ClassVar[VerdictMode]
    VERDICT_MODE_NONE: _ClassVar[VerdictMode]
    VERDICT_MODE_ANOMALIES: _ClassVar[VerdictMode]
    VERDICT_MODE_ALL: _ClassVar[VerdictMode]

class VerdictStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_STATUS_UNSPECIFIED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_OK: _ClassVar[VerdictStatus]
    VERDICT_STATUS_DEGRADED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_WARMING_UP: _ClassVar[VerdictStatus]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_OPEN: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]

class ResolveReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLVE_REASON_UNSPECIFIED: _ClassVar[ResolveReason]
    RESOLVE_REASON_QUIET: _ClassVar[ResolveReason]
    RESOLVE_REASON_STALE: _ClassVar[ResolveReason]
    RESOLVE_REASON_EVICTED: _ClassVar[ResolveReason]
VERDICT_MODE_UNSPECIFIED: VerdictMode
VERDICT_MODE_NONE: VerdictMode
VERDICT_MODE_ANOMALIES: VerdictMode
VERDICT_MODE_ALL: VerdictMode
VERDICT_STATUS_UNSPECIFIED: VerdictStatus
VERDICT_STATUS_OK: VerdictStatus
VERDICT_STATUS_DEGRADED: VerdictStatus
VERDICT_STATUS_WARMING_UP: VerdictStatus
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_OPEN: AlertState
ALERT_STATE_RESOLVED: AlertState
RESOLVE_REASON_UNSPECIFIED: ResolveReason
RESOLVE_REASON_QUIET: ResolveReason
RESOLVE_REASON_STALE: ResolveReason
RESOLVE_REASON_EVICTED: ResolveReason

class Reading(_message.Message):
    __slots__ = ("sensor_id", "value", "timestamp_unix_nanos")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    value: float
    timestamp_unix_nanos: int
    def __init__(self, sensor_id: _Optional[str] = ..., value: _Optional[float] = ..., timestamp_unix_nanos: _Optional[int] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("batch_id", "readings", "verdicts", "traceparent", "columns")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    verdicts: VerdictMode
    traceparent: str
    columns: ReadingColumns
    def __init__(self, batch_id: _Optional[int] = ..., readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ..., verdicts: _Optional[_Union[VerdictMode, str]] = ..., traceparent: _Optional[str] = ..., columns: _Optional[_Union[ReadingColumns, _Mapping]] = ...) -> None: ...

class ReadingColumns(_message.Message):
    __slots__ = ("sensor_ids", "values", "timestamps_unix_nanos")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps_unix_nanos: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sensor_ids: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., timestamps_unix_nanos: _Optional[_Iterable[int]] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("batch_id", "readings_accepted", "duplicate")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    READINGS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    readings_accepted: int
    duplicate: bool
    def __init__(self, batch_id: _Optional[int] = ..., readings_accepted: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("specialist", "engine_version", "score", "anomaly", "reason", "warming_up", "likelihood")
    SPECIALIST_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WARMING_UP_FIELD_NUMBER: _ClassVar[int]
    LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    specialist: str
    engine_version: str
    score: float
    anomaly: bool
    reason: str
    warming_up: bool
    likelihood: float
    def __init__(self, specialist: _Optional[str] = ..., engine_version: _Optional[str] = ..., score: _Optional[float] = ..., anomaly: _Optional[bool] = ..., reason: _Optional[str] = ..., warming_up: _Optional[bool] = ..., likelihood: _Optional[float] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("sensor_id", "timestamp_unix_nanos", "value", "anomaly", "score", "status", "votes", "missing", "batch_id", "shadows")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    timestamp_unix_nanos: int
    value: float
    anomaly: bool
    score: float
    status: VerdictStatus
    votes: _containers.RepeatedCompositeFieldContainer[Vote]
    missing: _containers.RepeatedScalarFieldContainer[str]
    batch_id: int
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowVote]
    def __init__(self, sensor_id: _Optional[str] = ..., timestamp_unix_nanos: _Optional[int] = ..., value: _Optional[float] = ..., anomaly: _Optional[bool] = ..., score: _Optional[float] = ..., status: _Optional[_Union[VerdictStatus, str]] = ..., votes: _Optional[_Iterable[_Union[Vote, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ..., batch_id: _Optional[int] = ..., shadows: _Optional[_Iterable[_Union[ShadowVote, _Mapping]]] = ...) -> None: ...

class ShadowVote(_message.Message):
    __slots__ = ("vote", "verdict_anomaly", "verdict_score", "alert")
    VOTE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    VERDICT_SCORE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    vote: Vote
    verdict_anomaly: bool
    verdict_score: float
    alert: AlertState
    def __init__(self, vote: _Optional[_Union[Vote, _Mapping]] = ..., verdict_anomaly: _Optional[bool] = ..., verdict_score: _Optional[float] = ..., alert: _Optional[_Union[AlertState, str]] = ...) -> None: ...

class VerdictBatch(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "sensor_id", "state", "first_timestamp_unix_nanos", "last_timestamp_unix_nanos", "peak_value", "peak_score", "reasons", "engine_versions", "trace_id", "anomalous_readings", "batch_id", "reading_index", "resolved_timestamp_unix_nanos", "resolve_reason", "snapshot")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    LAST_TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    PEAK_VALUE_FIELD_NUMBER: _ClassVar[int]
    PEAK_SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ANOMALOUS_READINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    READING_INDEX_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_REASON_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    sensor_id: str
    state: AlertState
    first_timestamp_unix_nanos: int
    last_timestamp_unix_nanos: int
    peak_value: float
    peak_score: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    engine_versions: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    anomalous_readings: int
    batch_id: int
    reading_index: int
    resolved_timestamp_unix_nanos: int
    resolve_reason: ResolveReason
    snapshot: bool
    def __init__(self, alert_id: _Optional[str] = ..., sensor_id: _Optional[str] = ..., state: _Optional[_Union[AlertState, str]] = ..., first_timestamp_unix_nanos: _Optional[int] = ..., last_timestamp_unix_nanos: _Optional[int] = ..., peak_value: _Optional[float] = ..., peak_score: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., engine_versions: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ..., anomalous_readings: _Optional[int] = ..., batch_id: _Optional[int] = ..., reading_index: _Optional[int] = ..., resolved_timestamp_unix_nanos: _Optional[int] = ..., resolve_reason: _Optional[_Union[ResolveReason, str]] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class ReconnectHint(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("server_time_unix_nanos",)
    SERVER_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    server_time_unix_nanos: int
    def __init__(self, server_time_unix_nanos: _Optional[int] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("ack", "verdicts", "alert", "heartbeat", "reconnect")
    ACK_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    ack: BatchAck
    verdicts: VerdictBatch
    alert: Alert
    heartbeat: Heartbeat
    reconnect: ReconnectHint
    def __init__(self, ack: _Optional[_Union[BatchAck, _Mapping]] = ..., verdicts: _Optional[_Union[VerdictBatch, _Mapping]] = ..., alert: _Optional[_Union[Alert, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., reconnect: _Optional[_Union[ReconnectHint, _Mapping]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("batch_id", "verdicts", "alerts", "duplicate", "readings_accepted")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    READINGS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    duplicate: bool
    readings_accepted: int
    def __init__(self, batch_id: _Optional[int] = ..., verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ..., alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., duplicate: _Optional[bool] = ..., readings_accepted: _Optional[int] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("sensor_id_prefix",)
    SENSOR_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    sensor_id_prefix: str
    def __init__(self, sensor_id_prefix: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("sensor_id_prefix",)
    SENSOR_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    sensor_id_prefix: str
    def __init__(self, sensor_id_prefix: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

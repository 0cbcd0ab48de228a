from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RowColumn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_COLUMN_UNSPECIFIED: _ClassVar[RowColumn]
    ROW_COLUMN_NONE: _ClassVar[RowColumn]
    ROW_COLUMN_SENSOR_IDS: _ClassVar[RowColumn]
    ROW_COLUMN_TIMESTAMPS: _ClassVar[RowColumn]

class ViewKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIEW_KIND_UNSPECIFIED: _ClassVar[ViewKind]
    VIEW_KIND_RANGE: _ClassVar[ViewKind]
    VIEW_KIND_SEASONAL: _ClassVar[ViewKind]

class Calibration(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALIBRATION_UNSPECIFIED: _ClassVar[Calibration]
    CALIBRATION_LIKELIHOOD: _ClassVar[Calibration]
    CALIBRATION_STANDARDIZED_LIKELIHOOD: _ClassVar[Calibration]

class TensorDType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENSOR_D_TYPE_UNSPECIFIED: _ClassVar[TensorDType]
    TENSOR_D_TYPE_FLOAT32: _ClassVar[TensorDType]
    TENSOR_D_TYPE_FLOAT64: _ClassVar[TensorDType]
ROW_COLUMN_UNSPECIFIED: RowColumn
ROW_COLUMN_NONE: RowColumn
ROW_COLUMN_SENSOR_IDS: RowColumn
ROW_COLUMN_TIMESTAMPS: RowColumn
VIEW_KIND_UNSPECIFIED: ViewKind
VIEW_KIND_RANGE: ViewKind
VIEW_KIND_SEASONAL: ViewKind
CALIBRATION_UNSPECIFIED: Calibration
CALIBRATION_LIKELIHOOD: Calibration
CALIBRATION_STANDARDIZED_LIKELIHOOD: Calibration
TENSOR_D_TYPE_UNSPECIFIED: TensorDType
TENSOR_D_TYPE_FLOAT32: TensorDType
TENSOR_D_TYPE_FLOAT64: TensorDType

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("engine", "engine_version", "window_length", "parameters", "views", "channels", "row_columns")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ROW_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    engine: str
    engine_version: str
    window_length: int
    parameters: _containers.ScalarMap[str, str]
    views: _containers.RepeatedCompositeFieldContainer[ViewSpec]
    channels: _containers.RepeatedCompositeFieldContainer[ChannelSpec]
    row_columns: _containers.RepeatedScalarFieldContainer[RowColumn]
    def __init__(self, engine: _Optional[str] = ..., engine_version: _Optional[str] = ..., window_length: _Optional[int] = ..., parameters: _Optional[_Mapping[str, str]] = ..., views: _Optional[_Iterable[_Union[ViewSpec, _Mapping]]] = ..., channels: _Optional[_Iterable[_Union[ChannelSpec, _Mapping]]] = ..., row_columns: _Optional[_Iterable[_Union[RowColumn, str]]] = ...) -> None: ...

class ViewSpec(_message.Message):
    __slots__ = ("name", "kind", "readings", "block", "period_seconds", "bucket_seconds", "smoothing", "tolerance_buckets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ViewKind
    readings: int
    block: int
    period_seconds: float
    bucket_seconds: float
    smoothing: int
    tolerance_buckets: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ViewKind, str]] = ..., readings: _Optional[int] = ..., block: _Optional[int] = ..., period_seconds: _Optional[float] = ..., bucket_seconds: _Optional[float] = ..., smoothing: _Optional[int] = ..., tolerance_buckets: _Optional[int] = ...) -> None: ...

class ChannelSpec(_message.Message):
    __slots__ = ("name", "calibration", "flag_below")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    FLAG_BELOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    calibration: Calibration
    flag_below: float
    def __init__(self, name: _Optional[str] = ..., calibration: _Optional[_Union[Calibration, str]] = ..., flag_below: _Optional[float] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: TensorDType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[TensorDType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("sensor_ids", "values", "timestamps_unix_nanos", "windows", "window_fill", "views", "window_rows", "window_offsets", "window_length", "sensors", "sensor_rows", "sparse_reasons")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FILL_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    SENSOR_ROWS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_REASONS_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps_unix_nanos: _containers.RepeatedScalarFieldContainer[int]
    windows: Tensor
    window_fill: _containers.RepeatedScalarFieldContainer[int]
    views: _containers.RepeatedCompositeFieldContainer[View]
    window_rows: _containers.RepeatedScalarFieldContainer[int]
    window_offsets: _containers.RepeatedScalarFieldContainer[int]
    window_length: int
    sensors: _containers.RepeatedScalarFieldContainer[str]
    sensor_rows: _containers.RepeatedScalarFieldContainer[int]
    sparse_reasons: bool
    def __init__(self, sensor_ids: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., timestamps_unix_nanos: _Optional[_Iterable[int]] = ..., windows: _Optional[_Union[Tensor, _Mapping]] = ..., window_fill: _Optional[_Iterable[int]] = ..., views: _Optional[_Iterable[_Union[View, _Mapping]]] = ..., window_rows: _Optional[_Iterable[int]] = ..., window_offsets: _Optional[_Iterable[int]] = ..., window_length: _Optional[int] = ..., sensors: _Optional[_Iterable[str]] = ..., sensor_rows: _Optional[_Iterable[int]] = ..., sparse_reasons: _Optional[bool] = ...) -> None: ...

class View(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: Tensor
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Channel(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "anomalies", "reasons", "warming_up", "engine", "engine_version", "channels", "reason_rows")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    WARMING_UP_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    REASON_ROWS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    anomalies: _containers.RepeatedScalarFieldContainer[bool]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    warming_up: _containers.RepeatedScalarFieldContainer[bool]
    engine: str
    engine_version: str
    channels: _containers.RepeatedCompositeFieldContainer[Channel]
    reason_rows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., anomalies: _Optional[_Iterable[bool]] = ..., reasons: _Optional[_Iterable[str]] = ..., warming_up: _Optional[_Iterable[bool]] = ..., engine: _Optional[str] = ..., engine_version: _Optional[str] = ..., channels: _Optional[_Iterable[_Union[Channel, _Mapping]]] = ..., reason_rows: _Optional[_Iterable[int]] = ...) -> None: ...

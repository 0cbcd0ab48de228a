from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorDType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENSOR_D_TYPE_UNSPECIFIED: _ClassVar[TensorDType]
    TENSOR_D_TYPE_FLOAT32: _ClassVar[TensorDType]
    TENSOR_D_TYPE_FLOAT64: _ClassVar[TensorDType]
TENSOR_D_TYPE_UNSPECIFIED: TensorDType
TENSOR_D_TYPE_FLOAT32: TensorDType
TENSOR_D_TYPE_FLOAT64: TensorDType

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("engine", "engine_version", "window_length", "parameters")
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
    engine: str
    engine_version: str
    window_length: int
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, engine: _Optional[str] = ..., engine_version: _Optional[str] = ..., window_length: _Optional[int] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

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
    __slots__ = ("sensor_ids", "values", "timestamps_unix_nanos", "windows", "window_fill")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FILL_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps_unix_nanos: _containers.RepeatedScalarFieldContainer[int]
    windows: Tensor
    window_fill: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sensor_ids: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., timestamps_unix_nanos: _Optional[_Iterable[int]] = ..., windows: _Optional[_Union[Tensor, _Mapping]] = ..., window_fill: _Optional[_Iterable[int]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "anomalies", "reasons", "warming_up", "engine", "engine_version")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    WARMING_UP_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    anomalies: _containers.RepeatedScalarFieldContainer[bool]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    warming_up: _containers.RepeatedScalarFieldContainer[bool]
    engine: str
    engine_version: str
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., anomalies: _Optional[_Iterable[bool]] = ..., reasons: _Optional[_Iterable[str]] = ..., warming_up: _Optional[_Iterable[bool]] = ..., engine: _Optional[str] = ..., engine_version: _Optional[str] = ...) -> None: ...

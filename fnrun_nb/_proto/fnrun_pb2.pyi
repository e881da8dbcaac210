import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnvironmentVariable(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ExecutionContext(_message.Message):
    __slots__ = ("stopTime", "envVars")
    STOPTIME_FIELD_NUMBER: _ClassVar[int]
    ENVVARS_FIELD_NUMBER: _ClassVar[int]
    stopTime: _timestamp_pb2.Timestamp
    envVars: _containers.RepeatedCompositeFieldContainer[EnvironmentVariable]
    def __init__(self, stopTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., envVars: _Optional[_Iterable[_Union[EnvironmentVariable, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("envVars", "data", "status")
    ENVVARS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    envVars: _containers.RepeatedCompositeFieldContainer[EnvironmentVariable]
    data: bytes
    status: int
    def __init__(self, envVars: _Optional[_Iterable[_Union[EnvironmentVariable, _Mapping]]] = ..., data: _Optional[bytes] = ..., status: _Optional[int] = ...) -> None: ...

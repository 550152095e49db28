# ruff: noqa
# fmt: off
# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("timestamp", "source_id", "instance_id", "tags", "log", "gauge")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    GAUGE_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    source_id: str
    instance_id: str
    tags: _containers.ScalarMap[str, str]
    log: Log
    gauge: Gauge
    def __init__(self, timestamp: _Optional[int] = ..., source_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., log: _Optional[_Union[Log, _Mapping]] = ..., gauge: _Optional[_Union[Gauge, _Mapping]] = ...) -> None: ...

class EnvelopeBatch(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, batch: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ("payload", "type")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUT: _ClassVar[Log.Type]
        ERR: _ClassVar[Log.Type]
    OUT: Log.Type
    ERR: Log.Type
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    type: Log.Type
    def __init__(self, payload: _Optional[bytes] = ..., type: _Optional[_Union[Log.Type, str]] = ...) -> None: ...

class Gauge(_message.Message):
    __slots__ = ("metrics",)
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: GaugeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[GaugeValue, _Mapping]] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.MessageMap[str, GaugeValue]
    def __init__(self, metrics: _Optional[_Mapping[str, GaugeValue]] = ...) -> None: ...

class GaugeValue(_message.Message):
    __slots__ = ("unit", "value")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    unit: str
    value: float
    def __init__(self, unit: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

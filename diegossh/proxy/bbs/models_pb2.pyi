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

class Error(_message.Message):
    __slots__ = ("type", "message")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UnknownError: _ClassVar[Error.Type]
        ResourceNotFound: _ClassVar[Error.Type]
    UnknownError: Error.Type
    ResourceNotFound: Error.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: Error.Type
    message: str
    def __init__(self, type: _Optional[_Union[Error.Type, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ActualLRPKey(_message.Message):
    __slots__ = ("process_guid", "index", "domain")
    PROCESS_GUID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    process_guid: str
    index: int
    domain: str
    def __init__(self, process_guid: _Optional[str] = ..., index: _Optional[int] = ..., domain: _Optional[str] = ...) -> None: ...

class ActualLRPInstanceKey(_message.Message):
    __slots__ = ("instance_guid", "cell_id")
    INSTANCE_GUID_FIELD_NUMBER: _ClassVar[int]
    CELL_ID_FIELD_NUMBER: _ClassVar[int]
    instance_guid: str
    cell_id: str
    def __init__(self, instance_guid: _Optional[str] = ..., cell_id: _Optional[str] = ...) -> None: ...

class PortMapping(_message.Message):
    __slots__ = ("container_port", "host_port", "container_tls_proxy_port", "host_tls_proxy_port")
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_TLS_PROXY_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_TLS_PROXY_PORT_FIELD_NUMBER: _ClassVar[int]
    container_port: int
    host_port: int
    container_tls_proxy_port: int
    host_tls_proxy_port: int
    def __init__(self, container_port: _Optional[int] = ..., host_port: _Optional[int] = ..., container_tls_proxy_port: _Optional[int] = ..., host_tls_proxy_port: _Optional[int] = ...) -> None: ...

class ActualLRPNetInfo(_message.Message):
    __slots__ = ("address", "ports", "instance_address", "preferred_address", "instance_ipv6_address")
    class PreferredAddress(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[ActualLRPNetInfo.PreferredAddress]
        INSTANCE: _ClassVar[ActualLRPNetInfo.PreferredAddress]
        HOST: _ClassVar[ActualLRPNetInfo.PreferredAddress]
    UNKNOWN: ActualLRPNetInfo.PreferredAddress
    INSTANCE: ActualLRPNetInfo.PreferredAddress
    HOST: ActualLRPNetInfo.PreferredAddress
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IPV6_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    ports: _containers.RepeatedCompositeFieldContainer[PortMapping]
    instance_address: str
    preferred_address: ActualLRPNetInfo.PreferredAddress
    instance_ipv6_address: str
    def __init__(self, address: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[PortMapping, _Mapping]]] = ..., instance_address: _Optional[str] = ..., preferred_address: _Optional[_Union[ActualLRPNetInfo.PreferredAddress, str]] = ..., instance_ipv6_address: _Optional[str] = ...) -> None: ...

class ActualLRP(_message.Message):
    __slots__ = ("actual_lrp_key", "actual_lrp_instance_key", "actual_lrp_net_info", "state", "since", "presence")
    class Presence(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ORDINARY: _ClassVar[ActualLRP.Presence]
        EVACUATING: _ClassVar[ActualLRP.Presence]
        SUSPECT: _ClassVar[ActualLRP.Presence]
    ORDINARY: ActualLRP.Presence
    EVACUATING: ActualLRP.Presence
    SUSPECT: ActualLRP.Presence
    ACTUAL_LRP_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_LRP_INSTANCE_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_LRP_NET_INFO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    actual_lrp_key: ActualLRPKey
    actual_lrp_instance_key: ActualLRPInstanceKey
    actual_lrp_net_info: ActualLRPNetInfo
    state: str
    since: int
    presence: ActualLRP.Presence
    def __init__(self, actual_lrp_key: _Optional[_Union[ActualLRPKey, _Mapping]] = ..., actual_lrp_instance_key: _Optional[_Union[ActualLRPInstanceKey, _Mapping]] = ..., actual_lrp_net_info: _Optional[_Union[ActualLRPNetInfo, _Mapping]] = ..., state: _Optional[str] = ..., since: _Optional[int] = ..., presence: _Optional[_Union[ActualLRP.Presence, str]] = ...) -> None: ...

class ActualLRPsRequest(_message.Message):
    __slots__ = ("domain", "cell_id", "process_guid", "index")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CELL_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_GUID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    domain: str
    cell_id: str
    process_guid: str
    index: int
    def __init__(self, domain: _Optional[str] = ..., cell_id: _Optional[str] = ..., process_guid: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ActualLRPsResponse(_message.Message):
    __slots__ = ("error", "actual_lrps")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_LRPS_FIELD_NUMBER: _ClassVar[int]
    error: Error
    actual_lrps: _containers.RepeatedCompositeFieldContainer[ActualLRP]
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., actual_lrps: _Optional[_Iterable[_Union[ActualLRP, _Mapping]]] = ...) -> None: ...

class ProtoRoutes(_message.Message):
    __slots__ = ("routes",)
    class RoutesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.ScalarMap[str, bytes]
    def __init__(self, routes: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class MetricTagValue(_message.Message):
    __slots__ = ("static", "dynamic")
    class DynamicValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DynamicValueInvalid: _ClassVar[MetricTagValue.DynamicValue]
        INDEX: _ClassVar[MetricTagValue.DynamicValue]
        INSTANCE_GUID: _ClassVar[MetricTagValue.DynamicValue]
    DynamicValueInvalid: MetricTagValue.DynamicValue
    INDEX: MetricTagValue.DynamicValue
    INSTANCE_GUID: MetricTagValue.DynamicValue
    STATIC_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_FIELD_NUMBER: _ClassVar[int]
    static: str
    dynamic: MetricTagValue.DynamicValue
    def __init__(self, static: _Optional[str] = ..., dynamic: _Optional[_Union[MetricTagValue.DynamicValue, str]] = ...) -> None: ...

class DesiredLRP(_message.Message):
    __slots__ = ("process_guid", "domain", "instances", "ports", "routes", "log_guid", "metric_tags")
    class MetricTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricTagValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricTagValue, _Mapping]] = ...) -> None: ...
    PROCESS_GUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    LOG_GUID_FIELD_NUMBER: _ClassVar[int]
    METRIC_TAGS_FIELD_NUMBER: _ClassVar[int]
    process_guid: str
    domain: str
    instances: int
    ports: _containers.RepeatedScalarFieldContainer[int]
    routes: ProtoRoutes
    log_guid: str
    metric_tags: _containers.MessageMap[str, MetricTagValue]
    def __init__(self, process_guid: _Optional[str] = ..., domain: _Optional[str] = ..., instances: _Optional[int] = ..., ports: _Optional[_Iterable[int]] = ..., routes: _Optional[_Union[ProtoRoutes, _Mapping]] = ..., log_guid: _Optional[str] = ..., metric_tags: _Optional[_Mapping[str, MetricTagValue]] = ...) -> None: ...

class DesiredLRPByProcessGuidRequest(_message.Message):
    __slots__ = ("process_guid",)
    PROCESS_GUID_FIELD_NUMBER: _ClassVar[int]
    process_guid: str
    def __init__(self, process_guid: _Optional[str] = ...) -> None: ...

class DesiredLRPResponse(_message.Message):
    __slots__ = ("error", "desired_lrp")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DESIRED_LRP_FIELD_NUMBER: _ClassVar[int]
    error: Error
    desired_lrp: DesiredLRP
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., desired_lrp: _Optional[_Union[DesiredLRP, _Mapping]] = ...) -> None: ...

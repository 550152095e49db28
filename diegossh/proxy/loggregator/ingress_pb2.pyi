# ruff: noqa
# fmt: off
# mypy: ignore-errors
from diegossh.proxy.loggregator import envelope_pb2 as _envelope_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class SendResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

"""
Test stand-ins for the SFTP server: a fake session transport, thread pools
that run work synchronously or on demand, and a tiny SFTP client that speaks
raw packets so tests can send what no real client would.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.interfaces import ISessionTransport
from diegossh.sshd.sftp import SFTPServer
from diegossh.sshd.sftp import _constants as C
from diegossh.sshd.sftp._filesystem import UserFileSystem
from diegossh.sshd.sftp._handles import HandleTable
from diegossh.sshd.sftp._lanes import Lanes, ThreadRunner
from diegossh.sshd.sftp._wire import Reader


@implementer(ISessionTransport)
class FakeSessionTransport(StringTransport):
    """A StringTransport that also records the program's exit status."""

    def __init__(self) -> None:
        super().__init__()
        self.exitStatus: int | None = None

    def exit(self, status: int) -> None:
        assert self.exitStatus is None, "exit called twice"
        self.exitStatus = status


class SyncReactor:
    """callFromThread for work that never left the reactor thread."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class SyncThreadPool:
    """Run 'threaded' work at once, in the caller."""

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class ManualThreadPool(SyncThreadPool):
    """Queue work until the test says which job runs next."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[bool, Any], None], Callable[[], Any]]] = []

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        self.queue.append((onResult, lambda: f(*a, **kw)))

    def runOne(self, index: int = 0) -> None:
        onResult, work = self.queue.pop(index)
        SyncThreadPool.callInThreadWithCallback(self, onResult, work)

    def runAll(self) -> None:
        while self.queue:
            self.runOne()


def s(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return struct.pack(">I", len(value)) + value


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def attrs(
    size: int | None = None,
    perm: int | None = None,
    times: tuple[int, int] | None = None,
    ids: tuple[int, int] | None = None,
) -> bytes:
    flags, body = 0, b""
    if size is not None:
        flags |= C.ATTR_SIZE
        body += u64(size)
    if ids is not None:
        flags |= C.ATTR_UIDGID
        body += u32(ids[0]) + u32(ids[1])
    if perm is not None:
        flags |= C.ATTR_PERMISSIONS
        body += u32(perm)
    if times is not None:
        flags |= C.ATTR_ACMODTIME
        body += u32(times[0]) + u32(times[1])
    return u32(flags) + body


class Reply:
    """One parsed reply: its type, request id and a reader over the rest."""

    def __init__(self, msgType: int, requestId: int, reader: Reader) -> None:
        self.type = msgType
        self.id = requestId
        self.reader = reader

    def status(self) -> tuple[int, str]:
        assert self.type == C.FXP_STATUS, f"expected STATUS, got {self.type}"
        code = self.reader.u32()
        message = self.reader.string().decode()
        self.reader.string()
        return code, message

    def handle(self) -> bytes:
        assert self.type == C.FXP_HANDLE, f"expected HANDLE, got {self.type}: {self}"
        return self.reader.string()

    def data(self) -> bytes:
        assert self.type == C.FXP_DATA, f"expected DATA, got {self.type}"
        return self.reader.string()

    def names(self) -> list[tuple[bytes, bytes, Any]]:
        from diegossh.sshd.sftp._attrs import decodeAttrs

        assert self.type == C.FXP_NAME, f"expected NAME, got {self.type}"
        return [
            (self.reader.string(), self.reader.string(), decodeAttrs(self.reader))
            for _ in range(self.reader.u32())
        ]

    def attrs(self) -> Any:
        from diegossh.sshd.sftp._attrs import decodeAttrs

        assert self.type == C.FXP_ATTRS, f"expected ATTRS, got {self.type}"
        return decodeAttrs(self.reader)

    def __repr__(self) -> str:
        return f"<Reply type={self.type} id={self.id}>"


class Harness:
    """A server on a fake transport, and a raw client to drive it."""

    def __init__(
        self,
        home: str,
        pool: SyncThreadPool | None = None,
        handleLimit: int = C.MAX_HANDLES,
        **limits: int,
    ) -> None:
        self.home = home
        self.pool = pool if pool is not None else SyncThreadPool()
        fs = UserFileSystem(os.fsencode(home), HandleTable(handleLimit))
        runner = ThreadRunner(SyncReactor(), self.pool)  # type: ignore[arg-type]
        self.server: Any = SFTPServer(fs, Lanes(runner), **limits)
        self.transport = FakeSessionTransport()
        self.server.makeConnection(self.transport)
        self._nextId = 0
        self._seen = 0

    def sendRaw(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def sendPacket(self, body: bytes) -> None:
        self.sendRaw(u32(len(body)) + body)

    def init(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        self.sendPacket(bytes([C.FXP_INIT]) + u32(3))
        raw = self.takeOutput()
        reader = Reader(raw[4:])
        assert reader.u8() == C.FXP_VERSION
        version = reader.u32()
        extensions = []
        while reader.remaining():
            extensions.append((reader.string(), reader.string()))
        return version, extensions

    def send(self, msgType: int, *fields: bytes) -> int:
        self._nextId += 1
        self.sendPacket(bytes([msgType]) + u32(self._nextId) + b"".join(fields))
        return self._nextId

    def extended(self, name: str, *fields: bytes) -> int:
        return self.send(C.FXP_EXTENDED, s(name), *fields)

    def takeOutput(self) -> bytes:
        value = self.transport.value()
        out = value[self._seen :]
        self._seen = len(value)
        return out

    def replies(self) -> list[Reply]:
        raw = self.takeOutput()
        out = []
        while raw:
            (length,) = struct.unpack(">I", raw[:4])
            body, raw = raw[4 : 4 + length], raw[4 + length :]
            reader = Reader(body)
            msgType = reader.u8()
            out.append(Reply(msgType, reader.u32(), reader))
        return out

    def call(self, msgType: int, *fields: bytes) -> Reply:
        requestId = self.send(msgType, *fields)
        (reply,) = self.replies()
        assert reply.id == requestId
        return reply

    def callExtended(self, name: str, *fields: bytes) -> Reply:
        requestId = self.extended(name, *fields)
        (reply,) = self.replies()
        assert reply.id == requestId
        return reply

    def open(self, path: bytes | str, pflags: int, perm: int | None = None) -> bytes:
        return self.call(C.FXP_OPEN, s(path), u32(pflags), attrs(perm=perm)).handle()

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

# -*- test-case-name: tests.test_sftp_wire -*-
"""
The SFTP wire format: framing of the byte stream into packets, reading fields
out of a packet, and composing replies.

Parsing never trusts a length: every read is bounds-checked and a short or
inconsistent packet raises L{Malformed}, which the server turns into
SSH_FX_BAD_MESSAGE, never a traceback.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from diegossh.sshd.sftp._constants import FXP_STATUS, MAX_INCOMING_PACKET

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IBI")

Reply = tuple[int, Sequence[bytes]]
"""A reply before framing: its message type and the body after the request id."""


class Malformed(Exception):
    """A packet's fields do not fit its length, or a field is invalid."""


class PacketTooLarge(Exception):
    """The peer announced a packet beyond L{MAX_INCOMING_PACKET}."""


class FrameBuffer:
    """
    Accumulate stream bytes and cut them into SFTP packets (length-prefixed).

    The length is checked as soon as its four bytes arrive, so a hostile
    length never makes us buffer more than one legitimate packet's worth.
    """

    def __init__(self, maxPacket: int = MAX_INCOMING_PACKET) -> None:
        self._buf = bytearray()
        self._max = maxPacket

    def feed(self, data: bytes) -> None:
        self._buf += data

    def _length(self) -> int | None:
        if len(self._buf) < 4:
            return None
        (length,) = _U32.unpack_from(self._buf)
        if length > self._max:
            raise PacketTooLarge(length)
        return length

    def hasPacket(self) -> bool:
        """Whether L{next} would return a packet now."""
        length = self._length()
        return length is not None and len(self._buf) >= 4 + length

    def next(self) -> bytes | None:
        """Return the next whole packet body, or L{None} if more bytes are needed."""
        length = self._length()
        if length is None or len(self._buf) < 4 + length:
            return None
        packet = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        return packet

    def __len__(self) -> int:
        return len(self._buf)


class Reader:
    """Read fields from one packet, front to back."""

    def __init__(self, packet: bytes) -> None:
        self._data = memoryview(packet)
        self._pos = 0

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise Malformed("packet too short")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def view(self) -> memoryview:
        """A string field without copying it (write payloads)."""
        return self._take(self.u32())

    def string(self) -> bytes:
        return bytes(self.view())

    def path(self) -> bytes:
        """A string that names a file: no NUL may hide in it."""
        value = self.string()
        if b"\0" in value:
            raise Malformed("NUL in path")
        return value

    def remaining(self) -> int:
        return len(self._data) - self._pos


def u32(value: int) -> bytes:
    return _U32.pack(value & 0xFFFFFFFF)


def u64(value: int) -> bytes:
    return _U64.pack(value & 0xFFFFFFFFFFFFFFFF)


def string(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def frame(msgType: int, requestId: int, body: Sequence[bytes]) -> list[bytes]:
    """Prefix a reply body with length, type and request id, ready to write."""
    size = 5 + sum(len(part) for part in body)
    return [_HEAD.pack(size, msgType, requestId), *body]


def frameInit(msgType: int, body: bytes) -> bytes:
    """Frame the one message that has no request id (SSH_FXP_VERSION)."""
    return _U32.pack(1 + len(body)) + bytes([msgType]) + body


def status(code: int, message: str) -> Reply:
    """An SSH_FXP_STATUS reply body: code, message, empty language tag."""
    text = message.encode("utf-8", "replace")
    return FXP_STATUS, [u32(code), string(text), string(b"")]

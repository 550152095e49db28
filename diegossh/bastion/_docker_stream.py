# -*- test-case-name: tests.test_bastion_docker -*-
"""
Docker's multiplexed stream: what C{POST /exec/ID/start} (without a TTY)
sends on the hijacked connection until the command ends.

Each frame is an 8-byte header, the stream type (0 stdin, 1 stdout,
2 stderr, 3 a daemon error), three zero bytes and the payload's length as
a big-endian uint32, then the payload. Frames arrive cut anywhere by TCP,
so the parser keeps what it has not yet framed.
"""

from __future__ import annotations

import struct

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from diegossh._http import BodyReader, deliverBody
from diegossh.bastion._engineapi import ExecOutput, printable
from diegossh.bastion.targets import EngineError

__all__ = ["STDERR", "STDIN", "STDOUT", "SYSTEMERR", "MultiplexedStream", "readExecStream"]

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
_HEADER = struct.Struct(">B3xI")
_MAX_FRAME = 1024 * 1024
"""Docker writes frames of at most 32 KiB; anything near this is not Docker."""


class MultiplexedStream:
    """
    Splits the bytes of a multiplexed stream into C{(streamType, payload)}
    frames; raises L{EngineError} on a header no Docker writes.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames C{data} completes, in order."""
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            if self._buffer[1:4] != b"\0\0\0":
                raise EngineError("the exec stream is not a Docker multiplexed stream")
            streamType, length = _HEADER.unpack_from(self._buffer)
            if streamType > SYSTEMERR or length > _MAX_FRAME:
                raise EngineError("the exec stream is not a Docker multiplexed stream")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append((streamType, self._buffer[_HEADER.size : end]))
            self._buffer = self._buffer[end:]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame begun but not finished."""
        return len(self._buffer)


class _StreamReader(BodyReader[None]):
    """Feeds a response body through the parser into an L{ExecOutput}."""

    def __init__(self, output: ExecOutput) -> None:
        self._output = output
        self._parser = MultiplexedStream()

    def dataReceived(self, data: bytes) -> None:
        if not self.reading:
            return
        try:
            for streamType, payload in self._parser.feed(data):
                if streamType == STDERR:
                    self._output.stderr(payload)
                elif streamType == SYSTEMERR:
                    raise EngineError(f"the Docker engine failed the exec: {printable(payload)}")
                else:
                    self._output.stdout(payload)
        except EngineError:
            self.finish(Failure())
            self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Docker hijacks the connection: the stream ends when it closes.
        if not reason.check(ResponseDone, PotentialDataLoss):
            self.finish(reason)
        elif self._parser.pending:
            self.finish(Failure(EngineError("the exec stream was cut short")))
        else:
            self.finish(None)


def readExecStream(response: IResponse, output: ExecOutput) -> Deferred[None]:
    """
    Read an exec's multiplexed stream from C{response} into C{output} (which
    bounds what is kept); cancelling drops the connection.
    """
    return deliverBody(response, _StreamReader(output))

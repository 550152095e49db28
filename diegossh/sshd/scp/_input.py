# -*- test-case-name: tests.test_scp_input -*-
"""
The client's bytes, read the way OpenSSH's scp reads its stdin: a line, a byte,
or some file data at a time.

The sink and the source are written as coroutines that mirror OpenSSH's
C{sink()} and C{source()}; this buffer turns Twisted's C{dataReceived} pushes
into the reads they await. It holds little: when more than C{highWater} bytes
wait unread, it pauses the transport until the reader catches up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, fail, succeed

from diegossh.sshd.scp._records import ProtocolError

_T = TypeVar("_T")
_MORE = object()


class EndOfInput(Exception):
    """
    The client sent EOF (or went away) before a read could be satisfied.

    C{partial} says whether some bytes of the wanted line or data had arrived.
    """

    def __init__(self, partial: bool) -> None:
        super().__init__("partial" if partial else "clean")
        self.partial = partial


class InputBuffer:
    """
    Bytes received from the client, handed to one waiting reader at a time.
    """

    def __init__(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        highWater: int = 256 * 1024,
    ) -> None:
        self._pause = pause
        self._resume = resume
        self._highWater = highWater
        self._buffer = bytearray()
        self._eof = False
        self._paused = False
        self._waiter: tuple[Callable[[], object], Deferred[object]] | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes from the client and wake the reader if it can go on."""
        if self._eof:
            return
        self._buffer += data
        self._deliver()

    def close(self) -> None:
        """The client sent EOF: a read that cannot be satisfied now never will."""
        self._eof = True
        self._deliver()

    def readLine(self, limit: int) -> Deferred[bytes]:
        """
        The next line, without its newline.

        Fails with L{ProtocolError} when C{limit} bytes pass without a newline.
        """

        def attempt() -> object:
            end = self._buffer.find(b"\n", 0, limit + 1)
            if end < 0:
                if len(self._buffer) > limit:
                    raise ProtocolError("protocol error: record too long")
                return _MORE
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            return line

        return self._wait(attempt)

    def readByte(self) -> Deferred[int]:
        """The next byte."""

        def attempt() -> object:
            if not self._buffer:
                return _MORE
            value = self._buffer[0]
            del self._buffer[:1]
            return value

        return self._wait(attempt)

    def readSome(self, limit: int) -> Deferred[bytes]:
        """Between 1 and C{limit} bytes: whatever has arrived."""

        def attempt() -> object:
            if not self._buffer:
                return _MORE
            chunk = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            return chunk

        return self._wait(attempt)

    def _wait(self, attempt: Callable[[], object]) -> Deferred[_T]:
        assert self._waiter is None, "one reader at a time"
        try:
            result = attempt()
        except ProtocolError as e:
            return fail(e)
        if result is not _MORE:
            self._flow()
            return succeed(result)  # type: ignore[arg-type]
        if self._eof:
            return fail(EndOfInput(bool(self._buffer)))
        waiting: Deferred[object] = Deferred()
        self._waiter = (attempt, waiting)
        self._flow()
        return waiting  # type: ignore[return-value]

    def _deliver(self) -> None:
        while self._waiter is not None:
            attempt, waiting = self._waiter
            try:
                result = attempt()
            except ProtocolError as e:
                self._waiter = None
                waiting.errback(e)
                continue
            if result is _MORE:
                if not self._eof:
                    break
                self._waiter = None
                waiting.errback(EndOfInput(bool(self._buffer)))
                continue
            self._waiter = None
            waiting.callback(result)
        self._flow()

    def _flow(self) -> None:
        if not self._paused and len(self._buffer) > self._highWater:
            self._paused = True
            self._pause()
        elif self._paused and len(self._buffer) <= self._highWater // 2:
            self._paused = False
            self._resume()

# -*- test-case-name: tests.test_scp_source -*-
"""
Stream one file's bytes to the session, a chunk at a time, under flow control.

Registered as a streaming producer, the sender is paused while the client's
window is closed, so a large file never piles up in memory. It runs as a
cooperative task so that even a transport that never pauses gets one chunk
per turn, not a blocked reactor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import CooperativeTask, TaskDone, TaskStopped
from twisted.python.failure import Failure
from zope.interface import implementer

CHUNK_SIZE = 64 * 1024

Cooperate = Callable[[Iterator[None]], CooperativeTask]


@implementer(IPushProducer)
class FileSender:
    """
    Send exactly C{size} bytes of C{fd} to C{consumer}; one sender per file.

    Like OpenSSH's C{source()}, a read error does not desynchronise the
    protocol: the rest of the announced size is sent as zeros and the error
    is reported once the data is through.
    """

    def __init__(self, cooperate: Cooperate, chunkSize: int = CHUNK_SIZE) -> None:
        self._cooperate = cooperate
        self._chunkSize = chunkSize
        self._task: CooperativeTask | None = None
        self._paused = False
        self.problem: str | None = None

    def send(self, fd: int, size: int, consumer: Any) -> Deferred[str | None]:
        """
        Start sending; the result fires with L{None}, or with the reason the
        file could not be read in full, or fails when the consumer stopped us.
        """
        consumer.registerProducer(self, True)
        self._task = self._cooperate(self._chunks(fd, size, consumer))
        if self._paused:
            self._task.pause()

        def finished(result: object) -> object:
            consumer.unregisterProducer()
            self._task = None
            if isinstance(result, Failure) and result.check(TaskStopped):
                return Failure(ConnectionLost("the client stopped the transfer"))
            return result if isinstance(result, Failure) else self.problem

        return self._task.whenDone().addBoth(finished)

    def _chunks(self, fd: int, size: int, consumer: Any) -> Iterator[None]:
        remaining = size
        while remaining:
            wanted = min(remaining, self._chunkSize)
            data = b""
            if self.problem is None:
                try:
                    data = _readFully(fd, wanted)
                except OSError as e:
                    self.problem = e.strerror
                else:
                    if len(data) < wanted:
                        self.problem = "file shrank while being sent"
            if len(data) < wanted:
                data += bytes(wanted - len(data))
            consumer.write(data)
            remaining -= wanted
            yield None

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            if self._task is not None:
                self._task.pause()

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            if self._task is not None:
                self._task.resume()

    def stopProducing(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            try:
                task.stop()
            except TaskDone:
                pass


def _readFully(fd: int, wanted: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < wanted:
        part = os.read(fd, wanted - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)

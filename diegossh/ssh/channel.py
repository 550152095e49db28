# -*- test-case-name: tests.test_channel -*-
"""
A channel with a bounded outgoing buffer and producer flow control.

Conch's L{twisted.conch.ssh.channel.SSHChannel} keeps unsent data in a C{bytes}
it grows by concatenation and never tells a producer to stop, so a fast source
behind a slow client grows without limit. L{BufferedChannel} queues chunks,
sends them as the peer's window allows, and sends EOF and close only after
the last queued byte.

The registered producer (a program's pipes, a forwarded socket, a file being
sent) is paused whenever what it gives cannot go out now: the queue is over
the high-water mark, the peer's window is used up, or the transport cannot
take more (L{diegossh.ssh.connection.SSHConnection.writeBlocked}: the socket
is not being read, or a key exchange holds messages back). It resumes once the
window is open, the transport can send and the queue is under the low-water
mark. A channel therefore holds at most about one read of its producer beyond
what it can send, whatever window the peer granted: the window is a promise
about the peer's buffer, not a licence to buffer here.

The other way, the channel is the push producer of its sink (a process's
stdin, a forwarded socket, a program served in Python): the peer's window is
granted back only for data the sink has taken (L{BufferedChannel.delivered}).
Data handed to a sink that paused the channel is owed, and granted when the
sink resumes it, so the peer can never have more in flight than one window
plus what the sink itself buffers, however slowly the sink drains.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from zope.interface import implementer

from diegossh.ssh._conch import routeConchLog
from diegossh.ssh.connection import FlowControlledChannel

# Channels outside this package route Conch's own log lines through theirs with
# this decorator; _conch stays private to diegossh.ssh (import-linter).
__all__ = ["BufferedChannel", "routeConchLog"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


@implementer(IConsumer, IPushProducer)
class BufferedChannel(FlowControlledChannel):
    """
    Subclasses call L{write} / L{writeExtended} freely; memory is bounded by the
    high-water mark as long as the producer honours C{pauseProducing}.

    Subclasses hand the peer's data to their sink and call L{delivered}; the
    sink pauses and resumes the channel as its L{IPushProducer}.
    """

    highWater = HIGH_WATER
    lowWater = LOW_WATER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: deque[tuple[int | None, bytes]] = deque()
        # How much of the chunk at the head of the queue has gone out already.
        self._headSent = 0
        self.bufferedBytes = 0
        self._producer: Any = None
        self._producerPaused = False
        self._eofWhenDrained = False
        self._closeWhenDrained = False
        self._sentEOF = False
        self._drainWaiters: list[Callable[[], None]] = []
        #: the sink cannot take more now: what it is handed is owed
        self.sinkPaused = False
        #: bytes of the peer's data handed to a paused sink, not yet granted back
        self.owed = 0

    def extReceived(self, dataType: int, data: bytes) -> None:
        """
        Extended data from the peer means nothing to our channels: dropped
        (not logged with its bytes, as Conch does), its window given back.
        """
        self.consumed(len(data))

    # -- IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if not streaming:
            raise ValueError("BufferedChannel only takes streaming producers")
        self._producer = producer
        self._producerPaused = False
        self._checkHighWater()

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        self._enqueue(None, data)

    def writeExtended(self, dataType: int, data: bytes) -> None:
        self._enqueue(dataType, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self._enqueue(None, b"".join(data))

    # -- the peer's data: its window granted back only once the sink has it

    def delivered(self, nbytes: int) -> None:
        """
        C{nbytes} of the peer's data were handed to the sink: the peer may
        send that much more now if the sink is keeping up, or once it resumes
        the channel if it paused it (so a sink that never drains gets nothing
        beyond the window the peer already had).
        """
        if self.sinkPaused:
            self.owed += nbytes
        else:
            self.consumed(nbytes)

    def pauseProducing(self) -> None:
        """
        The sink's buffer is full: what it is handed from now on is owed.
        """
        self.sinkPaused = True

    def resumeProducing(self) -> None:
        """
        The sink drained: grant back what it was handed meanwhile.
        """
        self.sinkPaused = False
        owed, self.owed = self.owed, 0
        if owed:
            self.consumed(owed)

    def stopProducing(self) -> None:
        """
        The sink is gone: nothing handed to it is granted back any more.
        """
        self.sinkPaused = True

    # -- window and queue

    def _enqueue(self, dataType: int | None, data: bytes) -> None:
        if not data or self._sentEOF or self.localClosed:
            return
        self._queue.append((dataType, data))
        self.bufferedBytes += len(data)
        self._flush()
        self._checkHighWater()

    def _flush(self) -> None:
        queue = self._queue
        conn = self.conn
        while queue and self.remoteWindowLeft > 0 and not getattr(conn, "writeBlocked", False):
            dataType, data = queue[0]
            start = self._headSent
            left = len(data) - start
            size = min(left, self.remoteWindowLeft, self.remoteMaxPacket)
            chunk: bytes | memoryview
            if start == 0 and size == left:
                chunk = data
            else:
                # A view, not a copy: a large chunk goes out as several
                # packets without re-slicing what is left each time.
                chunk = memoryview(data)[start : start + size]
            if size == left:
                queue.popleft()
                self._headSent = 0
            else:
                self._headSent = start + size
            if dataType is None:
                conn.sendData(self, chunk)
            else:
                conn.sendExtendedData(self, dataType, chunk)
            self.remoteWindowLeft -= size
            self.bufferedBytes -= size
        if not queue:
            while self._drainWaiters and not queue:
                self._drainWaiters.pop(0)()
            if self._eofWhenDrained and not self._sentEOF:
                self._sentEOF = True
                conn.sendEOF(self)
            if self._closeWhenDrained and not self.localClosed:
                conn.sendClose(self)

    def _cannotSend(self) -> bool:
        return self.remoteWindowLeft <= 0 or bool(getattr(self.conn, "writeBlocked", False))

    def _checkHighWater(self) -> None:
        if self._producer is not None and not self._producerPaused:
            if self.bufferedBytes > self.highWater or (self.bufferedBytes and self._cannotSend()):
                self._producerPaused = True
                self._producer.pauseProducing()

    def _maybeResume(self) -> None:
        if self.bufferedBytes <= self.lowWater and not self._cannotSend():
            if self._producer is not None and self._producerPaused:
                self._producerPaused = False
                self._producer.resumeProducing()
            self.bufferDrained()

    def addWindowBytes(self, data: int) -> None:
        self.remoteWindowLeft += data
        self._flush()
        self._maybeResume()

    def transportBlocked(self, blocked: bool) -> None:
        """
        The connection's transport cannot take more (or can again).
        """
        if blocked:
            if self._producer is not None and not self._producerPaused:
                self._producerPaused = True
                self._producer.pauseProducing()
            return
        self._flush()
        self._maybeResume()

    def discardQueued(self, dataTypes: set[int | None]) -> int:
        """
        Drop what is queued of the given kinds (C{None} for plain data, a code
        for extended data) and return how many bytes went; what is left keeps
        its order, and a producer paused for the dropped bytes may resume.
        """
        kept: deque[tuple[int | None, bytes]] = deque()
        dropped = 0
        for index, (dataType, chunk) in enumerate(self._queue):
            if dataType in dataTypes:
                dropped += len(chunk) - (self._headSent if index == 0 else 0)
                if index == 0:
                    self._headSent = 0
            else:
                kept.append((dataType, chunk))
        self._queue = kept
        self.bufferedBytes -= dropped
        self._flush()
        self._maybeResume()
        return dropped

    def closeReceived(self) -> None:
        """
        The peer closed the channel and will read nothing more: drop the
        queue and close now, not after a drain into a window that will never
        open again.
        """
        self.abortConnection()

    def bufferDrained(self) -> None:
        """
        Hook: the outgoing queue fell to the low-water mark after the peer's
        window opened.
        """

    def whenDrained(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once everything queued so far has gone out (at once if
        nothing is queued). Exit status must follow the last byte of output.
        """
        self._drainWaiters.append(callback)
        self._flush()

    # -- ending

    def sendEOFWhenDrained(self) -> None:
        """
        Send EOF after every queued byte has gone out.
        """
        self._eofWhenDrained = True
        self._flush()

    def loseConnection(self) -> None:
        """
        Close after every queued byte has gone out (EOF first).
        """
        self.closing = 1
        self._eofWhenDrained = True
        self._closeWhenDrained = True
        self._flush()

    def abortConnection(self) -> None:
        """
        Close now, dropping whatever is queued.
        """
        self._queue.clear()
        self._headSent = 0
        self.bufferedBytes = 0
        self.closing = 1
        if not self.localClosed:
            self.conn.sendClose(self)

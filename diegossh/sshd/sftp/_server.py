# -*- test-case-name: tests.test_sftp_server -*-
"""
The SFTP server protocol: framing, dispatch, flow control and the end of a
session, on top of an L{ISessionTransport}.

Requests are parsed on the reactor and performed in worker threads, many at
once; each reply goes out as soon as its work is done, tagged with its
request id. Memory stays bounded: while too many requests (or too many bytes
of reads and writes) are in flight, or while the client's window is closed,
no more requests are started; and once enough unstarted requests are
buffered, the transport is asked to stop reading.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.logtext import SafeLogger
from diegossh.sshd.sftp._constants import (
    EXTENSIONS,
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_OP_UNSUPPORTED,
    FXP_EXTENDED,
    FXP_INIT,
    FXP_VERSION,
    MAX_BUFFERED_INPUT,
    MAX_INFLIGHT_BYTES,
    MAX_INFLIGHT_REQUESTS,
    VERSION,
)
from diegossh.sshd.sftp._errors import SFTPError, fromOSError
from diegossh.sshd.sftp._filesystem import UserFileSystem
from diegossh.sshd.sftp._lanes import Lanes
from diegossh.sshd.sftp._requests import EXTENDED, REQUESTS, Job, handleLane
from diegossh.sshd.sftp._wire import (
    FrameBuffer,
    Malformed,
    PacketTooLarge,
    Reader,
    Reply,
    frame,
    frameInit,
    status,
    string,
    u32,
)


def versionPacket() -> bytes:
    """SSH_FXP_VERSION: version 3 and OpenSSH's extension list."""
    body = u32(VERSION) + b"".join(string(name) + string(ver) for name, ver in EXTENSIONS)
    return frameInit(FXP_VERSION, body)


@implementer(IHalfCloseableProtocol, IPushProducer)
class SFTPServer(Protocol):
    """Serve one SFTP session for one user."""

    _log = SafeLogger()
    transport: Any
    """An L{ISessionTransport}: a transport with C{exit(status)}."""

    def __init__(
        self,
        fs: UserFileSystem,
        lanes: Lanes,
        maxRequests: int = MAX_INFLIGHT_REQUESTS,
        maxBytes: int = MAX_INFLIGHT_BYTES,
        maxBuffered: int = MAX_BUFFERED_INPUT,
    ) -> None:
        self._fs = fs
        self._lanes = lanes
        self._maxRequests = maxRequests
        self._maxBytes = maxBytes
        self._maxBuffered = maxBuffered
        self._frames = FrameBuffer()
        self._initialised = False
        self._inflight = 0
        self._inflightBytes = 0
        self._outputPaused = False
        self._reading = True
        self._pumping = False
        self._eof = False
        self._finished = False
        self._closing = False

    # -- IProtocol / IHalfCloseableProtocol

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        self._frames.feed(data)
        self._pump()

    def readConnectionLost(self) -> None:
        self._eof = True
        self._pump()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finished = True
        self._closeHandles()

    # -- IPushProducer: the client's window on our replies

    def pauseProducing(self) -> None:
        self._outputPaused = True

    def resumeProducing(self) -> None:
        self._outputPaused = False
        self._pump()

    def stopProducing(self) -> None:
        self._finished = True
        self._closeHandles()

    # -- the input loop

    def _busy(self) -> bool:
        return (
            self._outputPaused
            or self._inflight >= self._maxRequests
            or self._inflightBytes >= self._maxBytes
        )

    def _pump(self) -> None:
        """Start requests while there is room; end the session after EOF and the last reply."""
        if self._pumping or self._finished:
            return
        self._pumping = True
        try:
            while not self._finished and not self._busy():
                packet = self._frames.next()
                if packet is None:
                    break
                self._handle(packet)
        except PacketTooLarge as error:
            self._fatal(f"packet length {error} exceeds the limit")
        finally:
            self._pumping = False
        if self._finished:
            return
        self._updateReading()
        if self._eof and self._inflight == 0 and not self._outputPaused:
            self._finish(0)

    def _updateReading(self) -> None:
        if self._eof or self._finished:
            return
        want = len(self._frames) < self._maxBuffered
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def _handle(self, packet: bytes) -> None:
        reader = Reader(packet)
        try:
            msgType = reader.u8()
            if msgType == FXP_INIT:
                if self._initialised:
                    # Only the first packet may be INIT (OpenSSH's sftp-server
                    # ends the session too); a VERSION answer would carry no
                    # request id for the client to match.
                    self._fatal("SSH_FXP_INIT after the session started")
                    return
                reader.u32()
                self._initialised = True
                self.transport.write(versionPacket())
                return
            if not self._initialised:
                self._fatal(f"message {msgType} before SSH_FXP_INIT")
                return
            requestId = reader.u32()
        except Malformed:
            self._fatal("truncated packet header")
            return
        try:
            job = self._parse(msgType, reader)
        except Malformed as error:
            self._reply(requestId, status(FX_BAD_MESSAGE, f"Bad message: {error}"))
            return
        except SFTPError as error:
            self._reply(requestId, status(error.status, error.message))
            return
        self._submit(requestId, job)

    def _parse(self, msgType: int, reader: Reader) -> Job:
        if msgType == FXP_EXTENDED:
            name = reader.string()
            parser = EXTENDED.get(name)
            if parser is None:
                raise SFTPError(FX_OP_UNSUPPORTED, "Unsupported extended request")
        else:
            found = REQUESTS.get(msgType)
            if found is None:
                raise SFTPError(FX_OP_UNSUPPORTED, f"Unsupported request type {msgType}")
            parser = found
        return parser(self._fs, reader)

    # -- work in flight

    def _submit(self, requestId: int, job: Job) -> None:
        self._inflight += 1
        self._inflightBytes += job.cost
        done = self._lanes.submit(job.lanes, partial(self._execute, job))
        done.addCallback(self._completed, requestId, job.cost)
        done.addErrback(lambda failure: self._log.failure("SFTP reply failed", failure))

    def _execute(self, job: Job) -> Reply | None:
        """Run in a worker thread: do the work, and turn any failure into a status."""
        if self._finished:
            return None
        try:
            return job.work()
        except SFTPError as error:
            return status(error.status, error.message)
        except OSError as error:
            mapped = fromOSError(error)
            return status(mapped.status, mapped.message)
        except (OverflowError, ValueError) as error:
            return status(FX_FAILURE, f"Failure: {error}")
        except Exception:
            self._log.failure("SFTP request failed")
            return status(FX_FAILURE, "Failure")

    def _completed(self, reply: Reply | None, requestId: int, cost: int) -> None:
        self._inflight -= 1
        self._inflightBytes -= cost
        if reply is not None:
            self._reply(requestId, reply)
        self._pump()

    def _reply(self, requestId: int, reply: Reply) -> None:
        if not self._finished:
            msgType, body = reply
            self.transport.writeSequence(frame(msgType, requestId, body))

    # -- the end

    def _fatal(self, why: str) -> None:
        self._log.warn("SFTP session ended: {why}", why=why)
        self._finish(1)

    def _finish(self, code: int) -> None:
        """Close every handle (after work on it), then report the exit status."""
        self._finished = True

        def exit(_: object) -> None:
            transport = self.transport
            if transport is not None:
                transport.unregisterProducer()
                transport.exit(code)

        self._closeHandles().addCallback(exit)

    def _closeHandles(self) -> Deferred[Any]:
        """Close what the client left open, each after the work queued on it."""
        if self._closing:
            return succeed(None)
        self._closing = True
        keys = self._fs.handles.closeTable()
        discard = self._fs.discard
        closes = [self._lanes.submit((handleLane(k),), partial(discard, k)) for k in keys]
        return DeferredList(closes, consumeErrors=True)

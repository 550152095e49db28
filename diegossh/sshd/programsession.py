# -*- test-case-name: tests.test_sshd_session -*-
"""
Connects a Python-served program (scp, sftp) to a session channel, as the
L{diegossh.interfaces.ISessionTransport} it expects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.interfaces import ISessionTransport

if TYPE_CHECKING:
    from diegossh.sshd.session import SessionChannel


@implementer(ISessionTransport)
class ProgramTransport:
    """
    The channel seen from the program's side.

    Client data the program is not ready for (it called C{pauseProducing}) waits
    here, as in a transport's write buffer: the program's pause pauses the
    channel, so that data is owed to the client, and granted back only once
    the program has taken all of it and resumed (the wait is bounded by the
    window).
    """

    disconnecting = False

    def __init__(self, channel: SessionChannel, program: Any) -> None:
        self._channel = channel
        self._program = program
        self._paused = False
        self._pending: deque[bytes] = deque()
        self._eofPending = False
        self._exited = False
        self._discarding = False

    # -- program -> client

    def write(self, data: bytes) -> None:
        if not self._exited and not self._discarding:
            self._channel.write(data)

    def discardOutput(self) -> None:
        """
        The client no longer reads the output (C{eow@openssh.com}): what the
        program writes from now on is dropped; its exit status still goes out.
        """
        self._discarding = True

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._channel.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._channel.unregisterProducer()

    def exit(self, status: int) -> None:
        if self._exited:
            return
        self._exited = True
        self.disconnecting = True
        self._channel.finishWithStatus(status)

    def loseConnection(self) -> None:
        self.exit(0)

    def abortConnection(self) -> None:
        self.exit(1)

    def getPeer(self) -> Any:
        return self._channel.getPeer()

    def getHost(self) -> Any:
        return self._channel.getHost()

    # -- client -> program

    def pauseProducing(self) -> None:
        self._paused = True
        self._channel.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        while self._pending and not self._paused:
            self._program.dataReceived(self._pending.popleft())
        if self._paused:
            return
        self._channel.resumeProducing()
        if self._eofPending:
            self._eofPending = False
            self._deliverEOF()

    def stopProducing(self) -> None:
        self._channel.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Client data: handed on now, or kept until the program resumes (the
        channel accounts for the window, see
        L{diegossh.ssh.channel.BufferedChannel.delivered}).
        """
        if self._paused or self._pending:
            self._pending.append(data)
            return
        self._program.dataReceived(data)

    def eofReceived(self) -> None:
        if self._paused or self._pending:
            self._eofPending = True
            return
        self._deliverEOF()

    def _deliverEOF(self) -> None:
        # scp and sftp are half-closeable: EOF is "no more requests", not the end.
        readConnectionLost = getattr(self._program, "readConnectionLost", None)
        if readConnectionLost is not None:
            readConnectionLost()

    def closed(self, reason: Failure) -> None:
        self._exited = True
        self._program.connectionLost(reason)

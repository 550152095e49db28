# -*- test-case-name: tests.test_scp_sink,tests.test_scp_source -*-
"""
What the scp sink and source share: reading the client, reporting errors in
the protocol, and ending with the exit status OpenSSH's scp would give.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.logtext import SafeLogger
from diegossh.sshd.scp._input import EndOfInput, InputBuffer
from diegossh.sshd.scp._records import (
    MAX_RECORD,
    OK,
    ProtocolError,
    formatMessage,
)


class Session(TypingProtocol):
    """The parts of L{diegossh.interfaces.ISessionTransport} scp uses."""

    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: Any, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def exit(self, status: int) -> None: ...


class Fatal(Exception):
    """Stop the transfer: tell the client why (after C{scp: }) and exit 1."""


class PeerFatal(Exception):
    """The client reported a fatal error of its own: exit 1 without a word."""


@implementer(IHalfCloseableProtocol)
class SCPProgram(Protocol):
    """
    Run L{run} as a coroutine over the client's bytes; exit when it ends.

    The exit status is 1 if any error was counted, as OpenSSH's C{exit(errs != 0)}.
    """

    _log = SafeLogger()

    def __init__(self) -> None:
        self.errors = 0
        self._exited = False
        self.session: Session

    def makeConnection(self, transport: Any) -> None:
        self.session = transport
        self.input = InputBuffer(transport.pauseProducing, transport.resumeProducing)
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        Deferred.fromCoroutine(self.run()).addBoth(self._finish)

    async def run(self) -> None:
        """The transfer, written as OpenSSH's straight-line C code is."""
        raise NotImplementedError

    def dataReceived(self, data: bytes) -> None:
        if not self._exited:
            self.input.feed(data)

    def readConnectionLost(self) -> None:
        self.input.close()

    def writeConnectionLost(self) -> None:
        """Nothing to do: the client reads nothing more, and tells us by EOF."""

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.input.close()

    def sendOK(self) -> None:
        """Answer C{go on} to the record just read."""
        self.session.write(OK)

    def warn(self, message: str) -> None:
        """Report a non-fatal error: the client shows it and goes on."""
        self.errors += 1
        self.session.write(formatMessage(message))

    async def response(self) -> bool:
        """
        Read the client's answer to what we sent, as OpenSSH's C{response()}.

        Return C{True} for go on, C{False} after a warning (counted).

        @raise PeerFatal: the client gave up.
        @raise EndOfInput: the client went away.
        """
        status = await self.input.readByte()
        if status == OK[0]:
            return True
        message = await self.input.readLine(MAX_RECORD)
        self.errors += 1
        self._log.info(
            "scp peer reported: {message!r}",
            message=(bytes([status]) if status > 2 else b"") + message,
        )
        if status == 2:
            raise PeerFatal()
        return False

    def _finish(self, result: object) -> None:
        status = 1 if self.errors else 0
        if isinstance(result, Failure):
            status = 1
            if result.check(Fatal, ProtocolError):
                self.session.write(formatMessage(str(result.value), fatal=True))
            elif result.check(EndOfInput, ConnectionLost):
                self.session.write(formatMessage("lost connection", fatal=True))
            elif not result.check(PeerFatal):
                self._log.failure("scp failed", result)
                self.session.write(formatMessage("internal error", fatal=True))
        self._exited = True
        self.session.exit(status)


class RefusedProgram(Protocol):
    """Serve an scp command line we cannot parse: say why and exit 1."""

    def __init__(self, message: str) -> None:
        self.message = message

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(formatMessage(self.message, fatal=True))
        transport.exit(1)

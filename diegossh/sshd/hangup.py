# -*- test-case-name: tests.test_sshd_hangup -*-
"""
The daemon's stop: every session is hung up before the process exits.

On SIGTERM the reactor stops; left to itself, its final disconnect closes
connections and the sessions' pipes in whatever order it finds them, so a
session's program got its SIGHUP or not depending on that order (and the
pipes closed first left a traceback in the log). L{HangUpService} does it
deliberately, before the reactor's own shutdown: each open connection is
told C{the daemon is shutting down} in an SSH disconnect message and
closed; closing it ends its channels, and each session's end sends SIGHUP to
its program's process group (L{diegossh.sshd.session}), as sshd's hang-up
of a session does. The stop waits for the connections to end, at most
L{HANGUP_GRACE} seconds (a client that does not read has its socket
aborted), and not for the programs: one that ignores SIGHUP outlives the
daemon, as it would outlive sshd.

The open connections are known from the transports' reports to their
L{IAdmission} (L{OpenConnections}), as in the proxy.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from diegossh.interfaces import IAdmission

log = Logger()

#: What a user is told when the daemon stops under their session.
HANGUP_REASON = b"the daemon is shutting down"
#: The longest the stop waits for connections to end before aborting them.
HANGUP_GRACE = 2.0


@implementer(IAdmission)
class OpenConnections:
    """
    An L{IAdmission} in front of another that also keeps the open
    transports.
    """

    def __init__(self, admission: IAdmission) -> None:
        self.admission = admission
        self.open: set[Any] = set()
        self._waiting: list[defer.Deferred[None]] = []

    def __getattr__(self, name: str) -> Any:
        # the limits and tables, for whoever reads them (tests, the debug server)
        return getattr(self.admission, name)

    def admit(self, transport: Any) -> bool:
        return bool(self.admission.admit(transport))

    def opened(self, transport: Any) -> None:
        self.open.add(transport)
        self.admission.opened(transport)

    def authenticated(self, transport: Any) -> None:
        self.admission.authenticated(transport)

    def penalise(self, transport: Any, reason: str) -> None:
        self.admission.penalise(transport, reason)

    def closed(self, transport: Any) -> None:
        self.open.discard(transport)
        self.admission.closed(transport)
        if not self.open:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def whenNoneOpen(self) -> defer.Deferred[None]:
        if not self.open:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        return d


class HangUpService(Service):
    """
    On stop, says goodbye to every open connection and closes it (so its
    sessions' programs get SIGHUP); fires once they have ended, or after
    C{grace} seconds, aborting what is left.
    """

    def __init__(
        self, connections: OpenConnections, clock: IReactorTime, grace: float = HANGUP_GRACE
    ) -> None:
        self.connections = connections
        self._clock = clock
        self.grace = grace

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        count = len(self.connections.open)
        if count:
            log.info("hanging up {count} open connections", count=count)
        for transport in list(self.connections.open):
            try:
                transport.sendDisconnect(DISCONNECT_BY_APPLICATION, HANGUP_REASON)
            except Exception:
                log.failure("saying goodbye to a connection failed")
                transport.transport.abortConnection()
        ended = self.connections.whenNoneOpen()

        def late(result: Any, timeout: float) -> defer.Deferred[None]:
            left = list(self.connections.open)
            log.warn("aborting {count} connections that did not close", count=len(left))
            for transport in left:
                transport.transport.abortConnection()
            return self.connections.whenNoneOpen().addTimeout(1.0, self._clock)

        ended.addTimeout(self.grace, self._clock, onTimeoutCancel=late)
        return ended.addErrback(lambda f: log.failure("the hang-up did not finish", f))

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
L{IAdmission} (L{diegossh.ssh.openconnections.OpenConnections}), as in the
proxy.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from diegossh.ssh.openconnections import OpenConnections

log = Logger()

#: What a user is told when the daemon stops under their session.
HANGUP_REASON = b"the daemon is shutting down"
#: The longest the stop waits for connections to end before aborting them.
HANGUP_GRACE = 2.0


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

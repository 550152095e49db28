# -*- test-case-name: tests.test_proxy_shutdown -*-
"""
The proxy's stop, in order: stop accepting, close the users' connections,
stop the realms' timers and pools, and only then stop writing the access log.

Twisted's C{MultiService} calls every child's C{stopService} at once (last
added first) and then waits for all of them; the users' connections, which
twistd would otherwise leave to the reactor's final disconnect, end later
still. A session open at that moment would lose its C{session_end} line:
the access log's observer was already gone. So the proxy's top service is a
L{StopInOrder}, which waits for each child before stopping the one added
before it, and a L{ClosingService} (between the realms and the listener)
closes the connections still open and waits for them to end.

Which connections are open is known from the server transports' own
reports to their L{IAdmission} (every one says C{opened} when it starts and
C{closed} when it ends): L{LiveConnections} keeps them while passing each
report on to the real admission.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from diegossh.interfaces import IAdmission
from diegossh.proxy.backend import CLOSE_TIMEOUT
from diegossh.ssh.openconnections import OpenConnections

log = Logger()

#: What a user is told when the proxy stops under their session.
SHUTDOWN_REASON = b"the proxy is shutting down"
#: The longest the stop waits for the users' connections to end: each is
#: aborted after CLOSE_TIMEOUT if its user does not read the goodbye; this
#: leaves that abort a margin.
CLOSE_GRACE = CLOSE_TIMEOUT + 5.0


class StopInOrder(MultiService):
    """
    A C{MultiService} whose children stop one after another, the last added
    first, each once the previous one's C{stopService} has finished (a child
    whose stop fails is logged, and the next one stops all the same).
    Children start in the order they were added, as in any C{MultiService}.
    """

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return defer.ensureDeferred(self._stopAll(list(reversed(list(self)))))

    async def _stopAll(self, services: list[Any]) -> None:
        for service in services:
            try:
                await defer.maybeDeferred(service.stopService)
            except Exception:
                log.failure("stopping {service} failed", service=service)


class LiveConnections(OpenConnections):
    """
    The proxy's open connections (L{OpenConnections} on the reactor's
    C{clock}), which a drain waits for and the stop closes.

    A transport reports C{closed} at the start of its C{connectionLost},
    before the rest of it (the avatar's C{logout}, which logs the session's
    end) has run: so the connections count as ended one reactor turn after
    the last report, on C{clock}.
    """

    def __init__(self, admission: IAdmission, clock: IReactorTime) -> None:
        super().__init__(admission, clock)

    def drain(self) -> defer.Deferred[None]:
        """
        Fires when no connection is left open, each having ended by itself
        (L{diegossh.proxy.drain}); cancelling it stops the wait.
        """
        return self.whenNoneOpen()

    def closeAll(self, reason: bytes) -> defer.Deferred[None]:
        """
        Say goodbye to every open connection and close it (each server
        transport's C{closeSoon}, which aborts a connection whose user does
        not read within L{CLOSE_TIMEOUT}); fires when none is left open.
        """
        for transport in list(self.open):
            transport.closeSoon(reason)
        return self.whenNoneOpen()


class ClosingService(Service):
    """
    Closes the users' connections still open when the proxy stops, and waits
    (up to C{grace} seconds) for them to end, so that everything they log on
    the way out (C{session_end}) is written before the access log closes.
    """

    def __init__(
        self, connections: LiveConnections, clock: IReactorTime, grace: float = CLOSE_GRACE
    ) -> None:
        self.connections = connections
        self._clock = clock
        self.grace = grace

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        count = len(self.connections.open)
        if count:
            log.info("closing {count} open connections", count=count)
        ended = self.connections.closeAll(SHUTDOWN_REASON)

        def late(result: Any, timeout: float) -> None:
            log.warn(
                "{count} connections still open {timeout:.0f}s after the proxy asked them "
                "to close; stopping anyway",
                count=len(self.connections.open),
                timeout=timeout,
            )

        ended.addTimeout(self.grace, self._clock, onTimeoutCancel=late)
        return ended

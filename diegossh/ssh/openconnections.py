# -*- test-case-name: tests.test_sshd_hangup, tests.test_proxy_shutdown, tests.test_proxy_drain -*-
"""
Which connections are open now, for a stop that must close them or wait for
them: the daemon's hang-up (L{diegossh.sshd.hangup}) and the proxy's drain
and shutdown (L{diegossh.proxy.shutdown}).

Every server transport reports C{opened} to its L{IAdmission} when it starts
and C{closed} when it ends; L{OpenConnections} stands in front of the real
admission, passes each report on and keeps the transports in between.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from diegossh.interfaces import IAdmission


@implementer(IAdmission)
class OpenConnections:
    """
    An L{IAdmission} in front of another (C{admission}) that also keeps the
    server transports open now (C{open}).

    L{whenNoneOpen} fires once none is: at once when the last one reports
    C{closed}, or, with a C{clock}, one reactor turn later, for a caller that
    needs what runs after that report (the rest of the transport's
    C{connectionLost}: the proxy's avatar logs the session's end there).
    """

    def __init__(self, admission: IAdmission, clock: IReactorTime | None = None) -> None:
        self.admission = admission
        self._clock = clock
        self.open: set[Any] = set()
        # how many have closed so far: whether any came and went since a look
        self.ended = 0
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
        if transport in self.open:
            self.open.discard(transport)
            self.ended += 1
        self.admission.closed(transport)
        if self.open or not self._waiting:
            return
        if self._clock is None:
            self._settle()
        else:
            self._clock.callLater(0, self._settle)

    def _settle(self) -> None:
        if self.open:
            return
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def whenNoneOpen(self) -> defer.Deferred[None]:
        """
        Fires when no connection is open (at once if none is); cancelling it
        stops the wait.
        """
        if not self.open:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        return d

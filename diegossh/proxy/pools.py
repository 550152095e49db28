# -*- test-case-name: tests.test_pools -*-
"""
HTTP connection pools that close when the proxy stops.

A pool of kept-alive connections (BBS, UAA and Cloud Controller, a realm's
own API) holds sockets open between logins; nothing closes them unless
someone calls C{closeCachedConnections}. Each component that makes pools
gets them from its own L{PoolService}, a child of the proxy's service tree:
its C{stopService} closes every cached connection, and the proxy's stop
waits until they are closed, or L{CLOSE_GRACE} seconds: closing a TLS
connection waits for the peer's C{close_notify}, and a peer that never sends
it must not hold the proxy's stop (the reactor drops what is left when the
process exits, as it did before pools were closed at all).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

__all__ = ["CLOSE_GRACE", "PoolService"]

#: Seconds the stop waits for the pools' connections to close.
CLOSE_GRACE = 1.0


class PoolService(Service):
    """
    The L{HTTPConnectionPool}s of one component (the BBS client, the C{cf}
    realm, a realm plugin), closed together in L{stopService}.
    """

    def __init__(self, reactor: Any, grace: float = CLOSE_GRACE) -> None:
        self._reactor = reactor
        self.grace = grace
        self.pools: list[HTTPConnectionPool] = []

    def pool(
        self, persistent: bool = True, maxPersistentPerHost: int | None = None
    ) -> HTTPConnectionPool:
        """
        A new pool on the service's reactor, to hand to an C{Agent}.

        @param maxPersistentPerHost: idle connections kept per host (Twisted's
            default, 2, when not given).
        """
        made = HTTPConnectionPool(self._reactor, persistent=persistent)
        if maxPersistentPerHost is not None:
            made.maxPersistentPerHost = maxPersistentPerHost
        self.pools.append(made)
        return made

    def stopService(self) -> defer.Deferred[None]:
        """
        Close every idle connection of every pool; fires once they are
        closed, or after C{grace} seconds. (A connection still busy with a
        request is not idle: it is left to finish, and the reactor closes it
        when the process exits.)
        """
        super().stopService()
        closing = defer.gatherResults([made.closeCachedConnections() for made in self.pools])
        stopped: defer.Deferred[None] = defer.Deferred()
        timer = self._reactor.callLater(self.grace, self._done, stopped)

        def closed(result: object) -> None:
            if timer.active():
                timer.cancel()
            self._done(stopped)

        closing.addBoth(closed)
        return stopped

    @staticmethod
    def _done(stopped: defer.Deferred[None]) -> None:
        if not stopped.called:
            stopped.callback(None)

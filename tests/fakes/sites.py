"""
The web site under every fake HTTPS server (BBS, UAA, Cloud Controller): it
counts the connections it accepts and can drop them all, so a test can prove a
pooled connection was reused and no fake leaves the reactor dirty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site


class TrackedChannel(HTTPChannel):
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        site: TrackedSite = self.site  # type: ignore[attr-defined]
        lost = site.channels.pop(self, None)
        if lost is not None:
            lost.callback(None)


class TrackedSite(Site):
    protocol = TrackedChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.channels: dict[TrackedChannel, Deferred[None]] = {}
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.accepted += 1
        self.channels[channel] = Deferred()
        return channel


async def shutDown(
    port: IListeningPort | None, site: TrackedSite | None, pending: Iterable[IDelayedCall]
) -> None:
    """Cancel pending answers, stop listening, drop every connection, wait for them."""
    for call in pending:
        if call.active():
            call.cancel()
    if port is not None:
        await maybeDeferred(port.stopListening)
    if site is not None:
        waits = list(site.channels.values())
        for channel in list(site.channels):
            transport: Any = channel.transport
            if transport is not None:
                transport.abortConnection()
        await DeferredList(waits)

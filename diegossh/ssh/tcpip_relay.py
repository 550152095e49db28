# -*- test-case-name: tests.test_forwarding_relay -*-
"""
One TCP socket relayed over one SSH channel, with backpressure both ways and
half-close both ways: every C{direct-tcpip} channel (L{diegossh.ssh.tcpip},
the daemon's and the bastion's) and the daemon's C{forwarded-tcpip} ones.

socket -> channel: the socket's transport is the channel's producer; above the
channel's high-water mark (the client's window is shut) reading stops.

channel -> socket: the channel is the producer of the socket's transport; while
the transport's write buffer is full, bytes the client sends are owed, not
granted back (L{diegossh.ssh.channel.BufferedChannel.delivered}), so the
client's window closes.

So a channel holds at most its high-water mark plus one socket read on the way
out and its receive window plus the transport's buffer on the way in, however
slow either end is.

Ending follows OpenSSH's sshd: the client's EOF shuts down the socket's write
side once its buffer drains, the socket's EOF becomes channel EOF after the
last queued byte, and the channel closes once both directions are done or
either end goes away.

Unlike OpenSSH, a socket never outlives its channel for long: once the channel
is closed, what the client sent still has L{DRAIN_TIMEOUT} seconds to reach a
socket peer that reads, then the socket is aborted (a peer that never reads
would otherwise hold the descriptor for ever). When the SSH connection ends,
every socket is aborted at once through the connection's L{SocketSet}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.ssh.channel import BufferedChannel

__all__ = ["DRAIN_TIMEOUT", "RelayChannel", "SocketFactory", "SocketProtocol", "SocketSet"]

WINDOW = 2 * 1024 * 1024
PACKET = 32 * 1024
#: seconds a closed channel's socket may take to pass on what the client sent
#: (its write buffer: at most one window plus the transport's own buffer)
#: before it is aborted
DRAIN_TIMEOUT = 10.0


class SocketSet:
    """
    The forwarded sockets of one SSH connection that are still open, so that
    the connection's end can abort every one of them, draining or not.
    """

    def __init__(self) -> None:
        self._sockets: set[Any] = set()

    def __len__(self) -> int:
        return len(self._sockets)

    def add(self, socket: Any) -> None:
        self._sockets.add(socket)

    def discard(self, socket: Any) -> None:
        self._sockets.discard(socket)

    def abortAll(self) -> None:
        sockets, self._sockets = self._sockets, set()
        for socket in sockets:
            socket.abortConnection()


class RelayChannel(BufferedChannel):
    """
    A channel relaying to a TCP transport, attached by L{SocketProtocol}.
    """

    highWater = 256 * 1024
    lowWater = 64 * 1024
    drainTimeout = DRAIN_TIMEOUT
    #: set by whoever makes the channel: arms the drain deadline (without a
    #: clock, a closed channel's socket is aborted at once if still open)
    clock: IReactorTime | None = None
    #: the connection's open sockets, when it keeps track (see L{SocketSet})
    sockets: SocketSet | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("localWindow", WINDOW)
        kwargs.setdefault("localMaxPacket", PACKET)
        super().__init__(*args, **kwargs)
        # an ITCPTransport that is also an IPushProducer and an IConsumer
        self.socket: Any = None
        self._opened = False
        self._peerEOF = False
        self._socketEOF = False
        self._socketGone = False
        self._early: list[bytes] = []
        self._closed = False
        self._drainTimer: IDelayedCall | None = None

    # -- the socket side (called by SocketProtocol)

    def socketConnected(self, transport: Any) -> None:
        self.socket = transport
        if self.sockets is not None:
            self.sockets.add(transport)
        transport.pauseProducing()
        if self._closed:
            # The channel ended while the socket was being connected.
            self._closeSocket(deadline=True)
        elif self._opened:
            self._startRelay()

    def socketData(self, data: bytes) -> None:
        if self._opened:
            self.write(data)
        else:
            self._early.append(data)

    def socketEOF(self) -> None:
        self._socketEOF = True
        self.unregisterProducer()
        if self._opened:
            self.sendEOFWhenDrained()
            self._maybeFinish()

    def socketLost(self, reason: Failure) -> None:
        if self.sockets is not None and self.socket is not None:
            self.sockets.discard(self.socket)
        self._socketGone = True
        self.socket = None
        if self._drainTimer is not None and self._drainTimer.active():
            self._drainTimer.cancel()
        self._drainTimer = None
        self.unregisterProducer()
        if self._opened and not self.localClosed:
            self.loseConnection()

    # -- the channel side

    def channelOpen(self, specificData: bytes) -> None:
        self._opened = True
        early, self._early = self._early, []
        for data in early:
            self.write(data)
        if self._socketGone:
            self.loseConnection()
        elif self._socketEOF:
            self.sendEOFWhenDrained()
            self._startRelay()
        elif self.socket is not None:
            self._startRelay()

    def openFailed(self, reason: Any) -> None:
        self._closed = True
        self._closeSocket(deadline=True)

    def _startRelay(self) -> None:
        socket = self.socket
        assert socket is not None
        socket.registerProducer(self, True)
        if not self._socketEOF:
            self.registerProducer(socket, True)
            socket.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        socket = self.socket
        if socket is None or self._peerEOF:
            # Nowhere to go: dropped, and not granted, so the client stops.
            return
        socket.write(data)
        self.delivered(len(data))

    def eofReceived(self) -> None:
        self._peerEOF = True
        socket = self.socket
        if socket is not None:
            # A registered paused producer would keep the transport from
            # shutting down its write side after the buffer drains.
            socket.unregisterProducer()
            socket.loseWriteConnection()
        self._maybeFinish()

    def closeReceived(self) -> None:
        # The client will read nothing more: drop the queue and close now.
        self.abortConnection()

    def closed(self) -> None:
        self._closed = True
        self.unregisterProducer()
        self._closeSocket(deadline=True)

    def _maybeFinish(self) -> None:
        if self._peerEOF and self._socketEOF:
            self._closeSocket()
            self.loseConnection()

    def _closeSocket(self, deadline: bool = False) -> None:
        """
        Close the socket after its write buffer drains; with C{deadline}
        (the channel is gone), abort it if that takes longer than
        L{drainTimeout}: a paused peer with data queued for it would
        otherwise keep the descriptor for ever.
        """
        socket = self.socket
        if socket is None:
            return
        socket.unregisterProducer()
        socket.loseConnection()
        if not deadline or self.socket is None or self._drainTimer is not None:
            return
        if self.clock is None:
            socket.abortConnection()
            return
        self._drainTimer = self.clock.callLater(self.drainTimeout, self._drainExpired)

    def _drainExpired(self) -> None:
        self._drainTimer = None
        if self.socket is not None:
            self.socket.abortConnection()


@implementer(IHalfCloseableProtocol)
class SocketProtocol(Protocol):
    """
    The TCP end of a relay: hands everything to its L{RelayChannel}.
    """

    transport: Any

    def __init__(self, channel: RelayChannel) -> None:
        self.channel = channel

    def connectionMade(self) -> None:
        self.channel.socketConnected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.channel.socketData(data)

    def readConnectionLost(self) -> None:
        self.channel.socketEOF()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.channel.socketLost(reason)


class SocketFactory(Factory):
    """
    Builds the one L{SocketProtocol} of an outgoing connection.
    """

    def __init__(self, channel: RelayChannel) -> None:
        self.channel = channel

    def buildProtocol(self, addr: Any) -> SocketProtocol:
        return SocketProtocol(self.channel)

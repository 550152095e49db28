"""
Issue 11, the daemon's forwarding: whatever a connection took is given back
when it ends, in any order of endings.

In memory: a closed channel's socket with data queued for a peer that does not
read is aborted after the drain deadline; the connection's end aborts every
forwarded socket still open; the cap on listeners per connection; a port asked
for twice. Over real sockets, with our scriptable client: a direct-tcpip
socket whose peer stopped reading (the server's write buffer full, the socket
paused) is closed when the SSH connection drops and when the channel closes,
and the process's descriptor count comes back.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conchConnection
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

from diegossh.interfaces import ITCPRouter
from diegossh.ssh.tcpip import makeDirectTCPIPChannel
from diegossh.ssh.tcpip_relay import DRAIN_TIMEOUT, RelayChannel, SocketProtocol, SocketSet
from diegossh.sshd.forwarding import MAX_LISTENERS, ForwardingAvatarMixin, RemoteForwards
from tests.support.eventually import eventually
from tests.support.forwardserver import forwardServerFactory
from tests.support.keys import key
from tests.support.sshclient import LoginClient, RawConnection

OPEN = conchConnection.MSG_CHANNEL_OPEN
OPEN_OK = conchConnection.MSG_CHANNEL_OPEN_CONFIRMATION
DATA = conchConnection.MSG_CHANNEL_DATA
ADJUST = conchConnection.MSG_CHANNEL_WINDOW_ADJUST
CLOSE = conchConnection.MSG_CHANNEL_CLOSE
WAIT = 30.0


# -- in memory


class FakeTCP(StringTransport):
    """
    A StringTransport that, like a real TCP transport, keeps what is written
    while the peer does not read: C{loseConnection} alone never finishes.
    """

    aborted = False

    def loseWriteConnection(self) -> None:
        pass

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class FakeConn:
    def __init__(self) -> None:
        self.closes = 0
        self.opened: list[tuple[Any, bytes]] = []

    def sendData(self, channel: Any, data: bytes) -> None:
        pass

    def sendEOF(self, channel: Any) -> None:
        pass

    def sendClose(self, channel: Any) -> None:
        self.closes += 1
        channel.localClosed = True

    def adjustWindow(self, channel: Any, n: int) -> None:
        channel.localWindowLeft += n

    def openChannel(self, channel: Any, extra: bytes = b"") -> None:
        self.opened.append((channel, extra))


def backedUp(clock: MemoryReactorClock | None) -> tuple[RelayChannel, FakeTCP]:
    """
    An open relay whose socket's buffer is full: the peer does not read.
    """
    channel = RelayChannel(remoteWindow=1 << 20, remoteMaxPacket=32768, conn=FakeConn())
    channel.clock = clock
    tcp = FakeTCP()
    SocketProtocol(channel).makeConnection(tcp)
    channel.channelOpen(b"")
    channel.pauseProducing()  # the transport's buffer is over its bufferSize
    channel.localWindowLeft -= 65536
    channel.dataReceived(b"q" * 65536)
    assert channel.owed == 65536
    return channel, tcp


def test_closed_channel_aborts_a_backed_up_socket_after_the_deadline() -> None:
    clock = MemoryReactorClock()
    channel, tcp = backedUp(clock)
    channel.closed()
    assert tcp.disconnecting and not tcp.aborted  # what was sent may still drain
    clock.advance(DRAIN_TIMEOUT - 0.5)
    assert not tcp.aborted
    clock.advance(0.5)
    assert tcp.aborted
    assert clock.getDelayedCalls() == []


def test_socket_that_drains_in_time_cancels_the_deadline() -> None:
    clock = MemoryReactorClock()
    channel, tcp = backedUp(clock)
    channel.closed()
    assert len(clock.getDelayedCalls()) == 1
    channel.socketLost(protocol.connectionDone)  # the buffer drained, the socket closed
    assert clock.getDelayedCalls() == []
    assert not tcp.aborted


def test_open_failed_while_socket_backed_up() -> None:
    """
    A forwarded-tcpip socket whose channel the client refused (or that the
    connection's end failed) is given the same deadline.
    """
    clock = MemoryReactorClock()
    channel = RelayChannel(conn=FakeConn())
    channel.clock = clock
    tcp = FakeTCP()
    SocketProtocol(channel).makeConnection(tcp)
    channel.openFailed(Exception("connection lost"))
    clock.advance(DRAIN_TIMEOUT)
    assert tcp.aborted


def test_socket_set_aborts_what_is_still_open() -> None:
    sockets = SocketSet()
    channel, tcp = backedUp(MemoryReactorClock())
    gone = FakeTCP()
    channel.sockets = sockets
    sockets.add(tcp)
    sockets.add(gone)
    sockets.discard(gone)
    sockets.abortAll()
    assert tcp.aborted and not gone.aborted
    assert len(sockets) == 0


class Avatar(ForwardingAvatarMixin):
    def __init__(self, reactor: Any) -> None:
        self.channelLookup: dict[bytes, Any] = {}
        self.conn = FakeConn()
        self.installForwarding(reactor)


@implementer(IStreamClientEndpoint, ITCPRouter)
class FakeEndpoint:
    """
    Connects at once, to a L{FakeTCP}; and routes every channel to itself.
    """

    def __init__(self) -> None:
        self.transports: list[FakeTCP] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
        tcp = FakeTCP()
        self.transports.append(tcp)
        proto.makeConnection(tcp)
        return defer.succeed(proto)

    def route(self, host: str, port: int) -> FakeEndpoint:
        return self


def test_logout_aborts_direct_and_forwarded_sockets() -> None:
    """
    The avatar's logout (the SSH connection ended) aborts a direct-tcpip
    socket and a forwarded-tcpip socket that are still draining, with no
    wait for their deadlines.
    """
    reactor = MemoryReactorClock()
    avatar = Avatar(reactor)
    endpoint = FakeEndpoint()
    opener = makeDirectTCPIPChannel(reactor, router=endpoint)
    data = common.NS(b"127.0.0.1") + struct.pack(">L", 80) + common.NS(b"::1") + b"\0\0\0\1"
    direct = opener(1 << 20, 32768, data, avatar).result
    direct.conn = avatar.conn
    direct.channelOpen(b"")
    (directTCP,) = endpoint.transports

    assert avatar.global_tcpip_forward(common.NS(b"localhost") + struct.pack(">L", 0)) == (
        1,
        b"\0" * 4,
    )
    (_, listenFactory, _, _) = reactor.tcpServers[0]
    accepted = listenFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    acceptedTCP = FakeTCP()
    accepted.makeConnection(acceptedTCP)
    ((forwarded, _),) = avatar.conn.opened
    forwarded.channelOpen(b"")
    forwarded.closed()  # the channel is gone; its socket drains under its deadline
    direct.closed()

    assert len(avatar.forwardingSockets) == 2
    assert not directTCP.aborted and not acceptedTCP.aborted
    assert avatar.stopForwarding().called
    assert directTCP.aborted and acceptedTCP.aborted
    assert len(avatar.forwardingSockets) == 0


def test_listeners_per_connection_are_capped() -> None:
    reactor = MemoryReactorClock()
    remote = RemoteForwards(reactor, FakeConn())
    for port in range(MAX_LISTENERS):
        assert remote.request(common.NS(b"") + struct.pack(">L", 20000 + port)) == 1
    assert MAX_LISTENERS == 16
    assert remote.request(common.NS(b"") + struct.pack(">L", 30000)) == 0
    assert len(reactor.tcpServers) == MAX_LISTENERS


def test_same_port_twice_keeps_the_first_listener() -> None:
    """
    A reactor that lets the same port be bound twice (a MemoryReactor, or a
    socket option): the second request fails, the first listener stays known,
    so a cancel or the connection's end still closes it.
    """
    reactor = MemoryReactorClock()
    remote = RemoteForwards(reactor, FakeConn())
    request = common.NS(b"localhost") + struct.pack(">L", 2222)
    assert remote.request(request) == 1
    assert remote.request(request) == 0
    assert len(reactor.tcpServers) == 1
    assert remote.cancel(request) == 1
    assert remote.listeners == {}


# -- real sockets, our scriptable client


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def theReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def within(d: Any, seconds: float = WAIT) -> Any:
    return d.addTimeout(seconds, theReactor())


class StalledPeer(protocol.Protocol):
    """
    A TCP peer that never reads: whatever is forwarded to it piles up in the
    forwarding server's write buffer.
    """

    transport: Any

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


class StalledPeers(protocol.Factory):
    def __init__(self) -> None:
        self.peers: list[StalledPeer] = []

    def buildProtocol(self, addr: Any) -> StalledPeer:
        peer = StalledPeer()
        self.peers.append(peer)
        return peer


class World:
    def __init__(self) -> None:
        reactor = theReactor()
        clientKey = key("ed25519")
        factory, self.realm = forwardServerFactory(key("p256"), clientKey, reactor)
        self.server = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.stalled = StalledPeers()
        self.peerPort = reactor.listenTCP(0, self.stalled, interface="127.0.0.1")
        # Accepted sockets inherit a small receive buffer: the kernel takes
        # little of what is forwarded to a peer that does not read.
        self.peerPort.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.clients: list[LoginClient] = []

    async def login(self) -> tuple[LoginClient, RawConnection]:
        client = LoginClient()
        client.key = key("ed25519")
        client.connection = RawConnection()
        client.clock = theReactor()
        endpoint = TCP4ClientEndpoint(theReactor(), "127.0.0.1", self.server.getHost().port)
        await within(connectProtocol(endpoint, client))
        self.clients.append(client)
        conn = await within(client.connection.started)
        return client, conn

    async def close(self) -> None:
        for client in self.clients:
            if client.transport is not None and client.transport.connected:
                client.transport.abortConnection()
        for peer in self.stalled.peers:
            if peer.transport.connected:
                peer.transport.abortConnection()
        await self.server.stopListening()
        await self.peerPort.stopListening()


@pytest_twisted.async_yield_fixture
async def world() -> AsyncIterator[World]:
    w = World()
    try:
        yield w
    finally:
        await w.close()


async def backUpDirectChannel(world: World, conn: RawConnection) -> tuple[int, RelayChannel]:
    """
    Open a direct-tcpip channel to the stalled peer and send until the
    kernel's buffers are full and the server holds what the peer will not
    take: its socket's transport paused the channel, and the client's window
    stays shut. Returns the server's channel number and the server's channel.
    """
    port = world.peerPort.getHost().port
    conn.send(
        OPEN,
        common.NS(b"direct-tcpip")
        + struct.pack(">3L", 0, 1 << 21, 32768)
        + common.NS(b"127.0.0.1")
        + struct.pack(">L", port)
        + common.NS(b"127.0.0.1")
        + struct.pack(">L", 1),
    )
    reply = await within(conn.waitFor(OPEN_OK))
    _, theirs, window, maxPacket = struct.unpack(">4L", reply[:16])
    (channel,) = world.realm.observed.channels
    chunk = b"x" * min(maxPacket, 32768)
    sent = 0
    while True:
        assert sent < 256 * 1024 * 1024, "the server's socket never filled up"
        while window >= len(chunk):
            conn.send(DATA, struct.pack(">L", theirs) + common.NS(chunk))
            window -= len(chunk)
            sent += len(chunk)
        try:
            # No window back for a second while the socket is paused: the
            # peer's kernel buffer is full, the rest waits in the server.
            adjusted = await conn.waitFor(ADJUST).addTimeout(1, theReactor())
        except defer.TimeoutError:
            if channel.sinkPaused:
                break
            continue
        window += struct.unpack(">L", adjusted[4:8])[0]
    assert channel.socket is not None and channel.owed > 0
    return theirs, channel


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_connection_drop_closes_a_backed_up_forwarded_socket(world: World) -> None:
    """
    The client vanishes while the server holds data for a peer that does not
    read: the server's socket to the peer is closed at once, not left waiting
    to drain for ever, and the descriptors come back.
    """
    before = openDescriptors()
    client, conn = await world.login()
    _, channel = await backUpDirectChannel(world, conn)
    forwarded = channel.socket
    client.transport.abortConnection()
    await within(world.realm.loggedOut[0])
    await eventually(lambda: not forwarded.connected, "the server's forwarded socket to close")
    for peer in world.stalled.peers:
        peer.transport.abortConnection()
    await eventually(lambda: openDescriptors() == before, f"{before} descriptors again")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_channel_close_closes_a_backed_up_forwarded_socket(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The client closes the channel (the connection goes on) while the server
    holds data for a peer that does not read: the socket gets the drain
    deadline, then is closed.
    """
    monkeypatch.setattr(RelayChannel, "drainTimeout", 0.2)
    client, conn = await world.login()
    theirs, channel = await backUpDirectChannel(world, conn)
    forwarded = channel.socket
    conn.send(CLOSE, struct.pack(">L", theirs))
    await within(conn.waitFor(CLOSE))
    await eventually(lambda: not forwarded.connected, "the server's forwarded socket to close")
    assert client.transport.connected

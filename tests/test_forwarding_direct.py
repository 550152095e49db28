"""
direct-tcpip channels on a memory reactor: routed, then confirmed only once the
socket connects, refused with the reason otherwise; and the connection
service's support for that (a channel factory returning a Deferred).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conch
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from diegossh.interfaces import ITCPRouter
from diegossh.ssh.connection import SSHConnection
from diegossh.ssh.tcpip import (
    CONNECT_TIMEOUT,
    DirectTCPIPChannel,
    HostnameRouter,
    Refusal,
    connectFailureReason,
    makeDirectTCPIPChannel,
    refusedChannel,
)
from diegossh.ssh.tcpip_relay import RelayChannel
from tests.test_forwarding_relay import FakeTCP


def openData(host: bytes = b"127.0.0.1", port: int = 8080) -> bytes:
    return (
        common.NS(host) + struct.pack(">L", port) + common.NS(b"10.0.0.1") + struct.pack(">L", 5555)
    )


def failureOf(d: defer.Deferred[Any]) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the Deferred did not fail"
    return failures[0]


def settled(d: defer.Deferred[Any]) -> bool:
    outcome: list[object] = []
    d.addBoth(lambda r: (outcome.append(r), r)[1])
    return bool(outcome)


def resultOf(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addCallback(results.append)
    assert results, "the Deferred has no result"
    return results[0]


def startOpen(reactor: MemoryReactorClock, **kwargs: Any) -> defer.Deferred[RelayChannel]:
    factory = makeDirectTCPIPChannel(reactor, **kwargs)
    return factory(remoteWindow=1 << 20, remoteMaxPacket=32768, data=openData(), avatar=None)


def connectLast(reactor: MemoryReactorClock) -> FakeTCP:
    host, port, factory, _, _ = reactor.tcpClients[-1]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    tcp = FakeTCP()
    protocol.makeConnection(tcp)
    return tcp


def test_connects_through_the_given_reactor() -> None:
    reactor = MemoryReactorClock()
    d = startOpen(reactor)
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("127.0.0.1", 8080)]
    assert not settled(d)
    tcp = connectLast(reactor)
    channel = resultOf(d)
    assert isinstance(channel, DirectTCPIPChannel)
    assert (channel.host, channel.port) == ("127.0.0.1", 8080)
    assert channel.socket is tcp
    assert tcp.producerState == "paused"  # until the channel is confirmed
    assert not reactor.getDelayedCalls()  # the connect timeout is cancelled


def test_refused() -> None:
    reactor = MemoryReactorClock()
    d = startOpen(reactor)
    factory = reactor.tcpClients[-1][2]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError(osError=111)))
    reactor.advance(1)
    failure = failureOf(d)
    assert failure.check(ConchError)
    assert failure.value.args == ("Connection refused", conch.OPEN_CONNECT_FAILED)


def test_timeout() -> None:
    reactor = MemoryReactorClock()
    d = startOpen(reactor, connectTimeout=3)
    reactor.advance(2.9)
    assert not settled(d)
    reactor.advance(0.2)
    failure = failureOf(d)
    assert failure.value.args == ("Connection timed out", conch.OPEN_CONNECT_FAILED)
    assert CONNECT_TIMEOUT > 3


def test_cancel_is_not_a_refusal() -> None:
    """
    The connection service cancels pending opens when it stops; nothing is
    sent then, so the CancelledError goes through unchanged.
    """
    reactor = MemoryReactorClock()
    d = startOpen(reactor)
    d.cancel()
    assert failureOf(d).check(defer.CancelledError)


@implementer(ITCPRouter)
class Router:
    """
    Routes every channel to one answer, and remembers what it was asked.
    """

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.asked: list[tuple[str, int]] = []

    def route(self, host: str, port: int) -> object:
        self.asked.append((host, port))
        return self.answer


def test_default_router_connects_by_name_through_the_reactor() -> None:
    reactor = MemoryReactorClock()
    router = HostnameRouter(reactor)
    assert verifyObject(ITCPRouter, router)
    endpoint = router.route("db.internal", 5432)
    assert isinstance(endpoint, HostnameEndpoint)


def test_routed_endpoint() -> None:
    reactor = MemoryReactorClock()
    endpoint = TCP4ClientEndpoint(reactor, "192.0.2.1", 9)
    router = Router(endpoint)
    d = startOpen(reactor, router=router)
    assert router.asked == [("127.0.0.1", 8080)]
    assert reactor.tcpClients[-1][:2] == ("192.0.2.1", 9)
    connectLast(reactor)
    channel = resultOf(d)
    assert isinstance(channel, DirectTCPIPChannel)
    assert channel.endpoint is endpoint


@pytest.mark.parametrize(
    "refusal",
    [Refusal("not here"), Refusal("no such target", conch.OPEN_CONNECT_FAILED)],
)
def test_routed_refusal(refusal: Refusal) -> None:
    reactor = MemoryReactorClock()
    with pytest.raises(ConchError) as e:
        startOpen(reactor, router=Router(refusal))
    assert e.value.args == (refusal.reason, refusal.code)
    assert reactor.tcpClients == []


def test_refusal_defaults_to_prohibited() -> None:
    assert Refusal("no").code == conch.OPEN_ADMINISTRATIVELY_PROHIBITED
    refuse = refusedChannel("sessions are not served here")
    with pytest.raises(ConchError) as e:
        refuse(remoteWindow=1, remoteMaxPacket=32768, data=b"", avatar=None)
    assert e.value.args == ("sessions are not served here", conch.OPEN_ADMINISTRATIVELY_PROHIBITED)


def test_failed_connect_reported_to_the_channel() -> None:
    """
    The channel hears of a failed connect through C{openFailed}, with the
    error the open is refused with; a cancelled one is not reported.
    """
    failures: list[Any] = []

    class Channel(DirectTCPIPChannel):
        def openFailed(self, reason: Any) -> None:
            failures.append(reason)
            super().openFailed(reason)

    reactor = MemoryReactorClock()
    d = startOpen(reactor, channelClass=Channel)
    factory = reactor.tcpClients[-1][2]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError(osError=111)))
    reactor.advance(1)
    refused = failureOf(d).value
    assert failures == [refused]
    startOpen(reactor, channelClass=Channel).cancel()
    assert failures == [refused]


@pytest.mark.parametrize(
    "data",
    [b"", common.NS(b"host"), openData(port=0), openData(port=70000), openData(host=b"\xff")],
)
def test_malformed(data: bytes) -> None:
    reactor = MemoryReactorClock()
    factory = makeDirectTCPIPChannel(reactor)
    with pytest.raises(ConchError) as e:
        factory(remoteWindow=1, remoteMaxPacket=1, data=data, avatar=None)
    assert e.value.args[1] == conch.OPEN_CONNECT_FAILED
    assert reactor.tcpClients == []


@pytest.mark.parametrize(
    ("exception", "text"),
    [
        (error.ConnectionRefusedError(), "Connection refused"),
        (error.ConnectError(osError=113), "No route to host"),
        (error.DNSLookupError("x"), "Name or service not known"),
        (error.TimeoutError(), "Connection timed out"),
        (defer.TimeoutError(), "Connection timed out"),
        (error.NoRouteError(), "No route to host"),
        (ValueError("odd"), "connect failed"),
    ],
)
def test_failure_reasons(exception: Exception, text: str) -> None:
    assert connectFailureReason(Failure(exception)) == text


# -- the connection service side


class FakeSSHTransport:
    def __init__(self, avatar: Any) -> None:
        self.avatar = avatar
        self.packets: list[tuple[int, bytes]] = []

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.packets.append((messageType, payload))

    def logPrefix(self) -> str:
        return "fake"


def connectionWith(factory: Any) -> tuple[SSHConnection, FakeSSHTransport]:
    avatar = ConchUser()
    avatar.channelLookup[b"direct-tcpip"] = factory
    conn = SSHConnection()
    transport = FakeSSHTransport(avatar)
    conn.transport = transport
    conn.serviceStarted()
    return conn, transport


def channelOpen(sender: int = 7) -> bytes:
    return common.NS(b"direct-tcpip") + struct.pack(">3L", sender, 1 << 21, 32768) + openData()


def test_confirmed_when_connected() -> None:
    reactor = MemoryReactorClock()
    conn, transport = connectionWith(makeDirectTCPIPChannel(reactor))
    conn.ssh_CHANNEL_OPEN(channelOpen(sender=7))
    assert transport.packets == []
    tcp = connectLast(reactor)
    ((kind, payload),) = transport.packets
    assert kind == conch.MSG_CHANNEL_OPEN_CONFIRMATION
    sender, local, window, packet = struct.unpack(">4L", payload)
    assert sender == 7
    channel = conn.channels[local]
    assert channel.conn is conn
    assert (window, packet) == (channel.localWindowSize, channel.localMaxPacket)
    assert tcp.producerState == "producing"  # relaying


def test_refused_with_reason() -> None:
    reactor = MemoryReactorClock()
    conn, transport = connectionWith(makeDirectTCPIPChannel(reactor))
    conn.ssh_CHANNEL_OPEN(channelOpen(sender=9))
    factory = reactor.tcpClients[-1][2]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError(osError=111)))
    reactor.advance(1)
    ((kind, payload),) = transport.packets
    assert kind == conch.MSG_CHANNEL_OPEN_FAILURE
    assert struct.unpack(">2L", payload[:8]) == (9, conch.OPEN_CONNECT_FAILED)
    assert common.getNS(payload[8:])[0] == b"Connection refused"
    assert conn.channels == {}


def test_refused_synchronously() -> None:
    def factory(**kwargs: Any) -> Any:
        raise ConchError("no", conch.OPEN_ADMINISTRATIVELY_PROHIBITED)

    conn, transport = connectionWith(factory)
    conn.ssh_CHANNEL_OPEN(channelOpen(sender=3))
    ((kind, payload),) = transport.packets
    assert kind == conch.MSG_CHANNEL_OPEN_FAILURE
    assert struct.unpack(">2L", payload[:8]) == (3, conch.OPEN_ADMINISTRATIVELY_PROHIBITED)


def test_pending_open_cancelled_when_service_stops() -> None:
    reactor = MemoryReactorClock()
    conn, transport = connectionWith(makeDirectTCPIPChannel(reactor))
    conn.ssh_CHANNEL_OPEN(channelOpen())
    (connector,) = reactor.connectors
    conn.serviceStopped()
    assert transport.packets == []
    assert connector.stoppedConnecting
    assert not reactor.getDelayedCalls()

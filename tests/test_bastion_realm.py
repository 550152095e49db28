"""
The bastion's tunnels on a memory reactor: the user is the router of its
C{direct-tcpip} channels (the key's target inside the operator's fence, or a
refusal), and every tunnel's outcome reaches the access log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.conch.error import ConchError
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conch
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from diegossh.bastion.keycache import Destination
from diegossh.bastion.policy import TargetPolicy
from diegossh.bastion.realm import BastionRealm, TargetEndpoint, TunnelChannel, TunnelUser
from diegossh.interfaces import ITCPRouter
from diegossh.proxy.keylogin import KeyLogin
from diegossh.ssh.tcpip import Refusal
from tests.test_forwarding_relay import FakeConn, FakeTCP

BLOB = b"key-blob"


class Cache:
    """
    The two questions a tunnel asks the key cache: one key opens ws-alpha.
    """

    def targetName(self, host: str) -> str:
        return "ws-alpha" if host == "10.0.0.7" else host

    def destination(self, blob: bytes, host: str, port: int) -> Destination | None:
        if blob == BLOB and host in ("ws-alpha", "10.0.0.7"):
            return Destination("ws-alpha", "10.0.0.7")
        return None


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("event") == "tunnel":
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def user(reactor: MemoryReactorClock) -> TunnelUser:
    policy = TargetPolicy.fromSettings("ws-*", "22")
    realm = BastionRealm(reactor, Cache(), policy, connectTimeout=5.0)  # type: ignore[arg-type]
    login = KeyLogin(realm, BLOB, "alice", "SHA256:abc")
    return TunnelUser(realm, login, "192.0.2.9:50000")


def openData(host: bytes, port: int) -> bytes:
    return common.NS(host) + port.to_bytes(4, "big") + common.NS(b"192.0.2.9") + b"\0\0\xc3\x50"


def openTunnel(u: TunnelUser, host: bytes = b"ws-alpha", port: int = 22) -> Any:
    return u.channelLookup[b"direct-tcpip"](
        remoteWindow=1 << 20, remoteMaxPacket=32768, data=openData(host, port), avatar=u
    )


def test_the_user_routes_to_the_keys_target_inside_the_fence(events: list[Any]) -> None:
    reactor = MemoryReactorClock()
    u = user(reactor)
    assert verifyObject(ITCPRouter, u)
    endpoint = u.route("ws-alpha", 22)
    assert isinstance(endpoint, TargetEndpoint)
    assert endpoint.destination == Destination("ws-alpha", "10.0.0.7")
    assert u.route("ws-beta", 22) == Refusal("your key does not open ws-beta")
    assert u.route("db-1", 22) == Refusal("target host db-1 is not permitted by this proxy")
    assert u.route("ws-alpha", 80) == Refusal("target port 80 is not permitted by this proxy")
    assert [(e["outcome"], e["target"], e["reason"]) for e in events] == [
        ("refused", "ws-beta", "your key does not open ws-beta"),
        ("refused", "db-1", "target host db-1 is not permitted by this proxy"),
        ("refused", "ws-alpha", "target port 80 is not permitted by this proxy"),
    ]


def test_a_refused_tunnel_connects_nowhere() -> None:
    reactor = MemoryReactorClock()
    with pytest.raises(ConchError) as e:
        openTunnel(user(reactor), b"ws-beta")
    refusal = ("your key does not open ws-beta", conch.OPEN_ADMINISTRATIVELY_PROHIBITED)
    assert e.value.args == refusal
    assert reactor.tcpClients == []


def test_an_open_tunnel_is_logged_when_opened_and_closed(events: list[Any]) -> None:
    reactor = MemoryReactorClock()
    u = user(reactor)
    d = openTunnel(u)
    host, port, factory, _, _ = reactor.tcpClients[-1]
    assert port == 22  # to 10.0.0.7, which the memory reactor resolves to loopback
    factory.buildProtocol(IPv4Address("TCP", host, port)).makeConnection(FakeTCP())
    channels: list[TunnelChannel] = []
    d.addCallback(channels.append)
    (channel,) = channels
    channel.conn = FakeConn()
    channel.channelOpen(b"")
    assert u.tunnels == 1
    channel.dataReceived(b"hello")
    channel.socketData(b"hi")
    reactor.advance(2)
    channel.closed()
    assert [e["outcome"] for e in events] == ["opened", "closed"]
    opened, closed = events
    assert (opened["target"], opened["port"], opened["address"]) == ("ws-alpha", 22, "10.0.0.7")
    assert (closed["bytes_from_client"], closed["bytes_to_client"]) == (5, 2)
    assert closed["duration"] == 2


def test_a_failed_connect_is_logged(events: list[Any]) -> None:
    reactor = MemoryReactorClock()
    u = user(reactor)
    d = openTunnel(u, b"10.0.0.7")
    factory = reactor.tcpClients[-1][2]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError(osError=111)))
    reactor.advance(1)
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].value.args == ("Connection refused", conch.OPEN_CONNECT_FAILED)
    assert [(e["outcome"], e["target"], e["reason"]) for e in events] == [
        ("failed", "ws-alpha", "Connection refused")
    ]
    assert u.tunnels == 0

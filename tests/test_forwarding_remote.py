"""
tcpip-forward / cancel-tcpip-forward on a memory reactor, the bind-address
policy, the wire format, and the avatar mixin.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conch
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from diegossh.ssh.tcpip_relay import SocketProtocol
from diegossh.ssh.tcpip_wire import (
    MalformedRequest,
    packForwardedTCPIP,
    parseDirectTCPIP,
    parseTCPIPForward,
)
from diegossh.sshd.forwarding import (
    ForwardedTCPIPChannel,
    ForwardingAvatarMixin,
    RemoteForwards,
    bindAddress,
)


class FakePort:
    def __init__(self, reactor: ListeningReactor, interface: str, port: int) -> None:
        self.reactor = reactor
        self.interface = interface
        self.port = port
        self.stopped = False

    def getHost(self) -> Any:
        if ":" in self.interface:
            return IPv6Address("TCP", self.interface, self.port)
        return IPv4Address("TCP", self.interface, self.port)

    def stopListening(self) -> None:
        self.stopped = True
        self.reactor.bound.discard((self.interface, self.port))


class ListeningReactor(MemoryReactorClock):
    """
    Allocates ports for port 0 and refuses a port already bound.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bound: set[tuple[str, int]] = set()
        self.nextPort = 40000
        self.ports: list[FakePort] = []
        self.factories: list[Any] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port == 0:
            self.nextPort += 1
            port = self.nextPort
        if (interface, port) in self.bound:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        self.bound.add((interface, port))
        listening = FakePort(self, interface, port)
        self.ports.append(listening)
        self.factories.append(factory)
        return listening


class FakeConn:
    def __init__(self) -> None:
        self.opened: list[tuple[Any, bytes]] = []

    def openChannel(self, channel: Any, extra: bytes = b"") -> None:
        self.opened.append((channel, extra))


def forward(address: str, port: int) -> bytes:
    return common.NS(address.encode()) + struct.pack(">L", port)


def forwards() -> tuple[RemoteForwards, ListeningReactor, FakeConn]:
    reactor = ListeningReactor()
    conn = FakeConn()
    return RemoteForwards(reactor, conn), reactor, conn


def test_port_zero_replies_with_allocated_port() -> None:
    remote, reactor, _ = forwards()
    assert remote.request(forward("localhost", 0)) == (1, struct.pack(">L", 40001))
    assert reactor.bound == {("127.0.0.1", 40001)}
    assert list(remote.listeners) == [("localhost", 40001)]


def test_fixed_port_replies_without_data() -> None:
    remote, reactor, _ = forwards()
    assert remote.request(forward("", 2222)) == 1
    assert reactor.bound == {("127.0.0.1", 2222)}


def test_port_in_use_refused() -> None:
    remote, reactor, _ = forwards()
    reactor.bound.add(("127.0.0.1", 2222))
    assert remote.request(forward("localhost", 2222)) == 0
    assert remote.listeners == {}


def test_cancel() -> None:
    remote, reactor, _ = forwards()
    remote.request(forward("localhost", 0))
    (port,) = reactor.ports
    assert remote.cancel(forward("localhost", 40002)) == 0
    assert remote.cancel(forward("elsewhere", 40001)) == 0
    assert remote.cancel(forward("localhost", 40001)) == 1
    assert port.stopped
    assert remote.listeners == {}
    assert remote.cancel(forward("localhost", 40001)) == 0


def test_stop_all() -> None:
    remote, reactor, _ = forwards()
    remote.request(forward("localhost", 0))
    remote.request(forward("localhost", 3333))
    d = remote.stopAll()
    assert d.called
    assert all(port.stopped for port in reactor.ports)
    assert reactor.bound == set()
    assert remote.request(forward("localhost", 0)) == 0
    assert reactor.factories[0].buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is None


def test_max_listeners() -> None:
    reactor = ListeningReactor()
    remote = RemoteForwards(reactor, FakeConn(), maxListeners=2)
    assert remote.request(forward("", 0))
    assert remote.request(forward("", 0))
    assert remote.request(forward("", 0)) == 0


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x05abc", forward("x", 1 << 16)])
def test_malformed_refused(data: bytes) -> None:
    remote, reactor, _ = forwards()
    assert remote.request(data) == 0
    assert remote.cancel(data) == 0
    assert reactor.ports == []


def test_accepted_connection_opens_forwarded_channel() -> None:
    """
    The open names the address as the client sent it and the bound port,
    which is how OpenSSH finds its forward; then who connected.
    """
    remote, reactor, conn = forwards()
    remote.request(forward("localhost", 0))
    (factory,) = reactor.factories
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 51000))
    assert isinstance(protocol, SocketProtocol)
    ((channel, extra),) = conn.opened
    assert isinstance(channel, ForwardedTCPIPChannel)
    assert channel.name == b"forwarded-tcpip"
    assert protocol.channel is channel
    assert extra == packForwardedTCPIP("localhost", 40001, "127.0.0.1", 51000)
    assert parseDirectTCPIP(extra) == ("localhost", 40001, "127.0.0.1", 51000)


@pytest.mark.parametrize(
    ("requested", "gatewayPorts", "interface"),
    [
        ("", False, "127.0.0.1"),
        ("*", False, "127.0.0.1"),
        ("0.0.0.0", False, "127.0.0.1"),
        ("192.0.2.7", False, "127.0.0.1"),
        ("localhost", False, "127.0.0.1"),
        ("::1", False, "::1"),
        ("::", False, "127.0.0.1"),
        ("", True, "0.0.0.0"),
        ("*", True, "0.0.0.0"),
        ("localhost", True, "127.0.0.1"),
        ("192.0.2.7", True, "192.0.2.7"),
        ("::", True, "::"),
        ("some.host.name", True, None),
    ],
)
def test_bind_address(requested: str, gatewayPorts: bool, interface: str | None) -> None:
    assert bindAddress(requested, gatewayPorts) == interface


def test_gateway_ports_refuses_names() -> None:
    reactor = ListeningReactor()
    remote = RemoteForwards(reactor, FakeConn(), gatewayPorts=True)
    assert remote.request(forward("some.host.name", 0)) == 0
    assert reactor.ports == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        common.NS(b"host"),
        common.NS(b"h\x00st") + struct.pack(">L", 1),
        common.NS(b"\xff") + struct.pack(">L", 1),
        common.NS(b"host") + struct.pack(">L", 65536),
    ],
)
def test_wire_malformed(data: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parseTCPIPForward(data)


def test_wire_forward() -> None:
    assert parseTCPIPForward(forward("::1", 0)) == ("::1", 0)


# -- the mixin


class Avatar(ForwardingAvatarMixin, ConchUser):
    def __init__(self, reactor: Any) -> None:
        ConchUser.__init__(self)
        self.installForwarding(reactor)


def test_mixin_global_requests() -> None:
    reactor = ListeningReactor()
    avatar = Avatar(reactor)
    avatar.conn = FakeConn()
    assert avatar.gotGlobalRequest(b"tcpip-forward", forward("localhost", 0)) == (
        1,
        struct.pack(">L", 40001),
    )
    assert avatar.gotGlobalRequest(b"cancel-tcpip-forward", forward("localhost", 40001)) == 1
    assert avatar.gotGlobalRequest(b"streamlocal-forward@openssh.com", b"x") == 0
    assert avatar.gotGlobalRequest(b"cancel-streamlocal-forward@openssh.com", b"x") == 0
    avatar.gotGlobalRequest(b"tcpip-forward", forward("localhost", 4444))
    d = avatar.stopForwarding()
    assert d.called
    assert reactor.bound == set()
    assert avatar.gotGlobalRequest(b"tcpip-forward", forward("localhost", 0)) == 0


def test_mixin_channels() -> None:
    avatar = Avatar(ListeningReactor())
    assert b"direct-tcpip" in avatar.channelLookup
    with pytest.raises(ConchError) as e:
        avatar.lookupChannel(b"direct-streamlocal@openssh.com", 1 << 20, 32768, b"")
    assert e.value.args[1] == conch.OPEN_ADMINISTRATIVELY_PROHIBITED
    with pytest.raises(ConchError) as e:
        avatar.lookupChannel(b"x11", 1 << 20, 32768, b"")
    assert conch.OPEN_UNKNOWN_CHANNEL_TYPE in e.value.args  # Conch puts the code first


def test_mixin_without_forwards_stops_cleanly() -> None:
    avatar = Avatar(ListeningReactor())
    assert avatar.stopForwarding().called
    assert avatar.gotGlobalRequest(b"cancel-tcpip-forward", forward("localhost", 1)) == 0

"""
The PROXY protocol on the proxy's SSH listener (diegossh.proxy.proxyprotocol),
in memory: a real L{ProxyFactory} behind a real L{Admission}, each connection
on a StringTransport and the clock a MemoryReactorClock.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from diegossh.addresses import BalancerAddress, clientAddress
from diegossh.proxy import config as proxyConfig
from diegossh.proxy.proxyprotocol import (
    HEADER_TIMEOUT,
    V1_MAX,
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    BadHeader,
    ProxyProtocolFactory,
    ProxyProtocolSettings,
    parseHeader,
)
from diegossh.ssh import admission
from tests.support.proxyworld import ProxyWorld

BALANCER = "10.0.0.5"
CLIENT = "203.0.113.7"
STRANGER = "198.51.100.9"
BANNER = b"SSH-2.0-OpenSSH_9.6\r\n"


def v1(source: str = CLIENT, port: int = 4242) -> bytes:
    return f"PROXY TCP4 {source} 10.0.0.1 {port} 2222\r\n".encode()


def v2(source: str = CLIENT, port: int = 4242, command: int = 1, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("10.0.0.1") + struct.pack("!HH", port, 2222)
    body += tlv
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def v2local() -> bytes:
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


class Stack:
    """
    The listening factory as tap.makeService builds it with --proxyProtocol.
    """

    def __init__(self, world: ProxyWorld, maxPending: int = 100) -> None:
        self.world = world
        self.clock = world.clock
        self.listening = admission.fromSettings(
            world.factory,
            self.clock,
            admission.AdmissionLimits.parse(
                "100:30:300", "60", "yes", None, admission.DEFAULT_PENALTIES
            ),
        )
        self.admission = self.listening.admission
        self.factory = ProxyProtocolFactory(
            self.listening,
            ProxyProtocolSettings.parse(True, f"{BALANCER}/32"),
            self.clock,
            maxPending,
        )

    def connect(self, host: str, port: int = 40000) -> tuple[Any, StringTransport]:
        addr = IPv4Address("TCP", host, port)
        protocol = self.factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        if protocol is not None:
            protocol.makeConnection(transport)
        return protocol, transport

    def lose(self, protocol: Any) -> None:
        protocol.connectionLost(Failure(ConnectionLost()))

    def accrued(self, host: str) -> float:
        return self.admission.tables[4].accrued(host)


@pytest.fixture
def stack() -> Iterator[Stack]:
    world = ProxyWorld()
    try:
        yield Stack(world)
        assert world.outcomes.failures == [], world.outcomes.text()
    finally:
        world.stop()


# -- settings


def test_off_by_default_and_in_the_key_table() -> None:
    assert proxyConfig.SETTINGS["proxyProtocol"] == ("proxy_protocol", "bool", False)
    assert proxyConfig.SETTINGS["proxyProtocolTrusted"][0] == "proxy_protocol_trusted"
    assert ProxyProtocolSettings.parse(False, None) is None


@pytest.mark.parametrize(
    ("enabled", "trusted", "flag"),
    [
        (True, None, "--proxyProtocolTrusted"),
        (True, "10.0.0.0/8,nonsense", "--proxyProtocolTrusted"),
        (False, "10.0.0.1", "--proxyProtocol"),
    ],
)
def test_refusals_name_the_flag(enabled: bool, trusted: str | None, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        ProxyProtocolSettings.parse(enabled, trusted)


def test_trusted_networks() -> None:
    settings = ProxyProtocolSettings.parse(True, "10.0.0.0/24, 2001:db8::1")
    assert settings is not None
    assert settings.trusts("10.0.0.200")
    assert settings.trusts("::ffff:10.0.0.3")
    assert settings.trusts("2001:db8::1")
    assert not settings.trusts("10.0.1.1")
    assert not settings.trusts("not-an-address")


def test_settings_reach_proxy_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from diegossh.proxy.tap import Options

    table = tmp_path / "lrps.json"
    table.write_text("{}")
    base = ["--enableDiegoAuth", "--diegoCredentials", "u:p", "--lrpDirectory", str(table)]
    options = Options()
    options.parseOptions(base)
    assert options["settings"].proxyProtocol is None
    options = Options()
    options.parseOptions([*base, "--proxyProtocol", "--proxyProtocolTrusted", "10.0.0.5"])
    assert options["settings"].proxyProtocol.trusts("10.0.0.5")
    with pytest.raises(Exception, match="--proxyProtocolTrusted"):
        Options().parseOptions([*base, "--proxyProtocol"])


# -- the header


def test_headers_parse_in_any_fragments() -> None:
    for header in (v1(), v2()):
        data = header + BANNER
        for end in range(len(header)):
            assert parseHeader(data[:end]) is None
        parsed = parseHeader(data)
        assert parsed is not None
        assert (parsed.source.host, parsed.source.port, parsed.local) == (CLIENT, 4242, False)
        assert parsed.rest == BANNER


def test_v2_local_and_tlvs() -> None:
    parsed = parseHeader(v2local())
    assert parsed is not None and parsed.local and parsed.source is None
    parsed = parseHeader(v2(tlv=b"\x04\x00\x01x") + b"!")
    assert parsed is not None and parsed.source.host == CLIENT and parsed.rest == b"!"


@pytest.mark.parametrize(
    "data",
    [
        BANNER,
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 " + b"1" * V1_MAX,  # no CRLF within 107 bytes
        b"PROXY TCP4 1.2.3.4 5.6.7.8 " + b"9" * 80 + b" 22\r\n",  # CRLF past 107
        b"PROXY TCP4 1.2.3.4 5.6.7.8 port 22\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 22\r\n",
        b"PROXY TCP4 not.an.ip.x 5.6.7.8 1 22\r\n",
        b"PROXY TCP4 \xff\xfe 5.6.7.8 1 22\r\n",
        b"PROXY SCTP 1.2.3.4 5.6.7.8 1 22\r\n",
        b"PROXY\r\n",
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1
        V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_PAYLOAD + 1),
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # too short for TCP4
        V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + bytes(216),  # UNIX
        V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12),  # UDP
        V2_SIGNATURE + b"\x25\x11\x00\x0c" + bytes(12),  # command 5
    ],
)
def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(BadHeader):
        parseHeader(data)


def test_the_v2_bound_is_checked_before_reading_the_body() -> None:
    with pytest.raises(BadHeader):
        parseHeader(V2_SIGNATURE + b"\x21\x11\xff\xff")


# -- connections from a trusted balancer


def test_the_header_gives_the_client_address_everywhere(stack: Stack) -> None:
    protocol, transport = stack.connect(BALANCER)
    assert transport.value() == b""  # no SSH banner before the header
    assert stack.admission.unauthenticated == 0  # nor admission
    protocol.dataReceived(v2()[:10])
    protocol.dataReceived(v2()[10:] + BANNER[:5])
    assert transport.value().startswith(b"SSH-2.0-")
    server = protocol.wrappedProtocol
    assert server.peerAddress == f"{CLIENT}:4242"
    assert server.transport.getPeer() == IPv4Address("TCP", CLIENT, 4242)
    assert clientAddress(server) == CLIENT
    assert stack.admission.perSource == {CLIENT: 1}
    stack.lose(protocol)
    assert stack.accrued(CLIENT) == 1.0  # noauth, charged to the client
    assert stack.accrued(BALANCER) == 0.0
    assert stack.clock.getDelayedCalls() == []


def test_v1_works_too(stack: Stack) -> None:
    protocol, transport = stack.connect(BALANCER)
    protocol.dataReceived(v1("192.0.2.1", 1234) + BANNER)
    assert protocol.wrappedProtocol.peerAddress == "192.0.2.1:1234"
    assert transport.value().startswith(b"SSH-2.0-")
    stack.lose(protocol)


@pytest.mark.parametrize(
    "data", [BANNER, b"PROXY TCP4 1.2.3.4 5.6.7.8 x 22\r\n", b"PROXY " + b"A" * 200]
)
def test_a_balancer_without_a_good_header_is_closed_free(stack: Stack, data: bytes) -> None:
    protocol, transport = stack.connect(BALANCER)
    protocol.dataReceived(data)
    assert transport.disconnecting
    assert transport.value() == b""
    assert protocol.wrappedProtocol is None
    stack.lose(protocol)
    assert stack.accrued(BALANCER) == 0.0
    assert stack.factory.pending == 0
    assert stack.clock.getDelayedCalls() == []


def test_a_stalled_balancer_is_closed_after_the_timeout(stack: Stack) -> None:
    protocol, transport = stack.connect(BALANCER)
    protocol.dataReceived(b"PROXY TCP4 ")
    stack.clock.advance(HEADER_TIMEOUT - 0.1)
    assert not transport.disconnecting
    stack.clock.advance(0.1)
    assert transport.disconnecting
    stack.lose(protocol)
    assert stack.factory.pending == 0
    assert stack.clock.getDelayedCalls() == []


def test_waiting_connections_are_bounded() -> None:
    world = ProxyWorld()
    try:
        stack = Stack(world, maxPending=2)
        waiting = [stack.connect(BALANCER)[0] for _ in range(2)]
        assert stack.connect(BALANCER)[0] is None
        stack.lose(waiting[0])
        third, _ = stack.connect(BALANCER)
        assert third is not None
        for protocol in (waiting[1], third):
            stack.lose(protocol)
        assert stack.factory.pending == 0
    finally:
        world.stop()


@pytest.mark.parametrize(
    "check",
    [
        v2local(),
        b"PROXY UNKNOWN\r\n",
        V2_SIGNATURE + bytes([0x21, 0x00]) + struct.pack("!H", 0),  # PROXY, UNSPEC
    ],
)
def test_health_checks_cost_nothing(stack: Stack, check: bytes) -> None:
    for _ in range(40):
        protocol, transport = stack.connect(BALANCER)
        protocol.dataReceived(check)
        server = protocol.wrappedProtocol
        assert transport.value().startswith(b"SSH-2.0-")
        assert isinstance(server.sourceAddress, BalancerAddress)
        assert server.peerAddress == f"{BALANCER}:40000"
        stack.lose(protocol)
    assert stack.accrued(BALANCER) == 0.0
    protocol, _ = stack.connect(BALANCER)
    protocol.dataReceived(v2())
    assert protocol.wrappedProtocol is not None  # still admitted
    stack.lose(protocol)


def test_admission_judges_the_client_not_the_balancer(stack: Stack) -> None:
    for _ in range(2):
        protocol, _ = stack.connect(BALANCER)
        protocol.dataReceived(v2())
        protocol.wrappedProtocol.penalise("protocol")
        stack.lose(protocol)
    assert stack.admission.tables[4].remaining(CLIENT) > 0
    protocol, transport = stack.connect(BALANCER)
    protocol.dataReceived(v2())
    assert transport.disconnecting and protocol.wrappedProtocol is None
    assert transport.value() == b""
    stack.lose(protocol)
    other, transport = stack.connect(BALANCER)
    other.dataReceived(v2("192.0.2.50"))
    assert other.wrappedProtocol is not None and not transport.disconnecting
    stack.lose(other)
    assert stack.accrued(BALANCER) == 0.0


# -- connections from elsewhere


def test_a_direct_client_proceeds_as_itself(stack: Stack) -> None:
    protocol, transport = stack.connect(STRANGER, 5555)
    assert transport.value().startswith(b"SSH-2.0-")  # admitted at accept
    assert stack.admission.perSource == {STRANGER: 1}
    protocol.dataReceived(b"S")
    protocol.dataReceived(BANNER[1:])
    server = protocol.wrappedProtocol
    assert server.peerAddress == f"{STRANGER}:5555"
    assert server.gotVersion
    stack.lose(protocol)


@pytest.mark.parametrize("header", [v1(), v2()])
def test_a_header_from_elsewhere_is_refused_and_charged(stack: Stack, header: bytes) -> None:
    protocol, transport = stack.connect(STRANGER)
    protocol.dataReceived(header[:3])
    assert not transport.disconnecting
    protocol.dataReceived(header[3:])
    assert transport.disconnecting
    server = protocol.wrappedProtocol
    assert server.peerAddress == f"{STRANGER}:40000"
    protocol.dataReceived(BANNER)  # read no more
    assert not server.gotVersion
    stack.lose(protocol)
    assert stack.accrued(STRANGER) == 10.0  # protocol
    assert stack.accrued(CLIENT) == 0.0


def test_a_penalised_direct_client_is_refused_at_accept(stack: Stack) -> None:
    for _ in range(2):
        protocol, _ = stack.connect(STRANGER)
        protocol.dataReceived(v2())
        stack.lose(protocol)
    assert stack.connect(STRANGER)[0] is None


def test_the_factory_passes_on_what_listening_asks() -> None:
    world = ProxyWorld()
    try:
        stack = Stack(world)
        assert stack.factory.admission is stack.admission
    finally:
        world.stop()

# -*- test-case-name: tests.test_proxy_protocol,tests.test_proxy_protocol_interop -*-
"""
The PROXY protocol (HAProxy's, v1 and v2) on the proxy's SSH listener: the
client address a load balancer in front of the proxy saw, believed only from
the balancers listed (C{--proxyProtocolTrusted}).

The rules (docs/operations.md):

  - A connection from a trusted balancer must start with a PROXY header; one
    that starts with anything else, sends a malformed or oversized header, or
    sends none within L{HEADER_TIMEOUT} seconds is closed, without a byte
    sent and without a penalty (nobody's address is known to charge).
  - Admission (L{diegossh.ssh.admission}: C{MaxStartups}, per-source limits
    and penalties) runs when the header has arrived, with the client's
    address: the SSH listening factory is only asked for a protocol then. At
    most C{maxPending} connections wait for their header at once (beyond
    that, new ones from the balancers are closed at accept), so the waiting
    room has the same kind of bound as the unauthenticated connections.
  - A header with no client address (v2 C{LOCAL}: the balancer's own health
    check; v1 C{UNKNOWN}, which HAProxy's v1 health checks send, and v2
    C{UNSPEC}) is served as a connection from the balancer itself, exempt
    from penalties and the per-source limit
    (L{diegossh.addresses.BalancerAddress}).
  - A connection from anywhere else is a direct client, admitted at accept by
    its socket address as without this option; if it starts with a PROXY
    header, it is closed and charged C{protocol}: nobody else's header is
    believed.

Twisted's parsers (L{twisted.protocols.haproxy}) read the header once it is
complete; the framing around them is ours, because Twisted's wrapper closes a
connection whose first read is shorter than 16 bytes, reads a v2 header of any
length its 16-bit length field claims (64 KiB), accepts a v1 line longer than
107 bytes when it arrives in one read, lets a non-numeric v1 port raise,
refuses the bare C{PROXY UNKNOWN} line the specification allows, has no
timeout and no notion of trusted sources.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet import address
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from zope.interface import directlyProvides, providedBy

from diegossh.addresses import BalancerAddress
from diegossh.ssh.admission import parseExemptList
from diegossh.ssh.transport import _widenSocketIO

log = Logger()

#: The longest v1 line, CRLF included (the specification's bound).
V1_MAX = 107
V1_PREFIX = b"PROXY "
V2_SIGNATURE = V2Parser.PREFIX
#: The longest v2 header we read: its 16 fixed bytes and up to this many of
#: addresses and TLVs (HAProxy's own, without TLVs, sends 12 or 36).
V2_MAX_PAYLOAD = 512
#: Seconds a trusted balancer has to send the header once connected.
HEADER_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ProxyProtocolSettings:
    """
    C{--proxyProtocol} and C{--proxyProtocolTrusted}, parsed once.
    """

    trusted: tuple[Any, ...]

    @classmethod
    def parse(cls, enabled: bool, trusted: str | None) -> ProxyProtocolSettings | None:
        """
        L{None} when off; L{ValueError} names the flag.
        """
        if not enabled:
            if trusted:
                raise ValueError("--proxyProtocolTrusted needs --proxyProtocol")
            return None
        networks = parseExemptList(trusted, "--proxyProtocolTrusted")
        if not networks:
            raise ValueError(
                "--proxyProtocol needs --proxyProtocolTrusted: the balancers' addresses or CIDRs"
            )
        return cls(networks)

    def trusts(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted)


class BadHeader(Exception):
    """
    A PROXY header that is not one, too long, or names no usable address.
    """


def startsLikeHeader(data: bytes) -> bool | None:
    """
    Whether C{data} (a connection's first bytes) starts a PROXY header:
    C{True}, C{False}, or L{None} while it is too short to tell.
    """
    for prefix in (V1_PREFIX, V2_SIGNATURE):
        if data.startswith(prefix):
            return True
        if prefix.startswith(data):
            return None
    return False


@dataclass(frozen=True, slots=True)
class Header:
    """
    A parsed header: the client's address (L{None}: the balancer's own
    connection, or an unknown one), whether it is v2 C{LOCAL}, and the bytes
    after it.
    """

    source: Any
    local: bool
    rest: bytes


def _checkedSource(source: Any) -> Any:
    if source is None:
        return None
    if not isinstance(source, address.IPv4Address | address.IPv6Address) or source.type != "TCP":
        raise BadHeader(f"not a TCP address: {source!r}")
    try:
        ipaddress.ip_address(source.host)
    except ValueError:
        raise BadHeader(f"not an IP address: {source.host!r}") from None
    if not 0 <= source.port <= 65535:
        raise BadHeader(f"port out of range: {source.port}")
    return source


def parseHeader(buffer: bytes) -> Header | None:
    """
    The header at the start of C{buffer}, or L{None} while it is incomplete.

    @raise BadHeader: when it is malformed or longer than the bounds
        (L{V1_MAX}; 16 + L{V2_MAX_PAYLOAD}), or C{buffer} starts with no
        header at all.
    """
    started = startsLikeHeader(buffer)
    if started is None:
        return None
    if not started:
        raise BadHeader("no PROXY header")
    if buffer.startswith(V1_PREFIX):
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buffer) >= V1_MAX:
                raise BadHeader(f"v1 header longer than {V1_MAX} bytes")
            return None
        line, rest = buffer[:end], buffer[end + 2 :]
        if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
            return Header(None, False, rest)  # Twisted's parser refuses the first
        try:
            info = V1Parser.parse(line)
            return Header(_checkedSource(info.source), False, rest)
        except BadHeader:
            raise
        except Exception as e:  # the parser's, and int()'s and decode()'s
            raise BadHeader(f"malformed v1 header ({e.__class__.__name__})") from None
    if len(buffer) < 16:
        return None
    if buffer[12] & 0xF0 != 0x20:
        raise BadHeader("v2 header of an unknown version")
    (length,) = struct.unpack("!H", buffer[14:16])
    if length > V2_MAX_PAYLOAD:
        raise BadHeader(f"v2 header of {16 + length} bytes (at most {16 + V2_MAX_PAYLOAD})")
    if len(buffer) < 16 + length:
        return None
    header, rest = buffer[: 16 + length], buffer[16 + length :]
    try:
        info = V2Parser.parse(header)
    except Exception as e:
        raise BadHeader(f"malformed v2 header ({e.__class__.__name__})") from None
    local = buffer[12] & 0x0F == 0
    return Header(None if local else _checkedSource(info.source), local, rest)


def _describe(peer: Any) -> str:
    host = getattr(peer, "host", "?")
    port = getattr(peer, "port", "?")
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class ProxyProtocolWrapper(policies.ProtocolWrapper):
    """
    One accepted connection: a trusted balancer's, which waits for its header
    before the SSH protocol is built (C{wrappedProtocol} is L{None} until
    then), or a direct client's, whose first bytes are watched for a header
    it may not send. Once the SSH protocol runs, this is its transport, and
    C{getPeer} is the client's address.
    """

    factory: ProxyProtocolFactory
    transport: Any
    wrappedProtocol: Any

    def __init__(
        self, factory: ProxyProtocolFactory, wrapped: Any, peer: Any, trusted: bool
    ) -> None:
        super().__init__(factory, wrapped)
        self.peer = peer
        self.trusted = trusted
        self.clientAddress: Any = None
        self._buffer = b""
        self._watching = True
        self._refused = False
        self._timer: Any = None

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        # the SSH transport widens its socket's reads and writes only when
        # it is the socket's protocol: do it for it here
        _widenSocketIO(transport)
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.makeConnection(self)
        else:
            self.factory.pending += 1
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timedOut)

    def getPeer(self) -> Any:
        if self.clientAddress is not None:
            return self.clientAddress
        return self.transport.getPeer()

    def _refuse(self, why: str) -> None:
        log.info(
            "closing the connection from {peer}: {why} (PROXY protocol)",
            peer=_describe(self.peer),
            why=why,
        )
        self._watching = False
        self._refused = True
        self._buffer = b""
        # closed, not aborted: a direct client was greeted already, and what
        # was sent goes before the FIN (nothing is read from it any more)
        self.transport.loseConnection()

    def _timedOut(self) -> None:
        self._stopWaiting()
        self._refuse(f"no PROXY header within {self.factory.timeout:g}s")

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._watching:
            if self.wrappedProtocol is not None:
                self.wrappedProtocol.dataReceived(data)
            return
        self._buffer += data
        if self.wrappedProtocol is not None:
            self._watchDirect()
        else:
            self._readHeader()

    def _watchDirect(self) -> None:
        started = startsLikeHeader(self._buffer)
        if started is None:
            return
        if started:
            penalise = getattr(self.wrappedProtocol, "penalise", None)
            if penalise is not None:
                penalise("protocol")
            self._refuse("a PROXY header from an address not in --proxyProtocolTrusted")
            return
        self._watching = False
        data, self._buffer = self._buffer, b""
        self.wrappedProtocol.dataReceived(data)

    def _readHeader(self) -> None:
        try:
            header = parseHeader(self._buffer)
        except BadHeader as e:
            self._stopWaiting()
            self._refuse(f"from a trusted balancer: {e}")
            return
        if header is None:
            return
        self._stopWaiting()
        self._watching = False
        self._buffer = b""
        if header.source is None:
            # v2 LOCAL, or v1 UNKNOWN / v2 UNSPEC (HAProxy's v1 health checks)
            log.debug("a health check (PROXY LOCAL) from {peer}", peer=_describe(self.peer))
            source: Any = BalancerAddress(self.peer)
        else:
            source = header.source or self.peer
            self.clientAddress = header.source
        protocol = self.factory.wrappedFactory.buildProtocol(source)
        if protocol is None:
            log.debug(
                "refusing {client} (via {peer}) at admission",
                client=_describe(source),
                peer=_describe(self.peer),
            )
            self.transport.loseConnection()
            return
        self.wrappedProtocol = protocol
        protocol.makeConnection(self)
        if header.rest and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(header.rest)

    def _stopWaiting(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
            self.factory.pending -= 1

    def connectionLost(self, reason: Any = None) -> None:
        self._stopWaiting()
        if self.wrappedProtocol is not None:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class ProxyProtocolFactory(policies.WrappingFactory[ProxyProtocolWrapper]):
    """
    The listening factory with the PROXY protocol in front of C{wrapped} (the
    SSH listener's, admission included: L{diegossh.ssh.admission}).
    """

    protocol = ProxyProtocolWrapper

    def __init__(
        self,
        wrapped: Any,
        settings: ProxyProtocolSettings,
        clock: IReactorTime,
        maxPending: int,
        timeout: float = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(wrapped)
        self.settings = settings
        self.clock = clock
        self.maxPending = maxPending
        self.timeout = timeout
        self.pending = 0

    def __getattr__(self, name: str) -> Any:
        # what the listening code asks of the SSH factory (its admission...)
        if name == "wrappedFactory":
            raise AttributeError(name)
        return getattr(self.wrappedFactory, name)

    def buildProtocol(self, addr: Any) -> Any:
        host = getattr(addr, "host", None)
        if isinstance(host, str) and self.settings.trusts(host):
            if self.pending >= self.maxPending:
                log.info(
                    "closing the connection from {peer}: {count} connections are waiting "
                    "for their PROXY header",
                    peer=_describe(addr),
                    count=self.pending,
                )
                return None
            return ProxyProtocolWrapper(self, None, addr, True)
        protocol = self.wrappedFactory.buildProtocol(addr)
        if protocol is None:
            return None
        return ProxyProtocolWrapper(self, protocol, addr, False)

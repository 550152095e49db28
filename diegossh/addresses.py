# -*- test-case-name: tests.test_admission -*-
"""
Listen addresses as diego-ssh writes them: C{host:port}, C{:port} for every
interface, C{[v6]:port}; and which client address a connection counts as
(L{clientAddress}), and the load balancer's own connections
(L{BalancerAddress}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def parseAddress(text: str) -> tuple[str, int]:
    """
    Split C{host:port}; an empty host means every interface.

    @raise ValueError: with a message naming the address.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"address {text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"address {text!r} has no numeric port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"address {text!r} has a port out of range")
    return host, number


def serverEndpoint(reactor: Any, text: str, backlog: int = 511) -> Any:
    """
    A listening endpoint for C{text}.
    """
    # Here, not at the top: twisted.internet.endpoints brings TLS and
    # pyOpenSSL with it, which code that only parses addresses (the daemon's
    # settings, admission) should not pay for (issue 15).
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    host, port = parseAddress(text)
    if ":" in host:
        return TCP6ServerEndpoint(reactor, port, backlog=backlog, interface=host)
    return TCP4ServerEndpoint(reactor, port, backlog=backlog, interface=host or "0.0.0.0")  # noqa: S104


@dataclass(frozen=True, slots=True)
class BalancerAddress:
    """
    A trusted load balancer's own connection (a PROXY protocol v2 C{LOCAL}
    header: its health check), as the address a connection counts as: the
    balancer's, exempt from per-source limits and penalties, which would
    otherwise charge every health check to the address all users share
    (L{diegossh.proxy.proxyprotocol}).
    """

    address: Any

    @property
    def type(self) -> str:
        return str(getattr(self.address, "type", "TCP"))

    @property
    def host(self) -> Any:
        return getattr(self.address, "host", None)

    @property
    def port(self) -> Any:
        return getattr(self.address, "port", None)


def isBalancer(transport: Any) -> bool:
    """
    Whether a server transport is a load balancer's own connection
    (L{BalancerAddress}).
    """
    return isinstance(getattr(transport, "sourceAddress", None), BalancerAddress)


def clientAddress(transport: Any) -> str:
    """
    The address a connection counts as, for admission and penalties: the one
    place that decides it.

    A server transport's C{sourceAddress} (an L{IAddress} with a C{host}),
    when set, wins: the listening side sets it at accept, before the
    connection has a socket transport; with the PROXY protocol, it is the
    client address the trusted balancer's header gave (the listening factory
    is asked for the connection once the header has arrived:
    L{diegossh.proxy.proxyprotocol}). Otherwise the socket's
    peer. IPv4-mapped IPv6 addresses (a dual-stack listener) count as IPv4.
    C{"?"} when nothing is known.
    """
    address = getattr(transport, "sourceAddress", None)
    if address is None:
        socketTransport = getattr(transport, "transport", None)
        if socketTransport is not None:
            address = socketTransport.getPeer()
    host = getattr(address, "host", None)
    if not isinstance(host, str) or not host:
        return "?"
    host = host.split("%", 1)[0]  # an IPv6 scope
    if host.lower().startswith("::ffff:") and "." in host:
        return host[7:]
    return host

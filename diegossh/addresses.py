# -*- test-case-name: tests.test_admission -*-
"""
Listen addresses as diego-ssh writes them: C{host:port}, C{:port} for every
interface, C{[v6]:port}; and which client address a connection counts as
(L{clientAddress}).
"""

from __future__ import annotations

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


def clientAddress(transport: Any) -> str:
    """
    The address a connection counts as, for admission and penalties: the one
    place that decides it.

    A server transport's C{sourceAddress} (an L{IAddress} with a C{host}),
    when set, wins: the listening side sets it at accept, before the
    connection has a socket transport, and a load balancer's client address
    (PROXY protocol, later) is to replace it there. Otherwise the socket's
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

# -*- test-case-name: tests.test_forwarding_remote,tests.test_fuzz_parsers -*-
"""
The request and channel-open payloads of RFC 4254 section 7, parsed strictly:
a peer's bytes become a host string and a port in range, or L{MalformedRequest}.
"""

from __future__ import annotations

import struct

from twisted.conch.ssh import common

__all__ = [
    "MalformedRequest",
    "packForwardedTCPIP",
    "packPort",
    "parseDirectTCPIP",
    "parseTCPIPForward",
]


class MalformedRequest(ValueError):
    """
    The payload does not parse, a host is not UTF-8 or a port is out of range.
    """


def _hostPort(data: bytes) -> tuple[str, int, bytes]:
    try:
        rawHost, rest = common.getNS(data)
        (port,) = struct.unpack(">L", rest[:4])
    except (struct.error, IndexError) as e:
        raise MalformedRequest("truncated host and port") from e
    try:
        host = rawHost.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedRequest("host is not UTF-8") from e
    if "\0" in host or port > 0xFFFF:
        raise MalformedRequest("bad host or port")
    return host, port, rest[4:]


def parseDirectTCPIP(data: bytes) -> tuple[str, int, str, int]:
    """
    C{direct-tcpip} open data: host and port to connect to, originator address
    and port.
    """
    host, port, rest = _hostPort(data)
    origHost, origPort, _ = _hostPort(rest)
    if port == 0:
        raise MalformedRequest("port 0 is not a destination")
    return host, port, origHost, origPort


def parseTCPIPForward(data: bytes) -> tuple[str, int]:
    """
    C{tcpip-forward} / C{cancel-tcpip-forward} data: address to bind and port.
    """
    host, port, _ = _hostPort(data)
    return host, port


def packForwardedTCPIP(address: str, port: int, origHost: str, origPort: int) -> bytes:
    """
    C{forwarded-tcpip} open data: the address and port the client asked for
    (so it recognises its forward), then who connected.
    """
    return (
        common.NS(address.encode("utf-8"))
        + struct.pack(">L", port)
        + common.NS(origHost.encode("utf-8"))
        + struct.pack(">L", origPort)
    )


def packPort(port: int) -> bytes:
    """
    The reply data of a C{tcpip-forward} for port 0: the port allocated.
    """
    return struct.pack(">L", port)

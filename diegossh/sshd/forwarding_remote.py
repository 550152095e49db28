# -*- test-case-name: tests.test_forwarding_remote -*-
"""
C{tcpip-forward} / C{cancel-tcpip-forward} (C{ssh -R}): a listener per request,
a C{forwarded-tcpip} channel to the client per accepted connection, relayed by
L{RelayChannel}; every listener closes when the SSH connection ends, and at
most L{MAX_LISTENERS} are open at once per connection.

Bind addresses follow OpenSSH's sshd with C{GatewayPorts no}: whatever the
client asks for, the listener is on loopback (C{::1} if that is what was asked,
C{127.0.0.1} otherwise). With C{gatewayPorts=True} (C{clientspecified}) the
requested address is used: empty, C{*} or C{0.0.0.0} mean every IPv4 address,
C{localhost} means C{127.0.0.1}, and anything else must be an IP literal (no
blocking name lookup on bind).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import ServerFactory

from diegossh.logtext import SafeLogger
from diegossh.ssh.tcpip_relay import RelayChannel, SocketProtocol, SocketSet
from diegossh.ssh.tcpip_wire import (
    MalformedRequest,
    packForwardedTCPIP,
    packPort,
    parseTCPIPForward,
)

__all__ = ["MAX_LISTENERS", "ForwardedTCPIPChannel", "RemoteForwards", "bindAddress"]

#: listeners per SSH connection. OpenSSH's sshd has no such limit (only
#: MaxSessions, for channels); each listener is a descriptor, so one
#: connection could otherwise hold the process's descriptors. Sixteen is more
#: remote forwards than a person sets up by hand; a request beyond it fails.
MAX_LISTENERS = 16
_ANY = "0.0.0.0"  # noqa: S104 -- only with gatewayPorts, when the client asks for it

_log = SafeLogger()


class ForwardedTCPIPChannel(RelayChannel):
    name = b"forwarded-tcpip"


def bindAddress(requested: str, gatewayPorts: bool = False) -> str | None:
    """
    The interface to listen on for a request to bind C{requested}, or L{None}
    to refuse.
    """
    if not gatewayPorts:
        return "::1" if requested == "::1" else "127.0.0.1"
    if requested in ("", "*", _ANY):
        return _ANY
    if requested == "localhost":
        return "127.0.0.1"
    if isIPAddress(requested) or isIPv6Address(requested):
        return requested
    return None


class _ListenerFactory(ServerFactory):
    def __init__(self, forwards: RemoteForwards, address: str, port: int) -> None:
        self.forwards = forwards
        self.address = address
        self.port = port

    def buildProtocol(self, addr: Any) -> SocketProtocol | None:
        return self.forwards._accepted(self.address, self.port, addr)


class RemoteForwards:
    """
    The remote forwards of one SSH connection.

    L{request} and L{cancel} answer synchronously, in the form Conch's
    C{gotGlobalRequest} replies with: C{(1, data)} or C{1} for success, C{0}
    for failure. (Conch's connection service cannot wait for a L{Deferred}
    there, and listening on a port does not need to.)
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        conn: Any,
        *,
        gatewayPorts: bool = False,
        maxListeners: int = MAX_LISTENERS,
        channelClass: type[RelayChannel] = ForwardedTCPIPChannel,
        sockets: SocketSet | None = None,
    ) -> None:
        self.reactor = reactor
        self.sockets = sockets
        self.conn = conn
        self.gatewayPorts = gatewayPorts
        self.maxListeners = maxListeners
        self.channelClass = channelClass
        #: (address as the client sent it, port bound) -> listening port
        self.listeners: dict[tuple[str, int], IListeningPort] = {}
        self._stopped = False

    def request(self, data: bytes) -> tuple[int, bytes] | int:
        """
        A C{tcpip-forward} request: listen, and for port 0 reply with the port
        allocated (RFC 4254 section 7.1).
        """
        try:
            address, port = parseTCPIPForward(data)
        except MalformedRequest:
            return 0
        interface = bindAddress(address, self.gatewayPorts)
        if self._stopped or interface is None or len(self.listeners) >= self.maxListeners:
            return 0
        if (address, port) in self.listeners:
            # Already forwarded (a fixed port asked for twice): refused, and the
            # listener we have is not replaced, so it can still be cancelled.
            return 0
        factory = _ListenerFactory(self, address, port)
        try:
            listening = self.reactor.listenTCP(port, factory, interface=interface)
        except CannotListenError as e:
            _log.info("tcpip-forward {a}:{p} refused: {e}", a=address, p=port, e=e)
            return 0
        bound = listening.getHost().port  # type: ignore[attr-defined]
        if (address, bound) in self.listeners:
            # Only a reactor that let two sockets bind one port gets here;
            # keep the listener we know of rather than orphan it.
            listening.stopListening()
            return 0
        factory.port = bound
        self.listeners[(address, bound)] = listening
        _log.info("tcpip-forward listening on {i}:{p}", i=interface, p=bound)
        if port == 0:
            return 1, packPort(bound)
        return 1

    def cancel(self, data: bytes) -> int:
        """
        A C{cancel-tcpip-forward} request: stop listening (connections already
        forwarded go on).
        """
        try:
            key = parseTCPIPForward(data)
        except MalformedRequest:
            return 0
        listening = self.listeners.pop(key, None)
        if listening is None:
            return 0
        listening.stopListening()
        return 1

    def stopAll(self) -> defer.Deferred[None]:
        """
        Stop every listener, for good: call it when the SSH connection ends.
        """
        self._stopped = True
        listeners = list(self.listeners.values())
        self.listeners.clear()
        stopping = [defer.maybeDeferred(port.stopListening) for port in listeners]
        return defer.gatherResults(stopping).addCallback(lambda _: None)

    def _accepted(self, address: str, port: int, peer: Any) -> SocketProtocol | None:
        if self._stopped:
            return None
        channel = self.channelClass(conn=self.conn)
        channel.clock = self.reactor  # type: ignore[assignment]
        channel.sockets = self.sockets
        origHost = getattr(peer, "host", "")
        origPort = getattr(peer, "port", 0)
        self.conn.openChannel(channel, packForwardedTCPIP(address, port, origHost, origPort))
        return SocketProtocol(channel)

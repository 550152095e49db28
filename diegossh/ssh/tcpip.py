# -*- test-case-name: tests.test_forwarding_direct -*-
"""
C{direct-tcpip} channels (C{ssh -L}, C{-W}, C{-D}, C{-J}): ask the router
where the channel goes, connect, confirm the channel only once connected, and
refuse with the router's refusal or with C{OPEN_CONNECT_FAILED} and the
connect's reason otherwise, as OpenSSH's sshd does.

The daemon and the bastion build their channels here and differ only in their
L{diegossh.interfaces.ITCPRouter}: the daemon's L{HostnameRouter} lets the
container's network decide, the bastion's checks the key's targets and the
operator's fence. Conch keeps the same pieces in C{twisted.conch.ssh.forwarding},
on the global reactor and without backpressure; here the reactor is passed in
and the relay is L{diegossh.ssh.tcpip_relay}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.conch.error import ConchError
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.interfaces import ITCPRouter
from diegossh.logtext import SafeLogger
from diegossh.ssh.tcpip_relay import RelayChannel, SocketFactory
from diegossh.ssh.tcpip_wire import MalformedRequest, parseDirectTCPIP

__all__ = [
    "CONNECT_TIMEOUT",
    "ChannelFactory",
    "DirectTCPIPChannel",
    "HostnameRouter",
    "Refusal",
    "connectFailureReason",
    "makeDirectTCPIPChannel",
    "refusedChannel",
]

#: seconds for name resolution and connect together, as OpenSSH's
#: ConnectTimeout would bound a client's own connect
CONNECT_TIMEOUT = 10.0

_log = SafeLogger()


@dataclass(frozen=True)
class Refusal:
    """
    Why a channel may not open: the text the client prints and the SSH
    open-failure code (RFC 4254 section 5.1) it is refused with.
    """

    reason: str
    code: int = OPEN_ADMINISTRATIVELY_PROHIBITED

    def error(self) -> ConchError:
        """
        The error a channel factory raises (or fails with) to refuse the open.
        """
        return ConchError(self.reason, self.code)


def refusedChannel(reason: str) -> Callable[..., Any]:
    """
    A C{channelLookup} entry that refuses every open with
    C{OPEN_ADMINISTRATIVELY_PROHIBITED} and C{reason}.
    """
    refusal = Refusal(reason)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise refusal.error()

    return refuse


@implementer(ITCPRouter)
class HostnameRouter:
    """
    Every destination, by name or address, through a L{HostnameEndpoint} on
    the reactor passed in: the daemon's router, where the container's own
    network policy decides.
    """

    def __init__(self, reactor: IReactorTCP) -> None:
        self.reactor = reactor

    def route(self, host: str, port: int) -> IStreamClientEndpoint:
        # At the first forwarding, not at start: twisted.internet.endpoints
        # is a daemon's largest Twisted module it needs for nothing else
        # (issue 15).
        from twisted.internet.endpoints import HostnameEndpoint

        return HostnameEndpoint(self.reactor, host, port)


class DirectTCPIPChannel(RelayChannel):
    name = b"direct-tcpip"

    host = ""
    port = 0
    #: what the router chose for C{(host, port)}
    endpoint: IStreamClientEndpoint | None = None


class ChannelFactory(Protocol):
    """
    What C{ConchUser.channelLookup} calls: returns a L{Deferred} firing with
    the channel (diegossh's connection service waits for it).
    """

    def __call__(
        self, remoteWindow: int, remoteMaxPacket: int, data: bytes, avatar: Any
    ) -> defer.Deferred[RelayChannel]: ...


def connectFailureReason(failure: Failure) -> str:
    """
    The text OpenSSH's sshd would send: C{strerror} of the connect.
    """
    value = failure.value
    if isinstance(value, (defer.TimeoutError, error.TimeoutError)):
        return "Connection timed out"
    if isinstance(value, error.DNSLookupError):
        return "Name or service not known"
    osError = getattr(value, "osError", None)
    if isinstance(osError, int):
        return os.strerror(osError)
    if isinstance(value, error.ConnectionRefusedError):
        return "Connection refused"
    if isinstance(value, error.NoRouteError):
        return "No route to host"
    return "connect failed"


def makeDirectTCPIPChannel(
    reactor: IReactorTCP,
    *,
    router: ITCPRouter | None = None,
    connectTimeout: float = CONNECT_TIMEOUT,
    channelClass: type[DirectTCPIPChannel] = DirectTCPIPChannel,
) -> ChannelFactory:
    """
    A factory for C{channelLookup[b"direct-tcpip"]}.

    @param reactor: connects (without a C{router}) and times out through
        this reactor only; it must also provide L{IReactorTime}.
    @param router: where each channel goes, or why it may not open; by
        default a L{HostnameRouter} on C{reactor}.
    @param connectTimeout: seconds for name resolution and connect together.
    @param channelClass: made once the router has chosen; a failed connect is
        reported to it through C{openFailed}, as a refused open of ours is.
    """
    clock: IReactorTime = reactor  # type: ignore[assignment]
    routes = router if router is not None else HostnameRouter(reactor)

    def open(
        remoteWindow: int, remoteMaxPacket: int, data: bytes, avatar: Any
    ) -> defer.Deferred[RelayChannel]:
        try:
            host, port, _, _ = parseDirectTCPIP(data)
        except MalformedRequest as e:
            raise ConchError(f"bad direct-tcpip request: {e}", OPEN_CONNECT_FAILED) from e
        routed = routes.route(host, port)
        if isinstance(routed, Refusal):
            raise routed.error()
        endpoint = IStreamClientEndpoint(routed)
        channel = channelClass(
            remoteWindow=remoteWindow, remoteMaxPacket=remoteMaxPacket, data=data, avatar=avatar
        )
        channel.host, channel.port, channel.endpoint = host, port, endpoint
        channel.clock = clock
        # The avatar's open sockets (ForwardingAvatarMixin): aborted when the
        # SSH connection ends, whatever state their channel is in.
        channel.sockets = getattr(avatar, "forwardingSockets", None)
        connecting = endpoint.connect(SocketFactory(channel))
        timedOut = False

        def timeout() -> None:
            nonlocal timedOut
            timedOut = True
            connecting.cancel()

        timer = clock.callLater(connectTimeout, timeout)

        def connected(_: object) -> RelayChannel:
            timer.cancel()
            _log.debug("direct-tcpip to {host}:{port} connected", host=host, port=port)
            return channel

        def failed(failure: Failure) -> Failure:
            if timer.active():
                timer.cancel()
            if not timedOut and failure.check(defer.CancelledError, error.ConnectingCancelledError):
                # Cancelled by the connection service: nothing to send.
                return Failure(defer.CancelledError())
            reason = "Connection timed out" if timedOut else connectFailureReason(failure)
            _log.info("direct-tcpip {host}:{port}: {reason}", host=host, port=port, reason=reason)
            refusal = Refusal(reason, OPEN_CONNECT_FAILED).error()
            channel.openFailed(refusal)
            return Failure(refusal)

        return connecting.addCallbacks(connected, failed)

    return open

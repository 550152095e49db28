# -*- test-case-name: tests.test_forwarding_direct -*-
"""
C{direct-tcpip} channels (C{ssh -L}, C{-W}, C{-D}): connect first, confirm the
channel only once connected, refuse with C{OPEN_CONNECT_FAILED} and the reason
otherwise, as OpenSSH's sshd does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from twisted.conch.error import ConchError
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure

from diegossh.logtext import SafeLogger
from diegossh.sshd.forwarding_relay import RelayChannel, SocketFactory
from diegossh.sshd.forwarding_wire import MalformedRequest, parseDirectTCPIP

__all__ = [
    "CONNECT_TIMEOUT",
    "DirectTCPIPChannel",
    "connectFailureReason",
    "makeDirectTCPIPChannel",
]

CONNECT_TIMEOUT = 10.0

_log = SafeLogger()


class DirectTCPIPChannel(RelayChannel):
    name = b"direct-tcpip"

    host = ""
    port = 0


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
    connectTimeout: float = CONNECT_TIMEOUT,
    permit: Callable[[str, int], bool] | None = None,
    endpointFor: Callable[[str, int], IStreamClientEndpoint] | None = None,
    channelClass: type[DirectTCPIPChannel] = DirectTCPIPChannel,
) -> ChannelFactory:
    """
    A factory for C{channelLookup[b"direct-tcpip"]}.

    @param reactor: connects (and times out) through this reactor only; it
        must also provide L{IReactorTime}.
    @param connectTimeout: seconds for name resolution and connect together.
    @param permit: C{permit(host, port)} false refuses with
        C{OPEN_ADMINISTRATIVELY_PROHIBITED}; by default every destination is
        allowed (the container's own network policy applies).
    @param endpointFor: builds the endpoint for C{(host, port)}; a
        L{HostnameEndpoint} on C{reactor} by default.
    """
    clock: IReactorTime = reactor  # type: ignore[assignment]

    def open(
        remoteWindow: int, remoteMaxPacket: int, data: bytes, avatar: Any
    ) -> defer.Deferred[RelayChannel]:
        try:
            host, port, _, _ = parseDirectTCPIP(data)
        except MalformedRequest as e:
            raise ConchError(f"bad direct-tcpip request: {e}", OPEN_CONNECT_FAILED) from e
        if permit is not None and not permit(host, port):
            raise ConchError("port forwarding refused", OPEN_ADMINISTRATIVELY_PROHIBITED)
        channel = channelClass(
            remoteWindow=remoteWindow, remoteMaxPacket=remoteMaxPacket, data=data, avatar=avatar
        )
        channel.host, channel.port = host, port
        channel.clock = clock
        # The avatar's open sockets (ForwardingAvatarMixin): aborted when the
        # SSH connection ends, whatever state their channel is in.
        channel.sockets = getattr(avatar, "forwardingSockets", None)
        endpoint = endpointFor(host, port) if endpointFor else HostnameEndpoint(reactor, host, port)
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
            return Failure(ConchError(reason, OPEN_CONNECT_FAILED))

        return connecting.addCallbacks(connected, failed)

    return open

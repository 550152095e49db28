# -*- test-case-name: tests.test_forwarding_remote -*-
"""
Port forwarding for the daemon's avatar: C{direct-tcpip} channels (C{ssh -L},
C{-W}, C{-D}) and C{tcpip-forward} listeners (C{ssh -R}), with backpressure
and half-close both ways. Unix-socket forwarding is refused; agent and X11
forwarding are session requests that a session without handlers refuses.
The C{direct-tcpip} channels and the relay are the shared ones of
L{diegossh.ssh.tcpip}; the listeners are the daemon's own
(L{diegossh.sshd.forwarding_remote}).

Wiring, for a L{twisted.conch.avatar.ConchUser} subclass::

    class Avatar(ForwardingAvatarMixin, ConchUser):
        def __init__(self, reactor):
            ConchUser.__init__(self)
            self.installForwarding(reactor)

        def logout(self):
            self.stopForwarding()

It needs diegossh's connection service (L{diegossh.ssh.connection}), which
confirms a channel only when the L{Deferred} the channel factory returns fires.

See docs/forwarding.md.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP

from diegossh.interfaces import ITCPRouter
from diegossh.ssh.tcpip import (
    CONNECT_TIMEOUT,
    ChannelFactory,
    makeDirectTCPIPChannel,
    refusedChannel,
)
from diegossh.ssh.tcpip_relay import RelayChannel, SocketSet
from diegossh.sshd.forwarding_remote import (
    MAX_LISTENERS,
    ForwardedTCPIPChannel,
    RemoteForwards,
    bindAddress,
)

__all__ = [
    "MAX_LISTENERS",
    "REFUSED_CHANNELS",
    "ForwardedTCPIPChannel",
    "ForwardingAvatarMixin",
    "RemoteForwards",
    "bindAddress",
]

#: channel types a client may ask for that are refused as prohibited (any
#: other unknown type gets OPEN_UNKNOWN_CHANNEL_TYPE)
REFUSED_CHANNELS = (b"direct-streamlocal@openssh.com",)


class ForwardingAvatarMixin:
    """
    Port forwarding for a C{ConchUser}: call L{installForwarding} from
    C{__init__} and L{stopForwarding} from the avatar's logout.

    C{ConchUser.gotGlobalRequest} dispatches C{tcpip-forward} and
    C{cancel-tcpip-forward} to the C{global_*} methods here; other global
    requests (C{streamlocal-forward@openssh.com}, ...) find no method and are
    refused.
    """

    channelLookup: dict[bytes, Any]
    conn: Any

    _forwardingReactor: IReactorTCP | None = None
    _remoteForwards: RemoteForwards | None = None
    _forwardingOptions: dict[str, Any]
    #: every forwarded socket of this connection still open (direct-tcpip
    #: and forwarded-tcpip alike): L{stopForwarding} aborts them
    forwardingSockets: SocketSet

    def installForwarding(
        self,
        reactor: IReactorTCP,
        *,
        connectTimeout: float = CONNECT_TIMEOUT,
        router: ITCPRouter | None = None,
        gatewayPorts: bool = False,
        maxListeners: int = MAX_LISTENERS,
        directFactory: ChannelFactory | None = None,
        forwardedChannelClass: type[RelayChannel] = ForwardedTCPIPChannel,
    ) -> None:
        """
        Register C{direct-tcpip} (and the refusals) in C{channelLookup} and
        enable C{tcpip-forward}.

        @param router: where C{direct-tcpip} channels go, or why not; by
            default every destination (the container's network decides).
        """
        self._forwardingReactor = reactor
        self.forwardingSockets = SocketSet()
        self._forwardingOptions = {
            "gatewayPorts": gatewayPorts,
            "maxListeners": maxListeners,
            "channelClass": forwardedChannelClass,
            "sockets": self.forwardingSockets,
        }
        self.channelLookup[b"direct-tcpip"] = directFactory or makeDirectTCPIPChannel(
            reactor, router=router, connectTimeout=connectTimeout
        )
        for name in REFUSED_CHANNELS:
            self.channelLookup[name] = refusedChannel(f"{name.decode()} channels are not supported")

    @property
    def remoteForwards(self) -> RemoteForwards:
        """
        This connection's remote forwards, made on first use.
        """
        if self._remoteForwards is None:
            if self._forwardingReactor is None:
                raise RuntimeError("installForwarding was not called")
            self._remoteForwards = RemoteForwards(
                self._forwardingReactor, self.conn, **self._forwardingOptions
            )
        return self._remoteForwards

    def global_tcpip_forward(self, data: bytes) -> tuple[int, bytes] | int:
        if self._forwardingReactor is None:
            return 0
        return self.remoteForwards.request(data)

    def global_cancel_tcpip_forward(self, data: bytes) -> int:
        if self._remoteForwards is None:
            return 0
        return self._remoteForwards.cancel(data)

    def stopForwarding(self) -> defer.Deferred[None]:
        """
        Close every listener and abort every forwarded socket still open
        (even one still passing on what the client sent: the client is
        gone); no more C{tcpip-forward} for this avatar.
        """
        self._forwardingReactor = None
        sockets = getattr(self, "forwardingSockets", None)
        if sockets is not None:
            sockets.abortAll()
        forwards, self._remoteForwards = self._remoteForwards, None
        if forwards is None:
            return defer.succeed(None)
        return forwards.stopAll()

# -*- test-case-name: tests.test_bastion_realm,tests.test_bastion_docker_interop -*-
"""
The bastion realm: a key logs in when a target published it, and the user it
becomes can open C{direct-tcpip} tunnels to the targets that published that
key, inside the operator's host and port fence. Nothing else: no shell, no
exec, no subsystem, no remote forwarding on the proxy itself.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from diegossh.bastion.keycache import Destination, KeyCache
from diegossh.bastion.policy import TargetPolicy
from diegossh.interfaces import IKeyRealm, ITCPRouter
from diegossh.proxy.realms import BadCredentials, KeyLogin
from diegossh.ssh.tcpip import DirectTCPIPChannel, Refusal, makeDirectTCPIPChannel, refusedChannel

access = Logger(namespace="diegossh.access")

SESSION_REFUSED = (
    "this proxy only opens tunnels to targets: "
    "use ssh -J or ProxyCommand='ssh -W %h:%p ...' to reach a target's own sshd"
)


class TargetEndpoint(HostnameEndpoint):
    """
    The connect to a target's address, with the target it reaches (for the
    access log).
    """

    def __init__(self, reactor: Any, destination: Destination, port: int) -> None:
        super().__init__(reactor, destination.address, port)
        self.destination = destination


class TunnelChannel(DirectTCPIPChannel):
    """
    A C{direct-tcpip} channel to a target (its C{endpoint} is a
    L{TargetEndpoint}, its C{avatar} the L{TunnelUser}): logs its outcome
    and counts its bytes for the access log.
    """

    bytesIn = 0  # from the client to the target
    bytesOut = 0  # from the target to the client
    started: float | None = None
    avatar: TunnelUser
    endpoint: TargetEndpoint

    def channelOpen(self, specificData: bytes) -> None:
        user = self.avatar
        user.tunnels += 1
        self.started = user.realm.clock.seconds()
        destination = self.endpoint.destination
        user.logTunnel("opened", destination.name, self.port, address=destination.address)
        super().channelOpen(specificData)

    def openFailed(self, reason: Any) -> None:
        super().openFailed(reason)
        if isinstance(reason, ConchError):
            name = self.endpoint.destination.name
            self.avatar.logTunnel("failed", name, self.port, reason=str(reason.value))

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        super().dataReceived(data)

    def socketData(self, data: bytes) -> None:
        self.bytesOut += len(data)
        super().socketData(data)

    def closed(self) -> None:
        super().closed()
        started, self.started = self.started, None
        if started is None:
            return
        destination = self.endpoint.destination
        self.avatar.logTunnel(
            "closed",
            destination.name,
            self.port,
            address=destination.address,
            bytes_from_client=self.bytesIn,
            bytes_to_client=self.bytesOut,
            duration=self.avatar.realm.clock.seconds() - started,
        )


@implementer(ITCPRouter)
class TunnelUser(ConchUser):
    """
    One bastion login: tunnels only, each routed to a target that published
    the key, checked at the moment it opens (a target that stopped
    publishing the key is closed to new tunnels at once).
    """

    def __init__(self, realm: BastionRealm, login: KeyLogin, client: str) -> None:
        ConchUser.__init__(self)
        self.realm = realm
        self.login = login
        self.client = client
        self.blob: bytes = login.grant
        self.started = realm.clock.seconds()
        self.tunnels = 0
        self.channelLookup[b"direct-tcpip"] = makeDirectTCPIPChannel(
            realm.reactor,
            router=self,
            connectTimeout=realm.connectTimeout,
            channelClass=TunnelChannel,
        )
        self.channelLookup[b"session"] = refusedChannel(SESSION_REFUSED)
        for name in (b"direct-streamlocal@openssh.com", b"x11", b"auth-agent@openssh.com"):
            self.channelLookup[name] = refusedChannel(SESSION_REFUSED)

    # ConchUser refuses global requests it has no method for: tcpip-forward
    # (ssh -R on the proxy itself) is refused that way.

    def route(self, host: str, port: int) -> TargetEndpoint | Refusal:
        """
        The key's target at C{host}, inside the operator's fence, or why not.
        """
        realm = self.realm
        reason = realm.policy.refusal(realm.cache.targetName(host), port)
        destination = None
        if reason is None:
            destination = realm.cache.destination(self.blob, host, port)
            if destination is None:
                reason = f"your key does not open {host}"
        if reason is not None or destination is None:
            reason = reason or "refused"
            self.logTunnel("refused", host, port, reason=reason)
            return Refusal(reason)
        return TargetEndpoint(realm.reactor, destination, port)

    def logTunnel(self, outcome: str, target: str, port: int, **fields: Any) -> None:
        access.info(
            "Tunnel by {client} ({fingerprint}) to {target}:{port}: {outcome}",
            event="tunnel",
            outcome=outcome,
            realm=self.realm.name,
            client=self.client,
            username=self.login.username,
            fingerprint=self.login.fingerprint,
            target=target,
            port=port,
            **fields,
        )

    def logout(self) -> None:
        access.info(
            "Bastion session ended for {client} ({fingerprint}): {tunnels} tunnels, "
            "{duration:.3f}s",
            event="session_end",
            realm=self.realm.name,
            client=self.client,
            username=self.login.username,
            fingerprint=self.login.fingerprint,
            tunnels=self.tunnels,
            duration=self.realm.clock.seconds() - self.started,
        )


@implementer(IKeyRealm)
class BastionRealm:
    """
    @param cache: the L{KeyCache}, started by the realm's service.
    """

    name = "bastion"

    def __init__(
        self, reactor: Any, cache: KeyCache, policy: TargetPolicy, connectTimeout: float
    ) -> None:
        self.reactor = reactor
        self.clock = reactor
        self.cache = cache
        self.policy = policy
        self.connectTimeout = connectTimeout

    def authorize(self, username: str, key: Any) -> defer.Deferred[bytes]:
        blob = key.blob()

        async def check() -> bytes:
            if not await self.cache.lookup(blob):
                raise BadCredentials()
            return blob

        return defer.ensureDeferred(check())

    def avatarFor(self, login: Any, client: str) -> TunnelUser:
        assert isinstance(login, KeyLogin)
        user = TunnelUser(self, login, client)
        access.info(
            "Bastion login by {client} as {username} with {fingerprint}",
            event="login",
            outcome="success",
            realm=self.name,
            client=client,
            username=login.username,
            fingerprint=login.fingerprint,
        )
        return user


__all__ = ["BastionRealm", "TunnelChannel", "TunnelUser"]

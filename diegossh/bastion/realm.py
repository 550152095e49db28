# -*- test-case-name: tests.test_bastion_interop -*-
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
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from diegossh.bastion.keycache import KeyCache
from diegossh.bastion.policy import TargetPolicy
from diegossh.interfaces import IKeyRealm
from diegossh.proxy.keylogin import KeyLogin
from diegossh.proxy.login import BadCredentials
from diegossh.sshd.forwarding import refusedChannel
from diegossh.sshd.forwarding_direct import DirectTCPIPChannel, makeDirectTCPIPChannel
from diegossh.sshd.forwarding_wire import MalformedRequest, parseDirectTCPIP

access = Logger(namespace="diegossh.access")

SESSION_REFUSED = (
    "this proxy only opens tunnels to targets: "
    "use ssh -J or ProxyCommand='ssh -W %h:%p ...' to reach a target's own sshd"
)


class TunnelChannel(DirectTCPIPChannel):
    """
    A C{direct-tcpip} channel that counts its bytes for the access log.
    """

    bytesIn = 0  # from the client to the target
    bytesOut = 0  # from the target to the client
    onClosed: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        super().dataReceived(data)

    def socketData(self, data: bytes) -> None:
        self.bytesOut += len(data)
        super().socketData(data)

    def closed(self) -> None:
        super().closed()
        callback, self.onClosed = self.onClosed, None
        if callback is not None:
            callback(self)


class TunnelUser(ConchUser):
    """
    One bastion login: tunnels only, each checked against the key's targets
    at the moment it opens (a target that stopped publishing the key is
    closed to new tunnels at once).
    """

    def __init__(self, realm: BastionRealm, login: KeyLogin, client: str) -> None:
        ConchUser.__init__(self)
        self.realm = realm
        self.login = login
        self.client = client
        self.blob: bytes = login.grant
        self.started = realm.clock.seconds()
        self.tunnels = 0
        self._open = makeDirectTCPIPChannel(
            realm.reactor,
            connectTimeout=realm.connectTimeout,
            endpointFor=self._endpointFor,
            channelClass=TunnelChannel,
        )
        self._destinations: dict[tuple[str, int], Any] = {}
        self.channelLookup[b"direct-tcpip"] = self._openTunnel
        self.channelLookup[b"session"] = refusedChannel(SESSION_REFUSED)
        for name in (b"direct-streamlocal@openssh.com", b"x11", b"auth-agent@openssh.com"):
            self.channelLookup[name] = refusedChannel(SESSION_REFUSED)

    # ConchUser refuses global requests it has no method for: tcpip-forward
    # (ssh -R on the proxy itself) is refused that way.

    def _openTunnel(
        self, remoteWindow: int, remoteMaxPacket: int, data: bytes, avatar: Any
    ) -> defer.Deferred[Any]:
        try:
            host, port, _, _ = parseDirectTCPIP(data)
        except MalformedRequest as e:
            raise ConchError(f"bad direct-tcpip request: {e}", OPEN_CONNECT_FAILED) from e
        realm = self.realm
        name = realm.cache.targetName(host)
        reason = realm.policy.refusal(name, port)
        destination = None
        if reason is None:
            destination = realm.cache.destination(self.blob, host, port)
            if destination is None:
                reason = f"your key does not open {host}"
        if reason is not None or destination is None:
            reason = reason or "refused"
            self._logTunnel("refused", host, port, reason=reason)
            raise ConchError(reason, OPEN_ADMINISTRATIVELY_PROHIBITED)
        self._destinations[(host, port)] = destination
        d = self._open(remoteWindow, remoteMaxPacket, data, avatar)

        def opened(channel: TunnelChannel) -> TunnelChannel:
            self.tunnels += 1
            started = realm.clock.seconds()
            self._logTunnel("opened", destination.name, port, address=destination.address)

            def ended(ch: TunnelChannel) -> None:
                self._logTunnel(
                    "closed",
                    destination.name,
                    port,
                    address=destination.address,
                    bytes_from_client=ch.bytesIn,
                    bytes_to_client=ch.bytesOut,
                    duration=realm.clock.seconds() - started,
                )

            channel.onClosed = ended
            return channel

        def failed(failure: Any) -> Any:
            value = failure.value
            if isinstance(value, ConchError):
                self._logTunnel("failed", destination.name, port, reason=str(value.value))
            return failure

        return d.addCallbacks(opened, failed)

    def _endpointFor(self, host: str, port: int) -> Any:
        destination = self._destinations.pop((host, port))
        return HostnameEndpoint(self.realm.reactor, destination.address, port)

    def _logTunnel(self, outcome: str, target: str, port: int, **fields: Any) -> None:
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

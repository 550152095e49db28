# -*- test-case-name: tests.test_proxy_server,tests.test_proxy_interop -*-
"""
The user-facing side of the proxy: the SSH server users log into, the login
that dials the container before it succeeds, and the idle timeout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.conch.error import IgnoreAuthentication, ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, keys, transport
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.interfaces import IConnectionTelemetry, IProxyMetrics
from diegossh.logtext import SafeLogger
from diegossh.proxy import accesslog
from diegossh.proxy.backend import CLOSE_TIMEOUT, BackendSlot, BackendTransport
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.keylogin import KeyLogin
from diegossh.proxy.login import BadCredentials, Denied, LoginResult, ProxyCredentials
from diegossh.proxy.relay import ClientRelayService, Relay
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.connection import SSHConnection
from diegossh.ssh.factory import SSHServerFactory, UserAuthServer, unreadablePublicKeyRequest
from diegossh.ssh.keys import sha256Fingerprint
from diegossh.ssh.metrics import NO_METRICS, metricsOf
from diegossh.ssh.transport import SSHServerTransport

log = SafeLogger()
# See diegossh.sshd.tap.VERSION: the client's eow@openssh.com must reach the
# container through the relay, and OpenSSH sends it only to "OpenSSH*" servers.
VERSION = b"SSH-2.0-OpenSSH_compatible diego-ssh-proxy"
MSG_USERAUTH_BANNER = 53


class ProxyServerTransport(SSHServerTransport):
    """
    Our server transport plus an idle timeout: a connection on which nothing
    happens (from the user or from the container) for C{idleTimeout} seconds
    is closed, before or after login.
    """

    idleTimeout: float = 300.0
    _idleTimer: Any = None
    _closeTimer: Any = None
    _lastActivity = 0.0
    backendSlot: BackendSlot | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.peerAddress = _address(self.transport.getPeer())
        # The one backend this connection may have (issue 11): set up once,
        # released by this connection's end whatever the phase.
        self.backendSlot = BackendSlot(self.peerAddress)
        self.activity()
        if self.idleTimeout > 0:
            self._idleTimer = self._clock().callLater(self.idleTimeout, self._checkIdle)

    def activity(self) -> None:
        self._lastActivity = self._clock().seconds()

    def dataReceived(self, data: bytes) -> None:
        self._lastActivity = self._clock().seconds()
        super().dataReceived(data)

    def _checkIdle(self) -> None:
        self._idleTimer = None
        idle = self._clock().seconds() - self._lastActivity
        if idle >= self.idleTimeout:
            log.info("closing idle connection from {client}", client=self.peerAddress)
            self.closeSoon(b"idle timeout")
            return
        self._idleTimer = self._clock().callLater(self.idleTimeout - idle, self._checkIdle)

    def closeSoon(self, reason: bytes) -> None:
        """
        Say goodbye and close; a user who does not read what is still queued
        gets L{CLOSE_TIMEOUT} seconds, then the socket is aborted.
        """
        self.sendDisconnect(transport.DISCONNECT_BY_APPLICATION, reason)
        if self.transport is not None and self.transport.connected and self._closeTimer is None:
            self._closeTimer = self._clock().callLater(
                CLOSE_TIMEOUT, self.transport.abortConnection
            )

    def connectionLost(self, reason: Any = None) -> None:
        for name in ("_idleTimer", "_closeTimer"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)
        super().connectionLost(reason)
        if self.backendSlot is not None:
            self.backendSlot.release()


class _AddressedPortal:
    """
    The portal, with the client's address as the login's mind: realms whose
    sessions end here (L{diegossh.interfaces.IKeyRealm}) log who they serve.
    """

    def __init__(self, portal: Portal, client: Any) -> None:
        self._portal = portal
        self._client = client

    def listCredentialsInterfaces(self) -> list[Any]:
        return self._portal.listCredentialsInterfaces()

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> defer.Deferred[Any]:
        return self._portal.login(credentials, self._client if mind is None else mind, *interfaces)


class ProxyUserAuthServer(UserAuthServer):
    """
    Password logins for the relaying realms, public keys for the realms that
    end sessions here (each offered only when such a realm is enabled). A
    denial after the secret checked out tells the user why in a banner; every
    refusal is logged.
    """

    transport: Any
    # counted here, by realm and reason (_denied, ProxyAvatar, ProxyRealm)
    countsLogins = False

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self._pendingLogins: set[defer.Deferred[Any]] = set()
        # refusals waiting out the password delay, and their timers
        self._delays: dict[defer.Deferred[Any], Any] = {}
        slot = getattr(self.transport, "backendSlot", None)
        self.portal = _AddressedPortal(self.portal, slot or self.transport.peerAddress)

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> Any:
        d = super().tryAuth(kind, user, data)
        self._pendingLogins.add(d)

        def settled(result: Any) -> Any:
            self._pendingLogins.discard(d)
            return result

        return d.addBoth(settled)

    def serviceStopped(self) -> None:
        # The connection ended (or the service was replaced) with logins in
        # flight: cancel them, so no directory lookup or backend setup goes on
        # for a user who is gone.
        super().serviceStopped()
        pending, self._pendingLogins = self._pendingLogins, set()
        for d in pending:
            d.cancel()
        for delayed in list(self._delays):
            delayed.cancel()

    def auth_publickey(self, packet: bytes) -> Any:
        try:
            fingerprint = sha256Fingerprint(keys.Key.fromString(common.getNS(packet[1:], 2)[1]))
        except Exception:
            fingerprint = "unreadable key"
        if unreadablePublicKeyRequest(packet) is not None:
            # Conch's method raises on some of these and logs others as errors.
            d: defer.Deferred[Any] = defer.fail(Denied(BadCredentials(), "?"))
        else:
            d = super().auth_publickey(packet)
        # A refused key is logged whether or not the client signed: clients
        # only sign for keys the server said it would take.
        d.addErrback(self._denied, fingerprint=fingerprint)
        return d

    def auth_password(self, packet: bytes) -> Any:
        try:
            password = common.getNS(packet[1:])[0]
        except struct.error:
            return defer.fail(Denied(BadCredentials(), "?")).addErrback(self._denied)
        credentials = ProxyCredentials(self.user or b"", password, self.transport.peerAddress)
        d = self.portal.login(credentials, None, IConchUser)
        d.addErrback(self._denied)
        d.addErrback(self._slowDown)
        return d

    def _slowDown(self, failure: Failure) -> Any:
        """
        A refused password is answered after C{passwordDelay} (1 s), as
        Conch's own password method does: without it the proxy answered a
        guess in under a millisecond.

        Only a refusal is delayed: a login the user abandoned (cancelled, or
        already turned into L{IgnoreAuthentication}) is answered by nobody,
        so it waits for nothing. A delay still running when the service
        stops (the user left) is cancelled with the rest, quietly: no timer
        stays on the clock, and the attempt is neither answered, counted nor
        logged as an error.
        """
        if failure.check(defer.CancelledError, IgnoreAuthentication):
            return failure
        delayed: defer.Deferred[Any] = defer.Deferred(self._abandonDelay)
        self._delays[delayed] = self.clock.callLater(
            self.passwordDelay, self._answerRefusal, delayed, failure
        )
        return delayed

    def _answerRefusal(self, delayed: defer.Deferred[Any], failure: Failure) -> None:
        del self._delays[delayed]
        delayed.errback(failure)

    def _abandonDelay(self, delayed: defer.Deferred[Any]) -> None:
        call = self._delays.pop(delayed, None)
        if call is not None and call.active():
            call.cancel()
        delayed.errback(Failure(IgnoreAuthentication()))

    def _denied(self, failure: Failure, **audit: str) -> Failure:
        username = (self.user or b"").decode("utf-8", "replace")
        if failure.check(ValidPublicKey, IgnoreAuthentication):
            return failure
        if failure.check(defer.CancelledError):
            return Failure(IgnoreAuthentication())  # the user left: nothing to say
        metrics = metricsOf(self.transport)
        if isinstance(failure.value, Denied):
            denied = failure.value
            metrics.login(denied.realm, "failure", denied.metricsReason)
            accesslog.loginFailed(
                self.transport.peerAddress,
                username,
                denied.realm,
                denied.denial.reason,
                connection=self.transport,
                **audit,
            )
            if denied.visible:
                self.transport.sendPacket(
                    MSG_USERAUTH_BANNER,
                    common.NS(f"diego-ssh-proxy: {denied.denial.reason}\r\n".encode())
                    + common.NS(b""),
                )
            return failure
        metrics.login("?", "failure", "internal")
        # Through the connection's logger: throttled per source before login.
        self.log.failure("login of {username} failed unexpectedly", failure, username=username)
        return Failure(Denied(LoginDenied("internal error"), "?"))


class ProxyAvatar:
    """
    A logged-in user: the backend leg that is waiting for the relay.
    """

    def __init__(
        self,
        backend: BackendTransport,
        result: LoginResult,
        clock: Any,
        telemetry: IConnectionTelemetry | None = None,
        metrics: IProxyMetrics = NO_METRICS,
    ) -> None:
        self.backend = backend
        self.result = result
        self.clock = clock
        self.telemetry = telemetry
        self.metrics = metrics
        self.relay: Relay | None = None
        self.client: Any = None
        self.record: accesslog.SessionRecord | None = None
        self._telemetryEnded: Callable[[], None] | None = None
        self._metricsEnded: Callable[[], None] | None = None

    def makeService(self, client: Any) -> ClientRelayService:
        self.client = client
        self.relay = Relay(client, self.backend, onActivity=client.activity, metrics=self.metrics)
        self.backend.onLost = self._backendLost
        self.record = accesslog.SessionRecord(client.peerAddress, self.result, self.clock)
        self.record.succeeded()
        if self._metricsEnded is None:
            self.metrics.login(self.result.realm, "success", "none")
            self._metricsEnded = self.metrics.sessionRelayed(self.result.realm, self.relay)
        if self.telemetry is not None and self._telemetryEnded is None:
            ended = self.telemetry.connectionRelayed(client.peerAddress, self.result.target)
            self._telemetryEnded = ended
        return ClientRelayService(self.relay)

    def _backendLost(self) -> None:
        if self.client is not None:
            self.client.closeSoon(b"the instance closed the connection")

    def logout(self) -> None:
        if self.relay is not None and self.record is not None:
            self.record.ended(self.relay.bytesFromClient, self.relay.bytesFromBackend)
        if self._telemetryEnded is not None:
            ended, self._telemetryEnded = self._telemetryEnded, None
            ended()
        if self._metricsEnded is not None:
            ended, self._metricsEnded = self._metricsEnded, lambda: None
            ended()
        self.backend.release(b"user logged out")


@implementer(IRealm)
class ProxyRealm:
    """
    Turns a resolved login into an avatar by logging into the container first.
    """

    def __init__(
        self,
        connect: Callable[[Any], defer.Deferred[BackendTransport]],
        clock: Any,
        telemetry: IConnectionTelemetry | None = None,
        metrics: IProxyMetrics = NO_METRICS,
    ):
        self._connect = connect
        self._clock = clock
        self._telemetry = telemetry
        self._metrics = metrics

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if isinstance(avatarId, KeyLogin):
            client = mind.client if isinstance(mind, BackendSlot) else mind
            user: Any = avatarId.realm.avatarFor(avatarId, client or "?")
            self._metrics.login(getattr(avatarId.realm, "name", "?"), "success", "none")
            return defer.succeed((IConchUser, user, user.logout))
        result: LoginResult = avatarId

        def connected(backend: BackendTransport) -> Any:
            avatar = ProxyAvatar(backend, result, self._clock, self._telemetry, self._metrics)
            return IConchUser, avatar, avatar.logout

        def failed(failure: Failure) -> Failure:
            if isinstance(failure.value, LoginDenied):
                return Failure(Denied(failure.value, result.realm, stage="backend"))
            return failure

        if isinstance(mind, BackendSlot):
            # At most one backend per user connection, whatever the user asks.
            d = mind.connect(result.target, self._connect)
        else:
            d = self._connect(result.target)
        return d.addCallbacks(connected, failed)


class ProxyFactory(SSHServerFactory):
    """
    The user-facing SSH server.
    """

    protocol = ProxyServerTransport

    def __init__(self, portal: Portal, hostKeys: list[Any], policy: AlgorithmPolicy, clock: Any,
                 idleTimeout: float) -> None:  # fmt: skip
        super().__init__(portal, hostKeys, policy, clock, VERSION)
        self.idleTimeout = idleTimeout

    def buildProtocol(self, addr: Any) -> Any:
        proto: Any = super().buildProtocol(addr)
        proto.idleTimeout = self.idleTimeout
        return proto

    def getService(self, transport: Any, service: bytes) -> Any:
        if service == b"ssh-userauth":
            return ProxyUserAuthServer
        if service == b"ssh-connection" and isinstance(getattr(transport, "avatar", None),
                                                       ProxyAvatar):  # fmt: skip
            avatar = transport.avatar
            return lambda: avatar.makeService(transport)
        if service == b"ssh-connection" and getattr(transport, "avatar", None) is not None:
            return SSHConnection  # a key realm's user: channels end here
        return None


def _address(peer: Any) -> str:
    host = getattr(peer, "host", "?")
    port = getattr(peer, "port", "?")
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

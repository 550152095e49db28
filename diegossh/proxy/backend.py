# -*- test-case-name: tests.test_proxy_backend,tests.test_rsa_compat,tests.test_rsa_interop -*-
"""
The proxy's leg to a container: dial, SSH handshake, host key check against
the route's fingerprint, login with the route's credentials.

The whole leg must succeed before the user's login does, so a user never gets
a half-open session to a container that cannot be reached. Every way it fails
becomes a L{LoginDenied} with a reason the user may read.

Whatever the order of endings, the leg gives back what it took:

- L{connectBackend}'s Deferred can be cancelled (the user left while it was
  dialling, in the key exchange or logging in): the connect attempt or the
  connection is aborted and the timer cancelled;
- L{BackendTransport.release} says goodbye and closes, but never waits for
  ever on a container that stopped reading: after L{CLOSE_TIMEOUT} the socket
  is aborted;
- L{BackendSlot} is the one backend a user connection may have: set up at
  most once (a second login on the same connection is refused, it does not
  dial again), and released by the user connection's end in any phase.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.conch.ssh import keys, userauth
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.service import SSHService
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from diegossh.interfaces import IProxyMetrics
from diegossh.logtext import SafeLogger
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.target import LRPTarget, SSHRoute
from diegossh.ssh.algorithms import AlgorithmPolicy, userKeySignatureAlgorithm
from diegossh.ssh.keys import hostKeyMatches
from diegossh.ssh.metrics import NO_METRICS
from diegossh.ssh.transport import SSHClientTransport

log = SafeLogger()

#: seconds the backend connection may take to close after the proxy said
#: goodbye (its write buffer to drain) before it is aborted
CLOSE_TIMEOUT = 10.0
DISCONNECT_BY_APPLICATION = 11


class BackendService(SSHService):
    """
    The backend's C{ssh-connection} service, until the relay takes it over.
    The relay replaces C{packetReceived} once both legs are up.
    """

    name = b"ssh-connection"

    def __init__(self, ready: Callable[[Any], None]) -> None:
        self._ready = ready
        self.relay: Any = None

    def serviceStarted(self) -> None:
        self._ready(self.transport)

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        if self.relay is not None:
            self.relay(messageNum, packet)


class RouteUserAuth(userauth.SSHUserAuthClient):
    """
    Log in as the route's user: its private key first, then its password.
    """

    def __init__(self, route: SSHRoute, instance: SSHService) -> None:
        super().__init__(route.user.encode(), instance)
        self._key: keys.Key | None = None
        if route.private_key:
            self._key = keys.Key.fromString(route.private_key.encode())
        self._password = route.password.encode() if route.user and route.password else None
        self._offeredKey = False
        self._offeredPassword = False
        # What the key is offered and signed with (L{auth_publickey}).
        self.signatureAlgorithm = b""

    def auth_publickey(self) -> defer.Deferred[bool]:
        """
        Offer the route's key under the signature algorithm the backend takes.

        Conch's client offers and signs every key under its key type, so an
        RSA key signs with C{ssh-rsa} (SHA-1), which OpenSSH 8.8 and later
        refuse ("not in PubkeyAcceptedAlgorithms"). Here the algorithm is
        chosen from the backend's C{server-sig-algs} (RFC 8308, in the
        EXT_INFO it sends after its first NEWKEYS, before it accepts the
        user-auth service), and the offer and the signature both name it.
        """
        publicKey = self.getPublicKey()
        if publicKey is None:
            return defer.succeed(False)
        self.lastPublicKey = publicKey
        self.triedPublicKeys.append(publicKey)
        extensions = getattr(self.transport, "peerExtensions", None) or {}
        self.signatureAlgorithm = userKeySignatureAlgorithm(
            publicKey.sshType(), extensions.get(b"server-sig-algs")
        )
        self.askForAuth(b"publickey", b"\x00" + NS(self.signatureAlgorithm) + NS(publicKey.blob()))
        return defer.succeed(True)

    def ssh_USERAUTH_PK_OK_publickey(self, packet: bytes) -> None:
        """
        The backend takes the key: sign (RFC 4252 section 7) with the
        algorithm offered in L{auth_publickey}.
        """
        publicKey = self.lastPublicKey
        transport = self.transport
        assert publicKey is not None and self._key is not None
        assert transport is not None and transport.sessionID is not None
        algorithm = self.signatureAlgorithm
        method = b"\x01" + NS(algorithm) + NS(publicKey.blob())
        signed = (
            NS(transport.sessionID)
            + bytes((userauth.MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self.instance.name)
            + NS(b"publickey")
            + method
        )
        signature = self._key.sign(signed, signatureType=algorithm)
        self.askForAuth(b"publickey", method + NS(signature))

    def getPublicKey(self) -> keys.Key | None:
        if self._key is None or self._offeredKey:
            return None
        self._offeredKey = True
        return self._key.public()

    def getPrivateKey(self) -> defer.Deferred[keys.Key]:
        assert self._key is not None
        return defer.succeed(self._key)

    def getPassword(self, prompt: bytes | None = None) -> defer.Deferred[bytes] | None:
        if self._password is None or self._offeredPassword:
            return None
        self._offeredPassword = True
        return defer.succeed(self._password)

    def getGenericAnswers(self, name: bytes, instruction: bytes, prompts: Any) -> Any:
        if self._password is None or self._offeredPassword:
            return defer.fail(LoginDenied("the instance refused the route's credentials"))
        self._offeredPassword = True
        return defer.succeed([self._password for _ in prompts])


class BackendTransport(SSHClientTransport):
    """
    One login's connection to its container.
    """

    def __init__(self, target: LRPTarget, login: defer.Deferred[Any], policy: AlgorithmPolicy,
                 clock: Any) -> None:  # fmt: skip
        self.target = target
        self.login = login
        self.policy = policy
        self.clock = clock
        self.ourVersionString = b"SSH-2.0-diego-ssh-proxy"
        self.denial: LoginDenied | None = None
        self.onLost: Callable[[], None] | None = None
        self.lost = False
        self._closeTimer: IDelayedCall | None = None

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        if hostKeyMatches(self.target.route.host_fingerprint, hostKey):
            return defer.succeed(True)
        log.warn(
            "host key of {guid}/{index} at {address} does not match the route's fingerprint",
            guid=self.target.process_guid,
            index=self.target.index,
            address=self.target.address,
        )
        self.denial = LoginDenied("the instance's host key does not match its fingerprint")
        return defer.fail(self.denial)

    def connectionSecure(self) -> None:
        service = BackendService(self._authenticated)
        try:
            self.requestService(RouteUserAuth(self.target.route, service))
        except Exception:
            self.denial = LoginDenied("the route's private key cannot be used")
            self.sendDisconnect(11, b"bad client key")

    def _authenticated(self, transport: Any) -> None:
        if not self.login.called:
            self.login.callback(self)

    def release(self, reason: bytes = b"user logged out") -> None:
        """
        The user is gone: say goodbye and close. A container that does not
        read what is still queued for it gets L{CLOSE_TIMEOUT} seconds, then
        the socket is aborted. Safe to call in any phase, and more than once.
        """
        self.onLost = None
        if self.lost or self.transport is None:
            return
        self.sendDisconnect(DISCONNECT_BY_APPLICATION, reason)
        if not self.lost and self._closeTimer is None:
            self._closeTimer = self._clock().callLater(CLOSE_TIMEOUT, self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        self._closeTimer = None
        if not self.lost and self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        self._closeTimer = None
        super().connectionLost(reason)
        if not self.login.called:
            self.login.errback(
                self.denial or LoginDenied("the instance refused the route's credentials")
            )
        elif self.onLost is not None:
            self.onLost()

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        log.info(
            "instance {address} disconnected: {description}",
            address=self.target.address,
            description=description.decode("utf-8", "replace"),
        )


def connectBackend(
    reactor: Any,
    target: LRPTarget,
    policy: AlgorithmPolicy,
    timeout: float,
    tlsOptions: Callable[[str], Any] | None = None,
    metrics: IProxyMetrics = NO_METRICS,
) -> defer.Deferred[BackendTransport]:
    """
    Dial C{target} and log in; fail with L{LoginDenied} within C{timeout}.

    Cancelling the result (the user's connection ended) aborts whatever is
    under way: the connect attempt, or the connection in its key exchange or
    login. The timer goes with it.

    C{metrics} gets how long the dial and the whole login took, and how each
    ended (a cancelled one is not counted: the user left, the instance did
    nothing wrong).
    """
    holder: dict[str, BackendTransport] = {}
    connecting: defer.Deferred[Any] | None = None
    cancelled = False
    timedOutNow = False
    dialled = False
    started = reactor.seconds()

    def cancel(_: defer.Deferred[BackendTransport]) -> None:
        nonlocal cancelled
        cancelled = True  # the caller gets CancelledError, not a denial
        if timer.active():
            timer.cancel()
        transport = holder.get("t")
        if transport is not None and transport.transport is not None and not transport.lost:
            transport.transport.abortConnection()
        if connecting is not None:
            connecting.cancel()

    login: defer.Deferred[BackendTransport] = defer.Deferred(cancel)

    def build() -> BackendTransport:
        transport = BackendTransport(target, login, policy, reactor)
        holder["t"] = transport
        return transport

    if target.tls_port is not None:
        if tlsOptions is None:
            return defer.fail(LoginDenied("backend TLS is on but no TLS settings were given"))
        endpoint: Any = wrapClientTLS(
            tlsOptions(target.tls_server_name),
            HostnameEndpoint(reactor, target.host, target.tls_port, timeout=timeout),
        )
    else:
        endpoint = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)

    def timedOut() -> None:
        nonlocal timedOutNow
        if login.called:
            return
        timedOutNow = True
        if not dialled:
            metrics.backendDial(reactor.seconds() - started, "timeout")
        # The denial first: cancelling the connect below fails it at once,
        # and its failure names the address, which is not for the user.
        transport = holder.get("t")
        if transport is not None and transport.transport is not None:
            denial = LoginDenied(f"the instance did not complete the SSH login within {timeout:g}s")
        else:
            denial = LoginDenied(f"the instance did not answer within {timeout:g}s")
        log.info(
            "{guid}/{index} at {address}: {reason}",
            guid=target.process_guid,
            index=target.index,
            address=target.address,
            reason=denial.reason,
        )
        login.errback(denial)
        if connecting is not None:
            connecting.cancel()
        if transport is not None and transport.transport is not None and not transport.lost:
            transport.transport.abortConnection()

    timer = reactor.callLater(timeout, timedOut)

    def done(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not cancelled:
            outcome = "success" if not isinstance(result, Failure) else "failure"
            metrics.backendLogin(reactor.seconds() - started, "timeout" if timedOutNow else outcome)
        return result

    login.addBoth(done)

    connecting = endpoint.connect(Factory.forProtocol(build))

    def connected(protocol: Any) -> Any:
        nonlocal dialled
        dialled = True
        metrics.backendDial(reactor.seconds() - started, "success")
        return protocol

    def connectFailed(failure: Failure) -> None:
        if login.called or cancelled:
            return
        metrics.backendDial(reactor.seconds() - started, "failure")
        # The details (address, the system's words) are for the operator.
        log.info(
            "could not connect to {guid}/{index} at {address}: {error}",
            guid=target.process_guid,
            index=target.index,
            address=target.address,
            error=f"{type(failure.value).__name__}: {failure.value}",
        )
        login.errback(LoginDenied(f"could not connect to the instance: {_connectError(failure)}"))

    connecting.addCallbacks(connected, connectFailed)
    return login


class BackendSlot:
    """
    The backend leg of one user connection: set up at most once, released
    whatever the order of endings.

    A second login on the same connection, while the first is setting up its
    backend or after it succeeded, is refused with L{LoginDenied}: it never
    dials a second backend (which nothing would ever close) and never logs a
    second success. A login whose backend failed frees the slot for another
    attempt. L{release} (the user's connection ended) cancels a setup in
    flight and closes an established backend; a setup that finishes after
    that is closed at once.

    C{client} is the user's address, for realms that log who they serve.
    """

    def __init__(self, client: str = "?") -> None:
        self.client = client
        self.backend: BackendTransport | None = None
        self._pending: defer.Deferred[BackendTransport] | None = None
        self.released = False

    def connect(
        self, target: LRPTarget, connect: Callable[[LRPTarget], defer.Deferred[BackendTransport]]
    ) -> defer.Deferred[BackendTransport]:
        """
        Set up the backend with C{connect(target)}, unless this connection has
        (or is setting up) one already.
        """
        if self.released:
            return defer.fail(LoginDenied("the connection is closing"))
        if self._pending is not None or self.backend is not None:
            return defer.fail(LoginDenied("this connection is already logged in"))
        pending = connect(target)
        self._pending = pending

        def settled(result: Any) -> Any:
            if self._pending is pending:
                self._pending = None
            if isinstance(result, Failure):
                return result
            if self.released:
                result.release(b"the user left")
                raise defer.CancelledError()
            self.backend = result
            return result

        # Cancelling what the caller holds cancels the setup itself.
        result: defer.Deferred[BackendTransport] = defer.Deferred(lambda _: pending.cancel())
        pending.addBoth(settled).chainDeferred(result)
        return result

    def release(self, reason: bytes = b"user logged out") -> None:
        """
        The user's connection ended: nothing more is set up, a setup in
        flight is cancelled, an established backend is closed.
        """
        self.released = True
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if self.backend is not None:
            self.backend.release(reason)

    def __str__(self) -> str:
        return self.client


#: what the user is told of a failed connect, by the error's class; never the
#: error's own text, which names the instance's address
_CONNECT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (error.ConnectionRefusedError, "connection refused"),
    (error.TimeoutError, "timed out"),
    (error.NoRouteError, "no route to the instance"),
    (error.DNSLookupError, "the instance's address does not resolve"),
    (error.ConnectingCancelledError, "timed out"),
)


def _connectError(failure: Failure) -> str:
    for kind, description in _CONNECT_ERRORS:
        if failure.check(kind):
            return description
    return "network error"

"""
The proxy assembled as C{diegossh.proxy.tap.makeService} assembles it (a
L{ProxyFactory} over a L{Portal} of L{ProxyRealm}, L{RealmDispatcher} and
L{KeyRealmChecker}), entirely in memory, for the tests of its security
checks.

- the user is our client transport (Conch's, underneath) joined to the
  proxy by an iosim pump; its user authentication is scripted request by
  request (L{ScriptedAuth}) so a test can send what no polite client would;
- the realms are the real L{DiegoRealm} over a directory the test holds
  (L{FakeDirectory}) and a key realm that knows one key (L{FakeKeyRealm});
- the backend leg is the real L{connectBackend} on a
  L{MemoryReactorClock}: its dial lands in C{reactor.tcpClients}, and
  L{ProxyWorld.flush} answers it as the test said (a memory SSH server
  joined by another pump, a refusal, or nothing at all);
- one clock for everything, so timers are advanced, never waited for, and
  a test can assert that nothing is left on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.ssh import common, keys, service
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from diegossh.interfaces import IKeyRealm
from diegossh.proxy.backend import connectBackend
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.keylogin import KeyRealmChecker
from diegossh.proxy.login import BadCredentials, DiegoRealm, RealmDispatcher
from diegossh.proxy.server import ProxyFactory, ProxyRealm
from diegossh.proxy.target import LRPTarget, SSHRoute
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.factory import SSHServerFactory
from diegossh.ssh.keys import fingerprints
from diegossh.ssh.metrics import NO_METRICS
from tests.support.keys import key
from tests.support.memoryserver import MemoryRealm
from tests.support.sshclient import LoginClient, RecordingServer

CREDENTIALS = "diego-secret-3f9a"
GUID = "app-guid"
PROXY_HOST_KEY = key("ed25519")
BACKEND_HOST_KEY = key("p256")
ROUTE_KEY = key("p384")  # the route's private key: how the proxy logs in to the container
USER_KEY = key("ed25519")  # the key the key realm knows
BACKEND_USER = "vcap"
BACKEND_PASSWORD = "route-password-71c2"
BACKEND_ADDRESS = ("10.244.16.5", 61001)
USER_ADDRESS = IPv4Address("TCP", "192.0.2.7", 40022)
BACKEND_TIMEOUT = 10.0

MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_BANNER = 53
MSG_USERAUTH_PK_OK = 60


def route(**changes: Any) -> SSHRoute:
    """
    The route of the app: the backend's host key pinned (padded SHA-256, as
    Cloud Controller publishes it), the route's key and password to log in.
    """
    values: dict[str, Any] = {
        "container_port": 2222,
        "host_fingerprint": fingerprints(BACKEND_HOST_KEY).sha256,
        "user": BACKEND_USER,
        "password": BACKEND_PASSWORD,
        "private_key": ROUTE_KEY.toString("openssh").decode(),
    }
    values.update(changes)
    return SSHRoute(**values)


def target(guid: str = GUID, index: int = 0, sshRoute: SSHRoute | None = None) -> LRPTarget:
    host, port = BACKEND_ADDRESS
    return LRPTarget(guid, index, f"{guid}-{index}", host, port, sshRoute or route())


# -- the realms


class FakeDirectory:
    """
    The LRP directory: every lookup of a known process answers L{target},
    unknown ones are refused; with C{hold}, lookups wait for the test.
    """

    def __init__(self) -> None:
        self.route = route()
        self.hold = False
        self.lookups: list[tuple[str, int]] = []
        self.held: list[defer.Deferred[LRPTarget]] = []
        self.cancelled = 0

    def lookup(self, processGuid: str, index: int) -> defer.Deferred[LRPTarget]:
        self.lookups.append((processGuid, index))
        if self.hold:

            def cancel(_: Any) -> None:
                self.cancelled += 1

            d: defer.Deferred[LRPTarget] = defer.Deferred(cancel)
            self.held.append(d)
            return d
        if processGuid != GUID:
            return defer.fail(LoginDenied("no such process"))
        return defer.succeed(target(processGuid, index, self.route))


class KeyUser(ConchUser):
    """A key realm's session (its channels would end here)."""

    def __init__(self, login: Any, client: str) -> None:
        super().__init__()
        self.login = login
        self.client = client
        self.loggedOut = False

    def logout(self) -> None:
        self.loggedOut = True


@implementer(IKeyRealm)
class FakeKeyRealm:
    """
    C{bastion}: grants the keys in C{known} to any user name; every other
    key is refused like a key no one knows.
    """

    name = "bastion"

    def __init__(self, known: Sequence[keys.Key] = (USER_KEY,)) -> None:
        self.known = {k.public().blob() for k in known}
        self.asked: list[tuple[str, bytes]] = []
        self.avatars: list[KeyUser] = []

    def authorize(self, username: str, k: Any) -> defer.Deferred[str]:
        self.asked.append((username, k.blob()))
        if k.blob() in self.known:
            return defer.succeed(f"grant:{username}")
        return defer.fail(BadCredentials())

    def avatarFor(self, login: Any, client: str) -> KeyUser:
        user = KeyUser(login, client)
        self.avatars.append(user)
        return user


# -- the container


def backendFactory(
    clock: Any,
    hostKey: keys.Key = BACKEND_HOST_KEY,
    acceptKey: bool = True,
    acceptPassword: bool = True,
) -> SSHServerFactory:
    """
    The container's SSH daemon: a memory server offering public key and
    password logins for C{vcap}, and taking the route's key and/or the
    route's password.
    """
    authorized = [ROUTE_KEY.public()] if acceptKey else []
    db = InMemoryUsernamePasswordDatabaseDontUse()
    db.addUser(BACKEND_USER.encode(), BACKEND_PASSWORD.encode() if acceptPassword else b"other")
    checkers = [SSHPublicKeyChecker(InMemorySSHKeyDB({b"vcap": authorized})), db]
    factory = SSHServerFactory(
        RecordingPortal(MemoryRealm(), checkers),
        [hostKey],
        AlgorithmPolicy.everything(),
        clock,
        b"SSH-2.0-OpenSSH_9.6 memory-backend",
    )
    factory.protocol = RecordingServer
    return factory


class RecordingPortal(Portal):
    """
    The container's portal, writing down every login it is asked for: how
    a test sees that the proxy never offered the route's credentials to a
    container whose host key it refused.
    """

    def __init__(self, realm: Any, checkers: Sequence[Any]) -> None:
        super().__init__(realm, checkers)
        self.attempts: list[Any] = []

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Any:
        self.attempts.append(credentials)
        return super().login(credentials, mind, *interfaces)


class Mute(Protocol):
    """A container that accepts the connection and never says a word."""


# -- the user


@dataclass
class Request:
    """
    One user authentication request as the user sends it. A C{publickey}
    request offers C{key}; with C{signer} it carries a signature by that
    key over this session (RFC 4252 section 7), without, it is a probe.
    """

    user: bytes
    method: bytes = b"password"
    password: bytes = CREDENTIALS.encode()
    raw: bytes | None = None  # the method-specific part, verbatim
    key: keys.Key | None = None
    signer: keys.Key | None = None

    def payload(self, sessionID: bytes = b"") -> bytes:
        head = common.NS(self.user) + common.NS(b"ssh-connection") + common.NS(self.method)
        if self.raw is not None:
            return head + self.raw
        if self.method == b"password":
            return head + b"\0" + common.NS(self.password)
        if self.method == b"publickey" and self.key is not None:
            blob = self.key.public().blob()
            algorithm = self.key.sshType()
            if self.signer is None:
                return head + b"\0" + common.NS(algorithm) + common.NS(blob)
            signed = head + b"\1" + common.NS(algorithm) + common.NS(blob)
            data = common.NS(sessionID) + bytes((MSG_USERAUTH_REQUEST,)) + signed
            return signed + common.NS(self.signer.sign(data))
        return head


def publickey(user: str, k: keys.Key, signer: keys.Key | None = None) -> Request:
    return Request(user.encode(), b"publickey", key=k, signer=signer)


def password(user: str | bytes, secret: str | bytes = CREDENTIALS) -> Request:
    u = user.encode() if isinstance(user, str) else user
    p = secret.encode() if isinstance(secret, str) else secret
    return Request(u, b"password", p)


def diego(index: int | str = 0, guid: str = GUID) -> bytes:
    return f"diego:{guid}/{index}".encode()


class ScriptedAuth(service.SSHService):
    """
    The user's side of user authentication, by hand: sends its requests one
    at a time (the next once the previous is answered), or all at once with
    C{eager}, and records every answer.
    """

    name = b"ssh-userauth"

    def __init__(self, requests: Sequence[Request], eager: bool = False) -> None:
        self.requests = list(requests)
        self.eager = eager
        self.answers: list[int] = []
        self.banners: list[str] = []

    def serviceStarted(self) -> None:
        if self.eager:
            while self.requests:
                self.sendNext()
        else:
            self.sendNext()

    def sendNext(self) -> None:
        if self.requests:
            request = self.requests.pop(0)
            self.transport.sendPacket(
                MSG_USERAUTH_REQUEST, request.payload(self.transport.sessionID)
            )

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        if messageNum == MSG_USERAUTH_BANNER:
            self.banners.append(common.getNS(packet)[0].decode("utf-8", "replace"))
            return
        self.answers.append(messageNum)
        if messageNum == MSG_USERAUTH_SUCCESS:
            self.transport.setService(UserConnection())
        elif not self.eager:
            self.sendNext()


class UserConnection(service.SSHService):
    """
    The user's C{ssh-connection} after login: sends raw messages, keeps
    every message received.
    """

    name = b"ssh-connection"

    def __init__(self) -> None:
        self.received: list[tuple[int, bytes]] = []

    def send(self, messageNum: int, payload: bytes) -> None:
        self.transport.sendPacket(messageNum, payload)

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        self.received.append((messageNum, packet))


class User(LoginClient):
    """
    The user's client: trusts the proxy's host key and runs C{auth}.
    """

    auth: service.SSHService

    def connectionSecure(self) -> None:
        self.secureCount += 1
        self.requestService(self.auth)

    @property
    def answers(self) -> list[int]:
        return getattr(self.auth, "answers", [])

    @property
    def banners(self) -> list[str]:
        return getattr(self.auth, "banners", [])

    def channels(self) -> UserConnection | None:
        """The user's C{ssh-connection} once logged in."""
        current = getattr(self, "service", None)
        return current if isinstance(current, UserConnection) else None


# -- the world


class Socket(iosim.FakeTransport):
    """iosim's transport with the C{connected} flag TCP transports have."""

    @property
    def connected(self) -> bool:
        return not self.disconnected


@dataclass
class Dial:
    """One backend dial the proxy made, and what became of it."""

    host: str
    port: int
    factory: Any
    connector: Any
    protocol: Any = None
    server: Any = None
    pump: iosim.IOPump | None = None


@dataclass
class Outcomes:
    """What the logs said: access events, failures (tracebacks), all text."""

    access: list[LogEvent] = field(default_factory=list)
    failures: list[LogEvent] = field(default_factory=list)
    everything: list[LogEvent] = field(default_factory=list)

    def __call__(self, event: LogEvent) -> None:
        self.everything.append(event)
        if event.get("log_namespace") == "diegossh.access":
            self.access.append(event)
        if "log_failure" in event or event.get("isError"):
            self.failures.append(event)

    def denials(self) -> list[str]:
        return [e["reason"] for e in self.access if e.get("outcome") == "denied"]

    def text(self) -> str:
        from twisted.logger import formatEvent

        out = []
        for event in self.everything:
            out.append(formatEvent(event))
            failure = event.get("log_failure")
            if failure is not None:
                out.append(failure.getTraceback())
        return "\n".join(out)


class ProxyWorld:
    """
    One proxy, its realms and its container, in memory on one clock.

    C{backend} says what a dial to the container meets: C{"ssh"} (the memory
    daemon), C{"refuse"} (connection refused), C{"mute"} (a peer that never
    speaks), C{"hold"} (the dial stays in flight).
    """

    def __init__(
        self,
        keyRealm: bool = True,
        maxAuthTries: int | None = None,
        loginGraceTime: float | None = None,
        idleTimeout: float = 0,
        backendTimeout: float = BACKEND_TIMEOUT,
        connect: Callable[[LRPTarget], defer.Deferred[Any]] | None = None,
        metrics: Any = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.metrics = metrics if metrics is not None else NO_METRICS
        self.outcomes = Outcomes()
        globalLogPublisher.addObserver(self.outcomes)
        self.directory = FakeDirectory()
        self.diegoRealm = DiegoRealm(CREDENTIALS, self.directory)
        self.keyRealm = FakeKeyRealm() if keyRealm else None
        self.backend = "ssh"
        self.connectError: Exception = error.ConnectionRefusedError(111, "Connection refused")
        self.backendFactory = backendFactory(self.clock)
        self.backendTimeout = backendTimeout
        self.dials: list[Dial] = []
        self.connects: list[defer.Deferred[Any]] = []
        self.pumps: list[iosim.IOPump] = []
        self.users: list[User] = []
        self.servers: list[Any] = []
        self._connect = connect
        checkers: list[Any] = [RealmDispatcher([self.diegoRealm])]
        if self.keyRealm is not None:
            checkers.append(KeyRealmChecker([self.keyRealm]))
        portal = Portal(ProxyRealm(self.connect, self.clock, None, self.metrics), checkers)
        self.factory = ProxyFactory(
            portal, [PROXY_HOST_KEY], AlgorithmPolicy.everything(), self.clock, idleTimeout
        )
        self.factory.metrics = self.metrics
        if maxAuthTries is not None:
            self.factory.maxAuthTries = maxAuthTries
        if loginGraceTime is not None:
            self.factory.loginGraceTime = loginGraceTime

    # -- the backend leg

    def connect(self, t: LRPTarget) -> defer.Deferred[Any]:
        if self._connect is not None:
            d = self._connect(t)
        else:
            d = connectBackend(
                self.clock,
                t,
                AlgorithmPolicy.everything(),
                self.backendTimeout,
                metrics=self.metrics,
            )
        self.connects.append(d)
        return d

    def _answerDials(self) -> bool:
        moved = False
        while len(self.dials) < len(self.clock.tcpClients):
            host, port, factory, _timeout, _bind = self.clock.tcpClients[len(self.dials)]
            dial = Dial(host, port, factory, self.clock.connectors[len(self.dials)])
            self.dials.append(dial)
            moved = True
            if self.backend == "hold":
                continue
            if self.backend == "refuse":
                factory.clientConnectionFailed(dial.connector, Failure(self.connectError))
                continue
            dial.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
            if self.backend == "mute":
                dial.server = Mute()
            else:
                dial.server = self.backendFactory.buildProtocol(
                    IPv4Address("TCP", "10.255.0.1", 50000)
                )
            dial.pump = iosim.connect(
                dial.server,
                Socket(dial.server, isServer=True),
                dial.protocol,
                Socket(dial.protocol, isServer=False),
                greet=False,
                clock=self.clock,
            )
            self.pumps.append(dial.pump)
        return moved

    # -- users

    def user(self, *requests: Request, eager: bool = False, auth: Any = None) -> User:
        """
        A user connects and, once the key exchange is done, runs C{auth}
        (by default the scripted C{requests}).
        """
        user = User()
        user.auth = auth if auth is not None else ScriptedAuth(requests, eager)
        user.clock = self.clock
        user.policy = AlgorithmPolicy.everything()
        server = self.factory.buildProtocol(USER_ADDRESS)
        self.servers.append(server)
        self.users.append(user)
        self.pumps.append(
            iosim.connect(
                server,
                Socket(server, isServer=True, peerAddress=USER_ADDRESS),
                user,
                Socket(user, isServer=False),
                greet=False,
                clock=self.clock,
            )
        )
        self.flush()
        return user

    # -- time and bytes

    def flush(self) -> None:
        """Move bytes on every leg, and answer dials, until nothing moves."""
        for _ in range(1000):
            moved = self._answerDials()
            for pump in list(self.pumps):
                moved = pump.flush() or moved
            if not moved:
                return
        raise AssertionError("the world never settled")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()

    def pending(self) -> list[Any]:
        """
        The timers still on the clock, but for the factory's per-source log
        budgets (L{diegossh.ssh.logthrottle}): those outlive connections on
        purpose and go when the listening service stops.
        """
        throttle = self.factory.logThrottle
        return [
            call
            for call in self.clock.getDelayedCalls()
            if call.active() and getattr(call.func, "__self__", None) is not throttle
        ]

    def closeAll(self) -> None:
        """Every user leaves; what is still open is dropped."""
        for user in self.users:
            if user.transport is not None and not user.transport.disconnecting:
                user.transport.loseConnection()
        self.flush()
        for dial in self.dials:
            if dial.protocol is not None and not dial.protocol.transport.disconnecting:
                dial.protocol.transport.loseConnection()
        self.flush()

    def stop(self) -> None:
        self.factory.logThrottle.stop()
        globalLogPublisher.removeObserver(self.outcomes)

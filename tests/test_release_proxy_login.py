"""
Issue 11, the proxy end to end: a user connection that ends in any phase of
its login gives back everything the login took, and a connection never sets
up a second backend.

An in-process proxy (L{ProxyFactory}, a realm whose lookup the test holds,
the real L{connectBackend}) in front of an in-process SSH server, with our
scriptable client as the user, over real sockets. The user leaves while the
realm's lookup is in flight, while the backend's TCP connect is in flight, and
and while the backend is in its key exchange. In memory: the realm dials one
backend per user connection, and a user who does not read is aborted after
the goodbye.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, service
from twisted.cred.portal import Portal
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from zope.interface import implementer

from diegossh.interfaces import IAuthRealm
from diegossh.proxy.backend import CLOSE_TIMEOUT, BackendSlot, connectBackend
from diegossh.proxy.login import Denied, LoginResult, RealmDispatcher
from diegossh.proxy.server import ProxyFactory, ProxyRealm
from diegossh.proxy.target import LRPTarget, SSHRoute
from diegossh.ssh.algorithms import AlgorithmPolicy
from tests.support.eventually import eventually
from tests.support.forwardserver import forwardServerFactory
from tests.support.keys import key
from tests.support.sshclient import LoginClient

WAIT = 30.0
MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52


def theReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def within(d: Any) -> Any:
    return d.addTimeout(WAIT, theReactor())


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@implementer(IAuthRealm)
class HeldRealm:
    """
    C{test:...} with any password; its lookup answers at once, or, with
    C{hold}, waits for the test (and records being cancelled).
    """

    name = "test"

    def __init__(self, target: LRPTarget) -> None:
        self.target = target
        self.hold = False
        self.lookups: list[defer.Deferred[LoginResult]] = []
        self.cancelled = 0

    def resolve(self, subject: str, password: bytes) -> defer.Deferred[LoginResult]:
        if not self.hold:
            return defer.succeed(LoginResult(self.name, self.target))

        def cancel(_: Any) -> None:
            self.cancelled += 1

        d: defer.Deferred[LoginResult] = defer.Deferred(cancel)
        self.lookups.append(d)
        return d


class RawUserAuth(service.SSHService):
    """
    The user's side of user authentication, by hand: sends C{count} password
    requests at once and records the answers.
    """

    name = b"ssh-userauth"

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.answers: list[int] = []
        self.succeeded: defer.Deferred[None] = defer.Deferred()

    def serviceStarted(self) -> None:
        for _ in range(self.count):
            self.sendPasswordRequest()

    def sendPasswordRequest(self) -> None:
        self.transport.sendPacket(
            MSG_USERAUTH_REQUEST,
            common.NS(b"test:app/0")
            + common.NS(b"ssh-connection")
            + common.NS(b"password")
            + b"\0"
            + common.NS(b"pw"),
        )

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        if messageNum in (MSG_USERAUTH_FAILURE, MSG_USERAUTH_SUCCESS):
            self.answers.append(messageNum)
        if messageNum == MSG_USERAUTH_SUCCESS and not self.succeeded.called:
            self.succeeded.callback(None)


class User(LoginClient):
    auth: RawUserAuth

    def connectionSecure(self) -> None:
        self.requestService(self.auth)


class AbortableTransport(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Silent(Protocol):
    """
    A container that accepts and never says a word.
    """

    transport: Any


class World:
    def __init__(self) -> None:
        reactor = theReactor()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self._observe)
        clientKey = key("ed25519")
        backendFactory, _ = forwardServerFactory(key("p256"), clientKey, reactor)
        self.backends: list[Any] = []
        build = backendFactory.buildProtocol

        def buildBackend(addr: Any) -> Any:
            proto = build(addr)
            self.backends.append(proto)
            return proto

        backendFactory.buildProtocol = buildBackend  # type: ignore[method-assign]
        self.listening = [reactor.listenTCP(0, backendFactory, interface="127.0.0.1")]
        self.route = SSHRoute(
            2222, user="tester", private_key=clientKey.toString("openssh").decode()
        )
        self.realm = HeldRealm(self.target(self.listening[0].getHost().port))
        self.connects: list[defer.Deferred[Any]] = []

        def connect(target: LRPTarget) -> defer.Deferred[Any]:
            d = connectBackend(reactor, target, AlgorithmPolicy.everything(), 60.0)
            self.connects.append(d)
            return d

        portal = Portal(ProxyRealm(connect, reactor), [RealmDispatcher([self.realm])])
        factory = ProxyFactory(portal, [key("ed25519")], AlgorithmPolicy.everything(), reactor, 0)
        self.listening.append(reactor.listenTCP(0, factory, interface="127.0.0.1"))
        self.proxyPort = self.listening[-1].getHost().port
        self.users: list[User] = []
        self.sockets: list[socket.socket] = []

    def target(self, port: int) -> LRPTarget:
        return LRPTarget("app", 0, "app-0", "127.0.0.1", port, self.route)

    def _observe(self, event: LogEvent) -> None:
        if event.get("log_namespace") == "diegossh.access":
            self.events.append(event)

    def outcomes(self) -> list[str]:
        return [e.get("outcome") or e["event"] for e in self.events]

    def silentBackend(self) -> list[Silent]:
        accepted: list[Silent] = []

        def build() -> Silent:
            proto = Silent()
            accepted.append(proto)
            return proto

        port = theReactor().listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")
        self.listening.append(port)
        self.realm.target = self.target(port.getHost().port)
        return accepted

    def stuckBackend(self) -> None:
        """
        A backend address whose accept queue is full: connects to it stay
        in flight.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        self.sockets.append(listener)
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            self.sockets.append(filler)
        self.realm.target = self.target(port)

    async def user(self, logins: int = 1) -> User:
        user = User()
        user.auth = RawUserAuth(logins)
        user.clock = theReactor()
        endpoint = TCP4ClientEndpoint(theReactor(), "127.0.0.1", self.proxyPort)
        await within(connectProtocol(endpoint, user))
        self.users.append(user)
        return user

    async def close(self) -> None:
        globalLogPublisher.removeObserver(self._observe)
        for user in self.users:
            if user.transport.connected:
                user.transport.abortConnection()
        for s in self.sockets:
            s.close()
        for port in self.listening:
            await port.stopListening()


@pytest_twisted.async_yield_fixture
async def world() -> AsyncIterator[World]:
    w = World()
    try:
        yield w
    finally:
        await w.close()


@pytest_twisted.ensureDeferred
async def test_user_leaves_during_the_lookup(world: World) -> None:
    world.realm.hold = True
    user = await world.user()
    await eventually(lambda: world.realm.lookups, "the realm's lookup")
    user.transport.abortConnection()
    await eventually(lambda: world.realm.cancelled == 1, "the lookup to be cancelled")
    assert world.connects == [] and world.backends == []
    assert world.outcomes() == []


@pytest_twisted.ensureDeferred
async def test_user_leaves_while_the_backend_connect_is_in_flight(world: World) -> None:
    world.stuckBackend()
    before = openDescriptors()
    user = await world.user()
    await eventually(lambda: world.connects, "the backend connect")
    # Not a wait for anything: the premise, that the connect stays in flight.
    await task.deferLater(theReactor(), 0.1, lambda: None)
    assert not world.connects[0].called, "the connect was not left in flight"
    user.transport.abortConnection()
    await eventually(lambda: world.connects[0].called, "the backend login to end")
    await eventually(lambda: openDescriptors() == before, f"{before} descriptors again")
    assert world.outcomes() == []


@pytest_twisted.ensureDeferred
async def test_user_leaves_during_the_backend_key_exchange(world: World) -> None:
    accepted = world.silentBackend()
    user = await world.user()
    await eventually(lambda: accepted and accepted[0].transport is not None, "the backend connect")
    user.transport.abortConnection()
    await eventually(lambda: not accepted[0].transport.connected, "the backend connection to close")
    assert world.outcomes() == []


def test_realm_sets_up_one_backend_per_user_connection() -> None:
    """
    Even if a second login on one connection got as far as the realm (the
    transport lets one through at a time, and none after success), the
    connection's slot dials nothing more.
    """
    dials: list[defer.Deferred[Any]] = []

    def connect(target: LRPTarget) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        dials.append(d)
        return d

    realm = ProxyRealm(connect, task.Clock())
    slot = BackendSlot("10.0.0.1:5000")
    result = LoginResult("test", LRPTarget("app", 0, "app-0", "127.0.0.1", 1, SSHRoute(2222)))
    first = realm.requestAvatar(result, slot, IConchUser)
    second = realm.requestAvatar(result, slot, IConchUser)
    assert len(dials) == 1
    failures: list[Any] = []
    second.addErrback(failures.append)
    assert failures and failures[0].check(Denied)
    first.addErrback(lambda _: None)
    slot.release()
    assert first.called


def test_user_who_does_not_read_is_aborted_after_the_goodbye() -> None:
    """
    The backend ended the session (or the idle timeout fired): the user's
    connection says goodbye, and a user who does not read what is queued is
    aborted after the deadline instead of holding the socket for ever.
    """
    clock = MemoryReactorClock()
    portal = Portal(ProxyRealm(lambda target: defer.Deferred(), clock), [])
    factory = ProxyFactory(portal, [key("ed25519")], AlgorithmPolicy.everything(), clock, 0)
    user = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5000))
    tcp = AbortableTransport()
    user.makeConnection(tcp)
    user.closeSoon(b"the instance closed the connection")
    assert tcp.disconnecting and not tcp.aborted
    clock.advance(CLOSE_TIMEOUT)
    assert tcp.aborted
    user.connectionLost(None)
    assert clock.getDelayedCalls() == []

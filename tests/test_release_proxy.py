"""
Issue 11, the proxy's backend leg: whatever a login took is given back when
it ends, in any phase and in any order of endings.

In memory: cancelling L{connectBackend}'s Deferred (the user left) stops the
connect attempt or aborts the connection in its key exchange, with no timer
left; L{BackendTransport.release} closes, and aborts a container that does not
read; L{BackendSlot} sets a connection's backend up at most once and releases
it in any phase; the access log's L{SessionRecord} writes one end per success.
Over real sockets: the descriptor of a connect in flight, and of a backend
stuck before its version line, is given back when the login is cancelled.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from zope.interface import implementer

from diegossh.proxy import accesslog
from diegossh.proxy.backend import (
    CLOSE_TIMEOUT,
    BackendSlot,
    BackendTransport,
    connectBackend,
)
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.login import LoginResult
from diegossh.proxy.target import LRPTarget, SSHRoute
from diegossh.ssh.algorithms import AlgorithmPolicy
from tests.support.eventually import eventually

WAIT = 30.0


def target(port: int = 2222) -> LRPTarget:
    return LRPTarget(
        process_guid="app",
        index=0,
        instance_guid="app-0",
        host="127.0.0.1",
        port=port,
        route=SSHRoute(2222, user="vcap", password="pw"),
    )


# -- a memory reactor that resolves at once


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _Resolver:
    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        receiver.addressResolved(IPv4Address("TCP", hostName, portNumber))
        receiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)
class Reactor(MemoryReactorClock):
    nameResolver = _Resolver()

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError


class FakeTCP(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def connectInMemory() -> tuple[defer.Deferred[BackendTransport], Reactor]:
    reactor = Reactor()
    d = connectBackend(reactor, target(), AlgorithmPolicy.everything(), 10.0)
    return d, reactor


def connected(reactor: Reactor) -> tuple[BackendTransport, FakeTCP]:
    """
    Complete the connect attempt: the backend now waits for the container's
    version line.
    """
    (host, port, factory, _, _) = reactor.tcpClients[-1]
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    tcp = FakeTCP()
    proto.makeConnection(tcp)
    backend = proto._wrappedProtocol
    assert isinstance(backend, BackendTransport)
    return backend, tcp


def test_cancel_while_connecting_stops_the_attempt() -> None:
    d, reactor = connectInMemory()
    ((_, _, _, _, _),) = reactor.tcpClients
    (connector,) = reactor.connectors
    d.cancel()
    assert connector.stoppedConnecting
    assert reactor.getDelayedCalls() == []
    assert isinstance(d.result.value, defer.CancelledError)
    d.addErrback(lambda _: None)


def test_cancel_during_key_exchange_aborts_the_connection() -> None:
    d, reactor = connectInMemory()
    backend, tcp = connected(reactor)
    assert tcp.value().startswith(b"SSH-2.0-diego-ssh-proxy")
    d.cancel()
    assert tcp.aborted
    backend.connectionLost(None)  # what the reactor does after the abort
    assert reactor.getDelayedCalls() == []
    d.addErrback(lambda _: None)


def backendOn(clock: MemoryReactorClock) -> tuple[BackendTransport, FakeTCP]:
    login: defer.Deferred[Any] = defer.Deferred()
    login.addErrback(lambda _: None)
    backend = BackendTransport(target(), login, AlgorithmPolicy.everything(), clock)
    tcp = FakeTCP()
    backend.makeConnection(tcp)
    return backend, tcp


def test_release_says_goodbye_then_aborts_a_container_that_does_not_read() -> None:
    clock = MemoryReactorClock()
    backend, tcp = backendOn(clock)
    backend.release()
    assert tcp.disconnecting and not tcp.aborted
    backend.release()  # a second time changes nothing
    clock.advance(CLOSE_TIMEOUT - 1)
    assert not tcp.aborted
    clock.advance(1)
    assert tcp.aborted
    backend.connectionLost(None)  # what the reactor does after the abort
    assert clock.getDelayedCalls() == []


def test_backend_that_closes_in_time_cancels_the_deadline() -> None:
    clock = MemoryReactorClock()
    backend, tcp = backendOn(clock)
    backend.release()
    backend.connectionLost(None)
    assert clock.getDelayedCalls() == []
    assert not tcp.aborted
    backend.release()  # after the end: nothing to do
    assert clock.getDelayedCalls() == []


# -- the slot


class FakeBackend:
    def __init__(self) -> None:
        self.released: list[bytes] = []

    def release(self, reason: bytes = b"") -> None:
        self.released.append(reason)


class Dialer:
    """
    A connect function whose attempts the test settles.
    """

    def __init__(self) -> None:
        self.attempts: list[defer.Deferred[Any]] = []
        self.cancelled = 0

    def __call__(self, target: LRPTarget) -> defer.Deferred[Any]:
        def cancel(_: Any) -> None:
            self.cancelled += 1

        d: defer.Deferred[Any] = defer.Deferred(cancel)
        self.attempts.append(d)
        return d


def failureOf(d: defer.Deferred[Any]) -> Any:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "the Deferred did not fail"
    return failures[0].value


def test_slot_refuses_a_second_setup_while_the_first_is_in_flight() -> None:
    slot, dial = BackendSlot("10.0.0.1:5000"), Dialer()
    first = slot.connect(target(), dial)
    assert isinstance(failureOf(slot.connect(target(), dial)), LoginDenied)
    assert len(dial.attempts) == 1
    backend = FakeBackend()
    dial.attempts[0].callback(backend)
    assert first.result is backend
    assert isinstance(failureOf(slot.connect(target(), dial)), LoginDenied)
    assert len(dial.attempts) == 1
    assert str(slot) == "10.0.0.1:5000"


def test_slot_takes_another_attempt_after_a_failed_one() -> None:
    slot, dial = BackendSlot(), Dialer()
    first = slot.connect(target(), dial)
    dial.attempts[0].errback(LoginDenied("could not connect"))
    assert isinstance(failureOf(first), LoginDenied)
    slot.connect(target(), dial)
    assert len(dial.attempts) == 2


def test_slot_release_cancels_a_setup_in_flight() -> None:
    slot, dial = BackendSlot(), Dialer()
    first = slot.connect(target(), dial)
    slot.release()
    assert dial.cancelled == 1
    assert isinstance(failureOf(first), defer.CancelledError)
    assert isinstance(failureOf(slot.connect(target(), dial)), LoginDenied)
    assert len(dial.attempts) == 1


def test_cancelling_the_login_cancels_the_setup() -> None:
    slot, dial = BackendSlot(), Dialer()
    slot.connect(target(), dial).cancel()
    assert dial.cancelled == 1
    slot.connect(target(), dial)  # the slot is free again
    assert len(dial.attempts) == 2


def test_slot_release_closes_the_backend() -> None:
    slot, dial = BackendSlot(), Dialer()
    slot.connect(target(), dial)
    backend = FakeBackend()
    dial.attempts[0].callback(backend)
    slot.release(b"bye")
    assert backend.released == [b"bye"]


def test_release_with_a_connect_that_cannot_be_cancelled() -> None:
    """
    Whatever the connect function, the login waiting on the slot fails at
    once when the user leaves, and the slot takes nothing more.
    """
    slot = BackendSlot()
    stubborn: defer.Deferred[Any] = defer.Deferred()
    first = slot.connect(target(), lambda _: stubborn)
    slot.release()
    assert isinstance(failureOf(first), defer.CancelledError)
    stubborn.callback(FakeBackend())  # swallowed: cancel() already failed it
    assert slot.backend is None


# -- the access log


@pytest.fixture
def accessEvents() -> Any:
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "diegossh.access":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def test_session_record_logs_one_end_per_success(accessEvents: list[LogEvent]) -> None:
    clock = task.Clock()
    result = LoginResult("diego", target())
    record = accesslog.SessionRecord("10.0.0.1:5000", result, clock)
    record.ended(1, 2)  # no success yet: nothing to end
    assert accessEvents == []
    record.succeeded()
    record.succeeded()
    clock.advance(3)
    record.ended(10, 20)
    record.ended(10, 20)
    assert [e["event"] for e in accessEvents] == ["login", "session_end"]
    assert accessEvents[0]["outcome"] == "success"
    end = accessEvents[1]
    assert (end["bytes_from_client"], end["bytes_to_client"], end["duration"]) == (10, 20, 3)


# -- real sockets


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def theReactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_cancelled_connect_in_flight_gives_its_descriptor_back() -> None:
    """
    A listener whose accept queue is full drops SYNs, so a connect to it
    stays in flight: cancelling the login closes that socket.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        before = openDescriptors()
        d = connectBackend(theReactor(), target(port), AlgorithmPolicy.everything(), 60.0)
        # Not a wait for anything: the premise, that the connect stays in flight.
        await task.deferLater(theReactor(), 0.1, lambda: None)
        assert not d.called, "the connect was not left in flight"
        assert openDescriptors() > before
        d.cancel()
        with pytest.raises(defer.CancelledError):
            await d
        await eventually(lambda: openDescriptors() == before, f"{before} descriptors again")
    finally:
        for s in [*fillers, listener]:
            s.close()


class Silent(Protocol):
    """
    A "container" that accepts and never says a word.
    """

    transport: Any


@pytest_twisted.ensureDeferred
async def test_cancelled_key_exchange_gives_the_connection_back() -> None:
    accepted: list[Silent] = []

    def build() -> Silent:
        proto = Silent()
        accepted.append(proto)
        return proto

    port = theReactor().listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")
    try:
        before = openDescriptors()
        d = connectBackend(
            theReactor(), target(port.getHost().port), AlgorithmPolicy.everything(), 60.0
        )
        await eventually(lambda: accepted and accepted[0].transport is not None, "the connect")
        d.cancel()
        with pytest.raises(defer.CancelledError):
            await d
        await eventually(lambda: not accepted[0].transport.connected, "the backend to close")
        await eventually(lambda: openDescriptors() == before, f"{before} descriptors again")
    finally:
        await port.stopListening()

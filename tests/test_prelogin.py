"""
Before login, in memory: the login grace time (whatever the client sends),
the limit on failed attempts per connection, and what the transport tells an
admission policy (L{diegossh.interfaces.IAdmission}) about each connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.conch.ssh import transport as conchTransport
from twisted.cred.error import UnauthorizedLogin

from diegossh.ssh import transport
from tests.support.sshclient import ClientConnection, FailureCollector, LoginClient, inject
from tests.test_transport_bounds import authServer, passwordRequest
from tests.test_transport_unit import Pair

BY_APPLICATION = conchTransport.DISCONNECT_BY_APPLICATION


@pytest.fixture(autouse=True)
def noTracebacks() -> Iterator[FailureCollector]:
    with FailureCollector() as collector:
        yield collector
    assert not collector.failures, collector.describe()


class Recorder:
    """An admission policy that admits everyone and writes down what it hears."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def admit(self, transport: Any) -> bool:
        return True

    def opened(self, transport: Any) -> None:
        self.events.append("opened")

    def authenticated(self, transport: Any) -> None:
        self.events.append("authenticated")

    def penalise(self, transport: Any, reason: str) -> None:
        self.events.append("penalise " + reason)

    def closed(self, transport: Any) -> None:
        self.events.append("closed")


class NeverLogsIn(LoginClient):
    """Finishes the key exchange, then only ever sends IGNORE."""

    def connectionSecure(self) -> None:
        pass


def pair(client: Any = None, connection: Any = None) -> tuple[Pair, Recorder]:
    recorder = Recorder()
    original = transport.SSHServerTransport.connectionMade

    def withAdmission(self: Any) -> None:
        self.factory.admission = recorder
        original(self)

    transport.SSHServerTransport.connectionMade = withAdmission  # type: ignore[method-assign]
    try:
        p = Pair(client=client, connection=connection)
    finally:
        transport.SSHServerTransport.connectionMade = original  # type: ignore[method-assign]
    return p, recorder


def test_grace_time_ends_a_connection_that_keeps_talking_but_never_logs_in() -> None:
    p, recorder = pair(client=NeverLogsIn())
    for _ in range(int(transport.LOGIN_GRACE_TIME // 15) - 1):
        p.clock.advance(15)
        inject(p.client, conchTransport.MSG_IGNORE, b"\0\0\0\1x")
        p.flush()
        assert p.server.disconnectSent is None
    p.clock.advance(15)
    p.flush()
    assert p.server.disconnectSent == (BY_APPLICATION, b"no login within 120 seconds")
    assert recorder.events == ["opened", "penalise grace", "closed"]


def test_grace_time_stops_at_login() -> None:
    p, recorder = pair(connection=ClientConnection())
    p.clock.advance(transport.LOGIN_GRACE_TIME * 3)
    p.flush()
    assert p.server.disconnectSent is None
    assert recorder.events == ["opened", "authenticated"]


def test_garbage_before_login_is_charged() -> None:
    p, recorder = pair(client=NeverLogsIn())
    inject(p.client, 200, b"")  # not a message a client may send before login
    inject(p.client, conchTransport.MSG_KEX_DH_GEX_REQUEST_OLD, b"")  # outside key exchange
    p.flush()
    assert p.server.disconnectSent is not None
    assert p.server.disconnectSent[0] == conchTransport.DISCONNECT_PROTOCOL_ERROR
    assert "penalise protocol" in recorder.events


def test_six_failed_attempts_end_the_connection_and_each_is_charged() -> None:
    server, fake = authServer()
    charged: list[str] = []
    fake.penalise = charged.append  # type: ignore[attr-defined]
    for attempt in range(1, 7):
        server.ssh_USERAUTH_REQUEST(passwordRequest(b"wrong %d" % attempt))
        fake.portal.logins[-1][1].errback(UnauthorizedLogin())
        fake.clock.advance(server.passwordDelay)
        if attempt < 6:
            assert fake.disconnected == []
    assert fake.disconnected == [b"too many bad auths"]
    assert charged == ["authfail"] * 6
    assert len(fake.portal.logins) == 6
    server.serviceStopped()

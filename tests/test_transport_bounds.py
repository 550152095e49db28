"""
What a hostile peer can make one connection cost, in memory (iosim and a
MemoryReactorClock): a key exchange that never finishes while data flows,
messages smuggled into a key exchange, a second service request, user
authentication after login, requests sent ahead of their answers, channel
limits and the maximum packet floor.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conchConnection
from twisted.conch.ssh import transport as conchTransport
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from diegossh.ssh import transport
from diegossh.ssh.backpressure import KEY_EXCHANGE, SOCKET_FULL
from diegossh.ssh.connection import MAX_CHANNELS, MAX_SESSIONS, MIN_WINDOW, WINDOW_POOL
from diegossh.ssh.factory import MAX_QUEUED_AUTH_REQUESTS, UserAuthServer
from tests.support.memoryserver import WINDOW, MemorySession
from tests.support.sshclient import (
    ClientConnection,
    FailureCollector,
    LoginClient,
    SessionChannel,
    inject,
)
from tests.test_transport_unit import Pair

PROTOCOL_ERROR = conchTransport.DISCONNECT_PROTOCOL_ERROR
KEX_FAILED = conchTransport.DISCONNECT_KEY_EXCHANGE_FAILED
MSG_USERAUTH_REQUEST = 50
MSG_SERVICE_REQUEST = conchTransport.MSG_SERVICE_REQUEST
USERAUTH_SUCCESS = 52


@pytest.fixture(autouse=True)
def noTracebacks() -> Iterator[FailureCollector]:
    with FailureCollector() as collector:
        yield collector
    assert not collector.failures, collector.describe()


class StallingClient(LoginClient):
    """
    Answers the first key exchange, then never answers a KEXINIT again: what
    a client that stops in the middle of a re-key looks like to the server.
    """

    def ssh_KEXINIT(self, packet: bytes) -> None:
        if self._firstKexDone:
            return
        super().ssh_KEXINIT(packet)


class HeldSession(SessionChannel):
    """
    A client session that grants window only when told to.
    """

    manualWindow = True


def sourcing(
    command: bytes, client: Any = None, window: int = 1 << 20
) -> tuple[Pair, HeldSession, MemorySession | None]:
    """
    A logged-in pair with one session running C{command} with C{window}
    granted, or C{None} for the server's channel once it has ended.
    """
    conn = ClientConnection()
    pair = Pair(connection=conn, client=client)
    channel = HeldSession(command, localWindow=window)
    conn.openChannel(channel)
    pair.flush()
    channels = list(pair.server.service.channels.values())
    return pair, channel, channels[0] if channels else None


def queuedOnServer(pair: Pair, serverChannel: MemorySession) -> int:
    return pair.server._kexQueued + serverChannel.bufferedBytes


def test_stalled_rekey_with_data_flowing_is_bounded_then_ended() -> None:
    """
    The client grants a 4 GiB window, the server re-keys, the client never
    answers: the server stops its source once the key exchange queue passes
    its bound, and ends the connection at the key exchange time limit.
    """
    pair, channel, serverChannel = sourcing(
        b"source %d" % (1 << 30), client=StallingClient(), window=1
    )
    assert serverChannel is not None
    pair.server._startRekey()
    pair.flush()
    channel.conn.adjustWindow(channel, 0xFFFFFFFF - 1)
    pair.flush()
    assert pair.server.writePressure.blocked
    assert serverChannel.paused
    assert len(channel.received) == 1  # the window before the re-key
    held = queuedOnServer(pair, serverChannel)
    assert held <= transport.KEX_QUEUE_LIMIT + 2 * serverChannel.highWater
    # time passes; nothing more is produced
    pair.clock.advance(transport.KEX_TIMEOUT - 1)
    pair.flush()
    assert queuedOnServer(pair, serverChannel) == held
    assert pair.server.disconnectSent is None
    pair.clock.advance(1)
    pair.flush()
    assert pair.server.disconnectSent == (
        KEX_FAILED,
        b"key exchange not completed within 60 seconds",
    )
    assert pair.server.lost.called


def test_a_rekey_that_finishes_releases_the_sources() -> None:
    pair, channel, serverChannel = sourcing(b"source %d" % (3 << 20), window=1)
    assert serverChannel is not None
    pair.server._startRekey()
    channel.conn.adjustWindow(channel, (8 << 20) - 1)
    pair.flush()
    assert not pair.server.writePressure.blocked
    assert pair.server._kexTimer is None
    pair.clock.advance(transport.KEX_TIMEOUT * 2)
    pair.flush()
    assert pair.server.disconnectSent is None
    assert len(channel.received) == 3 << 20


def test_queue_over_the_hard_limit_ends_the_connection() -> None:
    """
    Feeders that do not stop (here: a caller ignoring the pressure) cannot
    grow the queue past the hard limit.
    """
    pair, _channel, _serverChannel = sourcing(b"echo", client=StallingClient())
    server = pair.server
    server._startRekey()
    pair.flush()
    seen: list[tuple[str, bool]] = []
    server.writePressure.listen(lambda reason, blocked: seen.append((reason, blocked)))
    chunk = b"\0" * 65536
    while server.disconnectSent is None:
        server.sendPacket(conchConnection.MSG_CHANNEL_DATA, chunk)
        assert server._kexQueued <= transport.KEX_QUEUE_HARD_LIMIT + len(chunk)
    assert seen[0] == (KEY_EXCHANGE, True)
    assert server.disconnectSent == (
        conchTransport.DISCONNECT_BY_APPLICATION,
        b"too much data waiting for the key exchange to finish",
    )


def test_initial_key_exchange_has_the_time_limit_too() -> None:
    class Silent(LoginClient):
        def ssh_KEXINIT(self, packet: bytes) -> None:
            pass

    pair = Pair(client=Silent())
    pair.clock.advance(transport.KEX_TIMEOUT)
    pair.flush()
    assert pair.server.disconnectSent is not None
    assert pair.server.disconnectSent[0] == KEX_FAILED


def test_peer_data_between_its_kexinit_and_newkeys_is_refused() -> None:
    pair, _channel, _serverChannel = sourcing(b"echo")
    client = pair.client
    client.sendKexInit()
    # the client has sent KEXINIT; now it smuggles channel data in
    inject(client, conchConnection.MSG_CHANNEL_DATA, struct.pack(">2L", 0, 1) + b"x")
    pair.flush()
    assert pair.server.disconnectSent == (PROTOCOL_ERROR, b"message 94 during key exchange")


def test_a_second_service_request_ends_the_connection() -> None:
    pair, _channel, _serverChannel = sourcing(b"echo")
    inject(pair.client, MSG_SERVICE_REQUEST, common.NS(b"ssh-userauth"))
    pair.flush()
    assert pair.server.disconnectSent == (PROTOCOL_ERROR, b"service already requested")


def test_user_authentication_after_login_is_ignored_and_not_logged() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        pair, _channel, _serverChannel = sourcing(b"echo")
        secret = b"hunter2-secret"
        request = (
            common.NS(b"tester")
            + common.NS(b"ssh-connection")
            + common.NS(b"password")
            + b"\0"
            + common.NS(secret)
        )
        before = len(pair.server.received)
        inject(pair.client, MSG_USERAUTH_REQUEST, request)
        inject(pair.client, 200, secret)
        pair.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert pair.server.disconnectSent is None
    # nothing answered the user authentication request; 200 got UNIMPLEMENTED
    answers = [num for _seq, num in pair.server.sent[-3:]]
    assert conchTransport.MSG_UNIMPLEMENTED in answers
    assert [num for _seq, num in pair.server.sent].count(USERAUTH_SUCCESS) == 1
    assert len(pair.server.received) == before + 2
    assert not any(secret.decode() in repr(event) for event in events)


class FakePortal:
    def __init__(self) -> None:
        self.logins: list[tuple[Any, defer.Deferred[Any]]] = []

    def listCredentialsInterfaces(self) -> list[Any]:
        return [IUsernamePassword]

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.logins.append((credentials, d))
        return d


class FakeTransport:
    def __init__(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = self
        self.portal = FakePortal()
        self.sent: list[int] = []
        self.services: list[Any] = []
        self.disconnected: list[bytes] = []

    def isEncrypted(self, direction: str) -> bool:
        return True

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.sent.append(messageType)

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.disconnected.append(reason)

    def getService(self, transport: Any, name: bytes) -> Any:
        return lambda: name

    def setService(self, service: Any) -> None:
        self.services.append(service)


def passwordRequest(password: bytes) -> bytes:
    return (
        common.NS(b"tester")
        + common.NS(b"ssh-connection")
        + common.NS(b"password")
        + b"\0"
        + common.NS(password)
    )


def authServer() -> tuple[UserAuthServer, FakeTransport]:
    server = UserAuthServer()
    fake = FakeTransport()
    server.transport = fake
    server.serviceStarted()
    return server, fake


def test_requests_sent_ahead_wait_and_none_is_checked_after_success() -> None:
    """
    Conch checks requests as they come: two sent back to back would both be
    checked (for the proxy: two containers dialled) and both could succeed.
    """
    server, fake = authServer()
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"first"))
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"second"))
    assert [c.password for c, _ in fake.portal.logins] == [b"first"]
    fake.portal.logins[0][1].callback((None, object(), lambda: None))
    assert fake.sent == [USERAUTH_SUCCESS]
    assert fake.services == [b"ssh-connection"]
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"third"))
    assert len(fake.portal.logins) == 1
    server.serviceStopped()


def test_a_request_sent_ahead_is_checked_after_a_failure() -> None:
    server, fake = authServer()
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"wrong"))
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"right"))
    fake.portal.logins[0][1].errback(UnauthorizedLogin())
    fake.clock.advance(server.passwordDelay)
    assert [c.password for c, _ in fake.portal.logins] == [b"wrong", b"right"]
    server.serviceStopped()


def test_no_request_sent_ahead_is_checked_once_the_connection_is_closing() -> None:
    """
    After the last allowed failure the connection is closing: a request
    queued behind it must not reach the portal (for the proxy, a lookup and a
    container dialled for nobody; for the daemon, one try past MaxAuthTries).
    """
    server, fake = authServer()
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"wrong"))
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"queued"))
    socket = StringTransport()
    fake.transport = socket  # type: ignore[attr-defined]
    socket.loseConnection()
    fake.portal.logins[0][1].errback(UnauthorizedLogin())
    fake.clock.advance(server.passwordDelay)
    assert [c.password for c, _ in fake.portal.logins] == [b"wrong"]
    server.ssh_USERAUTH_REQUEST(passwordRequest(b"late"))
    assert len(fake.portal.logins) == 1
    server.serviceStopped()


def test_too_many_requests_sent_ahead_end_the_connection() -> None:
    server, fake = authServer()
    for _ in range(MAX_QUEUED_AUTH_REQUESTS + 2):
        server.ssh_USERAUTH_REQUEST(passwordRequest(b"x"))
    assert fake.disconnected == [b"too many authentication requests"]
    assert len(fake.portal.logins) == 1
    server.serviceStopped()


def test_channel_and_session_limits_refuse_the_excess() -> None:
    conn = ClientConnection()
    pair = Pair(connection=conn)
    refused: list[Any] = []
    opened: list[SessionChannel] = []
    for _ in range(MAX_SESSIONS + 2):
        channel = SessionChannel(b"echo")
        channel.ready.addCallbacks(opened.append, refused.append)
        conn.openChannel(channel)
    pair.flush()
    assert len(opened) == MAX_SESSIONS
    assert len(refused) == 2
    assert all(b"too many sessions" in str(f.value).encode() for f in refused)
    assert MAX_CHANNELS > MAX_SESSIONS


@pytest.mark.parametrize("reason", [SOCKET_FULL, KEY_EXCHANGE])
def test_write_pressure_pauses_every_channel_and_resumes_them(reason: str) -> None:
    size = 4 << 20
    pair, channel, serverChannel = sourcing(b"source %d" % size, window=1)
    assert serverChannel is not None
    server = pair.server
    server.writePressure.set(reason, True)
    channel.conn.adjustWindow(channel, 0xFFFFFFFF - 1)
    pair.flush()
    assert serverChannel.paused
    assert len(channel.received) == 1  # the window before the re-key
    assert serverChannel.bufferedBytes <= 256 * 1024  # one write of the source
    server.writePressure.set(reason, False)
    pair.flush()
    assert len(channel.received) == size


def test_windows_of_a_connection_share_one_pool() -> None:
    """
    Each session asks for a 2 MiB window; past the pool a channel gets the
    minimum, so what a peer may send ahead of our reading is bounded per
    connection, not per channel.
    """
    conn = ClientConnection()
    pair = Pair(connection=conn)
    for _ in range(MAX_SESSIONS):
        conn.openChannel(HeldSession(b"echo", localWindow=1 << 20))
    pair.flush()
    windows = [c.localWindowSize for c in pair.server.service.channels.values()]
    assert windows[:2] == [WINDOW, WINDOW]
    assert windows[2:] == [MIN_WINDOW] * (MAX_SESSIONS - 2)
    assert sum(windows) <= WINDOW_POOL + MAX_SESSIONS * MIN_WINDOW
    # the client was told those windows
    assert [c.remoteWindowLeft for c in conn.channels.values()] == windows
    # a channel closing gives its share back
    first = next(iter(conn.channels.values()))
    conn.sendClose(first)
    pair.flush()
    conn.openChannel(HeldSession(b"echo", localWindow=1 << 20))
    pair.flush()
    windows = [c.localWindowSize for c in pair.server.service.channels.values()]
    assert windows[-1] == WINDOW_POOL - sum(windows[:-1]) > MIN_WINDOW


def test_a_peer_that_sends_requests_and_never_reads_is_no_longer_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    Channels stop when the socket is full, but answers to the peer's own
    requests do not: past a backlog written while full, the peer's socket is
    not read, so it cannot make us buffer answers without limit. Reading
    resumes when the socket drains.
    """
    monkeypatch.setattr(transport, "SOCKET_BACKLOG_LIMIT", 4096)
    pair, channel, _serverChannel = sourcing(b"echo")
    server = pair.server
    server.writePressure.set(SOCKET_FULL, True)
    answers: list[Any] = []
    for _ in range(200):
        d = channel.conn.sendGlobalRequest(b"keepalive@openssh.com", b"", wantReply=True)
        d.addBoth(answers.append)
    pair.flush()
    assert server.readGate.paused
    assert not pair.server.lost.called
    server.writePressure.set(SOCKET_FULL, False)
    assert not server.readGate.paused
    pair.flush()
    assert len(answers) == 200


def test_no_more_sessions_refuses_later_session_opens() -> None:
    conn = ClientConnection()
    pair = Pair(connection=conn)
    first = HeldSession(b"echo")
    conn.openChannel(first)
    pair.flush()
    assert first.ready.called
    conn.sendGlobalRequest(b"no-more-sessions@openssh.com", b"")
    later = HeldSession(b"echo")
    refused: list[Any] = []
    later.ready.addErrback(refused.append)
    conn.openChannel(later)
    pair.flush()
    assert [f.value.args for f in refused] == [(b"no more sessions", 4)]

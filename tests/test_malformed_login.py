"""
Malformed user authentication requests and global requests, found by the
mutation fuzzer (test_fuzz.py), each answered as a refusal: no exception
escapes to the transport (which would end the connection with "internal
error"), nothing is logged as an error.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from twisted.conch.ssh import common, userauth
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, globalLogPublisher

from diegossh.proxy.keylogin import KeyRealmChecker
from diegossh.proxy.login import RealmDispatcher
from diegossh.proxy.server import ProxyRealm, ProxyUserAuthServer
from diegossh.sshd.auth import AuthorizedKeyChecker, DaemonUserAuthServer
from diegossh.sshd.avatar import DaemonRealm, DaemonUser
from diegossh.sshd.session import SessionConfig
from tests.support.keys import key

NS = common.NS
ED25519 = key("ed25519").public().blob()
CONFIG = SessionConfig(baseEnv={}, home="/", shell="/bin/sh", buildProgram=lambda *a: None)

MALFORMED_PUBLICKEY = {
    "empty": b"",
    "no-strings": b"\0",
    "short-blob-length": b"\0" + NS(b"ssh-ed25519") + b"\0\0",
    "not-a-key": b"\0" + NS(b"ssh-ed25519") + NS(b"garbage"),
    "ed25519-wrong-size": b"\0" + NS(b"ssh-ed25519") + NS(NS(b"ssh-ed25519") + NS(b"x")),
    "truncated-key": b"\0" + NS(b"ssh-ed25519") + NS(NS(b"ssh-ed25519")),
    "bad-ec-point": b"\0"
    + NS(b"ecdsa-sha2-nistp256")
    + NS(NS(b"ecdsa-sha2-nistp256") + NS(b"nistp256") + NS(b"\4" + b"\0" * 64)),
    "non-ascii-algorithm": b"\0" + NS(b"\xff\xfe") + NS(ED25519),
    "signed-without-signature": b"\1" + NS(b"ssh-ed25519") + NS(ED25519) + b"\0\0",
}


class FakeTransport:
    def __init__(self, portal: Portal) -> None:
        self.factory = SimpleNamespace(portal=portal)
        self.clock = Clock()
        self.sessionID = b"\0" * 32
        self.peerAddress = "192.0.2.1:1234"
        self.sent: list[tuple[int, bytes]] = []
        self.disconnected: tuple[int, bytes] | None = None

    def isEncrypted(self, direction: str) -> bool:
        return True

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.sent.append((messageType, payload))

    def sendDisconnect(self, code: int, description: bytes) -> None:
        self.disconnected = (code, description)


class Errors:
    """Log events with a failure or at level error or above, while installed."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= LogLevel.error):
            self.events.append(event)

    def __enter__(self) -> list[LogEvent]:
        globalLogPublisher.addObserver(self)
        return self.events

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


def request(method: bytes, rest: bytes, user: bytes = b"vcap") -> bytes:
    return NS(user) + NS(b"ssh-connection") + NS(method) + rest


def start(server: Any, portal: Portal) -> FakeTransport:
    transport = FakeTransport(portal)
    server.transport = transport
    server.serviceStarted()
    return transport


def daemonServer() -> tuple[DaemonUserAuthServer, FakeTransport]:
    server = DaemonUserAuthServer()
    portal = Portal(DaemonRealm(CONFIG, Clock()), [AuthorizedKeyChecker(key("ed25519"))])
    return server, start(server, portal)


def proxyServer() -> tuple[ProxyUserAuthServer, FakeTransport]:
    server = ProxyUserAuthServer()
    realm = ProxyRealm(lambda target: None, Clock())  # type: ignore[arg-type, return-value]
    portal = Portal(realm, [RealmDispatcher([]), KeyRealmChecker([])])
    return server, start(server, portal)


def refused(transport: FakeTransport) -> bool:
    return transport.disconnected is None and transport.sent[-1][0] == userauth.MSG_USERAUTH_FAILURE


@pytest.mark.parametrize("rest", MALFORMED_PUBLICKEY.values(), ids=MALFORMED_PUBLICKEY.keys())
def test_daemon_refuses_malformed_publickey(rest: bytes) -> None:
    server, transport = daemonServer()
    with Errors() as errors:
        server.ssh_USERAUTH_REQUEST(request(b"publickey", rest))
    assert refused(transport), transport.sent
    assert not errors


@pytest.mark.parametrize("rest", MALFORMED_PUBLICKEY.values(), ids=MALFORMED_PUBLICKEY.keys())
def test_proxy_refuses_malformed_publickey(rest: bytes) -> None:
    server, transport = proxyServer()
    with Errors() as errors:
        server.ssh_USERAUTH_REQUEST(request(b"publickey", rest, user=b"bastion:x"))
    assert refused(transport), transport.sent
    assert not errors


@pytest.mark.parametrize(
    "rest", [b"", b"\0", b"\0\0\0"], ids=["empty", "flag-only", "short-length"]
)
def test_proxy_refuses_malformed_password(rest: bytes) -> None:
    server, transport = proxyServer()
    with Errors() as errors:
        server.ssh_USERAUTH_REQUEST(request(b"password", rest, user=b"diego:app/0"))
    assert refused(transport), transport.sent
    assert not errors


def test_daemon_still_accepts_its_key_after_malformed_requests() -> None:
    server, transport = daemonServer()
    server.ssh_USERAUTH_REQUEST(request(b"publickey", b""))
    server.ssh_USERAUTH_REQUEST(request(b"publickey", b"\0" + NS(b"ssh-ed25519") + NS(ED25519)))
    assert transport.sent[-1][0] == userauth.MSG_USERAUTH_PK_OK


def test_non_ascii_global_request_refused() -> None:
    user = DaemonRealm(CONFIG, Clock()).requestAvatar("vcap", None, *DaemonUser.__implemented__)
    avatar = user[1]
    assert avatar.gotGlobalRequest(b"tcpip-forward\xff", b"") == 0
    assert avatar.gotGlobalRequest(b"\x80", b"") == 0
    assert avatar.gotGlobalRequest(b"keepalive@openssh.com", b"") == 0


def test_proxy_answers_a_refused_password_after_the_delay() -> None:
    """
    As Conch's own password method: a guess costs the guesser a second, not
    the proxy's sub-millisecond answer.
    """
    server, transport = proxyServer()
    server.ssh_USERAUTH_REQUEST(request(b"password", b"\0" + NS(b"guess"), user=b"diego:app/0"))
    assert not any(num == userauth.MSG_USERAUTH_FAILURE for num, _ in transport.sent)
    transport.clock.advance(server.passwordDelay)
    assert refused(transport), transport.sent

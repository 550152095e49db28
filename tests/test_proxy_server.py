"""
The proxy's user-facing side in memory (L{ProxyServerTransport},
L{ProxyUserAuthServer} behind the portal C{tap} builds): what a user who
tries the wrong thing gets, and that each refusal leaves nothing behind.

Every test runs on one clock (L{tests.support.proxyworld}), ends with no
timer of its own left on it and no traceback in the log.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import IgnoreAuthentication
from twisted.conch.ssh import common, keys
from twisted.conch.ssh import transport as conchTransport
from twisted.internet import defer
from twisted.python.failure import Failure

from diegossh.proxy.login import BadCredentials, Denied
from diegossh.proxy.server import ProxyAvatar, ProxyUserAuthServer
from diegossh.ssh.connection import SSHConnection
from diegossh.ssh.factory import MAX_AUTH_TRIES
from tests.support.proxyworld import (
    CREDENTIALS,
    GUID,
    MSG_USERAUTH_FAILURE,
    MSG_USERAUTH_PK_OK,
    MSG_USERAUTH_SUCCESS,
    USER_KEY,
    KeyUser,
    ProxyWorld,
    Request,
    diego,
    password,
    publickey,
    target,
)

OTHER_KEY = keys.Key(ed25519.Ed25519PrivateKey.generate())
TOO_MANY = (conchTransport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"too many bad auths")
MSG_UNIMPLEMENTED = 3
MSG_GLOBAL_REQUEST = 80
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
SESSION_OPEN = common.NS(b"session") + struct.pack(">3L", 0, 2 << 20, 32768)


@pytest.fixture
def worlds() -> Iterator[Callable[..., ProxyWorld]]:
    """
    Builds worlds; at the end each must be clean once its users have gone:
    no timer left on its clock, no traceback in the log.
    """
    built: list[ProxyWorld] = []

    def make(**options: Any) -> ProxyWorld:
        built.append(ProxyWorld(**options))
        return built[-1]

    try:
        yield make
        for w in built:
            w.closeAll()
            assert w.pending() == [], "timers left on the clock"
            assert w.outcomes.failures == [], w.outcomes.text()
    finally:
        for w in built:
            w.stop()


@pytest.fixture
def world(worlds: Callable[..., ProxyWorld]) -> ProxyWorld:
    return worlds()


@pytest.fixture
def strict(worlds: Callable[..., ProxyWorld]) -> ProxyWorld:
    """Three tries and thirty seconds to log in."""
    return worlds(maxAuthTries=3, loginGraceTime=30)


def proxyAuth(world: ProxyWorld, index: int = -1) -> ProxyUserAuthServer:
    service = world.servers[index].service
    assert isinstance(service, ProxyUserAuthServer)
    return service


# -- a good login, for contrast


def test_password_login_dials_once_and_relays(world: ProxyWorld) -> None:
    user = world.user(password(diego(3)))
    assert user.answers == [MSG_USERAUTH_SUCCESS]
    assert world.directory.lookups == [(GUID, 3)]
    assert len(world.dials) == 1
    assert isinstance(world.servers[0].avatar, ProxyAvatar)
    channels = user.channels()
    assert channels is not None
    channels.send(MSG_CHANNEL_OPEN, SESSION_OPEN)
    world.flush()
    assert [num for num, _ in channels.received] == [MSG_CHANNEL_OPEN_CONFIRMATION]
    assert [e["outcome"] for e in world.outcomes.access if "outcome" in e] == ["success"]


# -- user names and passwords an attacker tries

BAD_USERNAMES = {
    "no-colon": b"diego",
    "no-realm-separator": GUID.encode() + b"/0",
    "unknown-realm": b"nope:" + GUID.encode() + b"/0",
    "realm-case": b"DIEGO:" + GUID.encode() + b"/0",
    "key-realm-by-password": b"bastion:" + GUID.encode() + b"/0",
    "empty": b"",
    "colon-only": b":",
    "empty-subject": b"diego:",
    "no-index": b"diego:" + GUID.encode(),
    "empty-index": b"diego:" + GUID.encode() + b"/",
    "negative-index": b"diego:" + GUID.encode() + b"/-1",
    "signed-index": b"diego:" + GUID.encode() + b"/+1",
    "hex-index": b"diego:" + GUID.encode() + b"/0x1",
    "index-past-int32": b"diego:" + GUID.encode() + b"/2147483648",
    "index-of-eleven-digits": b"diego:" + GUID.encode() + b"/00000000001",
    "two-indexes": b"diego:" + GUID.encode() + b"/0/1",
    "path-in-guid": b"diego:../" + GUID.encode() + b"/0",
    "space-in-guid": b"diego:app guid/0",
    "newline-after-index": b"diego:" + GUID.encode() + b"/0\n",
    "nul-in-guid": b"diego:app\0guid/0",
    "not-utf-8": b"diego:\xff\xfe/0",
    "empty-guid": b"diego:/0",
}


@pytest.mark.parametrize("username", BAD_USERNAMES.values(), ids=BAD_USERNAMES.keys())
def test_malformed_usernames_are_refused_like_a_wrong_password(
    world: ProxyWorld, username: bytes
) -> None:
    """
    Refused with the right password, before any lookup or dial, after the
    password delay, with nothing to tell it from a wrong password.
    """
    user = world.user(Request(username))
    assert user.answers == []
    world.advance(proxyAuth(world).passwordDelay)
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert user.banners == []
    assert world.directory.lookups == [] and world.dials == []
    assert world.outcomes.denials() == ["permission denied"]


WRONG_PASSWORDS = {
    "wrong": b"guess",
    "empty": b"",
    "prefix": CREDENTIALS.encode()[:-1],
    "longer": CREDENTIALS.encode() + b"x",
    "newline": CREDENTIALS.encode() + b"\n",
    "case": CREDENTIALS.upper().encode(),
    "nul": CREDENTIALS.encode() + b"\0",
}


@pytest.mark.parametrize("secret", WRONG_PASSWORDS.values(), ids=WRONG_PASSWORDS.keys())
def test_wrong_passwords_are_refused_before_the_lookup(world: ProxyWorld, secret: bytes) -> None:
    user = world.user(password(diego(0), secret))
    world.advance(proxyAuth(world).passwordDelay)
    assert user.answers == [MSG_USERAUTH_FAILURE] and user.banners == []
    assert world.directory.lookups == [] and world.dials == []


def test_a_refusal_from_the_directory_is_shown_to_the_user(world: ProxyWorld) -> None:
    """The secret checked out: the user is told why, and nothing is dialled."""
    user = world.user(password(diego(0, guid="gone")))
    world.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert user.banners == ["diego-ssh-proxy: no such process\r\n"]
    assert world.dials == []


def test_malformed_password_request_is_refused(world: ProxyWorld) -> None:
    user = world.user(Request(diego(0), raw=b"\0\0\0"))
    world.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert world.directory.lookups == []


# -- too many attempts


def test_the_default_is_six_attempts(world: ProxyWorld) -> None:
    user = world.user(*[password(diego(0), b"guess %d" % i) for i in range(MAX_AUTH_TRIES + 2)])
    for _ in range(MAX_AUTH_TRIES + 2):
        world.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE] * (MAX_AUTH_TRIES - 1)
    assert user.disconnectReceived == TOO_MANY


def test_max_auth_tries_ends_the_connection_at_the_last_try(strict: ProxyWorld) -> None:
    guesses = [password(diego(0), b"guess %d" % i) for i in range(3)]
    user = strict.user(*guesses, password(diego(0)))
    for _ in range(4):
        strict.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE] * 2
    assert user.disconnectReceived == TOO_MANY
    assert strict.directory.lookups == [] and strict.dials == []


def test_every_kind_of_failure_counts(strict: ProxyWorld) -> None:
    """
    Malformed names, unknown realms and unknown keys are attempts as much
    as wrong passwords are: an attacker cannot probe for free.
    """
    user = strict.user(
        Request(b"nope:x"),
        publickey("bastion:x", OTHER_KEY, OTHER_KEY),
        password(diego(0), b"guess"),
        password(diego(0)),
    )
    for _ in range(4):
        strict.advance(1)
    assert user.disconnectReceived == TOO_MANY
    assert strict.dials == []


def test_requests_sent_ahead_do_not_get_past_the_limit(strict: ProxyWorld) -> None:
    """
    Pipelined guesses are checked one at a time; the right password sent
    after the limit never logs in.
    """
    user = strict.user(*[password(diego(0), b"guess")] * 3, password(diego(0)), eager=True)
    for _ in range(4):
        strict.advance(1)
    assert MSG_USERAUTH_SUCCESS not in user.answers
    assert user.disconnectReceived == TOO_MANY
    assert strict.directory.lookups == [] and strict.dials == []


def test_none_method_is_not_an_attempt(strict: ProxyWorld) -> None:
    """OpenSSH clients start with C{none}: it must not use up a try."""
    user = strict.user(*[Request(diego(0), method=b"none")] * 4, password(diego(0)))
    strict.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE] * 4 + [MSG_USERAUTH_SUCCESS]


# -- login grace time


def test_grace_time_ends_a_silent_connection(strict: ProxyWorld) -> None:
    user = strict.user()
    strict.advance(29)
    assert user.disconnectReceived is None
    strict.advance(1)
    assert user.disconnectReceived == (
        conchTransport.DISCONNECT_BY_APPLICATION,
        b"no login within 30 seconds",
    )


def test_grace_time_ends_a_login_held_in_the_directory(strict: ProxyWorld) -> None:
    """A slow (or stalling) directory does not keep a connection past grace."""
    strict.directory.hold = True
    user = strict.user(password(diego(0)))
    strict.advance(30)
    assert user.disconnectReceived is not None
    assert strict.directory.cancelled == 1
    assert strict.dials == []
    assert strict.pending() == []


def test_grace_time_ends_a_login_held_at_the_backend(strict: ProxyWorld) -> None:
    strict.backend = "hold"
    strict.backendTimeout = 60
    user = strict.user(password(diego(0)))
    assert len(strict.dials) == 1
    strict.advance(30)
    assert user.disconnectReceived is not None
    assert len(strict.connects) == 1 and strict.connects[0].called
    assert strict.pending() == []


def test_grace_time_ends_after_guessing_slowly(strict: ProxyWorld) -> None:
    """Two guesses, then silence: still gone at 30 seconds."""
    user = strict.user(password(diego(0), b"a"), password(diego(0), b"b"))
    strict.advance(1)
    strict.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE] * 2
    strict.advance(28)
    assert user.disconnectReceived is not None


# -- the slow-down on failure


def test_a_refusal_is_answered_after_the_delay(world: ProxyWorld) -> None:
    user = world.user(password(diego(0), b"guess"))
    delay = proxyAuth(world).passwordDelay
    assert delay >= 1
    world.advance(delay - 0.01)
    assert user.answers == []
    world.advance(0.01)
    assert user.answers == [MSG_USERAUTH_FAILURE]


def test_leaving_during_the_delay_leaves_no_timer(world: ProxyWorld) -> None:
    """
    The user hangs up while the refusal waits: the timer goes with the
    connection, and nothing is logged as an error (the fixture checks).
    """
    user = world.user(password(diego(0), b"guess"))
    assert len(world.pending()) > 0
    user.transport.loseConnection()
    world.flush()
    assert world.pending() == []
    assert user.answers == []


def test_leaving_during_the_lookup_leaves_no_timer(world: ProxyWorld) -> None:
    """
    The login the user abandoned is not refused (nobody to answer), so it
    waits for no delay either.
    """
    world.directory.hold = True
    user = world.user(password(diego(0)))
    user.transport.loseConnection()
    world.flush()
    assert world.directory.cancelled == 1
    assert world.pending() == []
    assert world.outcomes.denials() == []


def test_leaving_during_the_backend_login_leaves_no_timer(world: ProxyWorld) -> None:
    world.backend = "mute"
    user = world.user(password(diego(0)))
    assert len(world.dials) == 1
    user.transport.loseConnection()
    world.flush()
    assert world.dials[0].protocol.transport.disconnecting
    assert world.pending() == []


@pytest.mark.parametrize(
    "failure", [defer.CancelledError(), IgnoreAuthentication()], ids=["cancelled", "ignored"]
)
def test_abandoned_logins_are_not_delayed(world: ProxyWorld, failure: Exception) -> None:
    world.user()
    before = world.pending()
    result = proxyAuth(world)._slowDown(Failure(failure))
    assert isinstance(result, Failure) and result.value is failure
    assert world.pending() == before


def test_a_refusal_still_waiting_is_cancelled_with_the_service(world: ProxyWorld) -> None:
    world.user()
    auth = proxyAuth(world)
    before = world.pending()
    answered: list[Any] = []
    auth._slowDown(Failure(Denied(BadCredentials(), "diego"))).addErrback(answered.append)
    assert len(world.pending()) == len(before) + 1
    auth.serviceStopped()
    assert [f.type for f in answered] == [IgnoreAuthentication]
    assert world.pending() == [c for c in before if c.active()]


# -- key logins


def test_a_key_the_realm_does_not_know_is_refused_without_pk_ok(world: ProxyWorld) -> None:
    user = world.user(
        publickey("bastion:x", OTHER_KEY), publickey("bastion:x", OTHER_KEY, OTHER_KEY)
    )
    assert user.answers == [MSG_USERAUTH_FAILURE] * 2
    assert MSG_USERAUTH_PK_OK not in [num for _, num in user.received]
    assert world.keyRealm is not None and world.keyRealm.avatars == []
    assert world.outcomes.denials() == ["permission denied"] * 2


def test_a_known_key_signed_by_another_key_is_refused(world: ProxyWorld) -> None:
    user = world.user(publickey("x", USER_KEY), publickey("x", USER_KEY, OTHER_KEY))
    assert user.answers == [MSG_USERAUTH_PK_OK, MSG_USERAUTH_FAILURE]
    assert world.keyRealm is not None and world.keyRealm.avatars == []


def test_a_known_key_logs_in_to_the_key_realm(world: ProxyWorld) -> None:
    user = world.user(publickey("someone", USER_KEY, USER_KEY))
    assert user.answers == [MSG_USERAUTH_SUCCESS]
    assert world.keyRealm is not None
    (avatar,) = world.keyRealm.avatars
    assert isinstance(avatar, KeyUser) and avatar.client == "192.0.2.7:40022"
    assert isinstance(world.servers[0].service, SSHConnection)
    assert world.dials == []
    world.closeAll()
    assert avatar.loggedOut


def test_without_a_key_realm_keys_are_not_offered(worlds: Callable[..., ProxyWorld]) -> None:
    w = worlds(keyRealm=False)
    user = w.user(publickey("x", USER_KEY, USER_KEY))
    w.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE]


# -- channels before the backend is ready


def test_channel_messages_before_login_are_not_relayed(world: ProxyWorld) -> None:
    """
    While the login is still looking up the container, channel opens and
    global requests are answered UNIMPLEMENTED and never reach the
    container; after login, channels work.
    """
    world.directory.hold = True
    user = world.user(password(diego(0)))
    user.sendPacket(MSG_CHANNEL_OPEN, SESSION_OPEN)
    user.sendPacket(
        MSG_GLOBAL_REQUEST, common.NS(b"tcpip-forward") + b"\1" + common.NS(b"") + b"\0" * 4
    )
    world.flush()
    assert [num for _, num in user.received][-2:] == [MSG_UNIMPLEMENTED] * 2
    assert user.disconnectReceived is None
    world.directory.held[0].callback(target())
    world.flush()
    assert user.answers == [MSG_USERAUTH_SUCCESS]
    backend = world.dials[0].server.service
    assert backend.channels == {}
    channels = user.channels()
    assert channels is not None
    channels.send(MSG_CHANNEL_OPEN, SESSION_OPEN)
    world.flush()
    assert [num for num, _ in channels.received] == [MSG_CHANNEL_OPEN_CONFIRMATION]
    assert len(backend.channels) == 1


def test_channel_open_before_any_login_is_not_relayed(world: ProxyWorld) -> None:
    user = world.user()
    user.sendPacket(MSG_CHANNEL_OPEN, SESSION_OPEN)
    world.flush()
    assert [num for _, num in user.received][-1] == MSG_UNIMPLEMENTED
    assert world.dials == []


def test_a_second_login_after_success_is_ignored(world: ProxyWorld) -> None:
    user = world.user(password(diego(0)), password(diego(1)), eager=True)
    world.advance(1)
    assert user.answers == [MSG_USERAUTH_SUCCESS]
    assert world.directory.lookups == [(GUID, 0)] and len(world.dials) == 1


def test_users_are_independent(world: ProxyWorld) -> None:
    """One user's refusals do not touch another's login."""
    bad = world.user(*[password(diego(0), b"guess")] * 6)
    good = world.user(password(diego(0)))
    for _ in range(6):
        world.advance(1)
    assert bad.disconnectReceived == TOO_MANY
    assert good.answers == [MSG_USERAUTH_SUCCESS]


# -- the transport: idle connections and a container that goes


def test_an_idle_connection_is_closed_before_login(worlds: Callable[..., ProxyWorld]) -> None:
    w = worlds(idleTimeout=60, loginGraceTime=0)
    user = w.user()
    w.advance(59)
    assert user.disconnectReceived is None
    w.advance(1)
    assert user.disconnectReceived == (conchTransport.DISCONNECT_BY_APPLICATION, b"idle timeout")


def test_anything_the_user_sends_is_activity_before_login(
    worlds: Callable[..., ProxyWorld],
) -> None:
    """Before login only the grace time ends a talkative connection."""
    w = worlds(idleTimeout=30, loginGraceTime=100)
    user = w.user()
    for _ in range(4):
        w.advance(20)
        user.sendPacket(conchTransport.MSG_IGNORE, common.NS(b"x"))
        w.flush()
    assert user.disconnectReceived is None
    w.advance(20)
    assert user.disconnectReceived == (
        conchTransport.DISCONNECT_BY_APPLICATION,
        b"no login within 100 seconds",
    )


@pytest.mark.parametrize("side", ["user", "container"])
def test_traffic_either_way_keeps_a_session_alive(
    worlds: Callable[..., ProxyWorld], side: str
) -> None:
    """
    A user who only reads (the container talks) is not idle, nor is one
    who only writes; a session where neither talks is.
    """
    w = worlds(idleTimeout=60)
    user = w.user(password(diego(0)))
    channels = user.channels()
    assert channels is not None
    keepalive = common.NS(b"keepalive@openssh.com") + b"\0"
    for _ in range(3):
        w.advance(45)
        if side == "user":
            channels.send(MSG_GLOBAL_REQUEST, keepalive)
        else:
            w.dials[0].server.sendPacket(MSG_GLOBAL_REQUEST, keepalive)
        w.flush()
    assert user.disconnectReceived is None
    if side == "container":
        assert [num for num, _ in channels.received] == [MSG_GLOBAL_REQUEST] * 3
    w.advance(60)
    assert user.disconnectReceived == (conchTransport.DISCONNECT_BY_APPLICATION, b"idle timeout")
    assert w.dials[0].protocol.transport.disconnecting


def test_the_container_going_ends_the_users_session(world: ProxyWorld) -> None:
    user = world.user(password(diego(0)))
    assert user.answers == [MSG_USERAUTH_SUCCESS]
    world.dials[0].server.transport.loseConnection()
    world.flush()
    assert user.disconnectReceived == (
        conchTransport.DISCONNECT_BY_APPLICATION,
        b"the instance closed the connection",
    )
    ends = [e for e in world.outcomes.access if e.get("event") == "session_end"]
    assert len(ends) == 1

"""
The proxy's leg to the container (L{connectBackend}, L{BackendTransport},
L{RouteUserAuth}) in memory, seen by the user: a container whose host key
does not match its route is refused before the route's credentials are
offered; a container that is silent, unreachable or refuses the route's
credentials is a clear denial; none of these puts the container's address,
the route's secrets or a traceback in front of the user.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.conch.ssh import transport as conchTransport
from twisted.internet import defer, error
from twisted.internet.task import Clock

from diegossh.proxy.backend import BackendSlot, BackendTransport, connectBackend
from diegossh.proxy.errors import LoginDenied
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.keys import fingerprints
from tests.support.keys import key
from tests.support.proxyworld import (
    BACKEND_ADDRESS,
    BACKEND_HOST_KEY,
    BACKEND_PASSWORD,
    BACKEND_TIMEOUT,
    CREDENTIALS,
    MSG_USERAUTH_FAILURE,
    MSG_USERAUTH_SUCCESS,
    ROUTE_KEY,
    ProxyWorld,
    backendFactory,
    diego,
    password,
    route,
    target,
)

HOST_KEY_MISMATCH = "diego-ssh-proxy: the instance's host key does not match its fingerprint\r\n"


@pytest.fixture
def world() -> Iterator[ProxyWorld]:
    w = ProxyWorld()
    try:
        yield w
        w.closeAll()
        assert w.pending() == [], "timers left on the clock"
        assert w.outcomes.failures == [], w.outcomes.text()
    finally:
        w.stop()


def assertNothingSecretShown(world: ProxyWorld, *shown: str) -> None:
    """
    What the user read (banners, the disconnect) and the access log's
    reasons name neither the container's address nor any secret.
    """
    host, port = BACKEND_ADDRESS
    text = "\n".join([*shown, *world.outcomes.denials()])
    for secret in (host, str(port), BACKEND_PASSWORD, CREDENTIALS, "PRIVATE KEY", "Traceback"):
        assert secret not in text, f"{secret!r} shown to the user: {text!r}"


def assertNoSecretLogged(world: ProxyWorld) -> None:
    """The operator's log may name the address, never a secret."""
    text = world.outcomes.text()
    routeKey = ROUTE_KEY.toString("openssh").decode()
    for secret in (BACKEND_PASSWORD, CREDENTIALS, routeKey.splitlines()[1]):
        assert secret not in text, f"{secret!r} logged"


def login(world: ProxyWorld) -> Any:
    """One password login, advanced until it is answered (or a deadline)."""
    user = world.user(password(diego(0)))
    for _ in range(int(BACKEND_TIMEOUT) + 2):
        if user.answers or user.disconnectReceived:
            break
        world.advance(1)
    return user


def backendLogins(world: ProxyWorld) -> list[Any]:
    return world.backendFactory.portal.attempts  # type: ignore[attr-defined, no-any-return]


# -- the container's host key


def _otherKeysPrints() -> dict[str, str]:
    other = fingerprints(key("ed25519"))
    return {
        "md5": other.md5,
        "sha1": other.sha1,
        "sha256": other.sha256,
        "openssh": other.openssh,
        "no-known-form": "not a fingerprint",
        "bare-unpadded-sha256": fingerprints(BACKEND_HOST_KEY).sha256.rstrip("="),
    }


@pytest.mark.parametrize("pinned", _otherKeysPrints().values(), ids=_otherKeysPrints().keys())
def test_host_key_mismatch_is_refused(world: ProxyWorld, pinned: str) -> None:
    """
    The route pins another key: the proxy hangs up on the container before
    user authentication (it never offers the route's key or password), and
    the user is told why, then may try again; no traceback anywhere.
    """
    world.directory.route = route(host_fingerprint=pinned)
    user = login(world)
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert user.banners == [HOST_KEY_MISMATCH]
    assert user.disconnectReceived is None
    assert backendLogins(world) == []
    (dial,) = world.dials
    assert dial.server.disconnectReceived[0] == conchTransport.DISCONNECT_HOST_KEY_NOT_VERIFIABLE
    assert dial.protocol.transport.disconnecting
    assertNothingSecretShown(world, *user.banners)
    assertNoSecretLogged(world)
    assert f"at {target().address}" in world.outcomes.text()  # the operator's log says where


def _sameKeysPrints() -> dict[str, str]:
    mine = fingerprints(BACKEND_HOST_KEY)
    return {
        "md5": mine.md5,
        "sha1": mine.sha1,
        "sha256": mine.sha256,
        "openssh": mine.openssh,
        "none": "",
    }


@pytest.mark.parametrize("pinned", _sameKeysPrints().values(), ids=_sameKeysPrints().keys())
def test_the_pinned_host_key_logs_in(world: ProxyWorld, pinned: str) -> None:
    world.directory.route = route(host_fingerprint=pinned)
    user = login(world)
    assert user.answers == [MSG_USERAUTH_SUCCESS]


def test_a_mismatch_is_refused_again_on_retry(world: ProxyWorld) -> None:
    """The slot freed by the failed login dials again, and refuses again."""
    world.directory.route = route(host_fingerprint=fingerprints(key("p384")).sha256)
    user = world.user(password(diego(0)), password(diego(0)))
    world.advance(1)
    world.advance(1)
    assert user.answers == [MSG_USERAUTH_FAILURE] * 2
    assert len(world.dials) == 2
    assert backendLogins(world) == []


# -- a container that does not answer


def test_backend_login_timeout_when_the_connect_hangs(world: ProxyWorld) -> None:
    """
    The dial never completes: the user reads the timeout, not the
    connect's cancellation (which names the container's address).
    """
    world.backend = "hold"
    user = world.user(password(diego(0)))
    world.advance(BACKEND_TIMEOUT - 0.1)
    assert user.answers == [] and user.banners == []
    world.advance(0.1)
    world.advance(1)
    assert user.banners == [
        f"diego-ssh-proxy: the instance did not answer within {BACKEND_TIMEOUT:g}s\r\n"
    ]
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert world.dials[0].connector.stoppedConnecting
    assertNothingSecretShown(world, *user.banners)
    assert target().address in world.outcomes.text()


def test_backend_login_timeout_when_the_container_is_mute(world: ProxyWorld) -> None:
    world.backend = "mute"
    user = world.user(password(diego(0)))
    world.advance(BACKEND_TIMEOUT)
    world.advance(1)
    assert user.banners == [
        "diego-ssh-proxy: the instance did not complete the SSH login"
        f" within {BACKEND_TIMEOUT:g}s\r\n"
    ]
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert world.dials[0].protocol.transport.disconnecting
    assertNothingSecretShown(world, *user.banners)


CONNECT_ERRORS = {
    "refused": (error.ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    "timeout": (error.TimeoutError(string="10.244.16.5:61001"), "timed out"),
    "no-route": (error.NoRouteError(113, "No route to host"), "no route to the instance"),
    "dns": (
        error.DNSLookupError("no results for hostname lookup: 10.244.16.5"),
        "the instance's address does not resolve",
    ),
    "other": (error.ConnectError(string="10.244.16.5 port 61001: bad"), "network error"),
}


@pytest.mark.parametrize(("failure", "shown"), CONNECT_ERRORS.values(), ids=CONNECT_ERRORS.keys())
def test_connect_failures_are_described_without_the_address(
    world: ProxyWorld, failure: Exception, shown: str
) -> None:
    world.backend = "refuse"
    world.connectError = failure
    user = login(world)
    assert user.banners == [f"diego-ssh-proxy: could not connect to the instance: {shown}\r\n"]
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assertNothingSecretShown(world, *user.banners)
    assert target().address in world.outcomes.text()


# -- the container refuses the route's credentials


def test_backend_refusing_the_route_credentials(world: ProxyWorld) -> None:
    world.backendFactory = backendFactory(world.clock, acceptKey=False, acceptPassword=False)
    user = login(world)
    assert user.answers == [MSG_USERAUTH_FAILURE]
    assert user.banners == ["diego-ssh-proxy: the instance refused the route's credentials\r\n"]
    methods = [type(c).__name__ for c in backendLogins(world)]
    assert "SSHPrivateKey" in methods and "UsernamePassword" in methods
    assert world.dials[0].protocol.transport.disconnecting
    assertNothingSecretShown(world, *user.banners)
    assertNoSecretLogged(world)


def test_password_is_tried_when_the_key_is_refused(world: ProxyWorld) -> None:
    world.backendFactory = backendFactory(world.clock, acceptKey=False)
    assert login(world).answers == [MSG_USERAUTH_SUCCESS]


def test_key_alone_logs_in(world: ProxyWorld) -> None:
    world.directory.route = route(password="")
    world.backendFactory = backendFactory(world.clock, acceptPassword=False)
    assert login(world).answers == [MSG_USERAUTH_SUCCESS]
    assert {type(c).__name__ for c in backendLogins(world)} == {"SSHPrivateKey"}


def test_an_unusable_route_key_is_a_clear_denial(world: ProxyWorld) -> None:
    world.directory.route = route(private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n")
    user = login(world)
    assert user.banners == ["diego-ssh-proxy: the route's private key cannot be used\r\n"]
    assert backendLogins(world) == []
    assertNothingSecretShown(world, *user.banners)


# -- connectBackend alone


def test_timer_goes_once_the_backend_is_logged_in(world: ProxyWorld) -> None:
    login(world)
    assert not [c for c in world.pending() if "timedOut" in repr(c.func)]


def test_cancelling_the_login_aborts_the_handshake_quietly() -> None:
    """
    The user left: the caller cancels, gets L{defer.CancelledError} (not
    a denial to show anyone), and the timer goes.
    """
    w = ProxyWorld()
    try:
        w.backend = "mute"
        d = w.connect(target())
        w.flush()
        results: list[Any] = []
        d.addBoth(results.append)
        d.cancel()
        w.flush()
        assert results[0].check(defer.CancelledError)
        assert w.dials[0].protocol.transport.disconnecting
        assert w.pending() == []
    finally:
        w.stop()


def test_backend_tls_without_settings_is_refused() -> None:
    t = target()
    tls = type(t)(**{**t.__dict__, "tls_port": 61443})
    d = connectBackend(Clock(), tls, AlgorithmPolicy.everything(), 5.0)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].check(LoginDenied)


def test_a_slot_refuses_a_second_backend() -> None:
    dials: list[defer.Deferred[BackendTransport]] = []

    def connect(_: Any) -> defer.Deferred[BackendTransport]:
        dials.append(defer.Deferred())
        return dials[-1]

    slot = BackendSlot("192.0.2.7:40022")
    slot.connect(target(), connect)
    second: list[Any] = []
    slot.connect(target(), connect).addErrback(second.append)
    assert len(dials) == 1 and second[0].check(LoginDenied)
    slot.release()
    assert dials[0].called

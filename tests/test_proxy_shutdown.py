"""
The proxy's stop, in order: children stop one after another, the users'
connections are closed and waited for, and the access log goes last, so a
session still open at shutdown gets its C{session_end} line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import Service
from twisted.internet import defer, endpoints
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from diegossh.interfaces import IAdmission
from diegossh.proxy.shutdown import (
    SHUTDOWN_REASON,
    ClosingService,
    LiveConnections,
    StopInOrder,
)
from diegossh.ssh.algorithms import AlgorithmPolicy
from tests.support.daemon import freePort
from tests.support.keys import authorizedKeyLine, key
from tests.support.sshclient import ClientConnection, LoginClient

KEY = key("ed25519")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Step(Service):
    """A child whose stop finishes when the test says so."""

    def __init__(self, name: str, stopped: list[str], fail: bool = False) -> None:
        self.name = name
        self.stopped = stopped
        self.fail = fail
        self.finish: defer.Deferred[None] = defer.Deferred()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.stopped.append(self.name)
        if self.fail:
            raise RuntimeError("cannot stop")
        return self.finish


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_children_stop_one_after_another_last_added_first(
    failures: list[dict[str, Any]],
) -> None:
    stopped: list[str] = []
    top = StopInOrder()
    first, broken, last = (
        Step("first", stopped),
        Step("broken", stopped, fail=True),
        Step("last", stopped),
    )
    for child in (first, broken, last):
        child.setServiceParent(top)
    top.startService()
    done = top.stopService()
    assert stopped == ["last"]  # the others wait for it
    last.finish.callback(None)
    assert stopped == ["last", "broken", "first"]  # a failed stop is logged, not fatal
    assert len(failures) == 1
    assert not done.called
    first.finish.callback(None)
    assert done.called and not top.running


class Transport:
    """What the connections keep: a server transport that can be told to close."""

    def __init__(self, connections: LiveConnections | None = None) -> None:
        self.connections = connections
        self.told: list[bytes] = []

    def closeSoon(self, reason: bytes) -> None:
        self.told.append(reason)


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def admit(self, transport: Any) -> bool:
        self.events.append("admit")
        return True

    def opened(self, transport: Any) -> None:
        self.events.append("opened")

    def authenticated(self, transport: Any) -> None:
        self.events.append("authenticated")

    def penalise(self, transport: Any, reason: str) -> None:
        self.events.append("penalise " + reason)

    def closed(self, transport: Any) -> None:
        self.events.append("closed")


def test_live_connections_pass_every_report_on_and_keep_the_open_ones() -> None:
    inner = Recorder()
    live = LiveConnections(inner, Clock())
    verifyObject(IAdmission, live)
    a, b = Transport(), Transport()
    assert live.admit(a)
    live.opened(a)
    live.opened(b)
    live.authenticated(a)
    live.penalise(b, "authfail")
    assert live.open == {a, b}
    live.closed(b)
    assert live.open == {a}
    assert inner.events == ["admit", "opened", "opened", "authenticated", "penalise authfail",
                            "closed"]  # fmt: skip


def test_closing_tells_each_connection_and_waits_for_the_last_to_end() -> None:
    clock = Clock()
    live = LiveConnections(Recorder(), clock)
    a, b = Transport(), Transport()
    live.opened(a)
    live.opened(b)
    closing = ClosingService(live, clock)
    closing.startService()
    done = closing.stopService()
    assert a.told == b.told == [SHUTDOWN_REASON]
    live.closed(a)
    assert not done.called
    live.closed(b)
    assert not done.called  # its connectionLost (and the logout in it) has not finished
    clock.advance(0)
    assert done.called
    assert clock.getDelayedCalls() == []


def test_closing_gives_up_waiting_after_the_grace() -> None:
    clock = Clock()
    live = LiveConnections(Recorder(), clock)
    live.opened(Transport())  # never ends
    closing = ClosingService(live, clock, grace=15)
    closing.startService()
    done = closing.stopService()
    clock.advance(14)
    assert not done.called
    clock.advance(1)
    assert done.called and done.result is None
    with_none = ClosingService(LiveConnections(Recorder(), clock), clock)
    with_none.startService()
    assert with_none.stopService().called


# -- the whole proxy


@pytest_twisted.ensureDeferred
async def test_a_session_open_at_shutdown_gets_its_session_end_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A bastion login (a key from the operator's file) stays open while the
    proxy's top service stops: the user is told why and disconnected, and
    the access log file holds the session's end before it closes.
    """
    from diegossh.proxy import tap

    for variable in tap._ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    keysFile = tmp_path / "authorized_keys_cache"
    keysFile.write_text(authorizedKeyLine(KEY) + "\n")
    accessLog = tmp_path / "access.json"
    port = freePort()
    options = tap.Options()
    options.parseOptions(
        ["--realm", "bastion", "--manualAuthFile", f"--authorizedKeysCache={keysFile}",
         f"--address=127.0.0.1:{port}", "--disableHealthCheckServer",
         f"--accessLog={accessLog}"]
    )  # fmt: skip
    top = tap.makeService(options)
    top.privilegedStartService()
    top.startService()
    try:
        reactor = _reactor()
        client = LoginClient()
        client.key = KEY
        client.user = b"alice"
        client.clock = reactor
        client.policy = AlgorithmPolicy.everything()
        connection = ClientConnection()
        client.connection = connection
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await endpoints.connectProtocol(endpoint, client)
        await connection.started.addTimeout(20, reactor)
        assert b'"event": "login"' in accessLog.read_bytes()
        assert b"session_end" not in accessLog.read_bytes()
    finally:
        await top.stopService()
    await client.lost.addTimeout(20, reactor)
    assert client.disconnectReceived is not None
    assert client.disconnectReceived[1] == SHUTDOWN_REASON
    events = [json.loads(line) for line in accessLog.read_text().splitlines()]
    assert [e["event"] for e in events] == ["login", "session_end"]
    assert events[1]["fingerprint"] == events[0]["fingerprint"]

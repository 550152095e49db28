"""
Logging an attacker cannot inflate (issue 12, item 5), in memory: bounded
text (diegossh.logtext), the per-source throttle before login
(diegossh.ssh.logthrottle) on a MemoryReactorClock, the peer's goodbye at
info, and the access log as rotating JSON lines. End to end against real
processes: tests/test_logging_bounds.py.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from diegossh import logtext
from diegossh.proxy import accesslog
from diegossh.ssh import logthrottle
from diegossh.ssh.factory import SSHServerFactory, UserAuthServer
from diegossh.ssh.logthrottle import LogThrottle
from diegossh.ssh.transport import SSHServerTransport

HUGE = 200_000


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    captured: list[dict[str, Any]] = []
    observer: Any = captured.append
    globalLogPublisher.addObserver(observer)
    try:
        yield captured
    finally:
        globalLogPublisher.removeObserver(observer)


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events]


# -- bounded text


def test_short_printable_text_is_unchanged() -> None:
    assert logtext.bounded("vcap") == "vcap"
    assert logtext.bounded(b"OpenSSH_9.6p1 Ubuntu-3") == "OpenSSH_9.6p1 Ubuntu-3"
    assert logtext.bounded("élan") == "élan"


def test_long_text_is_truncated_with_its_length() -> None:
    out = logtext.bounded("a" * HUGE)
    assert out == "a" * logtext.MAX_CHARS + f"...({HUGE} bytes)"
    out = logtext.bounded(b"b" * HUGE)
    assert out == "b" * logtext.MAX_CHARS + f"...({HUGE} bytes)"


def test_non_printables_are_escaped() -> None:
    assert logtext.bounded("a\nb\r\x1b[31m\\") == "a\\x0ab\\x0d\\x1b[31m\\\\"
    assert logtext.bounded(b"\xff\x00 ok") == "\\xff\\x00 ok"
    assert logtext.bounded("\u202e") == "\\u202e"


def test_escaped_text_stays_within_the_limit() -> None:
    for value in ("\n" * HUGE, b"\xff" * HUGE, "\U0010ffff" * HUGE):
        out = logtext.bounded(value)
        head, _, marker = out.partition("...(")
        assert len(head) <= logtext.MAX_CHARS
        assert marker.endswith(" bytes)")
        assert "\n" not in out


def test_safe_logger_bounds_every_field_and_a_built_format(
    events: list[dict[str, Any]],
) -> None:
    log = logtext.SafeLogger(namespace="test")
    log.info("{user} from {n}", user=b"x\n" * HUGE, n=3)
    log.error("Unsupported key type " + "k" * HUGE + " {or} bad key")
    first, second = texts(events)
    assert first.startswith("x\\x0a") and first.endswith("bytes) from 3")
    assert len(first) < 200
    assert len(second) < logtext.MAX_FORMAT_CHARS + 40
    assert events[0]["n"] == 3


def test_a_short_format_with_control_characters_is_escaped(
    events: list[dict[str, Any]],
) -> None:
    log = logtext.SafeLogger(namespace="test")
    log.error("Unsupported key type \x1b[2J\n or bad key")
    log.info("code {code}\nreason: {why}", code=2, why="x")
    assert texts(events) == [
        "Unsupported key type \\x1b[2J\\x0a or bad key",
        "code 2\\x0areason: x",
    ]


# -- the throttle


def test_throttle_admits_a_budget_per_source_then_summarises(
    events: list[dict[str, Any]],
) -> None:
    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=5, window=60, perConnection=100)
    assert [throttle.admit("192.0.2.1") for _ in range(8)] == [True] * 5 + [False] * 3
    # Another source is not affected.
    assert throttle.admit("192.0.2.2")
    assert not events
    clock.advance(60)
    summaries = [e for e in events if e.get("event") == "suppressed"]
    assert [formatEvent(e) for e in summaries] == [
        "3 more log lines from 192.0.2.1 before login suppressed in the last 60s"
    ]
    # A new window.
    assert throttle.admit("192.0.2.1")


def test_throttle_per_connection() -> None:
    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=100, perConnection=3)

    class Connection:
        pass

    one, two = Connection(), Connection()
    assert [throttle.admit("192.0.2.1", one) for _ in range(4)] == [True] * 3 + [False]
    assert throttle.admit("192.0.2.1", two)


def test_throttle_kinds_have_their_own_budgets(events: list[dict[str, Any]]) -> None:
    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=2, perConnection=100)
    assert [throttle.admit("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert throttle.admit("192.0.2.1", kind="access")
    assert throttle.admit("192.0.2.1", kind="access")
    assert not throttle.admit("192.0.2.1", kind="access")
    clock.advance(60)
    namespaces = sorted(e["log_namespace"] for e in events if e.get("event") == "suppressed")
    assert namespaces == ["diegossh.access", "diegossh.logthrottle"]


def test_throttle_table_is_bounded() -> None:
    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=1, maxSources=10)
    for n in range(1000):
        throttle.admit(f"10.0.{n // 256}.{n % 256}")
    assert throttle.sources() <= 11
    clock.advance(61)
    throttle.admit("192.0.2.9")
    assert throttle.sources() == 1


def test_exempt_sources_have_only_the_per_connection_budget() -> None:
    import ipaddress

    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=2, perConnection=3)
    throttle.exempt = (ipaddress.ip_network("10.0.0.0/8"),)

    class Connection:
        pass

    for _ in range(5):
        c = Connection()
        assert [throttle.admit("10.1.2.3", c) for _ in range(4)] == [True] * 3 + [False]
    assert [throttle.admit("192.0.2.1") for _ in range(3)] == [True, True, False]


def test_ipv6_sources_are_grouped_by_64() -> None:
    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=2)
    assert throttle.admit("2001:db8::1")
    assert throttle.admit("2001:db8::2")
    assert not throttle.admit("2001:db8::ffff:3")
    assert throttle.admit("2001:db8:0:1::1")


def test_no_timer_unless_something_was_held_back() -> None:
    clock = MemoryReactorClock()
    throttle = LogThrottle(clock, perSource=1)
    throttle.admit("192.0.2.1")
    assert not clock.getDelayedCalls()
    throttle.admit("192.0.2.1")
    assert len(clock.getDelayedCalls()) == 1


def test_once_per_source(events: list[dict[str, Any]]) -> None:
    clock = MemoryReactorClock()
    factory = SSHServerFactory(None, [], None, clock, b"SSH-2.0-test")  # type: ignore[arg-type]
    for _ in range(10):
        factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
    moduli = [line for line in texts(events) if "non-fixed-group" in line]
    assert len(moduli) == 1


# -- the transport and Conch's own lines


_factories: dict[int, SSHServerFactory] = {}


def serverTransport(clock: MemoryReactorClock, host: str = "192.0.2.7") -> SSHServerTransport:
    """
    A server transport before login from C{host}; those on one clock share
    a factory (and its throttle).
    """
    factory = _factories.get(id(clock))
    if factory is None or factory.clock is not clock:
        factory = SSHServerFactory(None, [], None, clock, b"SSH-2.0-test")  # type: ignore[arg-type]
        _factories[id(clock)] = factory
    t = SSHServerTransport()
    t.factory = factory
    t.clock = clock
    t.loggedIn = False
    t.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    return t


def test_an_ordinary_goodbye_is_info_and_its_text_bounded(
    events: list[dict[str, Any]],
) -> None:
    t = serverTransport(MemoryReactorClock())
    t.receiveError(11, b"disconnected by user")
    t.receiveError(2, b"\x1b[2J" + b"z" * HUGE)
    levels = [e["log_level"] for e in events]
    assert levels == [LogLevel.info, LogLevel.warn]
    first, second = texts(events)
    assert "Got remote error" not in first
    assert "disconnected by user (code 11)" in first
    assert "\x1b" not in second and len(second) < 300


def test_conch_userauth_lines_carry_a_bounded_user_name(
    events: list[dict[str, Any]],
) -> None:
    service = UserAuthServer()
    service.transport = serverTransport(MemoryReactorClock())
    service.supportedAuthentications = [b"password"]
    d = service.tryAuth(b"none", b"u" * HUGE, b"")
    d.addErrback(lambda f: None)
    lines = texts(events)
    assert any("trying auth" in line for line in lines)
    assert all(len(line) < 400 for line in lines)


def test_lines_before_login_are_throttled_per_source(events: list[dict[str, Any]]) -> None:
    clock = MemoryReactorClock()
    transports = [serverTransport(clock) for _ in range(50)]
    for t in transports:
        for _ in range(5):
            t._log.info("noise {n}", n=1)
    assert len(events) == logthrottle.PER_SOURCE
    other = serverTransport(clock, "198.51.100.1")
    other._log.info("from elsewhere")
    assert len(events) == logthrottle.PER_SOURCE + 1
    # After login, a connection's lines are not throttled.
    transports[0].loggedIn = True
    transports[0]._log.info("after login")
    assert "after login" in texts(events)[-1]
    clock.advance(logthrottle.WINDOW)
    assert texts(events)[-1] == (
        f"{50 * 5 - logthrottle.PER_SOURCE} more log lines from 192.0.2.7 before "
        f"login suppressed in the last {logthrottle.WINDOW:.0f}s"
    )


# -- the access log


def test_access_log_is_json_lines_and_bounded(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    path = tmp_path / "access.json"
    service = accesslog.AccessLogService(str(path), _Reactor())
    service.startService()
    try:
        clock = MemoryReactorClock()
        t = serverTransport(clock)
        accesslog.loginFailed("192.0.2.7:40000", "\n" + "n" * HUGE, "diego", "bad", connection=t)
        data = path.read_bytes()
    finally:
        service.stopService()
    assert b"\x1e" not in data
    lines = data.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["username"].startswith("\\x0annnn")
    assert event["username"].endswith(f"...({HUGE + 1} bytes)")
    assert len(data) < 2048


def test_access_log_denials_are_throttled_per_source(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    clock = MemoryReactorClock()
    connections = [serverTransport(clock) for _ in range(100)]
    for t in connections:
        accesslog.loginFailed("192.0.2.7:1", "u", "diego", "bad", connection=t)
    denied = [e for e in events if e.get("outcome") == "denied"]
    assert len(denied) == logthrottle.PER_SOURCE
    clock.advance(logthrottle.WINDOW)
    summary = [e for e in events if e.get("event") == "suppressed"]
    assert summary[0]["log_namespace"] == "diegossh.access"
    assert summary[0]["count"] == 100 - logthrottle.PER_SOURCE


def test_access_log_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    output = accesslog.AccessLogFile(str(path), maxBytes=1000, maxFiles=2)
    line = b"x" * 99 + b"\n"
    for _ in range(45):
        output.write(line)
    output.close()
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert sizes == {"access.json": 500, "access.json.1": 1000, "access.json.2": 1000}


def test_access_log_follows_logrotate_and_reopens_on_sigusr1(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    reactor = _Reactor()
    service = accesslog.AccessLogService(str(path), reactor)
    service.startService()
    output = service.output
    assert output is not None
    try:
        accesslog._log.info("one", event="test")
        os.rename(path, tmp_path / "access.json.1")
        # logrotate's postrotate: kill -USR1
        os.kill(os.getpid(), signal.SIGUSR1)
        assert reactor.called == [output.reopen]
        assert path.exists()
        accesslog._log.info("two", event="test")
        # Moved again with no signal: the next write notices.
        os.rename(path, tmp_path / "access.json.2")
        accesslog._log.info("three", event="test")
    finally:
        service.stopService()
    rotated = [json.loads(p.read_text())["log_format"] for p in sorted(tmp_path.iterdir())]
    assert rotated == ["three", "one", "two"]


class _Reactor:
    def __init__(self) -> None:
        self.called: list[Any] = []

    def callFromThread(self, f: Any) -> None:
        self.called.append(f)
        f()


def test_the_access_log_service_opens_before_it_starts_and_closes_when_it_stops(
    tmp_path: Path,
) -> None:
    path = tmp_path / "access.json"
    publisher: Any = globalLogPublisher
    before = signal.getsignal(signal.SIGUSR1)
    service = accesslog.AccessLogService(str(path), _Reactor(), publisher=publisher)
    assert not path.exists()  # building opens nothing
    service.privilegedStartService()  # as root, before twistd drops privileges
    assert path.exists()
    accesslog._log.info("not yet", event="test")
    service.startService()
    assert signal.getsignal(signal.SIGUSR1) is not before
    accesslog._log.info("while running", event="test")
    output = service.output
    assert output is not None
    service.stopService()
    accesslog._log.info("after", event="test")
    assert output._file.closed
    assert service.observer is None and service.output is None
    assert signal.getsignal(signal.SIGUSR1) == before
    lines = [json.loads(line)["log_format"] for line in path.read_text().splitlines()]
    assert lines == ["while running"]


def test_the_daemon_tap_gives_the_throttle_the_exempt_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ipaddress
    import sys

    from diegossh.sshd.tap import Options, makeService

    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions(
        ["--allowUnauthenticatedClients", "--perSourcePenaltyExemptList=10.0.0.0/8"]
    )
    service: Any = makeService(options)
    factory = getattr(service.factory, "factory", service.factory)
    assert factory.logThrottle.exempt == (ipaddress.ip_network("10.0.0.0/8"),)


def test_the_proxy_access_log_flags() -> None:
    from diegossh.proxy import config

    assert config.SETTINGS["accessLogMaxBytes"] == (
        "access_log_max_bytes",
        "count",
        accesslog.MAX_BYTES,
    )
    assert config.SETTINGS["accessLogMaxFiles"] == ("access_log_max_files", "count", 5)

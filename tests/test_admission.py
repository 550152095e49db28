"""
Who may start a login, in memory (L{diegossh.ssh.admission}): MaxStartups'
early drop with seeded dice, per-source limits, penalties that accrue, cap and
expire on a L{MemoryReactorClock}, IPv6 /64 grouping, the exempt list, the
bounded table, refusal at accept, the flags and JSON keys of both services;
and the accept guard (L{diegossh.listening}) on a fake port.
"""

from __future__ import annotations

import errno
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from zope.interface.verify import verifyObject

from diegossh import listening
from diegossh.addresses import clientAddress
from diegossh.interfaces import IAdmission
from diegossh.ssh.admission import (
    DAEMON_PENALTIES,
    DEFAULT_PENALTIES,
    Admission,
    AdmittingFactory,
    MaxStartups,
    Penalties,
    PenaltyTable,
    parseExemptList,
    parseTime,
    sourceOf,
)


class Conn:
    """A stand-in server transport: only its accepted address matters."""

    def __init__(self, host: str) -> None:
        kind = IPv6Address if ":" in host else IPv4Address
        self.sourceAddress = kind("TCP", host, 40000)


def policy(
    clock: MemoryReactorClock | None = None,
    maxStartups: str = "1000",
    perSource: int | None = None,
    penalties: Penalties = DEFAULT_PENALTIES,
    exempt: str = "",
    seed: int = 12,
) -> Admission:
    dice = random.Random(seed)  # the early drop's dice, seeded
    return Admission(
        clock or MemoryReactorClock(),
        MaxStartups.parse(maxStartups),
        perSource,
        penalties,
        parseExemptList(exempt),
        randomPercent=lambda: dice.randrange(100),
    )


def connect(admission: Admission, host: str) -> Conn | None:
    """What a listening port does: admit, then the transport says opened."""
    conn = Conn(host)
    if not admission.admit(conn):
        return None
    admission.opened(conn)
    return conn


def failedLogin(admission: Admission, host: str, reason: str = "authfail") -> None:
    conn = connect(admission, host)
    assert conn is not None, f"{host} refused"
    admission.penalise(conn, reason)
    admission.closed(conn)


def test_it_is_an_admission_policy() -> None:
    assert verifyObject(IAdmission, policy())


# -- MaxStartups


def test_max_startups_percentages_are_openssh_arithmetic() -> None:
    limits = MaxStartups.parse("10:30:100")
    assert [limits.dropPercent(n) for n in (0, 9, 10, 11, 55, 99, 100, 500)] == [
        0, 0, 30, 30, 65, 99, 100, 100,
    ]  # fmt: skip
    assert MaxStartups.parse("20") == MaxStartups(20, 100, 20)
    assert MaxStartups.parse("5:100:50").dropPercent(5) == 100


@pytest.mark.parametrize("bad", ["", "10:30", "a:b:c", "10:0:100", "10:101:100", "50:30:10", "0"])
def test_max_startups_refuses_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match="--maxStartups"):
        MaxStartups.parse(bad)


@pytest.mark.parametrize(("held", "expected"), [(5, 0), (10, 30), (55, 65), (90, 93)])
def test_early_drop_refuses_at_openssh_rate_with_seeded_dice(held: int, expected: int) -> None:
    admission = policy(maxStartups="10:30:100")
    for i in range(held):
        admission.opened(Conn(f"10.0.{i // 250}.{i % 250 + 1}"))
    trials = 2000
    refused = sum(not admission.admit(Conn("192.0.2.1")) for _ in range(trials))
    assert admission.unauthenticated == held
    assert abs(100 * refused / trials - expected) < 4


def test_all_refused_past_full_and_logins_make_room() -> None:
    admission = policy(maxStartups="3:50:6")
    conns = [connect(admission, f"10.0.0.{i}") for i in range(1, 40)]
    admitted = [c for c in conns if c is not None]
    assert 3 <= len(admitted) <= 6
    assert admission.unauthenticated == len(admitted)
    if len(admitted) == 6:
        assert connect(admission, "10.9.9.9") is None
    for c in admitted:
        admission.authenticated(c)  # logged in: no longer counts
    assert admission.unauthenticated == 0
    assert connect(admission, "10.9.9.9") is not None
    for c in admitted:
        admission.closed(c)
    assert admission.unauthenticated == 1


def test_fifty_logins_from_one_address_pass_the_proxy_defaults() -> None:
    from diegossh.proxy.config import SETTINGS

    admission = policy(
        maxStartups=SETTINGS["maxStartups"][2], perSource=int(SETTINGS["perSourceMaxStartups"][2])
    )
    conns = [connect(admission, "198.51.100.7") for _ in range(50)]
    assert all(c is not None for c in conns)
    # and a flood from one address cannot reach MaxStartups' start alone
    admission2 = policy(maxStartups="100:30:300", perSource=60)
    for _ in range(200):
        connect(admission2, "203.0.113.9")
    assert admission2.unauthenticated == 60
    assert all(connect(admission2, f"198.51.100.{i}") is not None for i in range(1, 40))


def test_per_source_limit_counts_the_source_and_its_logins_free_it() -> None:
    admission = policy(perSource=2)
    a, b = connect(admission, "10.0.0.1"), connect(admission, "10.0.0.1")
    assert a is not None and b is not None
    assert connect(admission, "10.0.0.1") is None
    assert connect(admission, "10.0.0.2") is not None
    admission.authenticated(a)
    assert connect(admission, "10.0.0.1") is not None
    assert admission.stats.perSource == 1


# -- penalties


def test_failed_logins_accrue_until_min_then_refuse_until_expiry() -> None:
    clock = MemoryReactorClock()
    admission = policy(clock)
    failedLogin(admission, "10.0.0.1")
    failedLogin(admission, "10.0.0.1")
    assert connect(admission, "10.0.0.1") is not None  # 10 s accrued, min is 15 s
    failedLogin(admission, "10.0.0.1")  # 15 s: refused from now on
    assert connect(admission, "10.0.0.1") is None
    assert connect(admission, "10.0.0.2") is not None  # other addresses go on
    clock.advance(14)
    assert connect(admission, "10.0.0.1") is None
    clock.advance(1)
    assert connect(admission, "10.0.0.1") is not None
    assert admission.stats.penalised == 2


def test_penalty_is_capped_at_max() -> None:
    clock = MemoryReactorClock()
    admission = policy(clock, penalties=DEFAULT_PENALTIES.parse("max:60s"))
    table = admission.tables[4]
    for _ in range(100):
        table.charge("10.0.0.1", 5, "authfail")
    assert table.remaining("10.0.0.1") == 60
    clock.advance(60)
    assert table.remaining("10.0.0.1") == 0
    assert len(table) == 0


def test_a_connection_is_charged_once_for_its_costliest_reason_and_not_after_login() -> None:
    admission = policy()
    conn = connect(admission, "10.0.0.1")
    assert conn is not None
    for _ in range(6):
        admission.penalise(conn, "authfail")
    admission.penalise(conn, "grace")
    admission.closed(conn)
    assert admission.tables[4].accrued("10.0.0.1") == DEFAULT_PENALTIES.grace
    # an honest user whose first key or password is refused costs nothing
    honest = connect(admission, "10.0.0.2")
    assert honest is not None
    admission.penalise(honest, "authfail")
    admission.authenticated(honest)
    admission.closed(honest)
    assert admission.tables[4].accrued("10.0.0.2") == 0
    # a connection that tried nothing pays noauth (1 s; off in the daemon)
    quiet = connect(admission, "10.0.0.3")
    assert quiet is not None
    admission.closed(quiet)
    assert admission.tables[4].accrued("10.0.0.3") == 1
    lenient = policy(penalties=DAEMON_PENALTIES)
    quiet = connect(lenient, "10.0.0.3")
    assert quiet is not None
    lenient.closed(quiet)
    assert lenient.tables[4].accrued("10.0.0.3") == 0


def test_a_key_exchange_flood_from_one_source_is_refused_after_min() -> None:
    clock = MemoryReactorClock()
    admission = policy(clock)
    for _ in range(15):  # connect, exchange keys, leave: noauth, 1 s each
        conn = connect(admission, "10.0.0.1")
        assert conn is not None
        admission.closed(conn)
    assert connect(admission, "10.0.0.1") is None
    clock.advance(15)
    assert connect(admission, "10.0.0.1") is not None


def test_ipv6_sources_are_their_64() -> None:
    admission = policy()
    for host in ("2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3"):
        failedLogin(admission, host)
    assert connect(admission, "2001:db8:0:1:abcd::9") is None
    assert connect(admission, "2001:db8:0:2::1") is not None
    assert sourceOf("2001:db8:0:1::1") == (6, "2001:db8:0:1::/64")
    assert sourceOf("::ffff:10.1.2.3") == (4, "10.1.2.3")
    assert len(admission.tables[6]) == 1 and len(admission.tables[4]) == 0


def test_exempt_sources_are_never_charged_nor_limited_per_source() -> None:
    admission = policy(perSource=1, exempt="10.0.0.0/24, 2001:db8::7")
    for _ in range(10):
        failedLogin(admission, "10.0.0.5")
    assert connect(admission, "10.0.0.5") is not None
    assert connect(admission, "10.0.0.5") is not None  # past the per-source limit
    assert len(admission.tables[4]) == 0
    for _ in range(3):
        failedLogin(admission, "::ffff:10.0.0.9")  # a dual-stack listener's view
    assert connect(admission, "10.0.0.9") is not None
    for _ in range(3):
        failedLogin(admission, "10.0.1.5")
    assert connect(admission, "10.0.1.5") is None
    with pytest.raises(ValueError, match="--perSourcePenaltyExemptList: 'lb'"):
        parseExemptList("10.0.0.1,lb")


def test_the_table_is_bounded_and_drops_the_least_penalised() -> None:
    clock = MemoryReactorClock()
    table = PenaltyTable(clock, DEFAULT_PENALTIES, limit=3)
    table.charge("a", 30, "grace")
    table.charge("b", 20, "grace")
    table.charge("c", 50, "grace")
    table.charge("d", 40, "grace")  # full: b (expiring first) makes room
    assert len(table) == 3 and table.evicted == 1
    assert table.remaining("b") == 0
    assert [table.remaining(s) for s in "acd"] == [30, 50, 40]
    for i in range(10_000):  # a spread-out attack: the bound holds, the heap too
        table.charge(f"x{i}", 5 + i % 7, "authfail")
    assert len(table) == 3
    assert len(table._heap) <= 2 * 3 + 64 + 1


def test_expired_entries_leave_the_table() -> None:
    clock = MemoryReactorClock()
    table = PenaltyTable(clock, DEFAULT_PENALTIES, limit=100)
    for i in range(50):
        table.charge(f"s{i}", 5, "authfail")
    clock.advance(6)
    table.charge("late", 5, "authfail")
    assert len(table) == 1


def test_penalties_can_be_turned_off() -> None:
    admission = policy(penalties=DEFAULT_PENALTIES.parse("no"))
    for _ in range(10):
        failedLogin(admission, "10.0.0.1")
    assert connect(admission, "10.0.0.1") is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [("authfail", "authfail"), ("crash:90s", "crash"), ("max-sources4:0", "max-sources4"),
     ("min:20m max:10m", "max is less"), ("grace-exceeded:soon", "grace-exceeded")],
)  # fmt: skip
def test_penalty_settings_refuse_nonsense(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DEFAULT_PENALTIES.parse(text)


def test_penalty_settings_round_trip() -> None:
    changed = DEFAULT_PENALTIES.parse("authfail:1m,grace-exceeded:1h30m max-sources6:10")
    assert (changed.authfail, changed.grace, changed.maxSources6) == (60, 5400, 10)
    assert DEFAULT_PENALTIES.parse(str(changed)) == changed
    assert parseTime("90") == 90 and parseTime("2m") == 120


# -- refusal at accept


class FakeFactory:
    admission: Any = None
    started = 0

    def buildProtocol(self, addr: Any) -> Any:
        return type("P", (), {})()

    def doStart(self) -> None:
        self.started += 1

    def doStop(self) -> None:
        pass


def test_refused_connections_get_no_protocol() -> None:
    clock = MemoryReactorClock()
    admission = policy(clock)
    inner = FakeFactory()
    factory = AdmittingFactory(inner, admission)
    assert inner.admission is admission
    factory.doStart()
    assert inner.started == 1
    for _ in range(3):
        failedLogin(admission, "10.0.0.1")
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5000)) is None
    proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 5000))
    assert proto is not None and clientAddress(proto) == "10.0.0.2"


def test_client_address_is_the_one_place() -> None:
    class Socket:
        def getPeer(self) -> Any:
            return IPv6Address("TCP", "::ffff:192.0.2.4", 1)

    class Transport:
        transport = Socket()

    t = Transport()
    assert clientAddress(t) == "192.0.2.4"
    t.sourceAddress = IPv4Address("TCP", "198.51.100.1", 2)  # type: ignore[attr-defined]
    assert clientAddress(t) == "198.51.100.1"
    assert clientAddress(object()) == "?"


# -- flags and JSON keys


def test_daemon_flags_reach_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    from diegossh.sshd.tap import Options, makeService

    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions([
        "--allowUnauthenticatedClients", "--loginGraceTime=1m", "--maxAuthTries=3",
        "--maxStartups=5:50:20", "--perSourceMaxStartups=4",
        "--perSourcePenalties=authfail:7s", "--perSourcePenaltyExemptList=10.0.0.0/8",
    ])  # fmt: skip
    service = makeService(options)
    listening = service.factory  # type: ignore[attr-defined]
    assert isinstance(listening, AdmittingFactory)
    factory = listening.factory
    assert (factory.loginGraceTime, factory.maxAuthTries) == (60, 3)
    admission = factory.admission
    assert admission.maxStartups == MaxStartups(5, 50, 20)
    assert admission.perSourceMaxStartups == 4
    assert admission.penalties.authfail == 7 and admission.penalties.maxSources4 == 4096
    assert [str(n) for n in admission.exempt] == ["10.0.0.0/8"]
    defaults = Options()
    defaults.parseOptions(["--allowUnauthenticatedClients"])
    settings = defaults["settings"]
    assert (settings.loginGraceTime, settings.maxAuthTries) == (120, 6)
    assert settings.admission.maxStartups == MaxStartups(50, 30, 100)
    assert settings.admission.perSourceMaxStartups is None


@pytest.mark.parametrize(
    "flag",
    ["--maxStartups=lots", "--perSourceMaxStartups=0", "--perSourcePenalties=crash:1s",
     "--perSourcePenaltyExemptList=lb", "--loginGraceTime=soon", "--maxAuthTries=0"],
)  # fmt: skip
def test_daemon_refuses_unusable_settings_naming_them(
    monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    from diegossh.sshd.tap import Options

    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    with pytest.raises(usage.UsageError, match=flag.split("=")[0]):
        Options().parseOptions(["--allowUnauthenticatedClients", flag])


def test_proxy_json_keys_and_flags(tmp_path: Path) -> None:
    from diegossh.proxy.tap import Options

    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "login_grace_time": "30s", "max_auth_tries": 4, "max_startups": "20:40:80",
        "per_source_max_startups": "none", "per_source_penalties": "authfail:2s min:4s",
        "per_source_penalty_exempt_list": "192.0.2.10",
    }))  # fmt: skip
    base = ["--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}"]
    options = Options()
    options.parseOptions([*base, f"--config={config}", "--maxStartups=30:30:90"])
    settings = options["settings"]
    assert (settings.loginGraceTime, settings.maxAuthTries) == (30, 4)
    limits = settings.admission
    assert limits.maxStartups == MaxStartups(30, 30, 90)  # the flag wins
    assert limits.perSourceMaxStartups is None
    assert (limits.penalties.authfail, limits.penalties.min) == (2, 4)
    assert limits.penalties.maxSources4 == 65536
    defaults = Options()
    defaults.parseOptions(base)
    limits = defaults["settings"].admission
    assert limits.maxStartups == MaxStartups(100, 30, 300)
    assert limits.perSourceMaxStartups == 60
    assert limits.penalties == DEFAULT_PENALTIES
    assert defaults["settings"].loginGraceTime == 120
    with pytest.raises(usage.UsageError, match="--maxStartups"):
        Options().parseOptions([*base, "--maxStartups=100:30:10"])


def test_proxy_service_is_behind_admission(tmp_path: Path) -> None:
    from diegossh.proxy import tap

    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    options = tap.Options()
    options.parseOptions([
        "--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}",
        "--disableHealthCheckServer", "--maxAuthTries=2", "--loginGraceTime=5s",
    ])  # fmt: skip
    top = tap.makeService(options)
    listening = next(s.factory for s in top if hasattr(s, "factory"))  # type: ignore[attr-defined]
    assert isinstance(listening, AdmittingFactory)
    assert (listening.factory.maxAuthTries, listening.factory.loginGraceTime) == (2, 5)


# -- the accept guard


class FakeListeningSocket:
    def __init__(self) -> None:
        self.failWith: int | None = errno.EMFILE

    def accept(self) -> Any:
        if self.failWith is not None:
            raise OSError(self.failWith, "out")
        return object(), ("127.0.0.1", 1)

    def fileno(self) -> int:
        return 99


class FakePort:
    connected = True
    disconnecting = False

    def __init__(self) -> None:
        self.socket: Any = FakeListeningSocket()
        self.reading = True
        self.lost: list[Any] = []

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)

    def getHost(self) -> Any:
        return IPv4Address("TCP", "127.0.0.1", 2222)


def test_out_of_descriptors_pauses_accepting_with_one_line_per_episode() -> None:
    clock = MemoryReactorClock()
    port = FakePort()
    raw = port.socket
    guard = listening.guardAccepting(port, clock)
    lines: list[tuple[LogLevel, str]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "diegossh.listening":
            lines.append((event["log_level"], event["log_format"]))

    globalLogPublisher.addObserver(observer)
    try:
        pauses = []
        for _ in range(6):
            with pytest.raises(BlockingIOError):
                port.socket.accept()  # what Twisted's loop takes for "no more"
            assert not port.reading
            pauses.append(guard.pause)
            clock.advance(guard.pause)
            assert port.reading
        assert pauses == [1, 2, 4, 8, 10, 10]
        assert len(lines) == 1 and lines[0][0] == LogLevel.warn
        raw.failWith = None
        port.socket.accept()
        port.socket.accept()
        assert len(lines) == 2 and "again" in lines[1][1]
        raw.failWith = errno.ENFILE  # a new episode: one more line, back to 1 s
        with pytest.raises(BlockingIOError):
            port.socket.accept()
        assert guard.pause == 1 and len(lines) == 3 and guard.episodes == 2
        port.connectionLost(None)  # stopping the port cancels the retry
        assert not clock.getDelayedCalls() and port.lost == [None]
        raw.failWith = errno.ECONNABORTED  # not a shortage: Twisted's own handling
        with pytest.raises(OSError, match="out"):
            port.socket.accept()
    finally:
        globalLogPublisher.removeObserver(observer)

# -*- test-case-name: tests.test_metrics -*-
"""
The proxy's and the daemon's metrics in memory: each figure moves on its
event and on nothing else, every label is one of its fixed set whatever a
peer sends, and the C{--workers} multiprocess files sum up in the parent.

The proxy is the in-memory one of L{tests.support.proxyworld}, with a
L{PrometheusProxyMetrics} of its own registry.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import values
from twisted.conch.ssh import common
from twisted.internet import defer, task
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from diegossh.interfaces import IProxyMetrics, ISSHMetrics
from diegossh.proxy.metrics import RelayedBytesFlush, TimedAgent, building, installed, timed
from diegossh.proxy.prometheus import (
    PrometheusProxyMetrics,
    multiprocessExposition,
    useMultiprocess,
)
from diegossh.proxy.relay import MAX_TRACKED_CHANNELS, Relay
from diegossh.ssh import admission
from diegossh.ssh.metrics import NO_METRICS, NoMetrics, channelType
from diegossh.ssh.prometheus import MetricsResource, PrometheusSSHMetrics
from diegossh.sshd import script
from diegossh.sshd.options import Options as SSHDOptions
from tests.support.proxyworld import GUID, ProxyWorld, diego, password

MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_CLOSE = 97
KEXES = ("curve25519-sha256", "curve25519-sha256@libssh.org")


def proxyMetrics() -> PrometheusProxyMetrics:
    return PrometheusProxyMetrics(["diego", "cf"], KEXES)


def value(metrics: Any, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name} {labels}"
    return float(found)


def labelValues(text: str, label: str) -> set[str]:
    """
    Every value C{label} takes in an exposition.
    """
    found = set()
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        inside = line[line.index("{") + 1 : line.index("}")]
        for pair in inside.split('",'):
            key, _, val = pair.partition("=")
            if key == label:
                found.add(val.strip('"'))
    return found


@pytest.fixture
def worlds() -> Iterator[Callable[..., ProxyWorld]]:
    built: list[ProxyWorld] = []

    def make(**options: Any) -> ProxyWorld:
        built.append(ProxyWorld(**options))
        return built[-1]

    try:
        yield make
        for w in built:
            w.closeAll()
    finally:
        for w in built:
            w.stop()


# -- the implementations


def test_both_provide_the_interface() -> None:
    verifyObject(IProxyMetrics, NoMetrics())
    verifyObject(IProxyMetrics, proxyMetrics())
    verifyObject(ISSHMetrics, PrometheusSSHMetrics(["sshd"], KEXES))


def test_every_series_exists_from_the_start_at_zero() -> None:
    m = proxyMetrics()
    assert value(m, "diegossh_connections_open") == 0
    assert value(m, "diegossh_logins_total", realm="diego", outcome="success", reason="none") == 0
    assert value(m, "diegossh_logins_total", realm="unknown", outcome="failure",
                 reason="credentials") == 0  # fmt: skip
    assert value(m, "diegossh_preauth_refused_total", reason="max_startups") == 0
    assert value(m, "diegossh_penalties_total", reason="grace") == 0
    assert value(m, "diegossh_channels_open", type="session") == 0
    assert value(m, "diegossh_proxy_sessions_open", realm="cf") == 0
    assert value(m, "diegossh_proxy_relayed_bytes_total", direction="to_user") == 0
    assert value(m, "diegossh_key_exchanges_total", algorithm="other", kind="rekey") == 0


def test_peer_chosen_text_never_becomes_a_label() -> None:
    m = proxyMetrics()
    m.login("evil-realm-name", "failure", "the guid app-guid was not found")
    m.login("diego", "failure", "could not connect to 10.0.0.1:2222")
    m.channelOpened(channelType(b"made-up@example.com"))
    m.channelOpened("session; rm -rf")
    m.keyExchange("sntrup-made-up", True)
    m.refused("because")
    m.penalised("why not")
    m.httpCall("somewhere", 0.1, "teapot")
    m.backendDial(0.1, "odd")
    text = m.exposition().decode()
    for leaked in ("evil", "guid", "10.0.0.1", "made-up", "rm -rf", "sntrup", "because",
                   "why not", "somewhere", "teapot", "odd"):  # fmt: skip
        assert leaked not in text
    assert labelValues(text, "realm") == {"diego", "cf", "unknown"}
    assert labelValues(text, "reason") <= {
        "none", "credentials", "lookup", "backend", "internal",
        "penalty", "per_source", "max_startups", "authfail", "grace", "protocol", "noauth",
    }  # fmt: skip
    assert value(m, "diegossh_logins_total", realm="unknown", outcome="failure",
                 reason="internal") == 1  # fmt: skip
    assert value(m, "diegossh_logins_total", realm="diego", outcome="failure",
                 reason="internal") == 1  # fmt: skip
    assert value(m, "diegossh_channels_open", type="other") == 2
    assert value(m, "diegossh_key_exchanges_total", algorithm="other", kind="initial") == 1
    assert value(m, "diegossh_proxy_http_call_seconds_count", service="bbs", outcome="failed") == 1


def test_channel_types_are_a_fixed_set() -> None:
    assert channelType(b"session") == "session"
    assert channelType(b"direct-tcpip") == "direct-tcpip"
    assert channelType(b"x" * 10000) == "other"
    assert channelType(b"") == "other"


def test_the_metrics_page() -> None:
    m = proxyMetrics()
    m.connectionOpened()
    resource = MetricsResource(m.exposition)
    request = DummyRequest([b""])
    body = resource.render(request)
    assert b"diegossh_connections_open 1.0" in body
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; version=0.0.4; charset=utf-8"
    ]
    post = DummyRequest([b""])
    post.method = b"POST"
    assert resource.render(post) == b"method not allowed\n"
    assert post.responseCode == 405


# -- the proxy's events, in memory


def test_a_login_its_session_and_its_channels(worlds: Callable[..., ProxyWorld]) -> None:
    m = proxyMetrics()
    world = worlds(metrics=m)
    daemon = PrometheusSSHMetrics(["sshd"], KEXES)
    world.backendFactory.metrics = daemon
    user = world.user(password(diego(0)))
    assert value(daemon, "diegossh_logins_total", realm="sshd", outcome="success",
                 reason="none") == 1  # fmt: skip
    assert value(daemon, "diegossh_connections_open") == 1
    assert value(m, "diegossh_connections_open") == 1
    assert value(m, "diegossh_connections_total") == 1
    assert value(m, "diegossh_logins_total", realm="diego", outcome="success", reason="none") == 1
    assert value(m, "diegossh_proxy_sessions_open", realm="diego") == 1
    kexes = sum(
        value(m, "diegossh_key_exchanges_total", algorithm=a, kind="initial")
        for a in (*KEXES, "other")
    )
    assert kexes == 1
    assert value(m, "diegossh_proxy_backend_dial_seconds_count", outcome="success") == 1
    assert value(m, "diegossh_proxy_backend_login_seconds_count", outcome="success") == 1
    channels = user.channels()
    assert channels is not None
    channels.send(MSG_CHANNEL_OPEN, common.NS(b"session") + struct.pack(">3L", 0, 2 << 20, 32768))
    world.flush()
    assert value(m, "diegossh_channels_open", type="session") == 1
    assert value(m, "diegossh_channels_opened_total", type="session") == 1
    assert value(daemon, "diegossh_channels_open", type="session") == 1
    ((_, confirmation),) = channels.received
    backendChannel = struct.unpack(">2L", confirmation[:8])[1]
    channels.send(MSG_CHANNEL_DATA, struct.pack(">2L", backendChannel, 100) + b"x" * 100)
    world.flush()
    m.flush()
    assert value(m, "diegossh_proxy_relayed_bytes_total", direction="to_instance") == 108
    world.closeAll()
    assert value(m, "diegossh_connections_open") == 0
    assert value(daemon, "diegossh_connections_open") == 0
    assert value(daemon, "diegossh_channels_open", type="session") == 0
    assert value(m, "diegossh_proxy_sessions_open", realm="diego") == 0
    assert value(m, "diegossh_channels_open", type="session") == 0
    assert value(m, "diegossh_proxy_relayed_bytes_total", direction="to_instance") == 108


def test_failed_logins_by_reason(worlds: Callable[..., ProxyWorld]) -> None:
    m = proxyMetrics()
    world = worlds(metrics=m)
    world.user(password(diego(0), "wrong"), password(b"nope:" + GUID.encode() + b"/0"))
    world.advance(3)
    world.user(password(diego(0, guid="gone")))
    world.advance(3)
    world.backend = "refuse"
    world.user(password(diego(1)))
    world.advance(3)

    def failures(realm: str, reason: str) -> float:
        return value(m, "diegossh_logins_total", realm=realm, outcome="failure", reason=reason)

    assert failures("diego", "credentials") == 1
    assert failures("unknown", "credentials") == 1
    assert failures("diego", "lookup") == 1
    assert failures("diego", "backend") == 1
    assert value(m, "diegossh_proxy_backend_dial_seconds_count", outcome="failure") == 1
    assert value(m, "diegossh_proxy_backend_login_seconds_count", outcome="failure") == 1
    assert value(m, "diegossh_logins_total", realm="diego", outcome="success", reason="none") == 0


def test_a_backend_that_never_answers_is_a_timeout(worlds: Callable[..., ProxyWorld]) -> None:
    m = proxyMetrics()
    world = worlds(metrics=m, backendTimeout=5)
    world.backend = "hold"
    world.user(password(diego(0)))
    world.advance(5)
    assert value(m, "diegossh_proxy_backend_dial_seconds_count", outcome="timeout") == 1
    assert value(m, "diegossh_proxy_backend_dial_seconds_sum", outcome="timeout") == 5
    assert value(m, "diegossh_proxy_backend_login_seconds_count", outcome="timeout") == 1
    world.advance(2)


def test_a_login_abandoned_at_the_backend_is_not_counted(
    worlds: Callable[..., ProxyWorld],
) -> None:
    m = proxyMetrics()
    world = worlds(metrics=m)
    world.backend = "hold"
    world.user(password(diego(0)))
    world.closeAll()
    for outcome in ("success", "failure", "timeout"):
        assert value(m, "diegossh_proxy_backend_login_seconds_count", outcome=outcome) == 0


# -- the relay's channels


class Leg:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def sendPacket(self, num: int, payload: bytes) -> None:
        self.sent.append((num, payload))


def channelOpen(kind: bytes, number: int) -> bytes:
    return common.NS(kind) + struct.pack(">3L", number, 1 << 20, 32768)


def test_relay_counts_channels_either_side_opened() -> None:
    m = proxyMetrics()
    relay = Relay(Leg(), Leg(), metrics=m)
    relay.fromClient(MSG_CHANNEL_OPEN, channelOpen(b"session", 0))
    relay.fromClient(MSG_CHANNEL_OPEN, channelOpen(b"direct-tcpip", 1))
    relay.fromClient(MSG_CHANNEL_OPEN, channelOpen(b"session", 0))  # the same number again
    relay.fromBackend(MSG_CHANNEL_OPEN, channelOpen(b"forwarded-tcpip", 7))
    assert value(m, "diegossh_channels_open", type="session") == 1
    assert value(m, "diegossh_channels_open", type="direct-tcpip") == 1
    assert value(m, "diegossh_channels_open", type="forwarded-tcpip") == 1
    relay.fromBackend(MSG_CHANNEL_OPEN_FAILURE, struct.pack(">2L", 1, 2) + b"\0" * 8)
    relay.fromBackend(MSG_CHANNEL_CLOSE, struct.pack(">L", 0))
    relay.fromBackend(MSG_CHANNEL_CLOSE, struct.pack(">L", 0))  # and the user's answer
    relay.fromClient(MSG_CHANNEL_CLOSE, struct.pack(">L", 7))
    for kind in ("session", "direct-tcpip", "forwarded-tcpip"):
        assert value(m, "diegossh_channels_open", type=kind) == 0
    assert value(m, "diegossh_channels_opened_total", type="session") == 1


def test_relay_channel_table_is_bounded_and_emptied_at_stop() -> None:
    m = proxyMetrics()
    relay = Relay(Leg(), Leg(), metrics=m)
    for number in range(MAX_TRACKED_CHANNELS + 50):
        relay.fromClient(MSG_CHANNEL_OPEN, channelOpen(b"session", number))
    relay.fromClient(MSG_CHANNEL_OPEN, b"\0\0\0\xff")  # too short to read
    assert value(m, "diegossh_channels_open", type="session") == MAX_TRACKED_CHANNELS
    relay.stop()
    assert value(m, "diegossh_channels_open", type="session") == 0


def test_bytes_of_running_sessions_are_flushed_on_a_timer() -> None:
    m = proxyMetrics()
    clock = task.Clock()
    relay = Relay(Leg(), Leg(), metrics=m)
    ended = m.sessionRelayed("cf", relay)
    flush = RelayedBytesFlush(m, clock, interval=5)
    flush.startService()
    relay.fromBackend(MSG_CHANNEL_DATA, struct.pack(">2L", 0, 1000) + b"y" * 1000)
    assert value(m, "diegossh_proxy_relayed_bytes_total", direction="to_user") == 0
    clock.advance(5)
    assert value(m, "diegossh_proxy_relayed_bytes_total", direction="to_user") == 1008
    relay.fromBackend(MSG_CHANNEL_DATA, struct.pack(">2L", 0, 10) + b"y" * 10)
    ended()
    ended()
    assert value(m, "diegossh_proxy_relayed_bytes_total", direction="to_user") == 1026
    assert value(m, "diegossh_proxy_sessions_open", realm="cf") == 0
    flush.stopService()
    assert clock.getDelayedCalls() == []


# -- admission


class Peer:
    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 40000


class Conn:
    def __init__(self, host: str) -> None:
        self.sourceAddress = Peer(host)
        self.transport = self

    def getPeer(self) -> Peer:
        return self.sourceAddress


def test_admission_refusals_and_penalties() -> None:
    m = proxyMetrics()
    clock = task.Clock()
    limits = admission.Admission(
        clock, admission.MaxStartups.parse("1:100:1"), perSourceMaxStartups=None
    )
    limits.metrics = m
    first = Conn("198.51.100.9")
    assert limits.admit(first)
    limits.opened(first)
    assert not limits.admit(Conn("198.51.100.10"))
    assert value(m, "diegossh_preauth_refused_total", reason="max_startups") == 1
    limits.penalise(first, "authfail")
    limits.closed(first)
    assert value(m, "diegossh_penalties_total", reason="authfail") == 1
    quiet = Conn("198.51.100.20")
    limits.opened(quiet)
    limits.closed(quiet)  # noauth: 1 s by default
    assert value(m, "diegossh_penalties_total", reason="noauth") == 1
    free = admission.Admission(
        clock,
        admission.MaxStartups.parse("10:30:100"),
        penalties=admission.DAEMON_PENALTIES,  # noauth:0s
    )
    free.metrics = m
    free.opened(quiet)
    free.closed(quiet)
    assert value(m, "diegossh_penalties_total", reason="noauth") == 1
    assert value(m, "diegossh_preauth_refused_total", reason="penalty") == 0
    # failures from one source until it is refused at accept
    for _ in range(10):
        guesser = Conn("198.51.100.30")
        if not free.admit(guesser):
            break
        free.opened(guesser)
        free.penalise(guesser, "authfail")
        free.closed(guesser)
    assert value(m, "diegossh_preauth_refused_total", reason="penalty") == 1
    text = m.exposition().decode()
    assert "198.51.100" not in text


# -- HTTP calls


class Answer:
    def __init__(self, code: int) -> None:
        self.code = code


class FakeAgent:
    def __init__(self) -> None:
        self.calls: list[defer.Deferred[Any]] = []

    def request(self, *args: Any) -> defer.Deferred[Any]:
        self.calls.append(defer.Deferred())
        return self.calls[-1]


def test_http_calls_are_timed_by_service_and_outcome() -> None:
    m = proxyMetrics()
    clock = task.Clock()
    inner = FakeAgent()
    agent = TimedAgent(inner, "uaa", clock, m)
    answers: list[Any] = []
    for _ in range(4):
        agent.request(b"GET", b"https://uaa/secret-token?x=1").addBoth(answers.append)
    clock.advance(0.2)
    inner.calls[0].callback(Answer(200))
    inner.calls[1].callback(Answer(503))
    inner.calls[2].errback(Failure(ConnectionRefusedError()))
    inner.calls[3].cancel()
    assert value(m, "diegossh_proxy_http_call_seconds_count", service="uaa", outcome="2xx") == 1
    assert value(m, "diegossh_proxy_http_call_seconds_sum", service="uaa", outcome="2xx") == 0.2
    assert value(m, "diegossh_proxy_http_call_seconds_count", service="uaa", outcome="5xx") == 1
    assert value(m, "diegossh_proxy_http_call_seconds_count", service="uaa",
                 outcome="failed") == 1  # fmt: skip
    assert "secret" not in m.exposition().decode()
    for each in answers:
        if isinstance(each, Failure):
            each.trap(ConnectionRefusedError, defer.CancelledError)


def test_agents_are_timed_only_while_building_with_metrics() -> None:
    agent = FakeAgent()
    assert installed() is NO_METRICS
    assert timed(agent, "bbs", task.Clock()) is agent
    m = proxyMetrics()
    with building(m):
        assert isinstance(timed(agent, "uaa", task.Clock()), TimedAgent)
        assert timed(agent, "uaa", task.Clock(), NO_METRICS) is agent
    assert installed() is NO_METRICS
    assert isinstance(timed(agent, "bbs", task.Clock(), m), TimedAgent)


# -- --workers: the multiprocess files


@pytest.fixture
def multiprocess(tmp_path: Path) -> Iterator[Callable[[int], PrometheusProxyMetrics]]:
    """
    Metrics as process C{slot} would make them, all in C{tmp_path}.
    """
    undo: list[Callable[[], None]] = []

    def make(slot: int) -> PrometheusProxyMetrics:
        undo.append(useMultiprocess(str(tmp_path), slot))
        return proxyMetrics()

    try:
        yield make
    finally:
        values.close_all_multiprocess_files()
        for each in reversed(undo):
            each()
        assert values.ValueClass is values.MutexValue
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_each_workers_figures_reach_the_parents_page(
    multiprocess: Callable[[int], PrometheusProxyMetrics], tmp_path: Path
) -> None:
    parent = multiprocess(0)
    worker = multiprocess(1)
    parent.connectionOpened()
    worker.connectionOpened()
    worker.connectionOpened()
    parent.login("diego", "success", "none")
    worker.login("diego", "success", "none")
    text = multiprocessExposition(str(tmp_path))().decode()
    assert "diegossh_connections_open 3.0" in text
    assert "diegossh_connections_total 3.0" in text
    assert 'diegossh_logins_total{outcome="success",realm="diego",reason="none"} 2.0' in text
    # the worker dies: its gauges go, its counters stay
    parent.workerEnded(1, restarting=True)
    text = multiprocessExposition(str(tmp_path))().decode()
    assert "diegossh_connections_open 1.0" in text
    assert "diegossh_connections_total 3.0" in text
    assert "diegossh_proxy_worker_restarts_total 1.0" in text
    # its replacement goes on adding to the same slot's counters, in the same files
    values.close_all_multiprocess_files()
    replacement = multiprocess(1)
    replacement.connectionOpened()
    text = multiprocessExposition(str(tmp_path))().decode()
    assert "diegossh_connections_open 2.0" in text
    assert "diegossh_connections_total 4.0" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_0.db", "counter_1.db", "gauge_livemax_0.db", "gauge_livemax_1.db",
        "gauge_livesum_0.db", "gauge_livesum_1.db", "histogram_0.db", "histogram_1.db",
    ]  # fmt: skip


# -- the daemon's opt-in


def test_the_daemon_counts_only_when_asked_and_only_with_a_debug_server() -> None:
    plain = SSHDOptions()
    plain.parseOptions(["--allowUnauthenticatedClients"])
    assert plain["settings"].metrics is False
    with pytest.raises(usage.UsageError, match="debugAddr"):
        SSHDOptions().parseOptions(["--allowUnauthenticatedClients", "--enableMetrics"])
    asked = SSHDOptions()
    asked.parseOptions(
        ["--allowUnauthenticatedClients", "--enableMetrics", "--debugAddr=127.0.0.1:0"]
    )
    assert asked["settings"].metrics is True


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        ([], False),
        (["-debugAddr=127.0.0.1:1"], False),
        (["-enableMetrics"], True),
        (["--enableMetrics"], True),
        (["-enableMetrics=true"], True),
        (["-enableMetrics=false"], False),
    ],
)
def test_the_daemon_script_keeps_ssl_for_metrics(args: list[str], wanted: bool) -> None:
    assert script.metricsWanted(args) is wanted


# -- the worker pool tells of the workers that end


class Ends(NoMetrics):
    def __init__(self) -> None:
        self.ended: list[tuple[int, bool]] = []

    def workerEnded(self, slot: int, restarting: bool) -> None:
        self.ended.append((slot, restarting))


class NoKeys:
    privateKeys: dict[str, Any] = {}


def test_the_pool_reports_each_worker_that_ends() -> None:
    from diegossh.proxy.workers import WorkerPool, _Worker

    clock = task.Clock()
    pool = WorkerPool(clock, "127.0.0.1:0", NoKeys(), 1, {})
    ends = Ends()
    pool.metrics = ends
    pool.running = 1
    worker = _Worker(pool, 1, clock.seconds())
    pool._running[1] = worker
    pool._workerEnded(worker, Failure(RuntimeError("killed")))
    assert ends.ended == [(1, True)]
    for call in clock.getDelayedCalls():
        call.cancel()  # the restart it scheduled
    pool.running = 0
    pool._workerEnded(_Worker(pool, 1, clock.seconds()), Failure(RuntimeError("stopped")))
    assert ends.ended == [(1, True), (1, False)]


# -- the drain


def test_the_drain_shows_from_its_first_signal() -> None:
    from twisted.internet.task import Clock

    from diegossh.proxy.drain import DrainService, DrainState

    m = proxyMetrics()
    assert value(m, "diegossh_proxy_draining") == 0
    clock = Clock()
    service = DrainService(DrainState(), clock, lambda: None, lambda: None, [],
                           timeout=30, metrics=m)  # fmt: skip
    service.startService()
    service.begin()
    assert value(m, "diegossh_proxy_draining") == 1
    service.begin()  # once only
    assert value(m, "diegossh_proxy_draining") == 1
    service.hurry()
    service.stopService()
    assert not clock.getDelayedCalls()

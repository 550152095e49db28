# -*- test-case-name: tests.test_proxy_drain -*-
"""
Graceful drain and readiness, in memory: the drain's timeline on a
L{Clock} (503 at once, the listener after the delay, the sessions until the
timeout, a second signal cuts it short), the health check's answers, the
route source probes (an unreadable or broken LRP table, a BBS that does not
answer) and the worker's end of its parent's messages.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.web.test.requesthelper import DummyRequest

from diegossh.proxy.drain import DRAIN_TIMEOUT, LISTENER_DELAY, DrainService, DrainState
from diegossh.proxy.health import HealthCheck
from diegossh.proxy.lrptable import LRPTable, LRPTableError
from diegossh.proxy.readiness import NOT_CHECKED, RouteSourceCheck, probeFor
from diegossh.proxy.shutdown import LiveConnections
from diegossh.proxy.tap import Options
from tests.support.admission import AdmitAll


class Participant:
    """A L{Drainable} whose work ends when the test says."""

    def __init__(self) -> None:
        self.asked = 0
        self.cancelled = 0
        self.done: defer.Deferred[None] | None = None

    def drain(self) -> defer.Deferred[None]:
        self.asked += 1

        def cancel(d: defer.Deferred[None]) -> None:
            self.cancelled += 1

        self.done = defer.Deferred(cancel)
        return self.done


class World:
    def __init__(self, timeout: float = 30.0, delay: float = LISTENER_DELAY) -> None:
        self.clock = Clock()
        self.state = DrainState()
        self.stops = 0
        self.listenerClosed = 0
        self.participant = Participant()
        self.service = DrainService(
            self.state,
            self.clock,
            self.stop,
            self.closeListener,
            [self.participant],
            timeout=timeout,
            listenerDelay=delay,
        )
        self.service.startService()

    def stop(self) -> None:
        self.stops += 1

    def closeListener(self) -> None:
        self.listenerClosed += 1


def answer(resource: HealthCheck, path: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    request = DummyRequest([])
    request.path = path
    request.method = method
    body = resource.render(request)
    return request.responseCode or 200, body


# -- the drain's timeline


def test_sigterm_turns_the_health_check_503_at_once() -> None:
    world = World()
    health = HealthCheck(world.state)
    assert answer(health, b"/") == (200, b"ok\n")
    assert answer(health, b"/ready") == (200, b"ready\n")
    world.service.signalled(signal.SIGTERM)
    assert world.state.draining and world.state.since == 0
    assert answer(health, b"/") == (503, b"draining\n")
    assert answer(health, b"/ready") == (503, b"draining\n")
    assert (world.listenerClosed, world.stops) == (0, 0)
    assert world.participant.asked == 1


def test_the_listener_closes_after_the_delay_and_sessions_go_on() -> None:
    world = World()
    world.service.begin()
    world.clock.advance(LISTENER_DELAY - 0.01)
    assert world.listenerClosed == 0
    world.clock.advance(0.01)
    assert world.listenerClosed == 1
    world.clock.advance(20)
    assert world.stops == 0  # the session is still open, within the timeout
    assert world.participant.done is not None
    world.participant.done.callback(None)
    assert world.stops == 1  # every connection ended: the ordinary stop, now
    assert world.clock.getDelayedCalls() == []


def test_no_connections_ends_when_the_listener_has_closed() -> None:
    world = World()
    world.service.begin()
    assert world.participant.done is not None
    world.participant.done.callback(None)
    assert world.stops == 0  # the balancer still gets its delay
    world.clock.advance(LISTENER_DELAY)
    assert (world.listenerClosed, world.stops) == (1, 1)


def test_the_timeout_stops_what_is_still_open() -> None:
    world = World(timeout=30)
    world.service.begin()
    world.clock.advance(29.9)
    assert world.stops == 0
    world.clock.advance(0.1)
    assert world.stops == 1
    assert world.participant.cancelled == 1
    assert world.clock.getDelayedCalls() == []


def test_a_second_sigterm_stops_at_once() -> None:
    world = World()
    world.service.signalled(signal.SIGTERM)
    world.clock.advance(5)
    world.service.signalled(signal.SIGTERM)
    assert world.stops == 1
    assert world.clock.getDelayedCalls() == []
    world.service.signalled(signal.SIGTERM)  # a third: the stop is under way
    assert world.stops == 1


def test_sigint_stops_at_once_without_draining() -> None:
    world = World()
    world.service.signalled(signal.SIGINT)
    assert world.stops == 1
    assert not world.state.draining
    assert world.listenerClosed == 0  # the ordinary stop closes it


def test_sigint_during_a_drain_stops_at_once() -> None:
    world = World()
    world.service.signalled(signal.SIGTERM)
    world.service.signalled(signal.SIGINT)
    assert world.stops == 1 and world.participant.cancelled == 1


def test_a_zero_timeout_does_not_wait() -> None:
    world = World(timeout=0)
    world.service.begin()
    world.clock.advance(0)
    assert (world.listenerClosed, world.stops) == (1, 1)


def test_the_delay_is_bounded_by_the_timeout() -> None:
    world = World(timeout=0.5, delay=5)
    world.service.begin()
    world.clock.advance(0.5)
    assert (world.listenerClosed, world.stops) == (1, 1)


def test_stopping_the_service_cancels_the_drain() -> None:
    world = World()
    world.service.begin()
    world.service.stopService()
    assert world.clock.getDelayedCalls() == []
    assert world.participant.cancelled == 1
    world.service.hurry()
    assert world.stops == 0  # stopped by someone else: nothing more to do


def test_the_handlers_replace_the_reactors_and_are_put_back() -> None:
    """
    A real SIGTERM to this process reaches the drain through the reactor
    (C{callFromThread}), and the previous handler is back after the stop.
    """

    class FakeReactor:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, tuple[Any, ...]]] = []

        def callWhenRunning(self, f: Any) -> None:
            f()

        def callFromThread(self, f: Any, *args: Any) -> None:
            self.calls.append((f, args))

    reactor = FakeReactor()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    service = DrainService(DrainState(), Clock(), lambda: None, lambda: None, [],
                           signals=reactor)  # fmt: skip
    service.startService()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert reactor.calls == [(service.signalled, (signal.SIGTERM,))]
    finally:
        service.stopService()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- the connections' part


class Transport:
    def __init__(self, live: LiveConnections) -> None:
        self.live = live
        self.told: list[bytes] = []

    def closeSoon(self, reason: bytes) -> None:
        self.told.append(reason)


def test_open_connections_are_waited_for_not_closed() -> None:
    clock = Clock()
    live = LiveConnections(AdmitAll(), clock)
    one, two = Transport(live), Transport(live)
    live.opened(one)
    live.opened(two)
    ended: list[None] = []
    live.drain().addCallback(ended.append)
    live.closed(one)
    clock.advance(0)
    assert ended == [] and one.told == [] and two.told == []
    live.closed(two)
    assert ended == []  # one turn later, once the session's end is logged
    clock.advance(0)
    assert ended == [None]


def test_the_drain_without_connections_fires_at_once() -> None:
    live = LiveConnections(AdmitAll(), Clock())
    ended: list[None] = []
    live.drain().addCallback(ended.append)
    assert ended == [None]


# -- settings


def test_drain_timeout_default_and_given(tmp_path: Path) -> None:
    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    base = ["--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}"]
    options = Options()
    options.parseOptions(base)
    assert options["settings"].drainTimeout == DRAIN_TIMEOUT == 30.0
    options = Options()
    options.parseOptions([*base, "--drainTimeout=2m"])
    assert options["settings"].drainTimeout == 120.0
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"drain_timeout": "0s"}))
    options = Options()
    options.parseOptions([*base, f"--config={config}"])
    assert options["settings"].drainTimeout == 0.0
    with pytest.raises(usage.UsageError, match=r"drainTimeout.*not a duration"):
        Options().parseOptions([*base, "--drainTimeout=-1s"])


# -- the health check


class Routes:
    problem: str | None = None


def test_ready_follows_the_route_source_and_slash_does_not() -> None:
    routes = Routes()
    health = HealthCheck(DrainState(), routes)
    assert answer(health, b"/ready") == (200, b"ready\n")
    routes.problem = "BBS: no answer within 5s"
    assert answer(health, b"/ready") == (503, b"route source unavailable\n")
    assert answer(health, b"/") == (200, b"ok\n")  # upstream's meaning


def test_other_paths_and_methods() -> None:
    health = HealthCheck()
    assert answer(health, b"/readyz")[0] == 404
    assert answer(health, b"/", b"POST")[0] == 405
    assert answer(health, b"/ready", b"HEAD")[0] == 200


# -- the route source probes


def _table(tmp_path: Path) -> tuple[Path, LRPTable]:
    path = tmp_path / "lrps.json"
    path.write_text('{"lrps": []}')
    return path, LRPTable(path)


def test_the_table_check(tmp_path: Path) -> None:
    path, table = _table(tmp_path)
    table.check()
    path.write_text('{"lrps": [')
    with pytest.raises(LRPTableError, match="not valid JSON"):
        table.check()
    with pytest.raises(LRPTableError, match="not valid JSON"):
        table.check()  # unchanged: still broken, not read again
    path.write_text('{"lrps": []}  ')
    table.check()
    path.unlink()
    with pytest.raises(LRPTableError, match="cannot read"):
        table.check()


def test_a_table_that_cannot_be_opened(tmp_path: Path) -> None:
    path, table = _table(tmp_path)
    path.unlink()
    path.mkdir()  # stat works, open does not (as a file without permission, but as root too)
    with pytest.raises(LRPTableError, match="cannot read"):
        table.check()


def test_readiness_flips_on_a_broken_table(tmp_path: Path) -> None:
    path, table = _table(tmp_path)
    clock = Clock()
    probe = probeFor(table)
    assert probe is not None
    check = RouteSourceCheck(probe, clock, interval=5)
    assert check.problem == NOT_CHECKED  # not ready until probed
    check.startService()
    try:
        assert check.problem is None
        path.write_text("not json")
        clock.advance(4.9)
        assert check.problem is None  # not probed again yet
        clock.advance(0.1)
        assert check.problem is not None and "not valid JSON" in check.problem
        path.write_text('{"lrps": []}')
        clock.advance(5)
        assert check.problem is None
    finally:
        check.stopService()
    assert clock.getDelayedCalls() == []


def test_a_probe_that_does_not_answer_is_not_ready_and_not_repeated() -> None:
    clock = Clock()
    started: list[defer.Deferred[None]] = []

    def probe() -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        started.append(d)
        return d

    check = RouteSourceCheck(probe, clock, interval=5, timeout=2)
    check.startService()
    try:
        assert len(started) == 1
        check.check()  # a health check does not start another
        assert len(started) == 1
        clock.advance(2)
        assert check.problem == "no answer within 2s"
        clock.advance(3)
        assert len(started) == 2
        started[1].callback(None)
        assert check.problem is None
    finally:
        check.stopService()
    assert clock.getDelayedCalls() == []


def test_a_bbs_ping() -> None:
    from tests.fakes.bbs import FakeBBS
    from tests.test_bbs_client import ScriptedAgent, _memoryClient

    clock = Clock()
    agent = ScriptedAgent(FakeBBS(Clock()), [])
    client = _memoryClient(agent, clock)
    probe = probeFor(client)
    assert probe is not None
    box: list[Any] = []
    probe().addBoth(box.append)
    assert box == [None]
    hanging = ScriptedAgent(FakeBBS(Clock()), ["hang"])
    box = []
    _memoryClient(hanging, clock).ping(2.0).addBoth(box.append)
    clock.advance(2)
    [failure] = box
    assert failure.value.reason == "the LRP directory (BBS) did not answer in time"
    assert hanging.cancelled == 1


# -- a worker's end of its parent's messages


def test_a_worker_drains_and_stops_when_its_parent_says() -> None:
    from diegossh.proxy.worker import _Lifeline

    world = World()
    line = _Lifeline(None, world.service)
    line.makeConnection(StringTransport())
    line.dataReceived(b"drain\n")
    assert world.state.draining and world.stops == 0
    line.dataReceived(b"drain\n")  # the parent's forward of a SIGTERM we had too
    assert world.stops == 0
    line.dataReceived(b"stop\n")
    assert world.stops == 1


def test_a_worker_whose_parent_goes_away_stops_now() -> None:
    from diegossh.proxy.worker import _Lifeline

    world = World()
    _Lifeline(None, world.service).connectionLost(None)
    assert world.stops == 1


# -- the parent's end of its workers


class WorkerTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""
        self.signals: list[Any] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, number: Any) -> None:
        self.signals.append(number)


def _pool(clock: Clock, count: int) -> tuple[Any, list[Any]]:
    from diegossh.proxy.workers import WorkerPool, _Worker

    class Factory:
        privateKeys: dict[str, Any] = {}

    pool = WorkerPool(clock, "127.0.0.1:0", Factory(), count, {})
    pool.running = 1
    workers = []
    for slot in range(1, count + 1):
        worker = _Worker(pool, slot, clock.seconds())
        worker.makeConnection(WorkerTransport(100 + slot))  # type: ignore[arg-type]
        pool._running[slot] = worker
        workers.append(worker)
    for worker in workers:
        worker.transport.written = b""  # type: ignore[union-attr]  # the boot line
    return pool, workers


def test_the_parent_tells_its_workers_to_drain_and_waits_for_them() -> None:
    from twisted.internet.error import ProcessDone
    from twisted.python.failure import Failure

    clock = Clock()
    pool, workers = _pool(clock, 2)
    done: list[Any] = []
    pool.drain().addCallback(done.append)
    assert [w.transport.written for w in workers] == [b"drain\n", b"drain\n"]
    workers[0].processEnded(Failure(ProcessDone(0)))
    assert done == []
    workers[1].processEnded(Failure(ProcessDone(0)))
    assert len(done) == 1
    assert clock.getDelayedCalls() == []  # no restart while draining


def test_a_cancelled_drain_leaves_no_unhandled_error() -> None:
    import gc

    from twisted.internet.error import ProcessDone
    from twisted.logger import globalLogPublisher
    from twisted.python.failure import Failure

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    clock = Clock()
    pool, workers = _pool(clock, 1)
    wait = pool.drain()
    wait.cancel()
    del wait
    gc.collect()  # an unhandled error in a Deferred is logged when it is collected
    globalLogPublisher.removeObserver(seen.append)
    assert [e for e in seen if e.get("log_failure") is not None] == []
    workers[0].processEnded(Failure(ProcessDone(0)))  # a follower cancelled: no AlreadyCalled
    pool.stopService()  # nobody left to tell
    assert clock.getDelayedCalls() == []

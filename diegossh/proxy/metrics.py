# -*- test-case-name: tests.test_metrics -*-
"""
The proxy's metrics seam, without C{prometheus_client}: the process's
L{IProxyMetrics} (L{installed}), the HTTP agent that times calls to the BBS,
UAA and Cloud Controller (L{TimedAgent}), and the service that moves relayed
byte counts into the metrics while sessions run (L{RelayedBytesFlush}).

Why metrics installed while the realms are built (L{building}): the C{cf}
realm builds its HTTP clients inside its plugin's C{build}, whose signature
is the public realm API and carries no metrics; C{tap.makeService} builds the
realms inside C{building(metrics)}, the realm's factory reads them once
(L{timed}), and the previous value is back when the block ends, so nothing
outlives the assembly. Everything the tap builds itself gets them passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent
from zope.interface import implementer

from diegossh.interfaces import IProxyMetrics
from diegossh.ssh.metrics import NO_METRICS

__all__ = ["FLUSH_INTERVAL", "RelayedBytesFlush", "TimedAgent", "building", "installed", "timed"]

#: Seconds between moves of the bytes relayed by running sessions into the
#: counters (a session's remainder is added when it ends).
FLUSH_INTERVAL = 5.0

_installed: list[IProxyMetrics] = [NO_METRICS]


@contextmanager
def building(metrics: IProxyMetrics) -> Iterator[None]:
    """
    C{metrics} are L{installed} inside the block (what realms build there
    reports to them), the previous ones again after it.
    """
    previous, _installed[0] = _installed[0], metrics
    try:
        yield
    finally:
        _installed[0] = previous


def installed() -> IProxyMetrics:
    """
    The metrics of what is being built (L{building}), else L{NO_METRICS}.
    """
    return _installed[0]


def _outcome(result: Any) -> str:
    if isinstance(result, Failure):
        return "failed"
    code = getattr(result, "code", 0)
    return f"{code // 100}xx" if 100 <= code < 600 else "failed"


@implementer(IAgent)
class TimedAgent:
    """
    An agent that tells C{metrics} how long each request took to its
    response's headers, and its status class (or C{"failed"}), for C{service}.
    A cancelled request (the login it served was abandoned) is not counted.
    """

    def __init__(self, agent: Any, service: str, clock: Any, metrics: IProxyMetrics) -> None:
        self._agent = agent
        self._service = service
        self._clock = clock
        self._metrics = metrics

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: Any = None) -> defer.Deferred[Any]:  # fmt: skip
        started = self._clock.seconds()
        d: defer.Deferred[Any] = self._agent.request(method, uri, headers, bodyProducer)

        def timed(result: Any) -> Any:
            if not (isinstance(result, Failure) and result.check(defer.CancelledError)):
                self._metrics.httpCall(
                    self._service, self._clock.seconds() - started, _outcome(result)
                )
            return result

        return d.addBoth(timed)


def timed(agent: Any, service: str, clock: Any, metrics: IProxyMetrics | None = None) -> Any:
    """
    C{agent} timed for C{service} when C{metrics} (by default, those
    L{installed}) count, else C{agent} itself.
    """
    if metrics is None:
        metrics = installed()
    if metrics is NO_METRICS:
        return agent
    return TimedAgent(agent, service, clock, metrics)


class RelayedBytesFlush(Service):
    """
    Every C{interval} seconds, the bytes relayed by the sessions still
    running are added to the counters (C{metrics.flush()}), so a long
    transfer shows while it runs; the relay itself only adds to two integers
    per message (L{diegossh.proxy.relay.Relay}), its hot path unchanged.
    """

    def __init__(self, metrics: Any, clock: Any, interval: float = FLUSH_INTERVAL) -> None:
        self._metrics = metrics
        self._clock = clock
        self._interval = interval
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self._metrics.flush)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._metrics.flush()
        return None

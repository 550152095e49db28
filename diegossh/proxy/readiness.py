# -*- test-case-name: tests.test_proxy_drain -*-
"""
Whether the route source can be read: the half of C{GET /ready}
(L{diegossh.proxy.health}) that is not the drain.

L{RouteSourceCheck} probes the source every C{interval} seconds
(L{INTERVAL}, 5 s) and keeps the answer; the health check reads that answer
and never probes itself, so a flood of health checks costs nothing but the
HTTP. One probe at a time, each bounded by C{timeout} seconds on the clock
passed in (at most the interval): a BBS that does not answer, or answers
slowly, costs one connection every few seconds and reads as "not ready".

The probes (L{probeFor}):
  - the LRP table (C{--lrpDirectory}): the file can be opened, and its
    current content parses (L{diegossh.proxy.lrptable.LRPTable.check}); a
    broken edit makes the proxy not ready even though it keeps serving the
    last good table, so the operator's mistake shows;
  - BBS: its C{POST /v1/ping} answers C{available} (one attempt, the body at
    most 1 KiB: L{diegossh.proxy.bbs.BBSClient.ping}).

Until the first probe has answered, the source counts as not ready.
Changes are logged, once each way, not every probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

#: Seconds between two probes of the route source.
INTERVAL = 5.0
NOT_CHECKED = "not checked yet"


class RouteSourceCheck(Service):
    """
    Probes the route source every C{interval}; C{problem} is L{None} when
    the last probe succeeded, else what went wrong.

    @param probe: returns (or raises) at once, or a L{defer.Deferred}; a
        failure is the source's problem.
    """

    name = "route-source-check"

    def __init__(
        self,
        probe: Callable[[], Any],
        clock: IReactorTime,
        interval: float = INTERVAL,
        timeout: float = INTERVAL,
    ) -> None:
        self._probe = probe
        self._clock = clock
        self.interval = interval
        self.timeout = min(timeout, interval)
        self.problem: str | None = NOT_CHECKED
        self._loop: task.LoopingCall | None = None
        self._inFlight: defer.Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        loop = self._loop = task.LoopingCall(self.check)
        loop.clock = self._clock
        loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("the route source check stopped", f)
        )

    def check(self) -> defer.Deferred[None]:
        """
        Probe once (at most one probe in flight); fires when it has answered.
        """
        if self._inFlight is not None:
            return defer.succeed(None)
        probe = defer.maybeDeferred(self._probe)
        probe.addTimeout(self.timeout, self._clock)
        self._inFlight = probe
        probe.addCallbacks(lambda _: self._answer(None), self._failed)
        return probe

    def _failed(self, failure: Any) -> None:
        if failure.check(defer.TimeoutError):
            self._answer(f"no answer within {self.timeout:g}s")
        elif not failure.check(defer.CancelledError):
            self._answer(failure.getErrorMessage() or failure.type.__name__)

    def _answer(self, problem: str | None) -> None:
        self._inFlight = None
        if problem == self.problem:
            return
        if problem is None:
            log.info("the route source can be read: ready")
        else:
            log.warn("the route source cannot be read: not ready: {problem}", problem=problem)
        self.problem = problem

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        inFlight, self._inFlight = self._inFlight, None
        if inFlight is not None:
            inFlight.cancel()


def probeFor(directory: Any) -> Callable[[], Any] | None:
    """
    The probe of an LRP directory (the table's C{check}, BBS's C{ping}), or
    L{None} for one that has neither.
    """
    for name in ("check", "ping"):
        probe = getattr(directory, name, None)
        if callable(probe):
            return probe
    return None

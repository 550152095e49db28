# -*- test-case-name: tests.test_proxy_drain,tests.test_proxy_drain_interop -*-
"""
Graceful drain: what the proxy does between SIGTERM and its exit.

A balancer in front of several proxies needs two things from one that is
going away: to be told before new connections are refused (so it stops
sending them), and for the sessions it already carries to finish. So the
first SIGTERM does not stop the reactor; it starts a drain (L{DrainService}):

  1. at once: L{DrainState} says draining, and the health check answers 503
     (L{diegossh.proxy.health});
  2. after C{listenerDelay} (L{LISTENER_DELAY}, 1 s): the SSH listener
     closes; connections accepted until then are carried like the others;
  3. the established connections go on by themselves, for up to
     C{timeout} seconds from the signal (C{--drainTimeout}, 30 s; 0: no
     wait); with C{--workers}, the workers drain theirs the same way and
     the parent waits for them to exit;
  4. then (every connection ended, or the time is up) the reactor stops and
     the proxy's ordinary stop runs (L{diegossh.proxy.shutdown}): every
     connection still open is told C{the proxy is shutting down} in an SSH
     disconnect message and closed, the realms, pools and access log stop
     in order, and the process exits 0.

A second SIGTERM, or a SIGINT at any time, skips what is left of the wait and
goes to step 4 at once. Every wait is bounded by a timer on the clock passed
in, so a drain ends even if nobody leaves.

The handlers replace Twisted's (which would stop the reactor, and under
twistd re-raise the signal on exit: status -15) once the reactor runs, since
C{reactor.run} installs its own; they only schedule work on the reactor
(C{callFromThread}), as Twisted's do.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from diegossh.interfaces import IProxyMetrics
from diegossh.ssh.metrics import NO_METRICS

log = Logger()

#: Seconds from the first SIGTERM to the listener's closing: the balancer's
#: health check has seen the 503 by then if it polls at least this often.
LISTENER_DELAY = 1.0
#: C{--drainTimeout}'s default: how long established sessions may go on.
DRAIN_TIMEOUT = 30.0


class DrainState:
    """
    Whether this process is draining, and since when (on its clock): the one
    place the health check and the listener's owners read it.
    """

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None


class Drainable(Protocol):
    """
    Something that carries work a drain waits for: C{drain} tells it no new
    work is coming and fires once what it holds has ended by itself.
    """

    def drain(self) -> defer.Deferred[Any]: ...


class DrainService(Service):
    """
    Turns the first SIGTERM into a drain (see the module's docstring), and a
    second signal, or L{hurry}, into the ordinary stop at once.

    @param stop: stops the process (the reactor's C{stop}, whose shutdown
        runs the proxy's stop in order).
    @param closeListener: stops accepting; may return a L{defer.Deferred}.
    @param participants: each one's L{Drainable.drain} is awaited (the
        open connections; the workers).
    @param signals: the reactor whose start the SIGTERM/SIGINT handlers
        wait for (they replace the ones C{reactor.run} installs), or
        L{None} for none (tests call L{begin} and L{hurry}).
    @param metrics: told when the drain begins (C{diegossh_proxy_draining}).
    """

    name = "drain"

    def __init__(
        self,
        state: DrainState,
        clock: IReactorTime,
        stop: Callable[[], Any],
        closeListener: Callable[[], Any],
        participants: Sequence[Drainable],
        timeout: float = DRAIN_TIMEOUT,
        listenerDelay: float = LISTENER_DELAY,
        signals: Any = None,
        metrics: IProxyMetrics = NO_METRICS,
    ) -> None:
        self.state = state
        self._clock = clock
        self._stop = stop
        self._closeListener = closeListener
        self.participants = list(participants)
        self.timeout = timeout
        self.listenerDelay = listenerDelay
        self._signals = signals
        self._metrics = metrics
        self.stopping = False
        self._timers: list[Any] = []
        self._waits: list[defer.Deferred[Any]] = []
        self._previous: dict[int, Any] = {}

    # -- signals

    def startService(self) -> None:
        super().startService()
        if self._signals is not None:
            self._signals.callWhenRunning(self._install)

    def _install(self) -> None:
        if not self.running:
            return
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._signalled)

    def _uninstall(self) -> None:
        for number, previous in self._previous.items():
            if signal.getsignal(number) == self._signalled:
                signal.signal(number, previous)
        self._previous.clear()

    def _signalled(self, number: int, frame: Any = None) -> None:
        # In the signal handler: only schedule, as Twisted's own handlers do.
        self._signals.callFromThread(self.signalled, number)

    def signalled(self, number: int) -> None:
        """
        A signal arrived: the first SIGTERM drains; SIGINT, or a SIGTERM
        while draining, stops at once.
        """
        name = signal.Signals(number).name
        if number == signal.SIGTERM and not self.state.draining:
            log.info("{signal}: draining", signal=name)
            self.begin()
        else:
            log.info("{signal}: stopping now", signal=name)
            self.hurry()

    # -- the drain

    def begin(self) -> None:
        """
        Start draining (once; a later call does nothing): 503 now, the
        listener closes after C{listenerDelay}, the participants get until
        C{timeout} to end.
        """
        if self.state.draining or self.stopping:
            return
        self.state.since = self._clock.seconds()
        self._metrics.draining()
        log.info(
            "draining: health check 503, listener closes in {delay:g}s, sessions have {timeout:g}s",
            delay=min(self.listenerDelay, self.timeout),
            timeout=self.timeout,
        )
        closed: defer.Deferred[Any] = defer.Deferred()

        def closeListener() -> None:
            log.info("draining: listener closed")
            defer.maybeDeferred(self._closeListener).chainDeferred(closed)

        self._timers.append(
            self._clock.callLater(min(self.listenerDelay, self.timeout), closeListener)
        )
        self._timers.append(self._clock.callLater(self.timeout, self._timedOut))
        self._waits = [defer.maybeDeferred(p.drain) for p in self.participants]
        everything = defer.DeferredList([closed, *self._waits], consumeErrors=True)
        everything.addCallback(lambda _: self._finish("every connection ended"))

    def _timedOut(self) -> None:
        log.warn("draining: {timeout:g}s are up; closing what is still open", timeout=self.timeout)
        self._finish("drain timeout")

    def hurry(self) -> None:
        """
        Stop now: what is still open is closed by the ordinary stop.
        """
        self._finish("stopping now")

    def _finish(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._cancel()
        log.info("stopping ({why})", why=why)
        self._stop()

    def _cancel(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        waits, self._waits = self._waits, []
        for wait in waits:
            wait.cancel()

    def stopService(self) -> None:
        super().stopService()
        self._cancel()
        if not self.stopping:
            # Stopped by someone else (a test, the worker's lifeline): the
            # process may go on, and so would our handlers.
            self.stopping = True
            self._uninstall()
        # Else the handlers stay to the end, answering further signals with
        # nothing (the stop is bounded), rather than Twisted's re-raise.

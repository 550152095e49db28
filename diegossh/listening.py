# -*- test-case-name: tests.test_admission,tests.test_admission_interop -*-
"""
Listening ports that survive running out of file descriptors.

When C{accept} fails for want of descriptors (C{EMFILE}, C{ENFILE}) or
kernel memory (C{ENOBUFS}, C{ENOMEM}), Twisted's C{tcp.Port} frees a reserved
descriptor, accepts every waiting connection and closes it at once (so the
legitimate login waiting there fails), logs a line per closed connection,
and goes back to its reactor with the socket still readable: while the
shortage lasts, every new connection is accepted and dropped, and the log
grows with each.

L{guardAccepting} instead stops reading the listening socket: waiting
connections stay in the kernel's queue (the backlog, 511), and established
connections go on. Accepting resumes after L{PAUSE} seconds, doubling up to
L{MAX_PAUSE} while the shortage lasts. One warning when an episode starts,
one line when a connection is accepted again.

It wraps the port's socket (C{port.socket}, which C{tcp.Port.doRead} passes to
its accept loop) so that such a failure looks like "nothing to accept" to
Twisted's loop; nothing else of C{tcp.Port} is replaced.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

# Seconds before accepting again after a shortage, doubling while it lasts.
PAUSE = 1.0
MAX_PAUSE = 10.0
SHORTAGES = {
    errno.EMFILE: "EMFILE",
    errno.ENFILE: "ENFILE",
    errno.ENOBUFS: "ENOBUFS",
    errno.ENOMEM: "ENOMEM",
}


class AcceptGuard:
    """
    One listening port's pauses.
    """

    def __init__(self, port: Any, clock: IReactorTime) -> None:
        self.port = port
        self.clock = clock
        self.pause = 0.0
        self.retries = 0
        self.episodes = 0
        self._since: float | None = None
        self._timer: Any = None

    @property
    def paused(self) -> bool:
        return self._timer is not None

    def shortage(self, number: int) -> None:
        """
        C{accept} failed with C{number} (one of L{SHORTAGES}): stop accepting
        for a while.
        """
        self.port.stopReading()
        if self._since is None:
            self._since = self.clock.seconds()
            self.episodes += 1
            self.pause = PAUSE
            self.retries = 0
            log.warn(
                "out of file descriptors ({error}) on {host}: not accepting new connections "
                "for {pause:g}s, then retrying (up to every {most:g}s) until accepting works; "
                "established connections go on",
                error=SHORTAGES.get(number, str(number)),
                host=_describe(self.port),
                pause=self.pause,
                most=MAX_PAUSE,
            )
        else:
            self.retries += 1
            self.pause = min(self.pause * 2, MAX_PAUSE)
        if self._timer is None:
            self._timer = self.clock.callLater(self.pause, self._resume)

    def _resume(self) -> None:
        self._timer = None
        if getattr(self.port, "connected", False) and not getattr(self.port, "disconnecting", True):
            self.port.startReading()

    def accepted(self) -> None:
        """
        A connection was accepted: an episode, if any, is over.
        """
        if self._since is None:
            return
        log.info(
            "accepting connections again on {host} after {seconds:.1f}s without "
            "descriptors ({retries} retries)",
            host=_describe(self.port),
            seconds=self.clock.seconds() - self._since,
            retries=self.retries,
        )
        self._since = None

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _GuardedSocket:
    """
    The listening socket, with C{accept} failing as "try again later" when
    descriptors run out (after telling the guard).
    """

    def __init__(self, sock: Any, guard: AcceptGuard) -> None:
        self._socket = sock
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)

    def accept(self) -> Any:
        try:
            result = self._socket.accept()
        except OSError as e:
            if e.errno in SHORTAGES:
                self._guard.shortage(e.errno)
                raise BlockingIOError(errno.EAGAIN, "accepting paused") from None
            raise
        self._guard.accepted()
        return result


def guardAccepting(port: Any, clock: IReactorTime) -> AcceptGuard:
    """
    Make a listening C{tcp.Port} pause rather than drop connections when
    descriptors run out. Call after it started listening.
    """
    guard = AcceptGuard(port, clock)
    port.socket = _GuardedSocket(port.socket, guard)
    original = port.connectionLost

    def connectionLost(reason: Any) -> Any:
        guard.stop()
        return original(reason)

    port.connectionLost = connectionLost
    port.acceptGuard = guard
    return guard


class GuardedEndpoint:
    """
    A stream server endpoint whose ports are guarded (L{guardAccepting}).
    """

    def __init__(self, endpoint: Any, clock: IReactorTime) -> None:
        self._endpoint = endpoint
        self._clock = clock

    def listen(self, factory: Any) -> Any:
        def guard(port: Any) -> Any:
            guardAccepting(port, self._clock)
            return port

        return self._endpoint.listen(factory).addCallback(guard)


def _describe(port: Any) -> str:
    try:
        host = port.getHost()
        return f"{host.host}:{host.port}"
    except Exception:
        return "the listening socket"

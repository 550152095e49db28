"""
Waiting for something a test does not drive step by step: a real socket to
close, a child process to end, a port to open, a log line to appear.

A fixed sleep is either too short on a loaded machine (a flaky failure) or
too long everywhere else (a slow suite). These poll a condition instead,
often, up to a deadline, and when the deadline passes they fail saying what
was awaited, rather than failing later on an assertion that does not.

C{eventually} is for tests on the reactor (pytest-twisted): it returns a
L{Deferred} and lets the reactor run between polls. C{eventuallyBlocking}
is for tests that drive subprocesses or threads and do not run the reactor.

Protocol logic is not tested with these: it gets an in-memory transport and
a L{twisted.internet.task.Clock}, where nothing needs waiting for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer, task

T = TypeVar("T")

TIMEOUT = 30.0
"""Seconds before giving up: generous, as only a broken test waits that long."""

INTERVAL = 0.01
"""Seconds between polls on the reactor."""

BLOCKING_INTERVAL = 0.05
"""Seconds between polls of a subprocess or thread (each may cost a syscall or more)."""


class NotYet(AssertionError):
    """The condition still did not hold at the deadline."""


def _complaint(what: str, timeout: float, last: object) -> str:
    shown = "" if isinstance(last, bool) or last is None else f" (last: {last!r})"
    return f"still waiting for {what} after {timeout:g} s{shown}"


def eventually(
    condition: Callable[[], T],
    what: str,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    reactor: Any = None,
) -> defer.Deferred[T]:
    """
    Fire with C{condition()}'s first true value, polling it every
    C{interval} seconds on C{reactor} (the global one by default); fail with
    L{NotYet} naming C{what} after C{timeout} seconds of the reactor's time.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor

    async def poll() -> T:
        deadline = reactor.seconds() + timeout
        while True:
            value = condition()
            if value:
                return value
            if reactor.seconds() >= deadline:
                raise NotYet(_complaint(what, timeout, value))
            await task.deferLater(reactor, interval, lambda: None)

    return defer.Deferred.fromCoroutine(poll())


def eventuallyBlocking(
    condition: Callable[[], T],
    what: str,
    timeout: float = TIMEOUT,
    interval: float = BLOCKING_INTERVAL,
) -> T:
    """
    C{condition()}'s first true value, polled every C{interval} seconds of
    wall-clock time; L{NotYet} naming C{what} after C{timeout} seconds.
    Blocks: never call it while the reactor is to run.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise NotYet(_complaint(what, timeout, value))
        time.sleep(interval)

# -*- test-case-name: tests.test_sftp_server -*-
"""
Run blocking file work in a thread pool while keeping the order that matters.

Requests on one handle must take effect in the order the client sent them
(a WRITE before the CLOSE that follows it; overlapping WRITEs), and path
requests keep OpenSSH's one-at-a-time semantics among themselves. Work on
different lanes (two open files, or a file and the path lane) runs in
parallel and answers in whatever order it finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class ThreadRunner:
    """Run a callable in an injected thread pool, answering on an injected reactor."""

    def __init__(self, reactor: IReactorFromThreads, threadpool: ThreadPool) -> None:
        self._reactor = reactor
        self._threadpool = threadpool

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._threadpool, work)


class Lanes:
    """
    Serialise jobs per lane key; a job naming several keys waits for all of
    them (copy-data reads one handle and writes another).
    """

    def __init__(self, runner: ThreadRunner) -> None:
        self._runner = runner
        self._tails: dict[Hashable, Deferred[None]] = {}

    def submit(self, keys: Sequence[Hashable], work: Callable[[], T]) -> Deferred[T]:
        waits = [self._tails[key] for key in keys if key in self._tails]
        done: Deferred[None] = Deferred()
        for key in keys:
            self._tails[key] = done
        result: Deferred[T] = Deferred()

        def finish(outcome: Any) -> None:
            for key in keys:
                if self._tails.get(key) is done:
                    del self._tails[key]
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)
            done.callback(None)

        def start(_: object) -> None:
            self._runner.run(work).addBoth(finish)

        gate: Deferred[Any] = DeferredList(waits) if waits else succeed(None)
        gate.addCallback(start)
        return result

"""
What a test leaves behind on the global reactor: timed calls still pending
and descriptors (connections, listening ports, process pipes) still
registered, the reactor's own (its waker, the SIGCHLD waker) aside.

twisted.trial's C{_Janitor} turns the reactor over twice to let calls due
now run, then fails a test that leaves timed calls (after each test) or
selectables (after each class), and cancels or removes what it found so the
next test starts clean. pytest has no such check; tests/conftest.py's
C{reactorJanitor} fixture uses this module for one, after every test, for
both kinds, and only for what the test added (module-scoped fixtures set up
before it may hold ports of their own).

A leak reported here is either a test that does not wait for what it
started to end, or code that does not end what it started: a pending call
fires in a later test, a left connection ends in one, and either can make
that test fail for no reason of its own.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport


@dataclass(frozen=True)
class ReactorState:
    """Pending timed calls and registered selectables, by identity."""

    delayedCalls: dict[int, Any] = field(default_factory=dict)
    selectables: dict[int, Any] = field(default_factory=dict)
    functions: tuple[Any, ...] = ()
    """What the calls call, kept: a call that runs or is cancelled forgets it."""

    def __bool__(self) -> bool:
        return bool(self.delayedCalls or self.selectables)

    def without(self, before: ReactorState) -> ReactorState:
        """
        What is here and was not in C{before}. A timer that reschedules
        itself (a web server's log clock, ticking each second) is a new
        call object each time: a call to the same function on the same
        object as one in C{before} is that one.
        """
        earlier = before.functions
        return ReactorState(
            {
                k: c
                for k, c in self.delayedCalls.items()
                if k not in before.delayedCalls and not _rescheduled(c.func, earlier)
            },
            {k: v for k, v in self.selectables.items() if k not in before.selectables},
        )

    def describe(self) -> str:
        lines = [f"  pending call: {call}" for call in self.delayedCalls.values()]
        lines += [f"  open selectable: {sel!r}" for sel in self.selectables.values()]
        return "\n".join(lines)


def _rescheduled(func: Any, earlier: tuple[Any, ...]) -> bool:
    """Whether C{func} is a bound method one of the C{earlier} calls was to."""
    if getattr(func, "__self__", None) is None:
        return False
    return any(func == f for f in earlier)


def snapshot(reactor: Any) -> ReactorState:
    """The active timed calls and the non-internal readers and writers of C{reactor}."""
    internal = getattr(reactor, "_internalReaders", set())
    calls = {id(c): c for c in reactor.getDelayedCalls() if c.active()}
    selectables = {
        id(s): s for s in [*reactor.getReaders(), *reactor.getWriters()] if s not in internal
    }
    return ReactorState(calls, selectables, tuple(c.func for c in calls.values()))


def sweep(reactor: Any, left: ReactorState) -> None:
    """
    Cancel the calls and unregister the selectables in C{left}, as trial's
    janitor does; a process is killed. Sockets are not closed: the protocol
    would run code of the failed test in the next one.
    """
    for call in left.delayedCalls.values():
        if call.active():
            call.cancel()
    for sel in left.selectables.values():
        reactor.removeReader(sel)
        reactor.removeWriter(sel)
        if IProcessTransport.providedBy(sel):
            with suppress(ProcessExitedAlready, OSError):
                sel.signalProcess("KILL")

"""
tests/support/eventually.py: it waits as long as the condition takes and no
longer, and a timeout says what was awaited.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet.task import Clock

from tests.support.eventually import NotYet, eventually, eventuallyBlocking


def _after(calls: int, value: object = True) -> Callable[[], object]:
    """A condition that holds (as C{value}) from its C{calls}-th poll on."""
    polled = [0]

    def condition() -> object:
        polled[0] += 1
        return value if polled[0] >= calls else 0

    return condition


def test_fires_with_the_first_true_value_as_the_clock_turns() -> None:
    clock = Clock()
    d = eventually(_after(3, "ready"), "the thing", timeout=1, interval=0.1, reactor=clock)
    box: list[object] = []
    d.addBoth(box.append)
    clock.advance(0.1)
    assert box == []
    clock.advance(0.1)
    assert box == ["ready"]
    assert clock.getDelayedCalls() == []


def test_already_true_fires_at_once() -> None:
    clock = Clock()
    box: list[object] = []
    eventually(lambda: 7, "seven", reactor=clock).addBoth(box.append)
    assert box == [7]


def test_times_out_saying_what_was_awaited() -> None:
    clock = Clock()
    box: list[object] = []
    d = eventually(lambda: 0, "the port to open", timeout=1, interval=0.25, reactor=clock)
    d.addErrback(box.append)
    clock.pump([0.25] * 3)
    assert box == []
    clock.advance(0.25)
    [failure] = box
    assert isinstance(failure.value, NotYet)
    assert str(failure.value) == "still waiting for the port to open after 1 s (last: 0)"
    assert clock.getDelayedCalls() == []


def test_blocking_returns_the_first_true_value() -> None:
    assert eventuallyBlocking(_after(3, b"up"), "the log line", timeout=5, interval=0) == b"up"


def test_blocking_times_out_saying_what_was_awaited() -> None:
    with pytest.raises(NotYet, match=r"^still waiting for the child to end after 0\.05 s$"):
        eventuallyBlocking(lambda: False, "the child to end", timeout=0.05, interval=0.01)

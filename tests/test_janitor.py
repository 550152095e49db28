"""
tests/support/janitor.py, the check tests/conftest.py runs after every
test: what it finds on the global reactor, and that it clears it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory

from tests.support.janitor import ReactorState, snapshot, sweep

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def test_nothing_new_is_clean() -> None:
    reactor = _reactor()
    before = snapshot(reactor)
    assert not snapshot(reactor).without(before)
    assert not ReactorState()


def test_a_pending_call_is_found_and_cancelled() -> None:
    reactor = _reactor()
    before = snapshot(reactor)
    call = reactor.callLater(60, lambda: None)
    left = snapshot(reactor).without(before)
    assert list(left.delayedCalls.values()) == [call] and not left.selectables
    assert "pending call" in left.describe() and "<lambda>" in left.describe()
    sweep(reactor, left)
    assert not call.active()
    assert not snapshot(reactor).without(before)


class Ticker:
    """A timer that reschedules itself, as twisted.web's log clock does."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.call = reactor.callLater(60, self.tick)

    def tick(self) -> None:
        self.call = self.reactor.callLater(60, self.tick)


def test_a_timer_that_rescheduled_itself_is_not_a_leftover() -> None:
    reactor = _reactor()
    ticker = Ticker(reactor)
    try:
        before = snapshot(reactor)
        first = ticker.call
        first.cancel()
        ticker.tick()  # what the reactor does when the first call comes due
        assert ticker.call is not first
        assert not snapshot(reactor).without(before)
        other = Ticker(reactor)
        assert list(snapshot(reactor).without(before).delayedCalls.values()) == [other.call]
        other.call.cancel()
    finally:
        ticker.call.cancel()


def test_a_cancelled_call_is_not_a_leftover() -> None:
    reactor = _reactor()
    before = snapshot(reactor)
    reactor.callLater(60, lambda: None).cancel()
    assert not snapshot(reactor).without(before)


@pytest_twisted.ensureDeferred
async def test_a_listening_port_is_found_and_unregistered() -> None:
    reactor = _reactor()
    before = snapshot(reactor)
    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    try:
        left = snapshot(reactor).without(before)
        assert list(left.selectables.values()) == [port] and not left.delayedCalls
        assert "open selectable" in left.describe()
        sweep(reactor, left)
        assert port not in reactor.getReaders()
    finally:
        await port.stopListening()


def test_the_reactors_own_readers_are_not_leftovers() -> None:
    reactor = _reactor()
    state = snapshot(reactor)
    assert not any(r in state.selectables.values() for r in reactor._internalReaders)


LEAKY = """
import pytest
from twisted.internet import reactor

def test_leaves_a_call():
    reactor.callLater(60, lambda: None)

def test_clean_after_the_sweep():
    assert not [c for c in reactor.getDelayedCalls() if c.active() and c.time > 0]

@pytest.mark.leaves_reactor(reason="shows the opt-out")
def test_excused():
    reactor.callLater(60, lambda: None)

@pytest.mark.leaves_reactor
def test_excused_without_a_reason():
    pass
"""


@pytest.mark.slow
def test_the_fixture_fails_a_leaking_test(pytester: pytest.Pytester) -> None:
    """The conftest fixture, run on a test file of its own in a fresh pytest."""
    pytester.makeconftest("from tests.conftest import reactorJanitor  # noqa: F401\n")
    pytester.makeini(
        "[pytest]\naddopts = --reactor=default -p no:cacheprovider\n"
        "markers =\n    leaves_reactor(reason): exempt\n"
    )
    pytester.makepyfile(test_leaky=LEAKY)
    monkey = pytest.MonkeyPatch()
    monkey.setenv("PYTHONPATH", str(ROOT))
    try:
        result = pytester.runpytest_subprocess("-q")
    finally:
        monkey.undo()
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_call*",
            "*pending call*test_leaves_a_call*",
            "*ERROR at setup of test_excused_without_a_reason*",
            "leaves_reactor needs a reason*",
        ]
    )

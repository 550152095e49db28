"""
Shared test configuration. Never import the reactor at module level here: it
would break pytest-twisted's --reactor option.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.daemon import Daemon, startDaemon
from tests.support.janitor import snapshot, sweep

# Turns of the reactor a test's leftovers get to finish on (calls due now,
# a close already under way), as twisted.trial's janitor gives them.
JANITOR_TURNS = 2


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A real twistd diego-sshd for the tests of one module."""
    d = startDaemon(tmp_path_factory.mktemp("sshd"))
    yield d
    d.stop()


def _turn(reactor: Any, turns: int) -> None:
    import pytest_twisted
    from twisted.internet import task

    for _ in range(turns):
        pytest_twisted.blockon(task.deferLater(reactor, 0, lambda: None))


@pytest.fixture(autouse=True)
def reactorJanitor(request: pytest.FixtureRequest) -> Iterator[None]:
    """
    Fail a test that leaves timed calls or open descriptors on the global
    reactor (tests/support/janitor.py says why), then clear them so the next
    test starts clean. C{@pytest.mark.leaves_reactor(reason=...)} exempts a
    test that must; the reason is required.
    """
    marker = request.node.get_closest_marker("leaves_reactor")
    if marker is not None:
        if not marker.kwargs.get("reason") and not marker.args:
            pytest.fail(
                "leaves_reactor needs a reason: @pytest.mark.leaves_reactor(reason=...)",
                pytrace=False,
            )
        yield
        return
    from twisted.internet import reactor

    before = snapshot(reactor)
    yield
    _turn(reactor, JANITOR_TURNS)
    left = snapshot(reactor).without(before)
    if left:
        what = left.describe()
        sweep(reactor, left)
        pytest.fail(f"the test left the reactor unclean:\n{what}", pytrace=False)

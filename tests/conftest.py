"""
Shared test configuration. Never import the reactor at module level here: it
would break pytest-twisted's --reactor option.
"""

from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon, startDaemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A real twistd diego-sshd for the tests of one module."""
    d = startDaemon(tmp_path_factory.mktemp("sshd"))
    yield d
    d.stop()

"""
The debug listener (L{diegossh.debugserver}), the proxy's and the daemon's: upstream's
C{POST /log-level} in memory (treq's C{StubTreq}, no sockets), its
refusals, and the rest of the tree left for C{/metrics}.
"""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from diegossh.debugserver import MAX_BODY, RecordedLevel, debugSite
from diegossh.lager import LagerObserver


def settled(client: StubTreq, deferred: Deferred[Any]) -> Any:
    client.flush()
    results: list[Any] = []
    deferred.addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


def post(client: StubTreq, path: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    response = settled(client, client.request(method, f"http://debug{path}", data=body))
    return response.code, settled(client, response.content())


@pytest.mark.parametrize(
    ("body", "level", "named"),
    [(b"debug", "debug", "debug"), (b"0", "debug", "debug"), (b" E\n", "error", "error"),
     (b"fatal", "fatal", "fatal"), (b"i", "info", "info"), (b"warn", "error", "warn")],
)  # fmt: skip
def test_post_changes_the_level(body: bytes, level: str, named: str) -> None:
    control = RecordedLevel()
    client = StubTreq(debugSite(control).resource)
    code, answer = post(client, "/log-level", body)
    assert code == 200
    assert answer == f"/log-level was invoked with Level: {named}\n".encode()
    assert control.level == level


@pytest.mark.parametrize(
    ("method", "body", "reason"),
    [("GET", b"", b"method not allowed, use POST"), ("PUT", b"debug", b"method not allowed"),
     ("POST", b"", b"log level cannot be empty"), ("POST", b"loud", b"invalid log level: loud"),
     ("POST", b"d" * (MAX_BODY + 1), b"invalid log level")],
)  # fmt: skip
def test_refusals_leave_the_level(method: str, body: bytes, reason: bytes) -> None:
    control = RecordedLevel("info")
    client = StubTreq(debugSite(control).resource)
    code, answer = post(client, "/log-level", body, method)
    assert code == 400
    assert answer.startswith(reason)
    assert control.level == "info"


def test_the_lager_observer_is_what_changes() -> None:
    lines: list[str] = []
    observer = LagerObserver(lines.append, "ssh-proxy")
    client = StubTreq(debugSite(observer).resource)
    assert post(client, "/log-level", b"error")[0] == 200
    assert observer.level == 2


class Metrics(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"ssh_connections 0\n"


def test_pprof_is_not_served_and_children_can_be_added() -> None:
    metrics = Metrics()
    client = StubTreq(debugSite(RecordedLevel(), {b"metrics": metrics}).resource)
    assert post(client, "/debug/pprof/", b"", "GET")[0] == 404
    assert post(client, "/metrics/", b"", "GET") == (200, b"ssh_connections 0\n")

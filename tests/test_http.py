"""
L{diegossh._http}: the body reader's cap and cancel on a transport that
records an abort, one exchange under one deadline on a L{Clock}, the retry of
a stale pooled connection, and JSON-or-None. No sockets.
"""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from diegossh._http import (
    BodyReader,
    BodyTooLarge,
    Reply,
    TimedOut,
    Unreachable,
    deliverBody,
    exchange,
    httpClient,
    jsonOrNone,
    readBody,
)


class _Transport(StringTransport):
    aborting = False

    def abortConnection(self) -> None:
        self.aborting = True


class _FakeResponse:
    """
    Just enough of an L{IResponse}: its body goes to the reader over a
    transport that records an abort; C{deliver} sends more of it.
    """

    def __init__(self, code: int = 200, contentType: bytes = b"application/json") -> None:
        self.code = code
        self.headers = Headers({b"Content-Type": [contentType]})
        self.transport = _Transport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def deliver(self, *chunks: bytes, end: Exception | None = None) -> None:
        for chunk in chunks:
            self.protocol.dataReceived(chunk)
        if end is not None:
            self.protocol.connectionLost(Failure(end))


def _response(code: int = 200, contentType: bytes = b"application/json") -> Any:
    """A L{_FakeResponse}, typed as any response."""
    return _FakeResponse(code, contentType)


def _box(d: Deferred[Any]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


# -- readBody ----------------------------------------------------------------


def test_body_read_to_the_end() -> None:
    response = _response()
    box = _box(readBody(response, 10, closeDelimitedOK=False))
    response.deliver(b"12345", b"67890", end=ResponseDone())
    assert box == [b"1234567890"]
    assert not response.transport.aborting


def test_past_the_cap_fails_and_aborts() -> None:
    response = _response()
    box = _box(readBody(response, 10, closeDelimitedOK=False))
    response.deliver(b"12345", b"678901")
    [failure] = box
    assert failure.check(BodyTooLarge)
    assert response.transport.aborting
    response.deliver(b"more", end=ResponseDone())  # what was in flight changes nothing
    assert len(box) == 1


@pytest.mark.parametrize("closeDelimitedOK", [True, False])
def test_a_close_delimited_body(closeDelimitedOK: bool) -> None:
    """JSON cut short does not parse; protobuf might, so its reader says no."""
    response = _response()
    box = _box(readBody(response, 10, closeDelimitedOK=closeDelimitedOK))
    response.deliver(b"{}", end=PotentialDataLoss())
    [result] = box
    if closeDelimitedOK:
        assert result == b"{}"
    else:
        assert isinstance(result, Failure) and result.check(PotentialDataLoss)


def test_a_broken_body_fails() -> None:
    response = _response()
    box = _box(readBody(response, 10, closeDelimitedOK=True))
    response.deliver(b"{", end=ConnectionDone())
    [failure] = box
    assert failure.check(ConnectionDone)


def test_cancel_on_a_deadline_aborts() -> None:
    clock = Clock()
    response = _response()
    d = readBody(response, 10, closeDelimitedOK=True)
    box = _box(d.addTimeout(5, clock))
    response.deliver(b"{")
    clock.advance(4.9)
    assert box == [] and not response.transport.aborting
    clock.advance(0.1)
    [failure] = box
    assert failure.check(DeferredTimeout) and response.transport.aborting
    response.deliver(b"}", end=ResponseDone())  # the abort's echo is ignored
    assert len(box) == 1


def test_a_reader_of_its_own() -> None:
    """What the Docker exec stream builds on: one result, and the same cancel."""

    class Lines(BodyReader[list[bytes]]):
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def dataReceived(self, data: bytes) -> None:
            self.lines += data.splitlines()

        def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
            self.finish(self.lines)
            self.finish([b"a second result is ignored"])

    response = _response()
    reader = Lines()
    box = _box(deliverBody(response, reader))
    assert reader.reading
    response.deliver(b"a\nb", end=ResponseDone())
    assert box == [[b"a", b"b"]] and not reader.reading

    response = _response()
    d = deliverBody(response, Lines())
    box = _box(d)
    d.cancel()
    [failure] = box
    assert failure.check(CancelledError) and response.transport.aborting


# -- jsonOrNone ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (b'{"message": "gone"}', {"message": "gone"}),
        (b"[1, 2]", [1, 2]),
        (b"", None),
        (b"<html>", None),
        (b'{"cut": ', None),
        (b"\xff\xfe{}", None),
        (b"null", None),
    ],
)
def test_json_or_none(body: bytes, parsed: object) -> None:
    assert jsonOrNone(body) == parsed


# -- exchange -------------------------------------------------------------------


@implementer(IAgent)
class _ScriptedAgent:
    """Answers each request with the next outcome: a response, or a failure."""

    def __init__(self, *outcomes: _FakeResponse | Exception) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[tuple[bytes, bytes]] = []

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        self.requests.append((method, uri))
        outcome = self.outcomes.pop(0)
        return fail(outcome) if isinstance(outcome, Exception) else succeed(outcome)


def _exchange(agent: IAgent, clock: Clock | None = None, **kw: Any) -> Deferred[Reply]:
    return exchange(
        httpClient(agent), clock or Clock(), 10.0, "GET", "https://uaa.test/x", {}, **kw
    )


def test_exchange_reads_the_reply() -> None:
    response = _response(201, b"application/json;charset=utf-8")
    box = _box(_exchange(_ScriptedAgent(response)))
    response.deliver(b"{}", end=ResponseDone())
    assert box == [Reply(201, b"application/json;charset=utf-8", b"{}")]


def test_exchange_deadline_on_the_clock_aborts() -> None:
    clock = Clock()
    response = _response()
    box = _box(_exchange(_ScriptedAgent(response), clock))
    response.deliver(b"{")
    clock.advance(9.9)
    assert box == []
    clock.advance(0.1)
    [failure] = box
    assert failure.check(TimedOut) and response.transport.aborting


def test_exchange_cap() -> None:
    response = _response()
    box = _box(_exchange(_ScriptedAgent(response), limit=4))
    response.deliver(b"12345")
    [failure] = box
    assert failure.check(BodyTooLarge) and response.transport.aborting


def _stale() -> ResponseNeverReceived:
    return ResponseNeverReceived([Failure(ConnectionDone())])


def test_a_stale_pooled_connection_is_retried_once() -> None:
    response = _response()
    agent = _ScriptedAgent(_stale(), response)
    box = _box(_exchange(agent))
    response.deliver(b"ok", end=ResponseDone())
    assert [r.body for r in box] == [b"ok"] and len(agent.requests) == 2

    agent = _ScriptedAgent(_stale(), _stale())
    [failure] = _box(_exchange(agent))
    assert failure.check(Unreachable) and len(agent.requests) == 2


def test_other_failures_are_not_retried() -> None:
    agent = _ScriptedAgent(ConnectionRefusedError("no one home"), _response())
    [failure] = _box(_exchange(agent))
    assert failure.check(Unreachable) and "no one home" in str(failure.value)
    assert len(agent.requests) == 1


# -- httpClient -------------------------------------------------------------------


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return request.content.read()


def test_request_bodies_need_no_cooperator() -> None:
    """The body is written at once: nothing waits on the global reactor's cooperator."""
    agent = RequestTraversalAgent(_Echo())
    box = _box(httpClient(agent).post("https://bbs.test/", data=b"protobuf", unbuffered=True))
    agent.flush()
    [response] = box
    body = _box(readBody(response, 100, closeDelimitedOK=False))
    agent.flush()
    assert body == [b"protobuf"]

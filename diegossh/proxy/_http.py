# -*- test-case-name: tests.test_bbs_client,tests.test_cf_uaa,tests.test_cf_cloudcontroller -*-
"""
HTTP pieces the proxy's service clients (BBS, UAA, Cloud Controller) share:
a request body written at once, and a response body read to the end under a
size cap, with a cancel that really drops the connection.

treq's default body producer streams through the global reactor's
cooperator; these keep every timer on the clock the caller passes in.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

__all__ = ["BodyTooLarge", "httpClient", "readBody"]


class BodyTooLarge(Exception):
    """The reply's body went past the caller's limit."""


@implementer(IBodyProducer)
class _BytesProducer:
    """A small request body written in one go, with no cooperator involved."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _bodyProducer(data: object) -> IBodyProducer:
    assert isinstance(data, bytes)
    return _BytesProducer(data)


def httpClient(agent: IAgent) -> HTTPClient:
    """A treq client on C{agent} whose request bodies need no cooperator."""
    return HTTPClient(agent, data_to_body_producer=_bodyProducer)


class _BodyReader(Protocol):
    """Collects a body up to a limit; a cancel or an overflow drops the connection."""

    def __init__(self, finished: Deferred[bytes], limit: int, closeDelimitedOK: bool) -> None:
        self.finished: Deferred[bytes] | None = finished
        self._limit = limit
        self._closeDelimitedOK = closeDelimitedOK
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done(Failure(BodyTooLarge()))
            self.abort()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        # A close-delimited body (PotentialDataLoss) may have been cut short.
        if reason.check(PotentialDataLoss):
            ok = self._closeDelimitedOK
        else:
            ok = bool(reason.check(ResponseDone))
        self._done(b"".join(self._chunks) if ok else reason)

    def _done(self, result: bytes | Failure) -> None:
        finished, self.finished = self.finished, None
        if finished is None:
            return
        if isinstance(result, Failure):
            finished.errback(result)
        else:
            finished.callback(result)

    def abort(self) -> None:
        """Drop the connection: nothing more of this body is wanted."""
        transport: Any = self.transport
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None) or transport.stopProducing
        abort()


def readBody(response: IResponse, limit: int, *, closeDelimitedOK: bool) -> Deferred[bytes]:
    """
    Read C{response}'s whole body, failing with L{BodyTooLarge} past C{limit}.

    C{closeDelimitedOK} says whether a body ended by the server closing the
    connection is accepted: JSON cut short does not parse, so the caller would
    notice; truncated protobuf may still parse, so a protobuf caller must say no.
    """
    reader: _BodyReader

    def cancel(d: Deferred[bytes]) -> None:
        reader.finished = None
        reader.abort()
        d.errback(Failure(CancelledError()))

    finished: Deferred[bytes] = Deferred(cancel)
    reader = _BodyReader(finished, limit, closeDelimitedOK)
    response.deliverBody(reader)
    return finished

# -*- test-case-name: tests.test_http -*-
"""
The HTTP pieces every client here shares (BBS, UAA, Cloud Controller, the
bastion's Docker and Kubernetes engines, a target's C{/publickey}): a request
body written at once, a response body read under a size cap with a cancel
that really drops the connection, one exchange under one deadline, and JSON
that is parsed or is None.

What treq alone does not give: every timer on the clock passed in (treq's
default body producer streams through the global reactor's cooperator), a
body read to the end so the connection goes back to the persistent pool, a
cap on what a misbehaving server may make us buffer, and one quick retry
when a pooled connection turns out to have been closed by a load balancer.

Nothing here logs: the callers know which service they talk to and which
details are safe to log. Exceptions raised here never carry request headers
or bodies (the secrets).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from OpenSSL.SSL import Error as TLSError
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectingCancelledError, ConnectionClosed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

__all__ = [
    "MAX_BODY",
    "BodyReader",
    "BodyTooLarge",
    "Reply",
    "TimedOut",
    "Unreachable",
    "deliverBody",
    "exchange",
    "failureReasons",
    "httpClient",
    "isCancelled",
    "isStaleConnection",
    "jsonOrNone",
    "readBody",
]

MAX_BODY = 1024 * 1024
"""What L{exchange} reads at most: a token or an ssh_access answer is a few KiB."""

_T = TypeVar("_T")


class BodyTooLarge(Exception):
    """The reply's body went past the caller's limit."""


class TimedOut(Exception):
    """The deadline passed before the whole reply was read."""


class Unreachable(Exception):
    """
    No reply: connection refused, reset, TLS verification failed, ... The
    message is the transport error's, safe to log (it never holds a header).
    """


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


def jsonOrNone(body: bytes) -> object:
    """C{body} parsed as JSON, or None when it is not JSON (or not UTF-8)."""
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None


class BodyReader(Protocol, Generic[_T]):
    """
    A response body read to one result: subclasses handle C{dataReceived}
    and C{connectionLost} and end with L{finish} (once; later calls are
    ignored). Given to L{deliverBody}, a cancel drops the connection.
    """

    finished: Deferred[_T] | None = None

    @property
    def reading(self) -> bool:
        """Whether the result is still wanted (not finished, not cancelled)."""
        return self.finished is not None

    def finish(self, result: _T | Failure) -> None:
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


def deliverBody(response: IResponse, reader: BodyReader[_T]) -> Deferred[_T]:
    """
    Read C{response}'s body with C{reader}; cancelling the result drops the
    connection (so a deadline on it really ends the read).
    """

    def cancel(d: Deferred[_T]) -> None:
        reader.finished = None
        reader.abort()
        d.errback(Failure(CancelledError()))

    reader.finished = Deferred(cancel)
    finished = reader.finished
    response.deliverBody(reader)
    return finished


class _LimitedBody(BodyReader[bytes]):
    """Collects a body up to a limit; going past it drops the connection."""

    def __init__(self, limit: int, closeDelimitedOK: bool) -> None:
        self._limit = limit
        self._closeDelimitedOK = closeDelimitedOK
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if not self.reading:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.finish(Failure(BodyTooLarge()))
            self.abort()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # A close-delimited body (PotentialDataLoss) may have been cut short.
        if reason.check(PotentialDataLoss):
            ok = self._closeDelimitedOK
        else:
            ok = bool(reason.check(ResponseDone))
        self.finish(b"".join(self._chunks) if ok else reason)


def readBody(response: IResponse, limit: int, *, closeDelimitedOK: bool) -> Deferred[bytes]:
    """
    Read C{response}'s whole body, failing with L{BodyTooLarge} (and
    dropping the connection) past C{limit} bytes.

    C{closeDelimitedOK} says whether a body ended by the server closing the
    connection is accepted: JSON cut short does not parse, so the caller would
    notice; truncated protobuf may still parse, so a protobuf caller must say no.
    """
    return deliverBody(response, _LimitedBody(limit, closeDelimitedOK))


def failureReasons(failure: Failure) -> list[Failure]:
    """The failures an Agent error wraps (C{ResponseNeverReceived} and kin)."""
    reasons = getattr(failure.value, "reasons", None)
    return [r for r in reasons if isinstance(r, Failure)] if isinstance(reasons, list) else []


def isCancelled(failure: Failure) -> bool:
    """Whether C{failure} is a cancellation, bare or wrapped by the Agent."""
    return bool(failure.check(CancelledError, ConnectingCancelledError)) or any(
        r.check(CancelledError) for r in failureReasons(failure)
    )


def isStaleConnection(failure: Failure) -> bool:
    """
    The connection closed under the request with no TLS error: what a pooled
    connection that a load balancer dropped while idle looks like.
    """
    reasons = failureReasons(failure)
    return bool(reasons) and all(
        r.check(ConnectionClosed) and not r.check(TLSError) for r in reasons
    )


@dataclass(frozen=True)
class Reply:
    """A whole HTTP reply, body read to the end."""

    code: int
    contentType: bytes
    body: bytes


async def _attempt(
    http: HTTPClient, method: str, url: str, headers: Headers, data: bytes | None, limit: int
) -> Reply:
    response = await http.request(
        method, url, data=data, headers=headers, allow_redirects=False, unbuffered=True
    )
    body = await readBody(response, limit, closeDelimitedOK=True)
    contentType = response.headers.getRawHeaders(b"Content-Type", [b""])[0]
    return Reply(response.code, contentType, body)


async def _attempts(
    http: HTTPClient,
    method: str,
    url: str,
    headers: Headers,
    data: bytes | None,
    retries: int,
    limit: int,
) -> Reply:
    attempt = 0
    while True:
        try:
            return await _attempt(http, method, url, headers, data, limit)
        except BodyTooLarge:
            raise
        except Exception:
            failure = Failure()
            if isCancelled(failure):
                raise
            if attempt < retries and isStaleConnection(failure):
                attempt += 1
                continue
            messages = [r.getErrorMessage() for r in failureReasons(failure)]
            raise Unreachable("; ".join(messages) or failure.getErrorMessage()) from None


def exchange(
    http: HTTPClient,
    clock: IReactorTime,
    timeout: float,
    method: str,
    url: str,
    headers: Mapping[bytes, bytes],
    data: bytes | None = None,
    *,
    retries: int = 1,
    limit: int = MAX_BODY,
) -> Deferred[Reply]:
    """
    Send one request and read the whole reply (at most C{limit} bytes of
    body), all within C{timeout} seconds on C{clock}.

    A request that fails because its (pooled) connection was closed under
    it is sent once more on a fresh connection: a load balancer closing an
    idle connection is the common cause, and the request never reached the
    server. Fails with L{TimedOut}, L{Unreachable} or L{BodyTooLarge};
    cancelling the result drops the connection.
    """

    def timedOut(result: object, timeout: float) -> None:
        raise TimedOut()

    raw = Headers({k: [v] for k, v in headers.items()})
    d = Deferred.fromCoroutine(_attempts(http, method, url, raw, data, retries, limit))
    d.addTimeout(timeout, clock, onTimeoutCancel=timedOut)
    return d

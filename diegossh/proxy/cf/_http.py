# -*- test-case-name: tests.test_cf_uaa,tests.test_cf_cloudcontroller -*-
"""
One HTTPS exchange under one deadline, shared by the UAA and Cloud
Controller clients.

What both need, and treq alone does not give: every timer on the clock
passed in (treq's default body producer uses the global reactor's
cooperator), a body read to the end so the connection goes back to the
persistent pool, a cap on what a misbehaving server may make us buffer, a
cancel that really drops the connection, and one quick retry when a pooled
connection turns out to have been closed by a load balancer.

Nothing here logs: the callers know which service they talk to and which
details are safe to log. Exceptions raised here never carry request
headers or bodies (the secrets).

The body reader and the request producer are L{diegossh.proxy._http}'s,
shared with the BBS client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from OpenSSL.SSL import Error as TLSError
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionClosed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from diegossh.proxy._http import BodyTooLarge, httpClient, readBody

__all__ = ["MAX_BODY", "BodyTooLarge", "Reply", "TimedOut", "Unreachable", "exchange", "httpClient"]

MAX_BODY = 1024 * 1024
"""A token or an ssh_access answer is a few kilobytes; a megabyte is plenty."""


class TimedOut(Exception):
    """The deadline passed before the whole reply was read."""


class Unreachable(Exception):
    """
    No reply: connection refused, reset, TLS verification failed, ... The
    message is the transport error's, safe to log (it never holds a header).
    """


@dataclass(frozen=True)
class Reply:
    """A whole HTTP reply, body read to the end."""

    code: int
    contentType: bytes
    body: bytes


def _reasons(failure: Failure) -> list[Failure]:
    """The failures an Agent error wraps (C{ResponseNeverReceived} and kin)."""
    reasons = getattr(failure.value, "reasons", None)
    return [r for r in reasons if isinstance(r, Failure)] if isinstance(reasons, list) else []


def _cancelled(failure: Failure) -> bool:
    return bool(failure.check(CancelledError, ConnectingCancelledError)) or any(
        r.check(CancelledError) for r in _reasons(failure)
    )


def _isStaleConnection(failure: Failure) -> bool:
    """
    The connection closed under the request with no TLS error: what a pooled
    connection that a load balancer dropped while idle looks like.
    """
    reasons = _reasons(failure)
    return bool(reasons) and all(
        r.check(ConnectionClosed) and not r.check(TLSError) for r in reasons
    )


async def _attempt(
    http: HTTPClient, method: str, url: str, headers: Headers, data: bytes | None
) -> Reply:
    response = await http.request(
        method, url, data=data, headers=headers, allow_redirects=False, unbuffered=True
    )
    body = await readBody(response, MAX_BODY, closeDelimitedOK=True)
    contentType = response.headers.getRawHeaders(b"Content-Type", [b""])[0]
    return Reply(response.code, contentType, body)


async def _attempts(
    http: HTTPClient,
    method: str,
    url: str,
    headers: Headers,
    data: bytes | None,
    retries: int,
) -> Reply:
    attempt = 0
    while True:
        try:
            return await _attempt(http, method, url, headers, data)
        except BodyTooLarge:
            raise
        except Exception:
            failure = Failure()
            if _cancelled(failure):
                raise
            if attempt < retries and _isStaleConnection(failure):
                attempt += 1
                continue
            messages = [r.getErrorMessage() for r in _reasons(failure)]
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
) -> Deferred[Reply]:
    """
    Send one request and read the whole reply, all within C{timeout}
    seconds on C{clock}.

    A request that fails because its (pooled) connection was closed under
    it is sent once more on a fresh connection: a load balancer closing an
    idle connection is the common cause, and the request never reached the
    server. Fails with L{TimedOut}, L{Unreachable} or L{BodyTooLarge};
    cancelling the result drops the connection.
    """

    def timedOut(result: object, timeout: float) -> None:
        raise TimedOut()

    raw = Headers({k: [v] for k, v in headers.items()})
    d = Deferred.fromCoroutine(_attempts(http, method, url, raw, data, retries))
    d.addTimeout(timeout, clock, onTimeoutCancel=timedOut)
    return d

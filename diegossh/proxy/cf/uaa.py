# -*- test-case-name: tests.test_cf_uaa -*-
"""
UAA's authorization-code grant: the one-time code a user got from
C{cf ssh-code} (their SSH password) becomes an access token.

The code and the token are secrets: neither is ever logged, put in an
exception, or shown by C{repr}. UAA's error descriptions may quote the code
("Invalid authorization code: ..."), so only the short C{error} field of a
refusal is logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent

from diegossh._http import (
    BodyTooLarge,
    Reply,
    TimedOut,
    Unreachable,
    exchange,
    httpClient,
    jsonOrNone,
)
from diegossh.logtext import SafeLogger
from diegossh.proxy.errors import LoginDenied

__all__ = ["INVALID", "REFUSED", "TIMED_OUT", "UNAVAILABLE", "Token", "UAAClient"]

REFUSED = "UAA refused the code"
INVALID = "Invalid response from UAA"
TIMED_OUT = "UAA did not answer in time"
UNAVAILABLE = "UAA is unavailable"

# What may go in an Authorization header: visible ASCII, no spaces.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


@dataclass(frozen=True)
class Token:
    """
    An access token from UAA, with the claims read (unverified: Cloud
    Controller does the verifying) for the audit log.

    C{repr} and C{str} leave C{access_token} out.
    """

    token_type: str
    access_token: str = field(repr=False)
    user_name: str = ""
    user_id: str = ""

    @property
    def authorization(self) -> bytes:
        """The C{Authorization} header value, C{<token_type> <access_token>}."""
        return f"{self.token_type} {self.access_token}".encode("ascii")

    @classmethod
    def fromResponse(cls, body: bytes) -> Token:
        """
        Read UAA's JSON token response.

        @raise ValueError: it is not a JSON object with string
            C{access_token} and C{token_type} fit for a header. The message
            never quotes the body.
        """
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not JSON") from None
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        accessToken = obj.get("access_token")
        tokenType = obj.get("token_type")
        for name, value in (("access_token", accessToken), ("token_type", tokenType)):
            if not isinstance(value, str) or not _HEADER_SAFE.fullmatch(value):
                raise ValueError(f"no usable {name}")
        assert isinstance(accessToken, str) and isinstance(tokenType, str)
        claims = _unverifiedClaims(accessToken)
        return cls(
            token_type=tokenType,
            access_token=accessToken,
            user_name=_claim(claims, "user_name"),
            user_id=_claim(claims, "user_id"),
        )


def _unverifiedClaims(jwt: str) -> dict[str, Any]:
    """
    The payload of a JWT, not verified; empty when it is not a JWT (an
    opaque token is still a token: Cloud Controller decides).
    """
    parts = jwt.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    return value if isinstance(value, str) else ""


class UAAClient:
    """
    Exchanges one-time authorization codes for tokens at UAA's token
    endpoint.

    @param agent: an HTTPS agent, ideally on a persistent connection pool.
    @param tokenURL: e.g. C{https://uaa.service.cf.internal:8443/oauth/token}.
    @param clientID: the OAuth client the proxy is (C{ssh-proxy}): the
        C{--uaaUsername}.
    @param clientSecret: that client's secret: the C{--uaaPassword}.
    @param clock: measures C{communicationTimeout}.
    @param communicationTimeout: seconds for the whole exchange, reply
        included.
    """

    log = SafeLogger()

    def __init__(
        self,
        agent: IAgent,
        tokenURL: str,
        clientID: str,
        clientSecret: str,
        clock: IReactorTime,
        communicationTimeout: float = 10.0,
    ) -> None:
        self._http = httpClient(agent)
        self._tokenURL = tokenURL
        basic = base64.b64encode(f"{clientID}:{clientSecret}".encode())
        self._headers = {
            b"Authorization": b"Basic " + basic,
            b"Accept": b"application/json",
            b"Content-Type": b"application/x-www-form-urlencoded",
        }
        self._clock = clock
        self._timeout = communicationTimeout

    def __repr__(self) -> str:
        return f"<UAAClient {self._tokenURL}>"

    def exchangeCode(self, code: str) -> Deferred[Token]:
        """
        Exchange C{code} for a token.

        Fails with L{LoginDenied}: L{REFUSED} for any status but 200,
        L{INVALID}, L{TIMED_OUT} or L{UNAVAILABLE}.
        """
        return Deferred.fromCoroutine(self._exchange(code))

    async def _exchange(self, code: str) -> Token:
        form = urlencode([("grant_type", "authorization_code"), ("code", code)]).encode()
        try:
            reply = await exchange(
                self._http, self._clock, self._timeout, "POST", self._tokenURL, self._headers, form
            )
        except TimedOut:
            self.log.warn("UAA: no reply within {timeout}s", timeout=self._timeout)
            raise LoginDenied(TIMED_OUT) from None
        except Unreachable as e:
            self.log.error("UAA: request failed: {error}", error=str(e))
            raise LoginDenied(UNAVAILABLE) from None
        except BodyTooLarge:
            self.log.warn("UAA: reply body too large")
            raise LoginDenied(INVALID) from None
        if reply.code != 200:
            self._logRefusal(reply)
            raise LoginDenied(REFUSED, credentials=True)
        try:
            return Token.fromResponse(reply.body)
        except ValueError as e:
            self.log.warn("UAA: invalid token response ({problem})", problem=str(e))
            raise LoginDenied(INVALID) from None

    def _logRefusal(self, reply: Reply) -> None:
        error = _errorCode(reply.body)
        if reply.code == 401:
            self.log.error(
                "UAA rejected the proxy's own client credentials (HTTP 401 {error}):"
                " check uaaUsername/uaaPassword",
                error=error,
            )
        else:
            self.log.info("UAA refused the code: HTTP {code} {error}", code=reply.code, error=error)


def _errorCode(body: bytes) -> str:
    """The OAuth C{error} field, if it is a plain code; never the description."""
    obj = jsonOrNone(body)
    error = obj.get("error") if isinstance(obj, dict) else None
    return error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else ""

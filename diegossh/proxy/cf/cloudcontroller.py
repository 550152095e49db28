# -*- test-case-name: tests.test_cf_cloudcontroller -*-
"""
Cloud Controller's verdict: may the token's user ssh into this app instance,
and which Diego process guid is it?

Cloud Controller checks the token and the user's roles, the app's and the
space's C{enable_ssh}, and answers with the LRP's C{process_guid}, which the
proxy then looks up in BBS. The token is sent and never logged.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent

from diegossh._http import (
    BodyTooLarge,
    TimedOut,
    Unreachable,
    exchange,
    httpClient,
    jsonOrNone,
)
from diegossh.logtext import SafeLogger
from diegossh.proxy.cf.uaa import Token
from diegossh.proxy.cf.usernames import checkAppInstance
from diegossh.proxy.errors import LoginDenied

__all__ = ["FETCH_FAILED", "INVALID", "TIMED_OUT", "UNAVAILABLE", "CloudControllerClient"]

FETCH_FAILED = "Fetching application data failed"
INVALID = "Invalid response from Cloud Controller"
TIMED_OUT = "Cloud Controller did not answer in time"
UNAVAILABLE = "Cloud Controller is unavailable"

# What BBS and the diego realm accept as a process guid.
_PROCESS_GUID = re.compile(r"[A-Za-z0-9_-]{1,256}")


class CloudControllerClient:
    """
    Asks Cloud Controller's internal API for SSH access to an app instance.

    @param agent: an HTTPS agent, ideally on a persistent connection pool.
    @param ccAPIURL: the internal API, e.g.
        C{https://cloud-controller-ng.service.cf.internal:9023}.
    @param clock: measures C{communicationTimeout}.
    @param communicationTimeout: seconds for the whole call, reply included.
    """

    log = SafeLogger()

    def __init__(
        self,
        agent: IAgent,
        ccAPIURL: str,
        clock: IReactorTime,
        communicationTimeout: float = 10.0,
    ) -> None:
        self._http = httpClient(agent)
        self._baseURL = ccAPIURL.rstrip("/")
        self._clock = clock
        self._timeout = communicationTimeout

    def __repr__(self) -> str:
        return f"<CloudControllerClient {self._baseURL}>"

    def sshAccess(self, token: Token, appGuid: str, index: int) -> Deferred[str]:
        """
        Fire with the process guid of instance C{index} of C{appGuid} if
        C{token}'s user may ssh into it.

        Fails with L{LoginDenied}: L{FETCH_FAILED} for any status but 200,
        L{INVALID} for a body that is not C{{"process_guid": "..."}},
        L{TIMED_OUT} or L{UNAVAILABLE}.
        """
        return Deferred.fromCoroutine(self._sshAccess(token, appGuid, index))

    async def _sshAccess(self, token: Token, appGuid: str, index: int) -> str:
        checkAppInstance(appGuid, index)
        url = f"{self._baseURL}/internal/apps/{appGuid}/ssh_access/{index}"
        headers = {b"Authorization": token.authorization, b"Accept": b"application/json"}
        where = {"app_guid": appGuid, "index": index}
        try:
            reply = await exchange(self._http, self._clock, self._timeout, "GET", url, headers)
        except TimedOut:
            self.log.warn(
                "Cloud Controller: no reply within {timeout}s for {app_guid}/{index}",
                timeout=self._timeout,
                **where,
            )
            raise LoginDenied(TIMED_OUT) from None
        except Unreachable as e:
            self.log.error("Cloud Controller: request failed: {error}", error=str(e), **where)
            raise LoginDenied(UNAVAILABLE) from None
        except BodyTooLarge:
            self.log.warn("Cloud Controller: reply body too large", **where)
            raise LoginDenied(INVALID) from None
        if reply.code != 200:
            self.log.info(
                "Cloud Controller denied ssh to {app_guid}/{index}: HTTP {code} {error_code}",
                code=reply.code,
                error_code=_errorCode(reply.body),
                **where,
            )
            raise LoginDenied(FETCH_FAILED)
        processGuid = _processGuid(reply.body)
        if processGuid is None:
            self.log.warn("Cloud Controller: invalid ssh_access reply", **where)
            raise LoginDenied(INVALID)
        return processGuid


def _processGuid(body: bytes) -> str | None:
    obj = jsonOrNone(body)
    guid = obj.get("process_guid") if isinstance(obj, dict) else None
    return guid if isinstance(guid, str) and _PROCESS_GUID.fullmatch(guid) else None


def _errorCode(body: bytes) -> str:
    """Cloud Controller's C{error_code} (C{CF-NotAuthorized}, ...) for the log."""
    obj = jsonOrNone(body)
    code = obj.get("error_code") if isinstance(obj, dict) else None
    return code if isinstance(code, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", code) else ""

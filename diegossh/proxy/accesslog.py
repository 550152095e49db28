# -*- test-case-name: tests.test_proxy_interop -*-
"""
The proxy's access log: one structured event per login attempt and per
session end, in the C{diegossh.access} namespace so an operator can route
them (C{--accessLog FILE} writes them as JSON lines).

Events carry who, where from, to which instance, and why not (and which
proxy process served it, with C{--workers}); never a password, one-time code,
token or key.

A relayed session's pair of events goes through a L{SessionRecord}: one
C{session_end} for every C{success}, and none without one, whatever the
order in which the user, the container and the proxy end it.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger

from diegossh.proxy.login import LoginResult

_log = Logger(namespace="diegossh.access")


def _targetFields(result: LoginResult) -> dict[str, Any]:
    target = result.target
    return {
        "realm": result.realm,
        "process_guid": target.process_guid,
        "index": target.index,
        "instance_guid": target.instance_guid,
        "backend": target.address,
        "pid": os.getpid(),
        **result.audit,
    }


def loginSucceeded(client: str, result: LoginResult) -> None:
    _log.info(
        "Successful remote access by {client} to {process_guid}/{index} at {backend}",
        event="login",
        outcome="success",
        client=client,
        **_targetFields(result),
    )


class SessionRecord:
    """
    The access-log events of one relayed session: L{succeeded} logs the
    login's success once; L{ended} logs the end once, and only after a success.
    """

    def __init__(self, client: str, result: LoginResult, clock: Any) -> None:
        self.client = client
        self.result = result
        self._clock = clock
        self._started: float | None = None
        self._ended = False

    def succeeded(self) -> None:
        if self._started is not None:
            return
        self._started = self._clock.seconds()
        loginSucceeded(self.client, self.result)

    def ended(self, fromClient: int, fromBackend: int) -> None:
        if self._started is None or self._ended:
            return
        self._ended = True
        sessionEnded(
            self.client,
            self.result,
            fromClient,
            fromBackend,
            self._clock.seconds() - self._started,
        )


def loginFailed(client: str, username: str, realm: str, reason: str, **audit: str) -> None:
    """
    C{audit}: what else identifies the attempt (a key's fingerprint), never a secret.
    """
    _log.info(
        "Login by {client} as {username} denied: {reason}",
        event="login",
        outcome="denied",
        client=client,
        username=username,
        realm=realm,
        reason=reason,
        **audit,
    )


def sessionEnded(
    client: str, result: LoginResult, fromClient: int, fromBackend: int, seconds: float
) -> None:
    _log.info(
        "Remote access ended for {client}: {bytes_from_client} bytes in, "
        "{bytes_to_client} bytes out, {duration:.3f}s",
        event="session_end",
        client=client,
        bytes_from_client=fromClient,
        bytes_to_client=fromBackend,
        duration=seconds,
        **_targetFields(result),
    )

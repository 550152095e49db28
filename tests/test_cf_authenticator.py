# -*- test-case-name: tests.test_cf_authenticator -*-
"""
L{CFAuthenticator} with stand-in clients: the order of the steps, what
stops a login, what is logged (and what never is).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import globalLogPublisher
from twisted.logger._format import formatEvent
from twisted.python.failure import Failure

from diegossh.proxy.cf.authenticator import (
    INTERNAL,
    NO_CODE,
    CFAuthenticator,
    CFLogin,
)
from diegossh.proxy.cf.uaa import Token
from diegossh.proxy.cf.usernames import MALFORMED
from diegossh.proxy.errors import LoginDenied

APP = "2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
CODE = "Zq7SECRETCODE"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VyX25hbWUiOiJhbGljZSJ9.SECRETSIGNATURE"
TOKEN = Token("bearer", ACCESS, "alice", "user-guid-alice")


@contextmanager
def captureLogs() -> Iterator[list[dict[str, Any]]]:
    """Every event logged through twisted.logger while the block runs."""
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def eventsText(events: list[dict[str, Any]]) -> str:
    """
    Everything a log observer could print for C{events}: the formatted
    message, every field's repr, and any failure's traceback.
    """
    parts = []
    for event in events:
        parts.append(formatEvent(event))
        parts.extend(f"{k}={v!r}" for k, v in event.items())
        failure = event.get("log_failure")
        if isinstance(failure, Failure):
            parts.append(failure.getTraceback())
    return "\n".join(parts)


class StubUAA:
    def __init__(self, result: Deferred[Token] | None = None) -> None:
        self.codes: list[str] = []
        self.result = result if result is not None else succeed(TOKEN)

    def exchangeCode(self, code: str) -> Deferred[Token]:
        self.codes.append(code)
        return self.result


class StubCC:
    def __init__(self, result: Deferred[str] | None = None) -> None:
        self.calls: list[tuple[Token, str, int]] = []
        self.result = result if result is not None else succeed("process-guid")

    def sshAccess(self, token: Token, appGuid: str, index: int) -> Deferred[str]:
        self.calls.append((token, appGuid, index))
        return self.result


def outcome(d: Deferred[CFLogin]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    [result] = box
    return result


def test_uaa_then_cc() -> None:
    uaa, cc = StubUAA(), StubCC()
    login = outcome(CFAuthenticator(uaa, cc).authenticate(APP, 3, CODE))
    assert login == CFLogin("process-guid", 3, APP, "alice", "user-guid-alice")
    assert uaa.codes == [CODE]
    assert cc.calls == [(TOKEN, APP, 3)]


def test_code_as_bytes() -> None:
    uaa = StubUAA()
    outcome(CFAuthenticator(uaa, StubCC()).authenticate(APP, 0, CODE.encode()))
    assert uaa.codes == [CODE]


@pytest.mark.parametrize("code", [b"", "", b"\xff\xfe", "x" * 1025])
def test_unusable_code_asks_nobody(code: str | bytes) -> None:
    uaa, cc = StubUAA(), StubCC()
    failure = outcome(CFAuthenticator(uaa, cc).authenticate(APP, 0, code))
    assert failure.value.reason == NO_CODE
    assert uaa.codes == [] and cc.calls == []


@pytest.mark.parametrize(("guid", "index"), [("app", 0), (APP, -1), (APP, 2**31), (APP, True)])
def test_malformed_instance_asks_nobody(guid: str, index: int) -> None:
    uaa, cc = StubUAA(), StubCC()
    failure = outcome(CFAuthenticator(uaa, cc).authenticate(guid, index, CODE))
    assert failure.value.reason == MALFORMED
    assert uaa.codes == [] and cc.calls == []


def test_uaa_refusal_stops_the_login() -> None:
    uaa, cc = StubUAA(fail(LoginDenied("UAA refused the code"))), StubCC()
    with captureLogs() as events:
        failure = outcome(CFAuthenticator(uaa, cc).authenticate(APP, 1, CODE))
    assert failure.value.reason == "UAA refused the code"
    assert cc.calls == []
    text = eventsText(events)
    assert f"cf login to {APP}/1 by unknown denied at UAA: UAA refused the code" in text
    assert CODE not in text


def test_cc_denial_names_the_user() -> None:
    cc = StubCC(fail(LoginDenied("Fetching application data failed")))
    with captureLogs() as events:
        failure = outcome(CFAuthenticator(StubUAA(), cc).authenticate(APP, 1, CODE))
    assert failure.value.reason == "Fetching application data failed"
    text = eventsText(events)
    assert (
        f"cf login to {APP}/1 by alice (user-guid-alice) denied at Cloud Controller:"
        " Fetching application data failed"
    ) in text
    assert CODE not in text and "SECRET" not in text


def test_success_is_logged_without_secrets() -> None:
    with captureLogs() as events:
        outcome(CFAuthenticator(StubUAA(), StubCC()).authenticate(APP, 0, CODE))
    text = eventsText(events)
    assert f"alice (user-guid-alice) may ssh to {APP}/0 (process process-guid)" in text
    assert "SECRET" not in text


def test_a_bug_is_a_denial_that_logs_no_message() -> None:
    """An unexpected error's message might quote a secret: only its type is logged."""
    uaa = StubUAA(fail(RuntimeError(f"oops {CODE}")))
    with captureLogs() as events:
        failure = outcome(CFAuthenticator(uaa, StubCC()).authenticate(APP, 0, CODE))
    assert failure.value.reason == INTERNAL
    text = eventsText(events)
    assert "UAA step raised RuntimeError" in text and CODE not in text


def test_cancel_reaches_the_step_under_way() -> None:
    cancelled: list[bool] = []
    pending: Deferred[Token] = Deferred(lambda d: cancelled.append(True))
    cc = StubCC()
    d = CFAuthenticator(StubUAA(pending), cc).authenticate(APP, 0, CODE)
    d.cancel()
    assert cancelled == [True]
    assert outcome(d).check(CancelledError)
    assert cc.calls == []


def test_token_repr_hides_the_token() -> None:
    assert ACCESS not in repr(TOKEN) and ACCESS not in str(TOKEN)
    assert "alice" in repr(TOKEN)
    assert TOKEN.authorization == f"bearer {ACCESS}".encode()

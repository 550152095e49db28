# -*- test-case-name: tests.test_cf_uaa -*-
"""
L{UAAClient} in memory: the fake UAA as a twisted.web resource behind
treq's L{RequestTraversalAgent}, time on a L{Clock}.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock

from diegossh.proxy.cf import uaa as uaamod
from diegossh.proxy.cf.uaa import Token, UAAClient
from tests.fakes.bbs import Behaviour
from tests.fakes.uaa import FakeUAA, makeJWT
from tests.test_cf_authenticator import captureLogs, eventsText

TOKEN_URL = "https://uaa.test:8443/oauth/token"


class Memory:
    """A fake UAA in memory and a client talking to it."""

    def __init__(self, timeout: float = 10.0, **kw: Any) -> None:
        self.clock = Clock()
        self.fake = FakeUAA(self.clock, **kw)
        self.agent = RequestTraversalAgent(self.fake.resource())
        self.client = UAAClient(
            self.agent, TOKEN_URL, "ssh-proxy", "ssh-proxy-secret", self.clock, timeout
        )

    def exchange(self, code: str) -> Any:
        box: list[Any] = []
        self.client.exchangeCode(code).addBoth(box.append)
        self.agent.flush()
        return box

    def result(self, code: str) -> Any:
        [result] = self.exchange(code)
        return result


def test_exchange() -> None:
    memory = Memory()
    code = memory.fake.issueCode("alice", "user-guid-alice")
    token = memory.result(code)
    assert isinstance(token, Token)
    assert (token.token_type, token.user_name, token.user_id) == (
        "bearer",
        "alice",
        "user-guid-alice",
    )
    assert token.access_token in memory.fake.tokens
    [request] = memory.fake.requests
    assert request.path == b"/oauth/token" and request.method == b"POST"
    assert request.header(b"authorization") == b"Basic " + base64.b64encode(
        b"ssh-proxy:ssh-proxy-secret"
    )
    assert request.header(b"accept") == b"application/json"
    assert request.body == f"grant_type=authorization_code&code={code}".encode()


def test_code_is_form_encoded() -> None:
    memory = Memory()
    code = memory.fake.issueCode(code="a&b=c d+é")
    assert isinstance(memory.result(code), Token)
    [request] = memory.fake.requests
    assert parse_qs(request.body.decode())["code"] == ["a&b=c d+é"]


def test_refused() -> None:
    memory = Memory()
    with captureLogs() as events:
        failure = memory.result("SECRETCODE")
    assert failure.value.reason == uaamod.REFUSED
    text = eventsText(events)
    assert "HTTP 400 invalid_grant" in text
    assert "SECRETCODE" not in text


def test_bad_client_credentials_logged_as_configuration() -> None:
    memory = Memory(clientSecret="other")
    with captureLogs() as events:
        failure = memory.result(memory.fake.issueCode())
    assert failure.value.reason == uaamod.REFUSED
    assert "check uaaUsername/uaaPassword" in eventsText(events)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"token_type": "bearer"}',
        b'{"access_token": "abc"}',
        b'{"access_token": "", "token_type": "bearer"}',
        b'{"access_token": "a b", "token_type": "bearer"}',
        b'{"access_token": "abc\\r\\nX-Evil: 1", "token_type": "bearer"}',
        b'{"access_token": 42, "token_type": "bearer"}',
        b"\xff\xfe",
    ],
)
def test_invalid_token_responses(body: bytes) -> None:
    with pytest.raises(ValueError):
        Token.fromResponse(body)


def test_invalid_response_denied() -> None:
    memory = Memory()
    memory.fake.setBehaviour(Behaviour("garbage"))
    assert memory.result(memory.fake.issueCode()).value.reason == uaamod.INVALID


@pytest.mark.parametrize(
    "accessToken",
    [
        "opaque-token-0123",
        "a.b.c",
        "a." + base64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".c",
        makeJWT({"user_name": 7, "user_id": None}),
    ],
)
def test_claims_unreadable_are_empty(accessToken: str) -> None:
    body = json.dumps({"access_token": accessToken, "token_type": "bearer"}).encode()
    token = Token.fromResponse(body)
    assert (token.access_token, token.user_name, token.user_id) == (accessToken, "", "")


def test_claims_read_from_padded_payload() -> None:
    for name in ("a", "ab", "abc", "abcd"):
        token = Token.fromResponse(
            json.dumps(
                {
                    "access_token": makeJWT({"user_name": name, "user_id": "u"}),
                    "token_type": "bearer",
                }
            ).encode()
        )
        assert token.user_name == name


def test_timeout_on_the_clock() -> None:
    memory = Memory(timeout=10)
    memory.fake.setBehaviour(Behaviour("hang"))
    box = memory.exchange(memory.fake.issueCode())
    memory.clock.advance(9.9)
    assert box == []
    memory.clock.advance(0.2)
    [failure] = box
    assert failure.value.reason == uaamod.TIMED_OUT


def test_delay_within_timeout() -> None:
    memory = Memory(timeout=1.0)
    memory.fake.setBehaviour(Behaviour(delay=0.9))
    box = memory.exchange(memory.fake.issueCode("bob"))
    memory.clock.advance(0.9)
    memory.agent.flush()
    [token] = box
    assert token.user_name == "bob"


def test_repr_shows_no_secret() -> None:
    memory = Memory()
    assert "secret" not in repr(memory.client)
    token = memory.result(memory.fake.issueCode())
    assert token.access_token not in repr(token)
    assert token.access_token not in f"{token}"

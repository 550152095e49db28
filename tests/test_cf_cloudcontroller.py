# -*- test-case-name: tests.test_cf_cloudcontroller -*-
"""
L{CloudControllerClient} in memory: the fake Cloud Controller as a
twisted.web resource behind treq's L{RequestTraversalAgent}, time on a
L{Clock}.
"""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock

from diegossh.proxy.cf import cloudcontroller as ccmod
from diegossh.proxy.cf.cloudcontroller import CloudControllerClient
from diegossh.proxy.cf.uaa import Token
from diegossh.proxy.cf.usernames import MALFORMED
from tests.fakes.bbs import Behaviour
from tests.fakes.cloudcontroller import FakeCloudController
from tests.fakes.uaa import Answer, Grant, RecordedRequest, makeJWT
from tests.test_cf_authenticator import captureLogs, eventsText

APP = "2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
PROCESS = f"{APP}-7e6d5c4b-3a29-1807-f6e5-d4c3b2a19080"
ACCESS = makeJWT({"user_name": "alice", "user_id": "u-1"})
TOKEN = Token("bearer", ACCESS, "alice", "u-1")


class Memory:
    def __init__(self, timeout: float = 10.0, url: str = "https://cc.test:9023/") -> None:
        self.clock = Clock()
        self.fake = FakeCloudController(self.clock)
        self.fake.tokens[ACCESS] = Grant("alice", "u-1")
        self.fake.addApp(APP, PROCESS, instances=2)
        self.agent = RequestTraversalAgent(self.fake.resource())
        self.client = CloudControllerClient(self.agent, url, self.clock, timeout)

    def ask(self, token: Token = TOKEN, guid: str = APP, index: int = 0) -> list[Any]:
        box: list[Any] = []
        self.client.sshAccess(token, guid, index).addBoth(box.append)
        self.agent.flush()
        return box

    def result(self, *args: Any) -> Any:
        [result] = self.ask(*args)
        return result


def test_allowed() -> None:
    memory = Memory()
    assert memory.result(TOKEN, APP, 1) == PROCESS
    [request] = memory.fake.requests
    assert request.method == b"GET"
    assert request.path == f"/internal/apps/{APP}/ssh_access/1".encode()
    assert request.header(b"authorization") == f"bearer {ACCESS}".encode()
    assert request.header(b"accept") == b"application/json"


def test_token_type_as_given() -> None:
    memory = Memory()
    memory.result(Token("Bearer", ACCESS), APP, 0)
    [request] = memory.fake.requests
    assert request.header(b"authorization") == f"Bearer {ACCESS}".encode()


@pytest.mark.parametrize(
    ("token", "guid", "index"),
    [
        (Token("bearer", "unknown-token"), APP, 0),  # 401
        (TOKEN, "00000000-0000-0000-0000-000000000000", 0),  # 404
        (TOKEN, APP, 2),  # 404
    ],
)
def test_denied(token: Token, guid: str, index: int) -> None:
    memory = Memory()
    with captureLogs() as events:
        failure = memory.result(token, guid, index)
    assert failure.value.reason == ccmod.FETCH_FAILED
    text = eventsText(events)
    assert "CF-" in text and guid in text
    assert ACCESS not in text and "unknown-token" not in text


def test_forbidden() -> None:
    memory = Memory()
    memory.fake.addApp(APP, PROCESS, users={"bob"})
    with captureLogs() as events:
        assert memory.result().value.reason == ccmod.FETCH_FAILED
    assert "HTTP 403 CF-NotAuthorized" in eventsText(events)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"process_guid": ""}',
        b'{"process_guid": 7}',
        b'{"process_guid": "../../v1/evil"}',
        b'{"process_guid": "a b"}',
    ],
)
def test_invalid_answers(body: bytes) -> None:
    memory = Memory()
    memory.fake.answer = lambda request: Answer(200, body)  # type: ignore[method-assign]
    assert memory.result().value.reason == ccmod.INVALID


def test_garbage() -> None:
    memory = Memory()
    memory.fake.setBehaviour(Behaviour("garbage"))
    assert memory.result().value.reason == ccmod.INVALID


def test_server_error() -> None:
    memory = Memory()
    memory.fake.setBehaviour(Behaviour("status", status=502))
    assert memory.result().value.reason == ccmod.FETCH_FAILED


def test_malformed_instance_sends_nothing() -> None:
    memory = Memory()
    assert memory.result(TOKEN, "../../admin", 0).value.reason == MALFORMED
    assert memory.result(TOKEN, APP, -1).value.reason == MALFORMED
    assert memory.fake.requests == []


def test_timeout_on_the_clock() -> None:
    memory = Memory(timeout=2)
    memory.fake.setBehaviour(Behaviour("hang"))
    box = memory.ask()
    memory.clock.advance(1.9)
    assert box == []
    memory.clock.advance(0.2)
    [failure] = box
    assert failure.value.reason == ccmod.TIMED_OUT


def test_each_request_its_own_deadline() -> None:
    memory = Memory(timeout=1.0)
    memory.fake.setBehaviour(Behaviour(delay=0.7))
    first = memory.ask()
    memory.clock.advance(0.5)
    second = memory.ask()
    memory.clock.advance(0.2)
    memory.agent.flush()
    assert first == [PROCESS] and second == []
    memory.clock.advance(0.5)
    memory.agent.flush()
    assert second == [PROCESS]


def test_recorded_request_header_lookup_is_case_insensitive() -> None:
    recorded = RecordedRequest(b"GET", b"/", {b"authorization": [b"x"]}, b"")
    assert recorded.header(b"Authorization") == b"x"

"""
Malformed messages the fuzzer found reaching Conch's parsers (truncated global
and channel requests, KEXINIT, DEBUG; open answers for channels already open;
server-only userauth messages from a client; extended data logged with its
bytes), each answered cleanly, in memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.conch.ssh import connection as conchConnection
from twisted.conch.ssh import transport as conchTransport
from twisted.logger import globalLogPublisher

from tests.support.sshclient import ClientConnection, FailureCollector, NonStrictClient, inject
from tests.test_transport_bounds import HeldSession, authServer, sourcing
from tests.test_transport_unit import Pair

PROTOCOL_ERROR = conchTransport.DISCONNECT_PROTOCOL_ERROR
OPEN_CONFIRMATION = conchConnection.MSG_CHANNEL_OPEN_CONFIRMATION
OPEN_FAILURE = conchConnection.MSG_CHANNEL_OPEN_FAILURE


@pytest.fixture(autouse=True)
def noTracebacks() -> Iterator[FailureCollector]:
    with FailureCollector() as collector:
        yield collector
    assert not collector.failures, collector.describe()


@pytest.mark.parametrize(
    ("messageNum", "payload"),
    [
        (conchConnection.MSG_GLOBAL_REQUEST, bytes.fromhex("0000000d74637069702d")),
        (conchConnection.MSG_CHANNEL_REQUEST, bytes.fromhex("00000000000000156b65")),
        (conchConnection.MSG_CHANNEL_REQUEST, struct.pack(">L", 0) + b"\0\0\0\3env"),
        (conchTransport.MSG_DEBUG, b""),
    ],
)
def test_truncated_messages_end_the_connection_with_a_reason(
    messageNum: int, payload: bytes
) -> None:
    pair, _channel, _server = sourcing(b"echo")
    inject(pair.client, messageNum, payload)
    pair.flush()
    assert pair.server.disconnectSent == (PROTOCOL_ERROR, b"malformed message %d" % messageNum)


def test_truncated_kexinit_ends_the_connection_with_a_reason() -> None:
    pair = Pair(client=NonStrictClient(), greet=False)
    pair.flush()
    pair.client.sendKexInit()
    payload = pair.client.ourKexInitPayload[1:]
    inject(pair.client, conchTransport.MSG_KEXINIT, payload[:-4])
    pair.flush()
    assert pair.server.disconnectSent is not None
    assert pair.server.disconnectSent[0] == PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("messageNum", "reason"),
    [
        (
            conchConnection.MSG_CHANNEL_OPEN_CONFIRMATION,
            b"open confirmation for a channel already open",
        ),
        (conchConnection.MSG_CHANNEL_OPEN_FAILURE, b"open failure for a channel not being opened"),
    ],
)
def test_open_answers_for_a_channel_already_open(messageNum: int, reason: bytes) -> None:
    conn = ClientConnection()
    pair = Pair(connection=conn)
    channel = HeldSession(b"echo")
    conn.openChannel(channel)
    pair.flush()
    # the server answers our open; now the server pretends to answer again
    (serverChannel,) = pair.server.service.channels.values()
    if messageNum == OPEN_CONFIRMATION:
        payload = struct.pack(">4L", channel.id, 7, 1 << 20, 32768)
    else:
        payload = struct.pack(">2L", channel.id, 1) + b"\0\0\0\0\0\0\0\0"
    inject(pair.server, messageNum, payload)
    pair.flush()
    assert pair.client.disconnectSent == (PROTOCOL_ERROR, reason)
    del serverChannel


@pytest.mark.parametrize("messageNum", [52, 53, 60])
def test_server_only_userauth_messages_get_unimplemented(messageNum: int) -> None:
    server, fake = authServer()
    unimplemented: list[bool] = []
    fake.sendUnimplemented = lambda: unimplemented.append(True)  # type: ignore[attr-defined]
    server.packetReceived(messageNum, b"")
    assert unimplemented == [True]
    server.serviceStopped()


def test_extended_data_from_the_peer_is_not_logged_and_its_window_given_back() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        pair, channel, server = sourcing(b"echo")
        assert server is not None
        secret = b"extended data from the client" * 100
        for _ in range(400):
            channel.conn.sendExtendedData(channel, 1, secret)
        pair.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not any("extended data from the client" in repr(e) for e in events)
    # more than half the window was sent and dropped: the window was refilled
    assert len(secret) * 400 > server.localWindowSize // 2
    assert server.localWindowLeft > server.localWindowSize // 2
    assert pair.server.disconnectSent is None

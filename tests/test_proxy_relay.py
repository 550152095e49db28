"""
The relay's one rewrite: the backend hears a larger maximum packet than the
user's, and the backend's channel data is cut back to the user's maximum.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION, DISCONNECT_PROTOCOL_ERROR

from diegossh.proxy.relay import (
    BACKEND_MAX_PACKET,
    MAX_TRACKED_CHANNELS,
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_OPEN_CONFIRMATION,
    MSG_CHANNEL_OPEN_FAILURE,
    MSG_UNIMPLEMENTED,
    Relay,
)
from diegossh.ssh.connection import MIN_PEER_MAX_PACKET


class Leg:
    incomingPacketSequence = 8

    def __init__(self, pieces: bool) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.disconnected: list[tuple[int, bytes]] = []
        if pieces:
            self.sendMessage = self._sendMessage

    def sendPacket(self, messageNum: int, payload: bytes) -> None:
        self.sent.append((messageNum, bytes(payload)))

    def _sendMessage(self, messageNum: int, head: bytes, body: Any) -> None:
        self.sent.append((messageNum, head + bytes(body)))

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.disconnected.append((code, reason))


def relay(pieces: bool = True) -> tuple[Relay, Leg, Leg]:
    client, backend = Leg(pieces), Leg(pieces)
    return Relay(client, backend), client, backend


def channelOpen(sender: int, maxPacket: int) -> bytes:
    return NS(b"session") + struct.pack(">3L", sender, 2 << 20, maxPacket)


def data(channel: int, body: bytes) -> bytes:
    return struct.pack(">2L", channel, len(body)) + body


def test_open_announces_the_larger_maximum() -> None:
    r, _client, backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN, channelOpen(3, 32768))
    ((num, payload),) = backend.sent
    assert num == MSG_CHANNEL_OPEN
    assert payload == channelOpen(3, BACKEND_MAX_PACKET)


def test_confirmation_of_a_backend_channel_too() -> None:
    r, client, backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN_CONFIRMATION, struct.pack(">4L", 9, 4, 1 << 20, 16384) + b"x")
    assert backend.sent == [
        (
            MSG_CHANNEL_OPEN_CONFIRMATION,
            struct.pack(">4L", 9, 4, 1 << 20, BACKEND_MAX_PACKET) + b"x",
        )
    ]
    body = os.urandom(40000)
    r.fromBackend(MSG_CHANNEL_DATA, data(4, body))
    assert [len(p) - 8 for _, p in client.sent] == [16384, 16384, 40000 - 32768]


def test_backend_data_cut_to_the_users_maximum() -> None:
    for pieces in (True, False):
        r, client, _backend = relay(pieces)
        r.fromClient(MSG_CHANNEL_OPEN, channelOpen(3, 32768))
        body = os.urandom(BACKEND_MAX_PACKET)
        r.fromBackend(MSG_CHANNEL_DATA, data(3, body))
        assert [num for num, _ in client.sent] == [MSG_CHANNEL_DATA] * 2
        assert [p[:8] for _, p in client.sent] == [struct.pack(">2L", 3, 32768)] * 2
        assert b"".join(p[8:] for _, p in client.sent) == body
        assert r.bytesFromBackend == 8 + len(body)


def test_extended_data_keeps_its_type() -> None:
    r, client, _backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN, channelOpen(0, 10000))
    body = os.urandom(25000)
    r.fromBackend(MSG_CHANNEL_EXTENDED_DATA, struct.pack(">3L", 0, 1, len(body)) + body)
    assert [p[:12] for _, p in client.sent] == [
        struct.pack(">3L", 0, 1, 10000),
        struct.pack(">3L", 0, 1, 10000),
        struct.pack(">3L", 0, 1, 5000),
    ]
    assert b"".join(p[12:] for _, p in client.sent) == body


def test_unchanged_when_small_unknown_or_malformed() -> None:
    r, client, _backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN, channelOpen(1, 32768))
    small = data(1, b"x" * 100)
    unknown = data(7, b"y" * 50000)
    lying = struct.pack(">2L", 1, 5) + b"z" * 50000
    for payload in (small, unknown, lying, b"\0"):
        r.fromBackend(MSG_CHANNEL_DATA, payload)
    assert client.sent == [(MSG_CHANNEL_DATA, p) for p in (small, unknown, lying, b"\0")]


def test_opens_already_large_or_malformed_pass_unchanged() -> None:
    r, _client, backend = relay()
    for payload in (channelOpen(1, 1 << 20), NS(b"session"), b"\0\0"):
        r.fromClient(MSG_CHANNEL_OPEN, payload)
    assert [p for _, p in backend.sent] == [channelOpen(1, 1 << 20), NS(b"session"), b"\0\0"]


def test_close_forgets_the_channel_and_the_table_is_bounded() -> None:
    r, client, backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN, channelOpen(5, 32768))
    r.fromBackend(MSG_CHANNEL_CLOSE, struct.pack(">L", 5))
    body = os.urandom(50000)
    r.fromBackend(MSG_CHANNEL_DATA, data(5, body))
    assert client.sent[-1] == (MSG_CHANNEL_DATA, data(5, body))
    for channel in range(MAX_TRACKED_CHANNELS + 10):
        r.fromClient(MSG_CHANNEL_OPEN, channelOpen(channel, 32768))
    assert backend.sent[-1][1] == channelOpen(MAX_TRACKED_CHANNELS + 9, 32768)


def test_open_with_a_tiny_maximum_packet_is_refused_to_the_user() -> None:
    r, client, backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN, channelOpen(5, MIN_PEER_MAX_PACKET - 1))
    assert backend.sent == []
    ((num, payload),) = client.sent
    assert num == MSG_CHANNEL_OPEN_FAILURE
    assert struct.unpack(">2L", payload[:8]) == (5, OPEN_ADMINISTRATIVELY_PROHIBITED)
    assert b"maximum packet size under 8192" in payload
    r.fromClient(MSG_CHANNEL_OPEN, channelOpen(6, MIN_PEER_MAX_PACKET))
    assert [num for num, _ in backend.sent] == [MSG_CHANNEL_OPEN]


def test_tiny_maximum_packet_in_a_confirmation_ends_the_connection() -> None:
    r, client, backend = relay()
    r.fromClient(MSG_CHANNEL_OPEN_CONFIRMATION, struct.pack(">4L", 9, 4, 1 << 20, 1))
    assert backend.sent == []
    assert [code for code, _ in client.disconnected] == [DISCONNECT_PROTOCOL_ERROR]
    r2, client2, _backend2 = relay()
    r2.fromBackend(MSG_CHANNEL_OPEN, channelOpen(7, 100))
    assert client2.sent == []
    assert [code for code, _ in client2.disconnected] == [DISCONNECT_BY_APPLICATION]


def test_user_authentication_after_login_is_ignored_not_relayed() -> None:
    r, client, backend = relay()
    request = NS(b"diego:x/0") + NS(b"ssh-connection") + NS(b"password") + b"\0" + NS(b"pw")
    r.fromClient(50, request)
    r.fromClient(5, NS(b"ssh-userauth"))
    assert backend.sent == []
    assert client.sent == []


def test_messages_outside_the_connection_protocol_get_unimplemented() -> None:
    r, client, backend = relay()
    r.fromClient(200, b"whatever")
    assert backend.sent == []
    assert client.sent == [(MSG_UNIMPLEMENTED, struct.pack(">L", Leg.incomingPacketSequence - 1))]

# -*- test-case-name: tests.test_proxy_relay -*-
"""
Joining the user's SSH connection to the container's, message by message.

Once both legs are logged in, every connection-protocol message (RFC 4254:
global requests, channel opens, data, window adjustments, EOF, close) is
passed to the other leg unchanged. Channel numbers need no mapping: each end
chose its own, and the proxy opens no channels of its own. Window adjustments
travel end to end, so the user's window paces the container and the proxy
keeps no channel buffers at all. One change is made on the way: the backend
is told a larger maximum packet than the user's (L{BACKEND_MAX_PACKET}), and
its channel data is cut back to the user's maximum, so the leg between the
proxy and the container carries fewer, larger packets.

What the proxy does hold is bounded at the socket level: when one leg's socket
cannot take more, the other leg's socket is not read. Messages for a leg in key
exchange wait in its transport; they are bounded by the channel windows, which
the far end grants. (Pausing the other leg during a key exchange instead would
deadlock when both legs re-key at once: each would wait on reads the other
holds back.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.service import SSHService
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

MSG_GLOBAL_REQUEST = 80
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
MSG_CHANNEL_CLOSE = 97
# The maximum packet the proxy announces to the backend for the user's
# channels: larger than OpenSSH clients' 32 KiB, so the container sends half
# as many packets; the relay cuts them to the user's own maximum.
BACKEND_MAX_PACKET = 64 * 1024
# Channels whose user maximum the relay remembers; past this, opens pass unchanged.
MAX_TRACKED_CHANNELS = 4096
_UINT32 = struct.Struct(">L")
# OpenSSH's sshd announces its host keys after login; relayed, a client with
# UpdateHostKeys would learn the container's keys as the proxy's.
_DROPPED_FROM_BACKEND = {b"hostkeys-00@openssh.com"}


@implementer(IPushProducer)
class ReadGate:
    """
    Pauses reading one socket for as long as any reason holds.
    """

    def __init__(self, tcp: Any) -> None:
        self._tcp = tcp
        self._reasons: set[str] = set()

    def pause(self, reason: str) -> None:
        if not self._reasons:
            self._tcp.pauseProducing()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self._tcp.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause("peer buffer full")

    def resumeProducing(self) -> None:
        self.resume("peer buffer full")

    def stopProducing(self) -> None:
        self._tcp.loseConnection()


class Relay:
    """
    One login's relay between C{client} (our server transport) and C{backend}
    (our client transport).
    """

    def __init__(
        self, client: Any, backend: Any, onActivity: Callable[[], None] | None = None
    ) -> None:
        self.client = client
        self.backend = backend
        self.bytesFromClient = 0
        self.bytesFromBackend = 0
        self._onActivity = onActivity
        # the user's maximum packet per channel (by the user's channel number)
        self._clientMaxPacket: dict[int, int] = {}

    def start(self) -> None:
        clientGate = ReadGate(self.client.transport)
        backendGate = ReadGate(self.backend.transport)
        # A full socket on one side stops reads on the other.
        self.client.transport.registerProducer(backendGate, True)
        self.backend.transport.registerProducer(clientGate, True)
        self.backend.service.relay = self.fromBackend

    def fromClient(self, messageNum: int, payload: bytes) -> None:
        if messageNum == MSG_CHANNEL_DATA or messageNum == MSG_CHANNEL_EXTENDED_DATA:
            self.bytesFromClient += len(payload)
        elif messageNum == MSG_CHANNEL_OPEN or messageNum == MSG_CHANNEL_OPEN_CONFIRMATION:
            payload = self._widenMaxPacket(messageNum, payload)
        if self._onActivity is not None:
            self._onActivity()
        self.backend.sendPacket(messageNum, payload)

    def fromBackend(self, messageNum: int, payload: bytes) -> None:
        if messageNum == MSG_CHANNEL_DATA or messageNum == MSG_CHANNEL_EXTENDED_DATA:
            self.bytesFromBackend += len(payload)
            if self._onActivity is not None:
                self._onActivity()
            self._dataToClient(messageNum, payload)
            return
        if messageNum == MSG_GLOBAL_REQUEST and _dropped(payload):
            return
        if messageNum == MSG_CHANNEL_CLOSE or messageNum == MSG_CHANNEL_OPEN_FAILURE:
            if len(payload) >= 4:
                self._clientMaxPacket.pop(_UINT32.unpack_from(payload)[0], None)
        if self._onActivity is not None:
            self._onActivity()
        self.client.sendPacket(messageNum, payload)

    # -- larger packets on the backend leg

    def _widenMaxPacket(self, messageNum: int, payload: bytes) -> bytes:
        """
        Remember the user's maximum packet for the channel and announce
        L{BACKEND_MAX_PACKET} to the backend instead. A message too short to
        parse passes unchanged, for the backend to refuse.
        """
        if messageNum == MSG_CHANNEL_OPEN:
            if len(payload) < 4:
                return payload
            at = 4 + _UINT32.unpack_from(payload)[0]  # after the channel type
        else:
            at = 4  # after the recipient channel
        if len(payload) < at + 12:
            return payload
        if len(self._clientMaxPacket) >= MAX_TRACKED_CHANNELS:
            return payload
        channel = _UINT32.unpack_from(payload, at)[0]
        maxPacket = _UINT32.unpack_from(payload, at + 8)[0]
        if maxPacket == 0 or maxPacket >= BACKEND_MAX_PACKET:
            return payload
        self._clientMaxPacket[channel] = maxPacket
        return payload[: at + 8] + _UINT32.pack(BACKEND_MAX_PACKET) + payload[at + 12 :]

    def _dataToClient(self, messageNum: int, payload: bytes) -> None:
        """
        Channel data from the backend, cut to the user's maximum packet. The
        bytes, and so the windows, are the same either way.
        """
        headSize = 8 if messageNum == MSG_CHANNEL_DATA else 12
        limit = None
        if len(payload) >= headSize:
            limit = self._clientMaxPacket.get(_UINT32.unpack_from(payload)[0])
        dataSize = len(payload) - headSize
        if (
            limit is None
            or dataSize <= limit
            or _UINT32.unpack_from(payload, headSize - 4)[0] != dataSize
        ):
            self.client.sendPacket(messageNum, payload)
            return
        fixed = payload[: headSize - 4]
        view = memoryview(payload)
        send = getattr(self.client, "sendMessage", None)
        for start in range(headSize, len(payload), limit):
            piece = view[start : start + limit]
            head = fixed + _UINT32.pack(len(piece))
            if send is None:
                self.client.sendPacket(messageNum, head + bytes(piece))
            else:
                send(messageNum, head, piece)

    def stop(self) -> None:
        for leg in (self.client, self.backend):
            try:
                leg.transport.unregisterProducer()
            except Exception:  # noqa: S110 - the socket may already be gone
                pass


def _dropped(payload: bytes) -> bool:
    try:
        name, rest = getNS(payload)
    except (struct.error, IndexError):
        return False
    return name in _DROPPED_FROM_BACKEND and rest[:1] == b"\0"


class ClientRelayService(SSHService):
    """
    The user-facing leg's C{ssh-connection}: everything goes to the relay.
    """

    name = b"ssh-connection"

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def serviceStarted(self) -> None:
        self.relay.start()

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        self.relay.fromClient(messageNum, packet)

    def serviceStopped(self) -> None:
        self.relay.stop()

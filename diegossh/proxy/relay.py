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

What the proxy does hold is bounded whatever either peer does: when one leg
cannot take more (its socket's write buffer is full, or more than
L{diegossh.ssh.transport.KEX_QUEUE_LIMIT} waits for its key exchange), the other
leg's socket is not read (L{diegossh.ssh.backpressure}). The window a peer
grants is a promise about its own buffer, never a reason to buffer here.

Channel parameters that turn bytes into many messages are refused: a user's
channel open with a maximum packet under L{MIN_PEER_MAX_PACKET} is answered
with a failure, and a confirmation or an open from either side with one ends
the connection. After login, user authentication messages from the user are
ignored (RFC 4252 section 5.1), never passed on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED
from twisted.conch.ssh.service import SSHService
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION, DISCONNECT_PROTOCOL_ERROR

from diegossh.interfaces import ISSHMetrics
from diegossh.ssh.backpressure import KEY_EXCHANGE, ReadGate, WriteListener
from diegossh.ssh.connection import MIN_PEER_MAX_PACKET
from diegossh.ssh.metrics import NO_METRICS, channelType

MSG_UNIMPLEMENTED = 3
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
_MASK32 = 0xFFFFFFFF
# The connection protocol's message numbers end here (RFC 4250 4.1.2).
_LAST_CONNECTION_MESSAGE = 127
# OpenSSH's sshd announces its host keys after login; relayed, a client with
# UpdateHostKeys would learn the container's keys as the proxy's.
_DROPPED_FROM_BACKEND = {b"hostkeys-00@openssh.com"}


class Relay:
    """
    One login's relay between C{client} (our server transport) and C{backend}
    (our client transport).
    """

    def __init__(
        self,
        client: Any,
        backend: Any,
        onActivity: Callable[[], None] | None = None,
        metrics: ISSHMetrics = NO_METRICS,
    ) -> None:
        self.client = client
        self.backend = backend
        self.bytesFromClient = 0
        self.bytesFromBackend = 0
        self._onActivity = onActivity
        # the user's maximum packet per channel (by the user's channel number)
        self._clientMaxPacket: dict[int, int] = {}
        # Channels counted open in the metrics, by type: those the user opened
        # (by the user's number, ended by the container's close or refusal)
        # and those the container opened (by its number, ended by the user's).
        self._metrics = metrics
        self._openedByClient: dict[int, str] = {}
        self._openedByBackend: dict[int, str] = {}

    def start(self) -> None:
        # A leg that cannot take more stops reads on the other.
        self._holdBackend = _holder(self.backend.readGate, "user leg")
        self._holdClient = _holder(self.client.readGate, "container leg")
        self.client.writePressure.listen(self._holdBackend)
        self.backend.writePressure.listen(self._holdClient)
        self.backend.service.relay = self.fromBackend

    def fromClient(self, messageNum: int, payload: bytes) -> None:
        if messageNum == MSG_CHANNEL_DATA or messageNum == MSG_CHANNEL_EXTENDED_DATA:
            self.bytesFromClient += len(payload)
        elif messageNum == MSG_CHANNEL_OPEN or messageNum == MSG_CHANNEL_OPEN_CONFIRMATION:
            if _maxPacketBelowFloor(messageNum, payload):
                self._refuseSmallPacket(messageNum, payload)
                return
            if messageNum == MSG_CHANNEL_OPEN:
                self._channelOpened(self._openedByClient, payload)
            payload = self._widenMaxPacket(messageNum, payload)
        elif messageNum == MSG_CHANNEL_CLOSE or messageNum == MSG_CHANNEL_OPEN_FAILURE:
            self._channelEnded(self._openedByBackend, payload)
        elif messageNum < MSG_GLOBAL_REQUEST:
            # user authentication messages after login: ignored (RFC 4252 5.1)
            return
        elif messageNum > _LAST_CONNECTION_MESSAGE:
            self.client.sendPacket(
                MSG_UNIMPLEMENTED, _UINT32.pack((self.client.incomingPacketSequence - 1) & _MASK32)
            )
            return
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
        if (
            messageNum == MSG_CHANNEL_OPEN or messageNum == MSG_CHANNEL_OPEN_CONFIRMATION
        ) and _maxPacketBelowFloor(messageNum, payload):
            self.client.sendDisconnect(
                DISCONNECT_BY_APPLICATION,
                b"the instance asked for a maximum packet size under %d" % MIN_PEER_MAX_PACKET,
            )
            return
        if messageNum == MSG_CHANNEL_CLOSE or messageNum == MSG_CHANNEL_OPEN_FAILURE:
            if len(payload) >= 4:
                self._clientMaxPacket.pop(_UINT32.unpack_from(payload)[0], None)
            self._channelEnded(self._openedByClient, payload)
        elif messageNum == MSG_CHANNEL_OPEN:
            self._channelOpened(self._openedByBackend, payload)
        if self._onActivity is not None:
            self._onActivity()
        self.client.sendPacket(messageNum, payload)

    def _refuseSmallPacket(self, messageNum: int, payload: bytes) -> None:
        """
        A channel whose maximum packet would turn each byte into many
        messages: the user's open is refused, a confirmation of the
        container's open ends the connection (the container already holds the
        channel, so there is nothing to refuse).
        """
        if messageNum == MSG_CHANNEL_OPEN:
            at = 4 + _UINT32.unpack_from(payload)[0]
            sender = _UINT32.unpack_from(payload, at)[0]
            self.client.sendPacket(
                MSG_CHANNEL_OPEN_FAILURE,
                _UINT32.pack(sender)
                + _UINT32.pack(OPEN_ADMINISTRATIVELY_PROHIBITED)
                + NS(b"maximum packet size under %d" % MIN_PEER_MAX_PACKET)
                + NS(b""),
            )
            return
        self.client.sendDisconnect(
            DISCONNECT_PROTOCOL_ERROR,
            b"maximum packet size under %d" % MIN_PEER_MAX_PACKET,
        )

    # -- channels open, for the metrics

    def _channelOpened(self, table: dict[int, str], payload: bytes) -> None:
        """
        Count the channel a C{CHANNEL_OPEN} asks for as open, by its type
        (L{diegossh.ssh.metrics.channelType}), under its opener's number. At
        most L{MAX_TRACKED_CHANNELS} per side are counted; a number already
        counted is not counted again.
        """
        if len(payload) < 4 or len(table) >= MAX_TRACKED_CHANNELS:
            return
        at = 4 + _UINT32.unpack_from(payload)[0]
        if len(payload) < at + 4:
            return
        number = _UINT32.unpack_from(payload, at)[0]
        if number in table:
            return
        kind = table[number] = channelType(payload[4:at])
        self._metrics.channelOpened(kind)

    def _channelEnded(self, table: dict[int, str], payload: bytes) -> None:
        """
        A close or open failure for the channel numbered by the message's
        recipient in C{table}: no longer counted as open.
        """
        if not table or len(payload) < 4:
            return
        kind = table.pop(_UINT32.unpack_from(payload)[0], None)
        if kind is not None:
            self._metrics.channelClosed(kind)

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
        for table in (self._openedByClient, self._openedByBackend):
            for kind in table.values():
                self._metrics.channelClosed(kind)
            table.clear()
        if not hasattr(self, "_holdBackend"):
            return  # never started
        self.client.writePressure.unlisten(self._holdBackend)
        self.backend.writePressure.unlisten(self._holdClient)
        self.client.readGate.resume("container leg")
        self.backend.readGate.resume("user leg")


def _holder(gate: ReadGate, leg: str) -> WriteListener:
    """
    A listener on one leg's write pressure that holds reads of the other leg.
    A hold for a key exchange yields while the held leg is in one itself.
    """

    def listener(reason: str, blocked: bool) -> None:
        name = f"{leg}: {reason}"
        if blocked:
            gate.pause(name, yieldsToKeyExchange=(reason == KEY_EXCHANGE))
        else:
            gate.resume(name)

    return listener


def _maxPacketBelowFloor(messageNum: int, payload: bytes) -> bool:
    """
    Whether a channel open or confirmation announces a maximum packet under
    L{MIN_PEER_MAX_PACKET}. A message too short to parse passes, for the far
    end to refuse.
    """
    if messageNum == MSG_CHANNEL_OPEN:
        if len(payload) < 4:
            return False
        at = 4 + _UINT32.unpack_from(payload)[0] + 8
    else:
        at = 12
    if len(payload) < at + 4:
        return False
    return bool(_UINT32.unpack_from(payload, at)[0] < MIN_PEER_MAX_PACKET)


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

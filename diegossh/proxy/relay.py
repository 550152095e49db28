# -*- test-case-name: tests.test_proxy_relay -*-
"""
Joining the user's SSH connection to the container's, message by message.

Once both legs are logged in, every connection-protocol message (RFC 4254:
global requests, channel opens, data, window adjustments, EOF, close) is
passed to the other leg unchanged. Channel numbers need no mapping: each end
chose its own, and the proxy opens no channels of its own. Window adjustments
travel end to end, so the user's window paces the container and the proxy
keeps no channel buffers at all.

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
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
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
        if self._onActivity is not None:
            self._onActivity()
        self.backend.sendPacket(messageNum, payload)

    def fromBackend(self, messageNum: int, payload: bytes) -> None:
        if messageNum == MSG_CHANNEL_DATA or messageNum == MSG_CHANNEL_EXTENDED_DATA:
            self.bytesFromBackend += len(payload)
        elif messageNum == MSG_GLOBAL_REQUEST and _dropped(payload):
            return
        if self._onActivity is not None:
            self._onActivity()
        self.client.sendPacket(messageNum, payload)

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

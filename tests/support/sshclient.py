"""
Test clients built from our own L{SSHClientTransport}, and recording variants
of both transports, for the in-memory unit tests and the hostile-input tests.

The recording transports log every packet they seal and open as
C{(sequence number, message number)} so tests can see exactly where strict
key exchange resets the counters, and the disconnect reasons either side sent
or got. L{inject} puts a packet on the wire behind the transport's back (it
bypasses the key-exchange queue), which is how tests play a misbehaving peer.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh import common, keys, service, userauth
from twisted.conch.ssh import transport as conchTransport
from twisted.conch.ssh.channel import SSHChannel
from twisted.internet import defer
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from diegossh.ssh.connection import SSHConnection
from diegossh.ssh.packets import Opener, Sealer
from diegossh.ssh.transport import SSHClientTransport, SSHServerTransport


class _RecordingSealer:
    def __init__(self, inner: Sealer, log: list[tuple[int, int]]) -> None:
        self.inner = inner
        self.log = log

    def seal(self, seq: int, payload: bytes) -> bytes:
        self.log.append((seq, payload[0]))
        return self.inner.seal(seq, payload)

    def sealMessage(
        self, seq: int, messageType: int, head: bytes, body: bytes | memoryview
    ) -> list[bytes]:
        self.log.append((seq, messageType))
        return self.inner.sealMessage(seq, messageType, head, body)


class _RecordingOpener:
    def __init__(self, inner: Opener, log: list[tuple[int, int]]) -> None:
        self.inner = inner
        self.log = log

    def need(self, seq: int, buffer: bytearray) -> int | None:
        return self.inner.need(seq, buffer)

    def open(self, seq: int, data: memoryview) -> bytes:
        payload = self.inner.open(seq, data)
        if payload:
            self.log.append((seq, payload[0]))
        return payload


class Recording:
    """
    Mixed in before one of our transports: logs sealed and opened packets,
    key exchanges we started, disconnects sent and received.
    """

    sent: list[tuple[int, int]]
    received: list[tuple[int, int]]
    kexInitiatedByUs: int
    disconnectSent: tuple[int, bytes] | None
    disconnectReceived: tuple[int, bytes] | None
    lost: defer.Deferred[None]

    def _recordingSetUp(self) -> None:
        if not hasattr(self, "sent"):
            self.sent = []
            self.received = []
            self.kexInitiatedByUs = 0
            self.kexInitsSent = 0
            self.disconnectSent = None
            self.disconnectReceived = None
            self.lost = defer.Deferred()

    @property
    def _sealer(self) -> Sealer:
        return self.__dict__["_wrappedSealer"]  # type: ignore[no-any-return]

    @_sealer.setter
    def _sealer(self, value: Sealer) -> None:
        self._recordingSetUp()
        self.__dict__["_wrappedSealer"] = _RecordingSealer(value, self.sent)

    @property
    def _opener(self) -> Opener:
        return self.__dict__["_wrappedOpener"]  # type: ignore[no-any-return]

    @_opener.setter
    def _opener(self, value: Opener) -> None:
        self._recordingSetUp()
        self.__dict__["_wrappedOpener"] = _RecordingOpener(value, self.received)

    def sendKexInit(self) -> None:
        self._recordingSetUp()
        if getattr(self, "_firstKexDone", False) and not self._peerKexInitThisRound:
            self.kexInitiatedByUs += 1
        self.kexInitsSent += 1
        super().sendKexInit()  # type: ignore[misc]

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        self._recordingSetUp()
        if self.disconnectSent is None and not self._closing:
            self.disconnectSent = (reason, desc)
        super().sendDisconnect(reason, desc)  # type: ignore[misc]

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self._recordingSetUp()
        self.disconnectReceived = (reasonCode, description)

    def connectionLost(self, reason: Any = None) -> None:
        self._recordingSetUp()
        super().connectionLost(reason)  # type: ignore[misc]
        if not self.lost.called:
            self.lost.callback(None)

    # annotations for the attributes of the transport we are mixed into
    _peerKexInitThisRound: bool
    _closing: bool


class RecordingServer(Recording, SSHServerTransport):
    """
    Our server transport, recording.
    """


def inject(proto: Any, messageType: int, payload: bytes) -> None:
    """
    Seal and write one packet with C{proto}'s current keys and sequence number,
    ignoring the key-exchange state: what a broken or hostile peer would do.
    """
    seq = proto.outgoingPacketSequence
    proto.transport.write(proto._sealer.seal(seq, bytes((messageType,)) + payload))
    proto.outgoingPacketSequence = (seq + 1) & 0xFFFFFFFF


class PublicKeyAuth(userauth.SSHUserAuthClient):
    """
    Log in with one key; C{failed} fires if the server turns us away.
    """

    def __init__(self, user: bytes, instance: service.SSHService, key: keys.Key) -> None:
        super().__init__(user, instance)
        self._key = key
        self._offered = False

    def getPublicKey(self) -> keys.Key | None:
        if self._offered:
            return None
        self._offered = True
        return self._key.public()

    def getPrivateKey(self) -> defer.Deferred[keys.Key]:
        return defer.succeed(self._key)


class ClientConnection(SSHConnection):
    """
    Our connection service on the client side; C{started} fires once it runs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.started: defer.Deferred[ClientConnection] = defer.Deferred()

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.started.callback(self)


class RawConnection(service.SSHService):
    """
    An C{ssh-connection} client that does nothing by itself: the test sends
    raw messages with L{send}; every reply nobody L{waitFor}s stays in C{packets}.
    """

    name = b"ssh-connection"

    def __init__(self) -> None:
        self.started: defer.Deferred[RawConnection] = defer.Deferred()
        self.packets: list[tuple[int, bytes]] = []
        self._waiting: list[tuple[int, defer.Deferred[bytes]]] = []

    def serviceStarted(self) -> None:
        self.started.callback(self)

    def send(self, messageType: int, payload: bytes) -> None:
        self.transport.sendPacket(messageType, payload)

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        for waiting in self._waiting:
            if waiting[0] == messageNum:
                self._waiting.remove(waiting)
                waiting[1].callback(packet)
                return
        self.packets.append((messageNum, packet))

    def waitFor(self, messageNum: int) -> defer.Deferred[bytes]:
        """
        The payload of the first message of this type not yet waited for.
        """
        for i, (num, packet) in enumerate(self.packets):
            if num == messageNum:
                del self.packets[i]
                return defer.succeed(packet)
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append((messageNum, d))
        return d


class LoginClient(Recording, SSHClientTransport):
    """
    Our client transport that trusts any host key and, once secure, logs in
    as C{user} with C{key} and starts C{connection}.
    """

    user = b"tester"
    key: keys.Key | None = None
    connection: service.SSHService | None = None

    def __init__(self) -> None:
        self.secureCount = 0

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        self.secureCount += 1
        if self.connection is not None and self.key is not None:
            self.requestService(PublicKeyAuth(self.user, self.connection, self.key))


class NonStrictClient(LoginClient):
    """
    A client that neither offers nor honours strict key exchange, like any SSH
    implementation older than the Terrapin fix.
    """

    def sendKexInit(self) -> None:
        first = self._firstKexDone
        self._firstKexDone = True  # makes sendKexInit leave the marker out
        try:
            super().sendKexInit()
        finally:
            self._firstKexDone = first

    def ssh_KEXINIT(self, packet: bytes) -> None:
        first = self._firstKexDone
        self._firstKexDone = True  # makes ssh_KEXINIT ignore the peer's marker
        try:
            super().ssh_KEXINIT(packet)
        finally:
            self._firstKexDone = first


class SessionChannel(SSHChannel):
    """
    A client session running one of the memory server's commands (C{echo},
    C{sha256}, C{source N}); everything received lands in C{received}.
    """

    name = b"session"

    def __init__(self, command: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.received = bytearray()
        self.ready: defer.Deferred[SessionChannel] = defer.Deferred()
        self.done: defer.Deferred[SessionChannel] = defer.Deferred()
        self.exitStatus: int | None = None

    def channelOpen(self, specificData: bytes) -> None:
        d = self.conn.sendRequest(self, b"exec", common.NS(self.command), wantReply=True)
        d.addCallback(lambda _: self.ready.callback(self))
        d.addErrback(self.ready.errback)

    def openFailed(self, reason: Any) -> None:
        self.ready.errback(reason)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def request_exit_status(self, data: bytes) -> int:
        (self.exitStatus,) = struct.unpack(">L", data[:4])
        return 1

    def closed(self) -> None:
        if not self.done.called:
            self.done.callback(self)


@implementer(ILogObserver)
class FailureCollector:
    """
    Collects logged failures (tracebacks) and critical events while installed.
    """

    def __init__(self) -> None:
        self.failures: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if "log_failure" in event or event.get("isError"):
            self.failures.append(event)

    def __enter__(self) -> FailureCollector:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def describe(self) -> str:
        out = []
        for event in self.failures:
            failure = event.get("log_failure")
            out.append(failure.getTraceback() if failure is not None else repr(event))
        return "\n".join(out)


DISCONNECT_PROTOCOL_ERROR = conchTransport.DISCONNECT_PROTOCOL_ERROR
DISCONNECT_MAC_ERROR = conchTransport.DISCONNECT_MAC_ERROR

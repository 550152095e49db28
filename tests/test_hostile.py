"""
Hostile peers against a real listening server (the memory server on our
transport, 127.0.0.1, the real reactor): garbage and overlong version lines,
absurd lengths, bad padding, bad MACs, malformed messages, and channel numbers
at 0 and 2**32-1. For each the connection ends with a disconnect reason (or the
request is refused), the server logs no traceback, nothing hangs, and a normal
OpenSSH client connected at the same time finishes its work.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conchConnection
from twisted.conch.ssh import transport as conchTransport
from twisted.internet import defer, protocol, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from diegossh.ssh.algorithms import CIPHERS, AlgorithmPolicy
from diegossh.ssh.connection import MAX_SEND_PACKET, MIN_PEER_MAX_PACKET
from diegossh.ssh.transport import SSHServerTransport
from tests.support.keys import key, writePrivateKey
from tests.support.memoryserver import WINDOW, memoryServerFactory
from tests.support.openssh import run, sshCommand
from tests.support.sshclient import (
    FailureCollector,
    LoginClient,
    RawConnection,
    inject,
)

pytestmark = pytest.mark.interop

HOST_KEY = key("p256")
USER_KEY = key("ed25519")
TIMEOUT = 15
PROTOCOL_ERROR = conchTransport.DISCONNECT_PROTOCOL_ERROR
MAC_ERROR = conchTransport.DISCONNECT_MAC_ERROR
MSG_DISCONNECT = conchTransport.MSG_DISCONNECT
MSG_KEXINIT = conchTransport.MSG_KEXINIT
OPEN = conchConnection.MSG_CHANNEL_OPEN
OPEN_OK = conchConnection.MSG_CHANNEL_OPEN_CONFIRMATION
OPEN_FAILED = conchConnection.MSG_CHANNEL_OPEN_FAILURE
REQUEST = conchConnection.MSG_CHANNEL_REQUEST
SUCCESS = conchConnection.MSG_CHANNEL_SUCCESS
DATA = conchConnection.MSG_CHANNEL_DATA
ADJUST = conchConnection.MSG_CHANNEL_WINDOW_ADJUST
EOF = conchConnection.MSG_CHANNEL_EOF
CLOSE = conchConnection.MSG_CHANNEL_CLOSE


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Server:
    """
    The listening memory server, its connections and the log of failures.
    """

    def __init__(self, identity: Path) -> None:
        self.identity = identity
        self.protocols: list[SSHServerTransport] = []
        factory = memoryServerFactory(HOST_KEY, USER_KEY, reactor())
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> SSHServerTransport:
            proto = build(addr)
            self.protocols.append(proto)
            return proto

        factory.buildProtocol = buildProtocol  # type: ignore[method-assign]
        self.port = reactor().listenTCP(0, factory, interface="127.0.0.1")
        self.portNumber = self.port.getHost().port

    async def normalClient(self) -> None:
        """
        The real OpenSSH client hashes 1 MiB through the server.
        """
        data = os.urandom(1 << 20)
        argv = sshCommand(self.portNumber, self.identity, "tester", ["sha256"])
        result = await threads.deferToThread(run, argv, data, None, 60)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.decode().strip() == hashlib.sha256(data).hexdigest()

    async def close(self) -> None:
        for proto in self.protocols:
            if proto.transport is not None and proto.transport.connected:
                proto.transport.abortConnection()
        await self.port.stopListening()


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return writePrivateKey(USER_KEY, tmp_path_factory.mktemp("id") / "id_ed25519")


@pytest_twisted.async_yield_fixture
async def server(identity: Path) -> AsyncIterator[Server]:
    with FailureCollector() as failures:
        srv = Server(identity)
        try:
            yield srv
        finally:
            await srv.close()
    assert not failures.failures, failures.describe()


async def alongsideNormalClient(server: Server, hostile: Callable[[], Awaitable[None]]) -> None:
    """
    Run the hostile exchange while an OpenSSH client does real work.
    """
    normal = defer.ensureDeferred(server.normalClient())
    try:
        await hostile()
    finally:
        await withTimeout(normal, 90)


def withTimeout(d: Any, seconds: float = TIMEOUT) -> Any:
    d = defer.ensureDeferred(d) if not isinstance(d, defer.Deferred) else d
    return d.addTimeout(seconds, reactor())


# -- raw bytes before any key exchange


class Raw(protocol.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


async def rawExchange(server: Server, *chunks: bytes) -> bytes:
    """
    Send C{chunks} and return everything the server said before closing.
    """
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", server.portNumber)
    raw = await connectProtocol(endpoint, Raw())
    for chunk in chunks:
        raw.transport.write(chunk)
    try:
        await withTimeout(raw.lost)
    finally:
        if not raw.lost.called:
            raw.transport.abortConnection()
    return bytes(raw.data)


def plainPackets(data: bytes) -> tuple[bytes, list[tuple[int, bytes]], bytes]:
    """
    The server's version line, its unencrypted packets, and what follows.
    """
    line, _, rest = data.partition(b"\r\n")
    packets = []
    while len(rest) >= 5:
        (length,) = struct.unpack(">L", rest[:4])
        if length > 35000 or len(rest) < 4 + length:
            break
        padLength = rest[4]
        payload = rest[5 : 4 + length - padLength]
        packets.append((payload[0], payload[1:]))
        rest = rest[4 + length :]
    return line, packets, rest


def disconnectOf(data: bytes) -> tuple[int, bytes]:
    line, packets, rest = plainPackets(data)
    assert line == b"SSH-2.0-diegossh-test"
    assert packets[0][0] == MSG_KEXINIT
    assert packets[-1][0] == MSG_DISCONNECT, packets
    assert rest == b""
    payload = packets[-1][1]
    (code,) = struct.unpack(">L", payload[:4])
    return code, common.getNS(payload[4:])[0]


def plainPacket(payload: bytes, padLength: int | None = None, length: int | None = None) -> bytes:
    """
    An unencrypted packet; C{padLength} and C{length} may lie (the body is then
    filled to C{length} bytes so the packet is complete on the wire).
    """
    if padLength is None:
        padLength = -(5 + len(payload)) % 8
        if padLength < 4:
            padLength += 8
    body = bytes((padLength,)) + payload
    if length is None:
        body += b"\0" * padLength
        length = len(body)
    body = body.ljust(length, b"\0")
    return struct.pack(">L", length) + body


VERSION = b"SSH-2.0-hostile\r\n"
# A KEXINIT the server accepts (no strict marker): curve25519, its p256 host key.
KEXINIT = plainPacket(
    b"\x14"
    + b"\x42" * 16
    + b"".join(
        common.NS(n)
        for n in [
            b"curve25519-sha256",
            b"ecdsa-sha2-nistp256",
            b"aes128-ctr",
            b"aes128-ctr",
            b"hmac-sha2-256",
            b"hmac-sha2-256",
            b"none",
            b"none",
            b"",
            b"",
        ]
    )
    + b"\0\0\0\0\0"
)


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"Invalid SSH identification string."),
        (b"\x00\xff\x16\x03\x01garbage\n", b"Invalid SSH identification string."),
        (b"SSH-2.0-" + b"A" * 300 + b"\r\n", b"Invalid SSH identification string."),
        (b"SSH-2.0-" + b"A" * 5000, b"identification line too long"),
        (b"SSH-1.5-old\r\n", b"Protocol major versions differ."),
        (b"SSH-2.0\r\n", b"Invalid SSH identification string."),
    ],
    ids=["http", "binary", "overlong-line", "no-newline", "ssh1", "no-software"],
)
@pytest_twisted.ensureDeferred
async def test_bad_version_line(server: Server, sent: bytes, answer: bytes) -> None:
    async def hostile() -> None:
        data = await rawExchange(server, sent)
        line, packets, rest = plainPackets(data)
        assert line == b"SSH-2.0-diegossh-test"
        assert [num for num, _ in packets] == [MSG_KEXINIT]
        assert rest == answer + b"\r\n"

    await alongsideNormalClient(server, hostile)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (struct.pack(">L", 0xFFFFFFF0) + b"\0" * 12, b"bad packet length 4294967280"),
        (struct.pack(">L", 0) + b"\0" * 12, b"bad packet length 0"),
        (struct.pack(">L", 1 << 20) + b"\0" * 12, b"bad packet length 1048576"),
        (
            struct.pack(">L", 13) + b"\x04" + b"\0" * 12,
            b"packet length 13 not a multiple of the block size 8",
        ),
        (plainPacket(b"\x14" + b"\0" * 30, padLength=2, length=36), b"bad padding length 2"),
        (plainPacket(b"\x14" + b"\0" * 30, padLength=200, length=36), b"bad padding length 200"),
        (plainPacket(b"\x14" + b"\0" * 5), b"malformed message 20"),
        (plainPacket(b"\x14" + b"\0" * 16 + b"\xff\xff\xff\xff"), b"malformed message 20"),
        (plainPacket(b"\x1e" + b"\0\0\0\x20abc"), b"key exchange message 30 outside key exchange"),
        (plainPacket(b"\x15"), b"unexpected NEWKEYS"),
        (
            plainPacket(b"\x05" + common.NS(b"ssh-userauth")),
            b"unexpected message 5 before key exchange",
        ),
        (
            plainPacket(b"\x32" + common.NS(b"tester") + common.NS(b"ssh-connection")),
            b"unexpected message 50 before key exchange",
        ),
        (KEXINIT + plainPacket(b"\x1e" + b"\0\0\0\x20abc"), b"malformed message 30"),
        (KEXINIT + plainPacket(b"\x1e\0\0"), b"malformed message 30"),
        (KEXINIT + plainPacket(b"\x1e" + common.NS(b"\0" * 32)), b"malformed message 30"),
        (KEXINIT + plainPacket(b"\x14" + b"\0" * 16), b"KEXINIT during key exchange"),
    ],
    ids=[
        "absurd-length",
        "zero-length",
        "over-max-length",
        "misaligned-length",
        "padding-too-short",
        "padding-too-long",
        "truncated-kexinit",
        "kexinit-lying-string-length",
        "kex-ecdh-init-first",
        "newkeys-first",
        "service-request-first",
        "userauth-first",
        "truncated-kex-ecdh-init",
        "short-kex-ecdh-init",
        "zero-curve25519-point",
        "second-kexinit",
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_plain_packet(server: Server, packet: bytes, reason: bytes | None) -> None:
    async def hostile() -> None:
        data = await rawExchange(server, VERSION, packet)
        code, description = disconnectOf(data)
        assert code == PROTOCOL_ERROR
        if reason is not None:
            assert description == reason
        else:
            assert description

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_byte_at_a_time_then_silence_does_not_block_others(server: Server) -> None:
    """
    A peer dribbling a valid start and then nothing holds only its own
    connection; others are served meanwhile.
    """
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", server.portNumber)
    raw = await connectProtocol(endpoint, Raw())
    for byte in VERSION + struct.pack(">L", 1000)[:3]:
        raw.transport.write(bytes((byte,)))
    try:
        await server.normalClient()
    finally:
        raw.transport.abortConnection()
        await withTimeout(raw.lost)


# -- after key exchange, with our own client


class Hostile(LoginClient):
    """
    Our client, logged in with a raw connection service; C{tamper} flips a bit
    in the first packet after the first NEWKEYS.
    """

    tamper = False

    def connectionSecure(self) -> None:
        if self.tamper:
            self.tamper = False
            seq = self.outgoingPacketSequence
            wire = bytearray(self._sealer.seal(seq, b"\x05" + common.NS(b"ssh-userauth")))
            wire[len(wire) // 2] ^= 0x01
            self.transport.write(bytes(wire))
            self.outgoingPacketSequence = seq + 1
            return
        super().connectionSecure()


def hostileClient(policy: AlgorithmPolicy | None = None, tamper: bool = False) -> Hostile:
    client = Hostile()
    client.key = USER_KEY
    client.connection = RawConnection()
    client.clock = reactor()
    client.tamper = tamper
    client.policy = policy or AlgorithmPolicy.everything()
    return client


async def login(server: Server) -> tuple[Hostile, RawConnection]:
    client = hostileClient()
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", server.portNumber)
    await connectProtocol(endpoint, client)
    conn = await withTimeout(client.connection.started)
    return client, conn


async def ended(client: Hostile) -> tuple[int, bytes] | None:
    try:
        await withTimeout(client.lost)
    finally:
        if not client.lost.called:
            client.transport.abortConnection()
    return client.disconnectReceived


MAC_CASES = [
    ("aes128-gcm@openssh.com", None),
    ("aes256-gcm@openssh.com", None),
    ("chacha20-poly1305@openssh.com", None),
    ("aes128-ctr", "hmac-sha2-256"),
    ("aes256-ctr", "hmac-sha2-512-etm@openssh.com"),
]


@pytest.mark.parametrize(("cipher", "mac"), MAC_CASES)
@pytest_twisted.ensureDeferred
async def test_bad_mac_after_kex(server: Server, cipher: str, mac: str | None) -> None:
    assert cipher in CIPHERS

    async def hostile() -> None:
        everything = AlgorithmPolicy.everything()
        policy = AlgorithmPolicy(
            (cipher,), (mac,) if mac else everything.macs, everything.keyExchanges
        )
        client = hostileClient(policy, tamper=True)
        endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", server.portNumber)
        await connectProtocol(endpoint, client)
        assert await ended(client) == (MAC_ERROR, b"bad MAC")
        assert client.currentEncryptions.outCipType == cipher.encode()

    await alongsideNormalClient(server, hostile)


def channelOpen(
    kind: bytes = b"session", sender: int = 0, window: int = 1 << 20, maxPacket: int = 32768
) -> bytes:
    return common.NS(kind) + struct.pack(">3L", sender, window, maxPacket)


def execRequest(channel: int, command: bytes) -> bytes:
    return struct.pack(">L", channel) + common.NS(b"exec") + b"\x01" + common.NS(command)


def envRequest(channel: int) -> bytes:
    return (
        struct.pack(">L", channel) + common.NS(b"env") + b"\x01" + common.NS(b"A") + common.NS(b"B")
    )


async def openChannel(conn: RawConnection, **kwargs: Any) -> tuple[int, int, int]:
    """
    Open a session; return the server's channel number, window and max packet.
    """
    conn.send(OPEN, channelOpen(**kwargs))
    reply = await withTimeout(conn.waitFor(OPEN_OK))
    _, theirs, window, maxPacket = struct.unpack(">4L", reply[:16])
    return theirs, window, maxPacket


async def ping(conn: RawConnection, channel: int) -> None:
    """
    A request that wants a reply: everything the server sent before it is in.
    """
    conn.send(REQUEST, envRequest(channel))
    await withTimeout(conn.waitFor(SUCCESS))


def dataOf(conn: RawConnection) -> bytes:
    out = b"".join(common.getNS(p[4:])[0] for num, p in conn.packets if num == DATA)
    conn.packets[:] = [(num, p) for num, p in conn.packets if num != DATA]
    return out


@pytest_twisted.ensureDeferred
async def test_truncated_channel_open(server: Server) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        conn.send(OPEN, common.NS(b"session") + b"\0\0")
        assert await ended(client) == (PROTOCOL_ERROR, b"malformed message 90")

    await alongsideNormalClient(server, hostile)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\0\0",
        common.NS(b"sess"),
        common.NS(b"session") + b"\0\0\0\0\0\0\0\x01",
    ],
    ids=["empty", "short-string-length", "no-numbers", "no-max-packet"],
)
@pytest_twisted.ensureDeferred
async def test_malformed_channel_open(server: Server, payload: bytes) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        conn.send(OPEN, payload)
        assert await ended(client) == (PROTOCOL_ERROR, b"malformed message 90")

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_unknown_channel_type_refused(server: Server) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        conn.send(OPEN, channelOpen(kind=b"x-bogus@example.com", sender=5))
        failure = await withTimeout(conn.waitFor(OPEN_FAILED))
        sender, reason = struct.unpack(">2L", failure[:8])
        assert sender == 5
        assert reason == conchConnection.OPEN_UNKNOWN_CHANNEL_TYPE
        assert common.getNS(failure[8:])[0]
        theirs, _, _ = await openChannel(conn, sender=6)
        await ping(conn, theirs)
        client.transport.loseConnection()
        await ended(client)

    await alongsideNormalClient(server, hostile)


@pytest.mark.parametrize("maxPacket", [0, 1, MIN_PEER_MAX_PACKET - 1])
@pytest_twisted.ensureDeferred
async def test_max_packet_under_the_floor_refused(server: Server, maxPacket: int) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        conn.send(OPEN, channelOpen(sender=3, maxPacket=maxPacket))
        failure = await withTimeout(conn.waitFor(OPEN_FAILED))
        sender, reason = struct.unpack(">2L", failure[:8])
        assert sender == 3
        assert reason == conchConnection.OPEN_ADMINISTRATIVELY_PROHIBITED
        assert common.getNS(failure[8:])[0] == b"maximum packet size under 8192"
        # The connection itself is fine.
        theirs, _, _ = await openChannel(conn, sender=4)
        await ping(conn, theirs)
        client.transport.loseConnection()
        await ended(client)

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_max_packet_and_window_at_limit(server: Server) -> None:
    """
    Max packet 2**32-1 is clamped (packets stay at most MAX_SEND_PACKET) and a
    window of 2**32-1 works; 1 more byte of window overflows and disconnects.
    """

    async def hostile() -> None:
        client, conn = await login(server)
        theirs, _, _ = await openChannel(conn, window=0xFFFFFFFF, maxPacket=0xFFFFFFFF)
        size = 3 * MAX_SEND_PACKET + 123
        conn.send(REQUEST, execRequest(theirs, b"source %d" % size))
        await withTimeout(conn.waitFor(SUCCESS))
        await withTimeout(conn.waitFor(CLOSE))
        lengths = [len(common.getNS(p[4:])[0]) for num, p in conn.packets if num == DATA]
        assert max(lengths) == MAX_SEND_PACKET
        data = dataOf(conn)
        assert len(data) == size
        assert data == (bytes(range(256)) * (size // 256 + 1))[:size]

        # A second channel with the full window; any adjust overflows it.
        theirs, _, _ = await openChannel(conn, sender=1, window=0xFFFFFFFF)
        conn.send(ADJUST, struct.pack(">2L", theirs, 1))
        assert await ended(client) == (PROTOCOL_ERROR, b"window adjust beyond 2**32-1")

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_window_zero_then_adjust(server: Server) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        theirs, _, _ = await openChannel(conn, window=0)
        conn.send(REQUEST, execRequest(theirs, b"source 50000"))
        await withTimeout(conn.waitFor(SUCCESS))
        await ping(conn, theirs)
        assert dataOf(conn) == b""
        conn.send(ADJUST, struct.pack(">2L", theirs, 20000))
        await ping(conn, theirs)
        assert len(dataOf(conn)) == 20000
        conn.send(ADJUST, struct.pack(">2L", theirs, 0xFFFFFFFF - 20000))
        await withTimeout(conn.waitFor(CLOSE))
        assert len(dataOf(conn)) == 30000
        client.transport.loseConnection()
        await ended(client)

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_window_adjust_overflow(server: Server) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        theirs, _, _ = await openChannel(conn, window=0)
        conn.send(ADJUST, struct.pack(">2L", theirs, 0xFFFFFFFF))
        await ping(conn, theirs)
        conn.send(ADJUST, struct.pack(">2L", theirs, 1))
        assert await ended(client) == (PROTOCOL_ERROR, b"window adjust beyond 2**32-1")

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_data_beyond_the_window(server: Server) -> None:
    """
    Fill exactly the window the server granted (it stops granting when its
    echo buffer is full and we read nothing), then send one byte more.
    """

    async def hostile() -> None:
        client, conn = await login(server)
        theirs, window, maxPacket = await openChannel(conn, window=0)
        assert window == WINDOW
        conn.send(REQUEST, execRequest(theirs, b"echo"))
        await withTimeout(conn.waitFor(SUCCESS))
        chunk = os.urandom(maxPacket)
        for _ in range(100):
            while window:
                n = min(window, maxPacket)
                conn.send(DATA, struct.pack(">L", theirs) + common.NS(chunk[:n]))
                window -= n
            await ping(conn, theirs)
            grants = [p for num, p in conn.packets if num == ADJUST]
            conn.packets[:] = [(num, p) for num, p in conn.packets if num != ADJUST]
            window += sum(struct.unpack(">2L", p[:8])[1] for p in grants)
            if not window:
                break
        assert window == 0
        conn.send(DATA, struct.pack(">L", theirs) + common.NS(b"!"))
        assert await ended(client) == (PROTOCOL_ERROR, b"channel data beyond the window")

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_data_beyond_max_packet(server: Server) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        theirs, _, maxPacket = await openChannel(conn)
        conn.send(DATA, struct.pack(">L", theirs) + common.NS(b"x" * (maxPacket + 1)))
        assert await ended(client) == (
            PROTOCOL_ERROR,
            b"channel data beyond the maximum packet size",
        )

    await alongsideNormalClient(server, hostile)


@pytest.mark.parametrize(
    ("messageType", "payload", "reason"),
    [
        (DATA, struct.pack(">2L", 77, 1) + b"x", b"data for unknown channel"),
        (DATA, b"\0\0", b"malformed message 94"),
        (ADJUST, struct.pack(">2L", 77, 1), b"window adjust for unknown channel"),
        (CLOSE, struct.pack(">L", 77), b"close for unknown channel"),
        (EOF, struct.pack(">L", 77), b"EOF for unknown channel"),
        (
            REQUEST,
            struct.pack(">L", 77) + common.NS(b"exec") + b"\x01",
            b"request for unknown channel",
        ),
        (REQUEST, b"\0", b"malformed message 98"),
    ],
    ids=["data", "data-truncated", "adjust", "close", "eof", "request", "request-truncated"],
)
@pytest_twisted.ensureDeferred
async def test_bad_channel_messages(
    server: Server, messageType: int, payload: bytes, reason: bytes | None
) -> None:
    async def hostile() -> None:
        client, conn = await login(server)
        conn.send(messageType, payload)
        result = await ended(client)
        assert result is not None
        assert result[0] == PROTOCOL_ERROR
        if reason is not None:
            assert result[1] == reason

    await alongsideNormalClient(server, hostile)


@pytest_twisted.ensureDeferred
async def test_kexinit_in_the_middle_of_a_strict_initial_kex_over_tcp(server: Server) -> None:
    class Twice(Hostile):
        def sendKexInit(self) -> None:
            super().sendKexInit()
            if self.kexInitsSent == 1:
                inject(self, MSG_KEXINIT, self.ourKexInitPayload[1:])

    async def hostile() -> None:
        client = Twice()
        client.clock = reactor()
        client.policy = AlgorithmPolicy.everything()
        endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", server.portNumber)
        await connectProtocol(endpoint, client)
        assert await ended(client) == (PROTOCOL_ERROR, b"KEXINIT during key exchange")

    await alongsideNormalClient(server, hostile)

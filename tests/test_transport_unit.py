"""
Our server and client transports against each other in memory (iosim and a
MemoryReactorClock, no sockets): every cipher, MAC and key exchange, strict key
exchange (kex-strict-*-v00@openssh.com) and its sequence-number resets, peers
that break its rules, non-strict peers, rekeying by bytes and by time under
load, and the algorithm options.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.conch.ssh import common
from twisted.conch.ssh import factory as conchFactory
from twisted.conch.ssh import transport as conchTransport
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim

from diegossh.ssh import transport
from diegossh.ssh.algorithms import (
    CIPHERS,
    DEFAULT_CIPHERS,
    DEFAULT_KEY_EXCHANGES,
    DEFAULT_MACS,
    KEY_EXCHANGES,
    MACS,
    AlgorithmPolicy,
    UnknownAlgorithm,
    parseList,
)
from tests.support.keys import key
from tests.support.memoryserver import MemoryRealm, memoryServerFactory
from tests.support.sshclient import (
    ClientConnection,
    FailureCollector,
    LoginClient,
    NonStrictClient,
    PublicKeyAuth,
    RecordingServer,
    SessionChannel,
    inject,
)

HOST_KEY = key("ed25519")
CLIENT_KEY = key("p256")
MSG_NEWKEYS = conchTransport.MSG_NEWKEYS
MSG_KEXINIT = conchTransport.MSG_KEXINIT
MSG_IGNORE = conchTransport.MSG_IGNORE
MSG_DEBUG = conchTransport.MSG_DEBUG
PROTOCOL_ERROR = conchTransport.DISCONNECT_PROTOCOL_ERROR
CTR = [c for c in CIPHERS if c.endswith("-ctr")]
CLIENT_KEXES = AlgorithmPolicy.everything().clientKeyExchanges()


@pytest.fixture(autouse=True)
def noTracebacks() -> Iterator[FailureCollector]:
    with FailureCollector() as collector:
        yield collector
    assert not collector.failures, collector.describe()


class Pair:
    """
    One of our servers and one client, joined by an iosim pump on one clock.
    """

    def __init__(
        self,
        serverPolicy: AlgorithmPolicy | None = None,
        clientPolicy: AlgorithmPolicy | None = None,
        client: Any = None,
        connection: Any = None,
        greet: bool = True,
        serverAttributes: dict[str, Any] | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        factory = memoryServerFactory(HOST_KEY, CLIENT_KEY, self.clock, serverPolicy)
        factory.protocol = RecordingServer
        self.server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
        for name, value in (serverAttributes or {}).items():
            setattr(self.server, name, value)
        self.client = client if client is not None else LoginClient()
        self.client.key = CLIENT_KEY
        self.client.connection = connection
        self.client.clock = self.clock
        self.client.policy = clientPolicy or AlgorithmPolicy.everything()
        self.pump = iosim.connect(
            self.server,
            iosim.FakeTransport(self.server, isServer=True),
            self.client,
            iosim.FakeTransport(self.client, isServer=False),
            greet=greet,
            clock=self.clock,
        )

    def flush(self) -> None:
        self.pump.flush()


def session(command: bytes = b"echo", **pairArgs: Any) -> tuple[Pair, SessionChannel]:
    """
    A logged-in pair with one session channel running C{command}.
    """
    conn = ClientConnection()
    pair = Pair(connection=conn, **pairArgs)
    assert conn.started.called, "the client never reached ssh-connection"
    channel = SessionChannel(command)
    conn.openChannel(channel)
    pair.flush()
    assert channel.ready.called
    return pair, channel


def echo(pair: Pair, channel: SessionChannel, data: bytes, chunk: int = 64 * 1024) -> None:
    start = len(channel.received)
    for i in range(0, len(data), chunk):
        channel.write(data[i : i + chunk])
        pair.flush()
    pair.flush()
    assert bytes(channel.received[start:]) == data


def afterNewKeys(log: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """
    The (NEWKEYS seq, seq of the packet after it) pairs in a packet log.
    """
    return [(log[i][0], log[i + 1][0]) for i in range(len(log) - 1) if log[i][1] == MSG_NEWKEYS]


def assertSameKeys(pair: Pair, cipher: str) -> None:
    for side in (pair.server, pair.client):
        enc = side.currentEncryptions
        assert (enc.outCipType, enc.inCipType) == (cipher.encode(), cipher.encode())


# -- handshakes


@pytest.mark.parametrize("cipher", CIPHERS)
def test_handshake_each_cipher(cipher: str) -> None:
    policy = AlgorithmPolicy((cipher,), MACS, KEY_EXCHANGES)
    pair, channel = session(serverPolicy=policy)
    assertSameKeys(pair, cipher)
    echo(pair, channel, os.urandom(300_000))


@pytest.mark.parametrize("mac", MACS)
@pytest.mark.parametrize("cipher", CTR)
def test_handshake_each_mac(cipher: str, mac: str) -> None:
    policy = AlgorithmPolicy((cipher,), (mac,), KEY_EXCHANGES)
    pair, channel = session(serverPolicy=policy)
    assertSameKeys(pair, cipher)
    assert pair.server.currentEncryptions.inMACType == mac.encode()
    echo(pair, channel, os.urandom(100_000))


@pytest.mark.parametrize("kex", CLIENT_KEXES)
def test_handshake_each_key_exchange(kex: str) -> None:
    policy = AlgorithmPolicy(CIPHERS, MACS, (kex,))
    pair, channel = session(serverPolicy=policy)
    assert pair.server.kexAlg == pair.client.kexAlg == kex.encode()
    echo(pair, channel, b"hello")


def test_no_common_cipher_disconnects_with_reason() -> None:
    pair = Pair(
        serverPolicy=AlgorithmPolicy(("aes256-ctr",), MACS, KEY_EXCHANGES),
        clientPolicy=AlgorithmPolicy(("aes128-ctr",), MACS, KEY_EXCHANGES),
    )
    # Each side finds out on reading the other's KEXINIT and says so.
    reason = (conchTransport.DISCONNECT_KEY_EXCHANGE_FAILED, b"couldn't match all kex parts")
    assert pair.server.disconnectSent == reason
    assert pair.client.disconnectSent == reason
    assert pair.server.lost.called and pair.client.lost.called


# -- strict key exchange


def test_strict_kex_sequence_numbers_reset_initial_and_rekey() -> None:
    pair, channel = session()
    server, client = pair.server, pair.client
    assert server.isStrict() and client.isStrict()
    assert STRICT_MARKERS_OFFERED(server, client)

    for side in (server, client):
        for log in (side.sent, side.received):
            resets = afterNewKeys(log)
            assert len(resets) == 1
            newKeysSeq, nextSeq = resets[0]
            assert newKeysSeq > 0  # KEXINIT and the exchange came before
            assert nextSeq == 0

    for initiator in (server, client, server):
        initiator._startRekey()
        pair.flush()
        echo(pair, channel, os.urandom(10_000))

    for side in (server, client):
        for log in (side.sent, side.received):
            resets = afterNewKeys(log)
            assert len(resets) == 4
            assert all(nextSeq == 0 for _, nextSeq in resets)
            # A rekey starts counting from the last reset, not from the start.
            assert all(0 < newKeysSeq < 100 for newKeysSeq, _ in resets)
    assert client.secureCount == 1


def STRICT_MARKERS_OFFERED(server: Any, client: Any) -> bool:
    return (
        transport.STRICT_SERVER in server.ourKexInitPayload
        and transport.STRICT_CLIENT in client.ourKexInitPayload
    )


def test_rekey_kexinit_does_not_offer_strict_marker() -> None:
    pair, channel = session()
    pair.server._startRekey()
    pair.flush()
    assert transport.STRICT_SERVER not in pair.server.ourKexInitPayload
    assert transport.STRICT_CLIENT not in pair.client.ourKexInitPayload
    assert pair.server.isStrict() and pair.client.isStrict()
    echo(pair, channel, b"still there")


@pytest.mark.parametrize("offender", ["client", "server"])
def test_second_kexinit_during_initial_strict_kex(offender: str) -> None:
    pair = Pair(greet=False)
    bad = getattr(pair, offender)
    victim = pair.server if offender == "client" else pair.client
    inject(bad, MSG_KEXINIT, bad.ourKexInitPayload[1:])
    pair.flush()
    assert victim.disconnectSent == (PROTOCOL_ERROR, b"KEXINIT during key exchange")
    assert bad.disconnectReceived == victim.disconnectSent
    assert pair.server.lost.called and pair.client.lost.called
    assert not victim._firstKexDone


def test_kexinit_in_place_of_newkeys() -> None:
    """
    The client sends its exchange message and then a KEXINIT instead of
    NEWKEYS: out of order during the initial (strict) key exchange.
    """

    class KexInitNotNewKeys(LoginClient):
        def sendPacket(self, messageType: int, payload: bytes) -> None:
            if messageType == MSG_NEWKEYS and not self._firstKexDone:
                inject(self, MSG_KEXINIT, self.ourKexInitPayload[1:])
                return
            super().sendPacket(messageType, payload)

    pair = Pair(client=KexInitNotNewKeys())
    assert pair.server.disconnectSent == (PROTOCOL_ERROR, b"KEXINIT during key exchange")
    assert pair.client.disconnectReceived == pair.server.disconnectSent
    assert pair.server.lost.called


@pytest.mark.parametrize("messageType", [MSG_IGNORE, MSG_DEBUG])
@pytest.mark.parametrize("offender", ["client", "server"])
def test_non_kex_message_before_newkeys_under_strict(offender: str, messageType: int) -> None:
    pair = Pair(greet=False)
    bad = getattr(pair, offender)
    victim = pair.server if offender == "client" else pair.client
    payload = b"\x00" + b"\x00\x00\x00\x05hello" + b"\x00\x00\x00\x00"
    if messageType == MSG_IGNORE:
        payload = b"\x00\x00\x00\x05hello"
    inject(bad, messageType, payload)
    pair.flush()
    assert victim.disconnectSent == (
        PROTOCOL_ERROR,
        b"unexpected message %d during strict key exchange" % messageType,
    )
    assert bad.disconnectReceived == victim.disconnectSent
    assert pair.server.lost.called and pair.client.lost.called


def test_non_kex_message_between_exchange_and_newkeys() -> None:
    """
    The Terrapin shape: an IGNORE slipped in after the key exchange reply,
    right before NEWKEYS.
    """

    class IgnoreBeforeNewKeys(LoginClient):
        def sendPacket(self, messageType: int, payload: bytes) -> None:
            if messageType == MSG_NEWKEYS and not self._firstKexDone:
                inject(self, MSG_IGNORE, b"\x00\x00\x00\x00")
            super().sendPacket(messageType, payload)

    pair = Pair(client=IgnoreBeforeNewKeys())
    assert pair.server.disconnectSent == (
        PROTOCOL_ERROR,
        b"unexpected message 2 during strict key exchange",
    )
    assert pair.client.disconnectReceived == pair.server.disconnectSent


class IgnoreFirst:
    """
    Sends an IGNORE before its first KEXINIT.
    """

    def sendKexInit(self) -> None:
        if not self._firstKexDone:  # type: ignore[attr-defined]
            inject(self, MSG_IGNORE, b"\x00\x00\x00\x00")
        super().sendKexInit()  # type: ignore[misc]


def test_first_packet_not_kexinit_under_strict_client() -> None:
    class Client(IgnoreFirst, LoginClient):
        pass

    pair = Pair(client=Client())
    assert pair.server.disconnectSent == (
        PROTOCOL_ERROR,
        b"strict key exchange: KEXINIT was not the first packet",
    )
    assert pair.client.disconnectReceived == pair.server.disconnectSent
    assert pair.server.lost.called


def test_first_packet_not_kexinit_under_strict_server() -> None:
    class Server(IgnoreFirst, RecordingServer):
        pass

    clock = MemoryReactorClock()
    factory = memoryServerFactory(HOST_KEY, CLIENT_KEY, clock)
    factory.protocol = Server
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
    client = LoginClient()
    client.clock = clock
    iosim.connect(
        server,
        iosim.FakeTransport(server, isServer=True),
        client,
        iosim.FakeTransport(client, isServer=False),
        clock=clock,
    )
    assert client.disconnectSent == (
        PROTOCOL_ERROR,
        b"strict key exchange: KEXINIT was not the first packet",
    )
    assert server.disconnectReceived == client.disconnectSent
    assert client.lost.called and server.lost.called


def test_ignore_first_is_fine_without_strict() -> None:
    """
    RFC 4253 allows IGNORE at any time; only strict key exchange forbids it.
    """

    class Client(IgnoreFirst, NonStrictClient):
        pass

    pair, channel = session(client=Client())
    assert not pair.server.isStrict()
    echo(pair, channel, b"fine")


def test_sequence_number_wrap_during_initial_strict_kex() -> None:
    """
    Strict kex: the sequence number may not wrap before the first NEWKEYS
    (a peer could otherwise hide 2**32 injected packets).
    """
    pair = Pair(greet=False)
    pair.server.incomingPacketSequence = 0xFFFFFFFE  # KEXINIT, then the exchange at 2**32-1
    pair.flush()
    assert pair.server.disconnectSent == (
        PROTOCOL_ERROR,
        b"sequence number wrapped during key exchange",
    )
    assert pair.client.disconnectReceived == pair.server.disconnectSent


# -- peers without strict kex


def test_non_strict_client_works_and_nothing_resets() -> None:
    pair, channel = session(client=NonStrictClient())
    server, client = pair.server, pair.client
    assert not server.isStrict() and not client.isStrict()
    assert transport.STRICT_CLIENT not in client.ourKexInitPayload
    server._startRekey()
    pair.flush()
    echo(pair, channel, os.urandom(50_000))
    for side in (server, client):
        for log in (side.sent, side.received):
            resets = afterNewKeys(log)
            assert len(resets) == 2
            assert all(nextSeq == newKeysSeq + 1 for newKeysSeq, nextSeq in resets)
    assert client.secureCount == 1


class StockConchClient(conchTransport.SSHClientTransport):
    """
    Twisted's own client transport: knows nothing of strict key exchange.
    """

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Any:
        from twisted.internet import defer

        return defer.succeed(True)

    def connectionSecure(self) -> None:
        if self.service is None:
            self.requestService(PublicKeyAuth(b"tester", self.conn, CLIENT_KEY))


def test_stock_conch_client_is_not_strict() -> None:
    conn = ClientConnection()
    pair = Pair(client=StockConchClient(conn))
    assert conn.started.called
    assert not pair.server.isStrict()
    resets = afterNewKeys(pair.server.received)
    assert resets and resets[0][1] == resets[0][0] + 1
    channel = SessionChannel(b"echo")
    conn.openChannel(channel)
    pair.flush()
    echo(pair, channel, os.urandom(20_000))


def test_our_client_against_stock_conch_server() -> None:
    class StockFactory(conchFactory.SSHFactory):
        pass

    factory = StockFactory()
    from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
    from twisted.cred.portal import Portal

    factory.portal = Portal(
        MemoryRealm(), [SSHPublicKeyChecker(InMemorySSHKeyDB({b"tester": [CLIENT_KEY.public()]}))]
    )
    factory.privateKeys = {HOST_KEY.sshType(): HOST_KEY}
    factory.publicKeys = {HOST_KEY.sshType(): HOST_KEY.public()}
    factory.primes = None
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
    conn = ClientConnection()
    client = LoginClient()
    client.key = CLIENT_KEY
    client.connection = conn
    client.clock = MemoryReactorClock()
    iosim.connect(
        server,
        iosim.FakeTransport(server, isServer=True),
        client,
        iosim.FakeTransport(client, isServer=False),
    )
    assert conn.started.called
    assert not client.isStrict()
    resets = afterNewKeys(client.received)
    assert resets and resets[0][1] == resets[0][0] + 1


# -- rekeying


def test_rekey_after_bytes_under_load_both_ways() -> None:
    pair, channel = session()
    pair.server.rekeyBytes = 200_000
    data = os.urandom(3 * 1024 * 1024)
    echo(pair, channel, data)
    assert pair.server.kexInitiatedByUs >= 5
    assert pair.client.kexInitiatedByUs == 0
    assert pair.client.secureCount == 1
    assert pair.server.isStrict()
    assert all(n == 0 for _, n in afterNewKeys(pair.server.sent))


def test_rekey_after_bytes_client_side() -> None:
    pair, channel = session()
    pair.client.rekeyBytes = 200_000
    echo(pair, channel, os.urandom(2 * 1024 * 1024))
    assert pair.client.kexInitiatedByUs >= 5
    assert pair.client.secureCount == 1


def test_rekey_after_bytes_both_sides_racing() -> None:
    pair, channel = session()
    pair.client.rekeyBytes = pair.server.rekeyBytes = 100_000
    echo(pair, channel, os.urandom(2 * 1024 * 1024), chunk=256 * 1024)
    assert pair.client.kexInitiatedByUs + pair.server.kexInitiatedByUs >= 10
    assert pair.client.secureCount == 1


def test_rekey_when_only_receiving() -> None:
    """
    A server that only receives (sha256 of an upload) still counts the bytes
    and starts a rekey.
    """
    pair, channel = session(b"sha256")
    pair.server.rekeyBytes = 200_000
    data = os.urandom(2 * 1024 * 1024)
    for i in range(0, len(data), 32 * 1024):
        channel.write(data[i : i + 32 * 1024])
        pair.flush()
    pair.client.service.sendEOF(channel)
    pair.flush()
    import hashlib

    assert bytes(channel.received) == hashlib.sha256(data).hexdigest().encode() + b"\n"
    assert pair.server.kexInitiatedByUs >= 5


def test_rekey_after_seconds() -> None:
    pair, channel = session(serverAttributes={"rekeySeconds": 600.0})
    clock = pair.clock
    clock.advance(599)
    pair.flush()
    assert pair.server.kexInitiatedByUs == 0
    clock.advance(2)
    pair.flush()
    assert pair.server.kexInitiatedByUs == 1
    echo(pair, channel, os.urandom(30_000))
    clock.advance(601)
    pair.flush()
    assert pair.server.kexInitiatedByUs == 2
    echo(pair, channel, os.urandom(30_000))
    assert pair.client.secureCount == 1
    assert len(afterNewKeys(pair.client.received)) == 3


def test_timed_rekey_timer_cancelled_on_disconnect() -> None:
    pair, _channel = session()
    assert pair.clock.getDelayedCalls()
    pair.client.transport.loseConnection()
    pair.flush()
    assert pair.server.lost.called
    assert not [c for c in pair.clock.getDelayedCalls() if c.active()]


def test_data_queued_during_rekey_flows_after() -> None:
    pair, channel = session()
    # The server starts a rekey; before the client has seen its KEXINIT the
    # client sends data, which the server echoes while keys are changing.
    pair.server._startRekey()
    channel.write(b"a" * 50_000)
    pair.flush()
    assert bytes(channel.received) == b"a" * 50_000
    # The client starts one and writes at once: its data waits for NEWKEYS.
    pair.client._startRekey()
    channel.write(b"b" * 50_000)
    assert pair.client.heldForKeyExchange
    pair.flush()
    assert bytes(channel.received) == b"a" * 50_000 + b"b" * 50_000
    assert not pair.client.heldForKeyExchange
    assert pair.client.secureCount == 1


# -- algorithm options


def test_parse_list_keeps_order_and_drops_duplicates() -> None:
    assert parseList(" aes256-ctr, aes128-ctr ,aes256-ctr,", "cipher", CIPHERS) == (
        "aes256-ctr",
        "aes128-ctr",
    )


@pytest.mark.parametrize("text", ["", " , ", ","])
def test_parse_list_empty_is_refused(text: str) -> None:
    with pytest.raises(UnknownAlgorithm):
        parseList(text, "cipher", CIPHERS)


def test_unknown_names_are_named() -> None:
    with pytest.raises(UnknownAlgorithm) as caught:
        AlgorithmPolicy.fromOptions(ciphers="aes128-ctr,aes128-cbc")
    assert caught.value.name == "aes128-cbc"
    assert caught.value.kind == "cipher"
    assert "aes128-cbc" in str(caught.value) and "aes128-gcm@openssh.com" in str(caught.value)
    with pytest.raises(UnknownAlgorithm, match="unknown MAC 'hmac-md5'"):
        AlgorithmPolicy.fromOptions(macs="hmac-md5")
    with pytest.raises(UnknownAlgorithm, match="unknown key exchange 'diffie-hellman-group1-sha1'"):
        AlgorithmPolicy.fromOptions(keyExchanges="curve25519-sha256,diffie-hellman-group1-sha1")


def test_defaults() -> None:
    policy = AlgorithmPolicy.fromOptions()
    assert policy == AlgorithmPolicy.fromOptions("", "", "")
    assert ",".join(policy.ciphers) == DEFAULT_CIPHERS
    assert ",".join(policy.macs) == DEFAULT_MACS
    assert ",".join(policy.keyExchanges) == DEFAULT_KEY_EXCHANGES


def test_policy_reaches_the_wire() -> None:
    policy = AlgorithmPolicy.fromOptions("aes256-ctr", "hmac-sha2-512", "curve25519-sha256")
    pair, channel = session(serverPolicy=policy)
    assertSameKeys(pair, "aes256-ctr")
    assert pair.server.currentEncryptions.outMACType == b"hmac-sha2-512"
    assert pair.server.kexAlg == b"curve25519-sha256"
    echo(pair, channel, b"x")


def test_client_never_offers_server_only_kex() -> None:
    client = LoginClient()
    client.policy = AlgorithmPolicy.everything()
    pair = Pair(client=client)
    assert b"mlkem768x25519-sha256" not in pair.client.ourKexInitPayload
    assert b"mlkem768x25519-sha256" in pair.server.ourKexInitPayload


def test_rekey_when_peer_only_sends_ignore() -> None:
    """
    Bytes counted on receipt alone start a rekey, even when we send nothing.
    """
    pair, channel = session()
    pair.server.rekeyBytes = 100_000
    for _ in range(40):
        pair.client.sendIgnore(os.urandom(10_000))
    pair.flush()
    assert pair.server.kexInitiatedByUs >= 1
    echo(pair, channel, b"after")


def test_key_exchange_message_outside_key_exchange() -> None:
    """
    A KEX_ECDH_INIT after the handshake would make Conch run key setup again
    outside any key exchange; it ends the connection instead.
    """
    pair, _channel = session()
    inject(pair.client, 30, common.NS(os.urandom(32)))
    pair.flush()
    assert pair.server.disconnectSent == (
        PROTOCOL_ERROR,
        b"key exchange message 30 outside key exchange",
    )
    assert pair.client.disconnectReceived == pair.server.disconnectSent


@pytest.mark.parametrize("messageType", [5, 7, 50, 80, 90])
def test_non_kex_message_before_first_kex_without_strict(messageType: int) -> None:
    pair = Pair(client=NonStrictClient(), greet=False)
    inject(pair.client, messageType, b"\0\0\0\0")
    pair.flush()
    assert pair.server.disconnectSent == (
        PROTOCOL_ERROR,
        b"unexpected message %d before key exchange" % messageType,
    )
    assert pair.server.service is None

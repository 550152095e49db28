"""
The packet layer (L{diegossh.ssh.packets}): round trips for every cipher and
MAC, tampering, hostile lengths and padding, and agreement with asyncssh's
independent implementation of the same modes (used here as an oracle only).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from asyncssh.encryption import get_encryption

from diegossh.ssh import packets
from diegossh.ssh.algorithms import CIPHERS, MACS
from diegossh.ssh.packets import (
    AEAD_CIPHERS,
    MAX_PACKET_LENGTH,
    Opener,
    PacketError,
    PlainOpener,
    PlainSealer,
    Sealer,
    makeOpener,
    makeSealer,
)

COMBINATIONS = [(c, "") for c in CIPHERS if c in AEAD_CIPHERS] + [
    (c, m) for c in CIPHERS if c not in AEAD_CIPHERS for m in MACS
]
IDS = [f"{c}+{m}" if m else c for c, m in COMBINATIONS]
PAYLOAD_SIZES = [1, 3, 11, 15, 16, 17, 31, 32, 33, 255, 1000, 4096, 32768, 65536 + 9]


class Keys:
    """
    Fresh key material for one direction, sized as each implementation wants it.
    """

    def __init__(self, cipher: str, mac: str) -> None:
        self.cipher = cipher
        self.mac = mac
        self.key = os.urandom(packets.cipherKeySize(cipher))
        self.iv = os.urandom(16)
        self.macKey = os.urandom(packets.macKeySize(mac)) if mac else b""

    def sealer(self) -> Sealer:
        return makeSealer(self.cipher, self.mac, self.key, self.iv, self.macKey)

    def opener(self) -> Opener:
        return makeOpener(self.cipher, self.mac, self.key, self.iv, self.macKey)

    def oracle(self) -> Any:
        """
        asyncssh's packet protection with the same keys.
        """
        iv = self.iv[:12] if "gcm" in self.cipher else self.iv
        return get_encryption(
            self.cipher.encode(),
            self.key,
            iv,
            self.mac.encode(),
            self.macKey,
            self.mac.endswith("-etm@openssh.com"),
        )

    @property
    def headerInFirstBlock(self) -> int:
        """
        How many leading bytes asyncssh wants as the "first block".
        """
        return 16 if (self.cipher.endswith("-ctr") and "etm" not in self.mac) else 4

    @property
    def blockSize(self) -> int:
        return 8 if self.cipher == packets.CHACHA else 16

    @property
    def tagSize(self) -> int:
        if self.cipher in AEAD_CIPHERS:
            return 16
        return packets.macKeySize(self.mac)


def readAll(opener: Opener, data: bytes, firstSeq: int = 0) -> list[bytes]:
    """
    Feed C{data} to C{opener} in one buffer, the way the transport does.
    """
    buf = bytearray(data)
    seq = firstSeq
    out = []
    while buf:
        need = opener.need(seq, buf)
        assert need is not None, "a whole packet is there but need() wants more"
        assert len(buf) >= need
        with memoryview(buf) as view, view[:need] as packet:
            out.append(opener.open(seq, packet))
        del buf[:need]
        seq = (seq + 1) & 0xFFFFFFFF
    return out


def oracleSeal(keys: Keys, enc: Any, seq: int, payload: bytes, length: int | None = None) -> bytes:
    """
    A packet sealed by asyncssh, with a length we may choose badly.
    """
    headerLen = 1 if keys.headerInFirstBlock == 4 else 5
    padLength = -(headerLen + len(payload)) % keys.blockSize
    if padLength < 4:
        padLength += keys.blockSize
    body = bytes((padLength,)) + payload + os.urandom(padLength)
    header = struct.pack(">L", len(body) if length is None else length)
    packet, mac = enc.encrypt_packet(seq, header, body)
    return bytes(packet) + bytes(mac)


def oracleOpen(keys: Keys, enc: Any, seq: int, wire: bytes) -> bytes:
    first = wire[: keys.headerInFirstBlock]
    first, header = enc.decrypt_header(seq, first, 4)
    (length,) = struct.unpack(">L", header)
    end = 4 + length
    body = enc.decrypt_packet(seq, first, wire[keys.headerInFirstBlock : end], 4, wire[end:])
    assert body is not None, "asyncssh rejected our packet"
    assert end + keys.tagSize == len(wire)
    padLength = body[0]
    assert 4 <= padLength
    assert (end if keys.headerInFirstBlock == 16 else length) % keys.blockSize == 0
    return bytes(body[1 : len(body) - padLength])


# -- round trips


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_round_trip(cipher: str, mac: str) -> None:
    """
    Packets of every size survive seal/open, several in one buffer, with the
    sequence number crossing 2**32.
    """
    keys = Keys(cipher, mac)
    sealer, opener = keys.sealer(), keys.opener()
    payloads = [os.urandom(n) for n in PAYLOAD_SIZES]
    first = 0xFFFFFFFF - 3
    wire = b"".join(sealer.seal((first + i) & 0xFFFFFFFF, p) for i, p in enumerate(payloads))
    assert readAll(opener, wire, first) == payloads


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_byte_at_a_time(cipher: str, mac: str) -> None:
    """
    need() says None until the length is known and asks for the whole packet.
    """
    keys = Keys(cipher, mac)
    wire = keys.sealer().seal(7, b"\x05hello")
    opener = keys.opener()
    buf = bytearray()
    for i, byte in enumerate(wire[:-1]):
        buf.append(byte)
        need = opener.need(7, buf)
        assert need is None or need == len(wire), i
    buf.append(wire[-1])
    assert opener.need(7, buf) == len(wire)
    with memoryview(buf) as view:
        assert opener.open(7, view) == b"\x05hello"


def test_plain_round_trip() -> None:
    sealer, opener = PlainSealer(), PlainOpener()
    payloads = [os.urandom(n) for n in PAYLOAD_SIZES]
    wire = b"".join(sealer.seal(i, p) for i, p in enumerate(payloads))
    assert readAll(opener, wire) == payloads


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_replayed_packet_fails(cipher: str, mac: str) -> None:
    """
    A packet read once does not read again as the next one: the sequence number
    (or, for AES-GCM, the invocation counter) is authenticated.
    """
    keys = Keys(cipher, mac)
    wire = keys.sealer().seal(5, b"\x02payload")
    opener = keys.opener()
    assert readAll(opener, wire, 5) == [b"\x02payload"]
    buf = bytearray(wire)
    with pytest.raises(PacketError):
        need = opener.need(6, buf)
        assert need is not None
        buf.extend(os.urandom(max(0, need - len(buf))))
        with memoryview(buf) as view, view[:need] as packet:
            opener.open(6, packet)


# -- tampering


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
@pytest.mark.parametrize("where", ["body", "last-body-byte", "tag"])
def test_flipped_bit_is_a_mac_error(cipher: str, mac: str, where: str) -> None:
    keys = Keys(cipher, mac)
    wire = bytearray(keys.sealer().seal(0, b"\x5e" + os.urandom(100)))
    index = {"body": 20, "last-body-byte": len(wire) - keys.tagSize - 1, "tag": len(wire) - 1}[
        where
    ]
    wire[index] ^= 0x10
    opener = keys.opener()
    need = opener.need(0, wire)
    assert need == len(wire)
    with pytest.raises(PacketError) as caught, memoryview(wire) as view:
        opener.open(0, view)
    assert caught.value.mac is True
    assert caught.value.reason == "bad MAC"


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_flipped_length_bit_is_refused(cipher: str, mac: str) -> None:
    """
    A flipped bit in the (encrypted or clear) length never yields a payload.
    """
    keys = Keys(cipher, mac)
    wire = bytearray(keys.sealer().seal(0, b"\x5e" + os.urandom(100)))
    wire[0] ^= 0x80
    opener = keys.opener()
    with pytest.raises(PacketError):
        need = opener.need(0, wire)
        # A changed length that is still plausible must fail authentication.
        assert need is not None
        wire.extend(os.urandom(max(0, need - len(wire))))
        with memoryview(wire) as view, view[:need] as packet:
            opener.open(0, packet)


# -- hostile lengths and padding, sealed correctly by an independent implementation


BAD_LENGTHS = {
    "absurd": 0xFFFFFFF0,
    "over-max": MAX_PACKET_LENGTH + 16,
    "zero": 0,
    "too-small": 4,
    "misaligned": 16 * 4 + 3,
}


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
@pytest.mark.parametrize("kind", sorted(BAD_LENGTHS))
def test_bad_length(cipher: str, mac: str, kind: str) -> None:
    keys = Keys(cipher, mac)
    length = BAD_LENGTHS[kind]
    if keys.headerInFirstBlock == 16 and kind == "misaligned":
        length = 16 * 4 + 4 + 3  # aligned would be length + 4
    wire = oracleSeal(keys, keys.oracle(), 0, os.urandom(40), length=length)
    opener = keys.opener()
    with pytest.raises(PacketError) as caught:
        opener.need(0, bytearray(wire[:16]))
    assert caught.value.mac is False
    assert "length" in caught.value.reason


@pytest.mark.parametrize("kind", sorted(BAD_LENGTHS))
def test_plain_bad_length(kind: str) -> None:
    length = BAD_LENGTHS[kind]
    if kind == "misaligned":
        length = 8 * 4 + 3
    with pytest.raises(PacketError) as caught:
        PlainOpener().need(0, bytearray(struct.pack(">L", length) + b"\x04"))
    assert "length" in caught.value.reason


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
@pytest.mark.parametrize("padLength", [0, 3, 200, 255])
def test_bad_padding_length(cipher: str, mac: str, padLength: int) -> None:
    """
    A correctly authenticated packet whose padding-length byte is below 4 or
    beyond the packet is refused (not a MAC error: the peer is broken).
    """
    keys = Keys(cipher, mac)
    headerLen = 1 if keys.headerInFirstBlock == 4 else 5
    # Keep the packet aligned whatever the padding byte claims.
    payloadLength = 64 - headerLen - 4
    body = bytes((padLength,)) + os.urandom(payloadLength) + os.urandom(4)
    header = struct.pack(">L", len(body))
    packet, tag = keys.oracle().encrypt_packet(0, header, body)
    wire = bytearray(bytes(packet) + bytes(tag))
    opener = keys.opener()
    need = opener.need(0, wire)
    assert need == len(wire)
    with pytest.raises(PacketError) as caught, memoryview(wire) as view:
        opener.open(0, view)
    assert caught.value.mac is False
    assert caught.value.reason == f"bad padding length {padLength}"


@pytest.mark.parametrize("padLength", [0, 3, 40])
def test_plain_bad_padding_length(padLength: int) -> None:
    body = bytes((padLength,)) + b"\x14" + os.urandom(26)
    wire = bytearray(struct.pack(">L", len(body)) + body)
    opener = PlainOpener()
    assert opener.need(0, wire) == len(wire)
    with pytest.raises(PacketError) as caught, memoryview(wire) as view:
        opener.open(0, view)
    assert caught.value.reason == f"bad padding length {padLength}"


# -- known answers against asyncssh


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_oracle_reads_ours(cipher: str, mac: str) -> None:
    keys = Keys(cipher, mac)
    sealer, oracle = keys.sealer(), keys.oracle()
    for seq, size in enumerate(PAYLOAD_SIZES):
        payload = os.urandom(size)
        assert oracleOpen(keys, oracle, seq, sealer.seal(seq, payload)) == payload


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_we_read_the_oracle(cipher: str, mac: str) -> None:
    keys = Keys(cipher, mac)
    oracle = keys.oracle()
    payloads = [os.urandom(n) for n in PAYLOAD_SIZES]
    wire = b"".join(oracleSeal(keys, oracle, seq, p) for seq, p in enumerate(payloads))
    assert readAll(keys.opener(), wire) == payloads


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_byte_identical_to_oracle(cipher: str, mac: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    With the padding fixed, our bytes on the wire equal asyncssh's exactly
    (chacha20-poly1305 and AES-GCM included): a known-answer test whose answer
    comes from an independent implementation.
    """
    monkeypatch.setattr(packets._padding, "take", lambda n: b"\xa5" * n)
    keys = Keys(cipher, mac)
    sealer, oracle = keys.sealer(), keys.oracle()
    headerLen = 1 if keys.headerInFirstBlock == 4 else 5
    for seq, size in [(0, 1), (1, 100), (2, 4093), (0xFFFFFFFF, 70)]:
        payload = os.urandom(size)
        padLength = -(headerLen + size) % keys.blockSize
        if padLength < 4:
            padLength += keys.blockSize
        body = bytes((padLength,)) + payload + b"\xa5" * padLength
        packet, tag = oracle.encrypt_packet(seq, struct.pack(">L", len(body)), body)
        assert sealer.seal(seq, payload) == bytes(packet) + bytes(tag)


def test_chacha_known_answer() -> None:
    """
    A fixed vector for chacha20-poly1305@openssh.com computed with asyncssh's
    own ChaCha20/Poly1305 code (independent of C{cryptography}'s ChaCha20
    nonce layout that ours relies on).
    """
    from asyncssh.crypto.chacha import ChachaCipher
    from asyncssh.packet import UInt64

    key = bytes(range(64))
    seq = 0x01020304
    payload = b"\x5e" + b"known answer"
    padLength = -(1 + len(payload)) % 8
    if padLength < 4:
        padLength += 8
    body = bytes((padLength,)) + payload + b"\0" * padLength
    header = struct.pack(">L", len(body))
    expected, tag = ChachaCipher(key).encrypt_and_sign(header, body, UInt64(seq))

    opener = packets.ChaChaOpener(key)
    wire = bytearray(expected + tag)
    assert opener.need(seq, wire) == len(wire)
    with memoryview(wire) as view:
        assert opener.open(seq, view) == payload


# -- messages sealed from pieces


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_seal_message_equals_seal(cipher: str, mac: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    sealMessage(type, head, body) writes the same bytes as seal(type + head + body),
    whether the body is bytes or a view into a larger buffer.
    """
    monkeypatch.setattr(packets._padding, "take", lambda n: b"\x5a" * n)
    keys = Keys(cipher, mac)
    joined, pieces = keys.sealer(), keys.sealer()
    big = os.urandom(70000)
    for seq, (head, body) in enumerate(
        [(b"", b""), (b"\0\0\0\1", b"x"), (b"\0\0\0\2\0\0\x80\0", memoryview(big)[5 : 5 + 32768]),
         (b"h" * 12, big), (b"", memoryview(big)[:0])]
    ):  # fmt: skip
        expected = joined.seal(seq, bytes((94,)) + head + bytes(body))
        assert b"".join(pieces.sealMessage(seq, 94, head, body)) == expected


@pytest.mark.parametrize(("cipher", "mac"), COMBINATIONS, ids=IDS)
def test_seal_message_round_trip(cipher: str, mac: str) -> None:
    keys = Keys(cipher, mac)
    sealer, opener = keys.sealer(), keys.opener()
    data = os.urandom(100000)
    wire = b"".join(
        b"".join(sealer.sealMessage(seq, 94, b"\0\0\0\7", memoryview(data)[seq * 32768 :][:32768]))
        for seq in range(4)
    )
    opened = readAll(opener, wire)
    assert [p[:5] for p in opened] == [b"\x5e\0\0\0\7"] * 4
    assert b"".join(p[5:] for p in opened) == data

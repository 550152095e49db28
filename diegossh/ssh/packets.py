# -*- test-case-name: tests.test_packets -*-
"""
SSH binary packet protection (RFC 4253 section 6), one class per mode.

Conch's own L{twisted.conch.ssh.transport.SSHCiphers} builds a new HMAC per
packet, has no AEAD ciphers and no encrypt-then-MAC, and cannot tell the two
directions apart at NEWKEYS time. Here every direction is a L{Sealer} (outgoing)
or an L{Opener} (incoming) with its keys set up once; a packet costs a few
calls into C{cryptography}, HMACs included: not C{hashlib}/C{hmac}, so that
the daemon need not load the system's libcrypto beside cryptography's own
(issue 15; its hashes fall back to CPython's builtin ones).

The modes:
  - plain: before the first key exchange.
  - CTR with MAC over the plaintext (encrypt-and-MAC, RFC 4253).
  - CTR with C{-etm@openssh.com} MACs: length in the clear, MAC over ciphertext.
  - AES-GCM (RFC 5647 as OpenSSH does it): length in the clear as associated data.
  - C{chacha20-poly1305@openssh.com}: length encrypted with its own key.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, poly1305
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# OpenSSH refuses packets longer than this (PACKET_MAX_SIZE); so do we.
MAX_PACKET_LENGTH = 256 * 1024
_UINT32 = struct.Struct(">L")
_MASK32 = 0xFFFFFFFF


class PacketError(Exception):
    """
    A received packet is malformed or fails authentication; the connection must end.
    """

    def __init__(self, reason: str, mac: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mac = mac


class _PaddingPool:
    """
    Random padding bytes drawn from the OS in large batches, not a syscall per packet.
    """

    def __init__(self, size: int = 1 << 16) -> None:
        self._size = size
        self._pool = b""
        self._offset = 0

    def take(self, n: int) -> bytes:
        if self._offset + n > len(self._pool):
            self._pool = os.urandom(self._size)
            self._offset = 0
        start = self._offset
        self._offset += n
        return self._pool[start : start + n]


_padding = _PaddingPool()


def _padLength(coveredLength: int, blockSize: int) -> int:
    """
    Padding so C{coveredLength + padding} is a multiple of the block size, at least 4.
    """
    pad = blockSize - (coveredLength % blockSize)
    if pad < 4:
        pad += blockSize
    return pad


def _checkLength(length: int, blockSize: int, lengthCovered: bool) -> None:
    """
    Reject lengths OpenSSH would reject: too short, too long, not block aligned.
    """
    if length < 5 or length > MAX_PACKET_LENGTH:
        raise PacketError(f"bad packet length {length}")
    aligned = length + 4 if lengthCovered else length
    if aligned % blockSize:
        raise PacketError(f"packet length {length} not a multiple of the block size {blockSize}")


def _payload(packet: bytes | memoryview) -> bytes:
    """
    Strip the padding-length byte and the padding, checking it is sane.
    """
    padLength = packet[0]
    if padLength < 4 or padLength >= len(packet):
        raise PacketError(f"bad padding length {padLength}")
    return bytes(packet[1 : len(packet) - padLength])


class Sealer(Protocol):
    """
    Protects outgoing packets for one direction.
    """

    def seal(self, seq: int, payload: bytes) -> bytes: ...

    def sealMessage(
        self, seq: int, messageType: int, head: bytes, body: bytes | memoryview
    ) -> list[bytes]:
        """
        The packet for message C{messageType} with payload C{head + body}, in
        pieces to be written in order.
        """
        ...


def _joinedMessage(messageType: int, head: bytes, body: bytes | memoryview) -> bytes:
    return b"".join((bytes((messageType,)), head, body))


class Opener(Protocol):
    """
    Takes incoming packets apart for one direction.

    C{need} says how many bytes the packet at the head of C{buffer} occupies in
    all (or L{None} until enough has arrived to know); C{open} then gets exactly
    those bytes and returns the payload.
    """

    def need(self, seq: int, buffer: bytearray) -> int | None: ...

    def open(self, seq: int, data: memoryview) -> bytes: ...


class PlainSealer:
    """
    No encryption, no MAC: the first key exchange travels like this.
    """

    blockSize = 8

    def seal(self, seq: int, payload: bytes) -> bytes:
        pad = _padLength(5 + len(payload), self.blockSize)
        header = _UINT32.pack(1 + len(payload) + pad) + bytes((pad,))
        return header + payload + _padding.take(pad)

    def sealMessage(
        self, seq: int, messageType: int, head: bytes, body: bytes | memoryview
    ) -> list[bytes]:
        return [self.seal(seq, _joinedMessage(messageType, head, body))]


class PlainOpener:
    """
    Reads unprotected packets.
    """

    blockSize = 8

    def need(self, seq: int, buffer: bytearray) -> int | None:
        if len(buffer) < 4:
            return None
        (length,) = _UINT32.unpack_from(buffer)
        _checkLength(length, self.blockSize, lengthCovered=True)
        return 4 + length

    def open(self, seq: int, data: memoryview) -> bytes:
        return _payload(data[4:])


_MAC_DIGESTS: dict[str, tuple[type[hashes.HashAlgorithm], int, bool]] = {
    "hmac-sha2-256": (hashes.SHA256, 32, False),
    "hmac-sha2-512": (hashes.SHA512, 64, False),
    "hmac-sha2-256-etm@openssh.com": (hashes.SHA256, 32, True),
    "hmac-sha2-512-etm@openssh.com": (hashes.SHA512, 64, True),
}

_CTR_KEY_SIZES: dict[str, int] = {"aes128-ctr": 16, "aes192-ctr": 24, "aes256-ctr": 32}
_GCM_KEY_SIZES: dict[str, int] = {"aes128-gcm@openssh.com": 16, "aes256-gcm@openssh.com": 32}
CHACHA = "chacha20-poly1305@openssh.com"
AEAD_CIPHERS = frozenset(_GCM_KEY_SIZES) | {CHACHA}


def macKeySize(mac: str) -> int:
    """
    How many bytes of integrity key the MAC takes.
    """
    return _MAC_DIGESTS[mac][1]


def cipherKeySize(cipher: str) -> int:
    """
    How many bytes of encryption key the cipher takes.
    """
    if cipher == CHACHA:
        return 64
    return _CTR_KEY_SIZES.get(cipher) or _GCM_KEY_SIZES[cipher]


class _HMAC:
    """
    A keyed HMAC: the key is set up once and copied per packet (as fast as
    C{hmac.digest} through OpenSSL, and the data is not copied to be joined
    to the sequence number).
    """

    def __init__(self, mac: str, key: bytes) -> None:
        algorithm, size, self.etm = _MAC_DIGESTS[mac]
        self._keyed = _hmac.HMAC(key[:size], algorithm())
        self.size = size

    def compute(self, seq: int, data: bytes | memoryview) -> bytes:
        h = self._keyed.copy()
        h.update(_UINT32.pack(seq & _MASK32))
        h.update(data)
        return h.finalize()


class CTRSealer:
    """
    AES-CTR with an HMAC, either over the plaintext or (etm) over the ciphertext.
    """

    blockSize = 16

    def __init__(self, cipher: str, key: bytes, iv: bytes, mac: str, macKey: bytes) -> None:
        size = _CTR_KEY_SIZES[cipher]
        self._encryptor = Cipher(algorithms.AES(key[:size]), modes.CTR(iv[:16])).encryptor()
        self._mac = _HMAC(mac, macKey)

    def seal(self, seq: int, payload: bytes) -> bytes:
        encrypt = self._encryptor.update
        if self._mac.etm:
            pad = _padLength(1 + len(payload), self.blockSize)
            length = _UINT32.pack(1 + len(payload) + pad)
            body = encrypt(bytes((pad,)) + payload + _padding.take(pad))
            covered = length + body
            return covered + self._mac.compute(seq, covered)
        pad = _padLength(5 + len(payload), self.blockSize)
        plain = _UINT32.pack(1 + len(payload) + pad) + bytes((pad,)) + payload + _padding.take(pad)
        return encrypt(plain) + self._mac.compute(seq, plain)

    def sealMessage(
        self, seq: int, messageType: int, head: bytes, body: bytes | memoryview
    ) -> list[bytes]:
        return [self.seal(seq, _joinedMessage(messageType, head, body))]


class CTROpener:
    """
    The receiving side of L{CTRSealer}.
    """

    blockSize = 16

    def __init__(self, cipher: str, key: bytes, iv: bytes, mac: str, macKey: bytes) -> None:
        size = _CTR_KEY_SIZES[cipher]
        self._decryptor = Cipher(algorithms.AES(key[:size]), modes.CTR(iv[:16])).decryptor()
        self._mac = _HMAC(mac, macKey)
        self._firstBlock: bytes | None = None

    def need(self, seq: int, buffer: bytearray) -> int | None:
        if self._mac.etm:
            if len(buffer) < 4:
                return None
            (length,) = _UINT32.unpack_from(buffer)
            _checkLength(length, self.blockSize, lengthCovered=False)
            return 4 + length + self._mac.size
        if self._firstBlock is None:
            if len(buffer) < self.blockSize:
                return None
            # CTR is a stream: decrypting the first block now and the rest later
            # yields the same plaintext as decrypting it all at once.
            self._firstBlock = self._decryptor.update(bytes(buffer[: self.blockSize]))
        (length,) = _UINT32.unpack_from(self._firstBlock)
        _checkLength(length, self.blockSize, lengthCovered=True)
        return 4 + length + self._mac.size

    def open(self, seq: int, data: memoryview) -> bytes:
        macSize = self._mac.size
        end = len(data) - macSize
        received = data[end:]
        if self._mac.etm:
            if not hmac.compare_digest(self._mac.compute(seq, data[:end]), received):
                raise PacketError("bad MAC", mac=True)
            return _payload(self._decryptor.update(data[4:end]))
        first = self._firstBlock
        assert first is not None
        self._firstBlock = None
        plain = first + self._decryptor.update(data[self.blockSize : end])
        if not hmac.compare_digest(self._mac.compute(seq, plain), received):
            raise PacketError("bad MAC", mac=True)
        return _payload(memoryview(plain)[4:])


class _GCMNonce:
    """
    RFC 5647's nonce: a fixed 4-byte field and an 8-byte counter bumped per packet.
    """

    def __init__(self, iv: bytes) -> None:
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    def next(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return nonce


class GCMSealer:
    """
    AES-GCM: one call encrypts and authenticates; the length is associated data.
    """

    blockSize = 16

    def __init__(self, cipher: str, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key[: _GCM_KEY_SIZES[cipher]])
        self._nonce = _GCMNonce(iv)

    def seal(self, seq: int, payload: bytes) -> bytes:
        return b"".join(self.sealMessage(seq, payload[0], b"", memoryview(payload)[1:]))

    def sealMessage(
        self, seq: int, messageType: int, head: bytes, body: bytes | memoryview
    ) -> list[bytes]:
        # The plaintext is built once, in place: padding length, message type,
        # head, body, padding; then one encryption. The clear length goes
        # out as a piece of its own rather than copied in front.
        headEnd = 2 + len(head)
        bodyEnd = headEnd + len(body)
        pad = _padLength(bodyEnd, self.blockSize)
        plain = bytearray(bodyEnd + pad)
        plain[0] = pad
        plain[1] = messageType
        plain[2:headEnd] = head
        plain[headEnd:bodyEnd] = body
        plain[bodyEnd:] = _padding.take(pad)
        length = _UINT32.pack(len(plain))
        return [length, self._aead.encrypt(self._nonce.next(), plain, length)]


class GCMOpener:
    """
    The receiving side of L{GCMSealer}.
    """

    blockSize = 16

    def __init__(self, cipher: str, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key[: _GCM_KEY_SIZES[cipher]])
        self._nonce = _GCMNonce(iv)

    def need(self, seq: int, buffer: bytearray) -> int | None:
        if len(buffer) < 4:
            return None
        (length,) = _UINT32.unpack_from(buffer)
        _checkLength(length, self.blockSize, lengthCovered=False)
        return 4 + length + 16

    def open(self, seq: int, data: memoryview) -> bytes:
        try:
            plain = self._aead.decrypt(self._nonce.next(), data[4:], data[:4])
        except InvalidTag:
            raise PacketError("bad MAC", mac=True) from None
        return _payload(memoryview(plain))


def _chachaStream(key: bytes, seq: int, counter: int) -> Cipher[None]:
    """
    ChaCha20 with OpenSSH's 64-bit nonce (the sequence number) and 64-bit counter.

    C{cryptography} takes a 16-byte value: the little-endian block counter, then
    the nonce; for counters under 2**32 this matches the original ChaCha layout.
    """
    nonce = counter.to_bytes(8, "little") + (seq & _MASK32).to_bytes(8, "big")
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None)


class _ChaChaKeys:
    def __init__(self, key: bytes) -> None:
        # PROTOCOL.chacha20poly1305: the first 32 bytes are the payload key K_2,
        # the next 32 the header key K_1.
        self.main = key[:32]
        self.header = key[32:64]

    def polyKey(self, seq: int) -> bytes:
        return _chachaStream(self.main, seq, 0).encryptor().update(b"\0" * 32)


class ChaChaSealer:
    """
    OpenSSH's chacha20-poly1305: the length has its own key; Poly1305 over all.
    """

    blockSize = 8

    def __init__(self, key: bytes) -> None:
        self._keys = _ChaChaKeys(key)

    def seal(self, seq: int, payload: bytes) -> bytes:
        pad = _padLength(1 + len(payload), self.blockSize)
        length = _UINT32.pack(1 + len(payload) + pad)
        keys = self._keys
        encLength = _chachaStream(keys.header, seq, 0).encryptor().update(length)
        body = bytes((pad,)) + payload + _padding.take(pad)
        encBody = _chachaStream(keys.main, seq, 1).encryptor().update(body)
        covered = encLength + encBody
        return covered + poly1305.Poly1305.generate_tag(keys.polyKey(seq), covered)

    def sealMessage(
        self, seq: int, messageType: int, head: bytes, body: bytes | memoryview
    ) -> list[bytes]:
        return [self.seal(seq, _joinedMessage(messageType, head, body))]


class ChaChaOpener:
    """
    The receiving side of L{ChaChaSealer}.
    """

    blockSize = 8

    def __init__(self, key: bytes) -> None:
        self._keys = _ChaChaKeys(key)

    def need(self, seq: int, buffer: bytearray) -> int | None:
        if len(buffer) < 4:
            return None
        plainLength = _chachaStream(self._keys.header, seq, 0).decryptor().update(bytes(buffer[:4]))
        (length,) = _UINT32.unpack(plainLength)
        _checkLength(length, self.blockSize, lengthCovered=False)
        return 4 + length + 16

    def open(self, seq: int, data: memoryview) -> bytes:
        end = len(data) - 16
        keys = self._keys
        try:
            poly1305.Poly1305.verify_tag(keys.polyKey(seq), bytes(data[:end]), bytes(data[end:]))
        except InvalidSignature:
            raise PacketError("bad MAC", mac=True) from None
        body = _chachaStream(keys.main, seq, 1).decryptor().update(data[4:end])
        return _payload(memoryview(body))


def makeSealer(cipher: str, mac: str, key: bytes, iv: bytes, macKey: bytes) -> Sealer:
    """
    Build the outgoing protection negotiated for one direction.
    """
    if cipher == CHACHA:
        return ChaChaSealer(key)
    if cipher in _GCM_KEY_SIZES:
        return GCMSealer(cipher, key, iv)
    return CTRSealer(cipher, key, iv, mac, macKey)


def makeOpener(cipher: str, mac: str, key: bytes, iv: bytes, macKey: bytes) -> Opener:
    """
    Build the incoming protection negotiated for one direction.
    """
    if cipher == CHACHA:
        return ChaChaOpener(key)
    if cipher in _GCM_KEY_SIZES:
        return GCMOpener(cipher, key, iv)
    return CTROpener(cipher, key, iv, mac, macKey)

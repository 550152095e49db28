"""
Hostile SSH clients, for the bound tests (C{tests/test_hostile_bounds.py}) and
the bench (C{bench/hostile.py}, C{python -m bench hostile}).

Each attack is a plain blocking function against any L{Target}: diego-sshd
directly (key login) or diego-ssh-proxy (password login, C{diego:GUID/INDEX}).
They use L{HostileClient}, a small SSH client written here on a blocking
socket, so that "stop sending", "stop reading" and "send what no client
would" are just what the code does next, with no library state machine in the
way. It speaks only what our servers offer by default: curve25519-sha256,
ssh-ed25519 (not verified: the client trusts any host key),
aes128-gcm@openssh.com, password or ssh-ed25519 user keys. No strict key
exchange, so it may re-key.

The attacks:

  - L{kexStall} (A): re-key, then never finish the key exchange while data
    keeps coming;
  - L{neverRead} (B): a 4 GiB window on C{cat /dev/zero}, then never C{recv};
  - L{tinyPackets} (C): a channel with a maximum packet of 1 byte;
  - L{authAgain} (D): user authentication after a successful login;
  - L{manyChannels} (E): thousands of channel opens on one connection;
  - L{orphans} (F): start a command, then close the channel or drop the
    connection at once, many times; count the processes left behind.

Every attack is bounded in time (C{seconds}, timeouts on every socket call) and
count, stops early when C{stop} is set (L{ProcessWatch} sets it once a server
grew past a limit), and only connects to loopback addresses. C{during}, when
given, runs in a thread once the attack is in its hostile state (the client
stalled, the channels open), while the attack holds that state; its result
or exception lands in the attack's result. L{ProcessWatch} samples the servers'
resident memory, CPU time and descriptors meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MSG_DISCONNECT = 1
MSG_IGNORE = 2
MSG_UNIMPLEMENTED = 3
MSG_DEBUG = 4
MSG_SERVICE_REQUEST = 5
MSG_SERVICE_ACCEPT = 6
MSG_EXT_INFO = 7
MSG_KEXINIT = 20
MSG_NEWKEYS = 21
MSG_KEX_ECDH_INIT = 30
MSG_KEX_ECDH_REPLY = 31
MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_BANNER = 53
MSG_GLOBAL_REQUEST = 80
MSG_REQUEST_SUCCESS = 81
MSG_REQUEST_FAILURE = 82
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_WINDOW_ADJUST = 93
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
MSG_CHANNEL_EOF = 96
MSG_CHANNEL_CLOSE = 97
MSG_CHANNEL_REQUEST = 98
MSG_CHANNEL_SUCCESS = 99
MSG_CHANNEL_FAILURE = 100

MAX_WINDOW = 0xFFFFFFFF
VERSION = b"SSH-2.0-diegossh_hostile_test"
KEX = b"curve25519-sha256,curve25519-sha256@libssh.org"
HOST_KEYS = b"ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256"
CIPHER = b"aes128-gcm@openssh.com"
MAC = b"hmac-sha2-256"  # negotiated but unused with an AEAD cipher
RECV_SIZE = 256 * 1024
MiB = 1 << 20


class SSHError(Exception):
    """The server did not do what an SSH server does (or what we needed to go on)."""


class AuthFailed(SSHError):
    pass


# -- wire format


def u32(n: int) -> bytes:
    return struct.pack(">L", n)


def string(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return u32(len(data)) + data


def mpint(data: bytes) -> bytes:
    """An unsigned big-endian number as an SSH mpint."""
    data = data.lstrip(b"\0")
    if data and data[0] & 0x80:
        data = b"\0" + data
    return string(data)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def u32(self) -> int:
        (n,) = struct.unpack_from(">L", self.data, self.at)
        self.at += 4
        return int(n)

    def byte(self) -> int:
        b = self.data[self.at]
        self.at += 1
        return b

    def string(self) -> bytes:
        n = self.u32()
        if self.at + n > len(self.data):
            raise SSHError("string beyond the message")
        s = self.data[self.at : self.at + n]
        self.at += n
        return s

    def rest(self) -> bytes:
        return self.data[self.at :]


# -- packet layer


class _Plain:
    """Packets before the first NEWKEYS."""

    def seal(self, payload: bytes) -> bytes:
        pad = 8 - (5 + len(payload)) % 8
        if pad < 4:
            pad += 8
        return u32(1 + len(payload) + pad) + bytes((pad,)) + payload + os.urandom(pad)

    def need(self, buf: bytearray) -> int | None:
        if len(buf) < 4:
            return None
        length = struct.unpack_from(">L", buf)[0]
        if length > 256 * 1024 + 64:
            raise SSHError(f"packet length {length}")
        return 4 + int(length)

    def open(self, packet: bytes) -> bytes:
        pad = packet[4]
        return packet[5 : len(packet) - pad]


class _GCM:
    """aes128-gcm@openssh.com (RFC 5647 as OpenSSH does it): one direction."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    def _nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return nonce

    def seal(self, payload: bytes) -> bytes:
        pad = 16 - (1 + len(payload)) % 16
        if pad < 4:
            pad += 16
        plain = bytes((pad,)) + payload + os.urandom(pad)
        head = u32(len(plain))
        return head + self._aead.encrypt(self._nonce(), plain, head)

    def need(self, buf: bytearray) -> int | None:
        if len(buf) < 4:
            return None
        length = struct.unpack_from(">L", buf)[0]
        if length > 256 * 1024 + 64 or length % 16:
            raise SSHError(f"packet length {length}")
        return 4 + int(length) + 16

    def open(self, packet: bytes) -> bytes:
        plain = self._aead.decrypt(self._nonce(), packet[4:], packet[:4])
        pad = plain[0]
        return plain[1 : len(plain) - pad]


# -- targets


@dataclass(frozen=True)
class Target:
    """
    Where and as whom to log in: a password (the proxy) or an OpenSSH
    private key file holding an ed25519 key (diego-sshd). Loopback only.
    """

    port: int
    user: str
    password: str | None = None
    identity: Path | None = None
    host: str = "127.0.0.1"
    name: str = ""

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ValueError(f"attacks only go to loopback addresses, not {self.host}")
        if self.password is None and self.identity is None:
            raise ValueError("a password or an identity is needed")

    def __str__(self) -> str:
        return self.name or f"{self.user}@{self.host}:{self.port}"


def loadEd25519(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: only ed25519 keys are supported")
    return key


# -- the client


@dataclass
class Channel:
    """Our view of one channel. C{local} is our number, C{remote} the server's."""

    local: int
    kind: bytes
    window: int  # what we granted
    maxPacket: int  # what we announced
    remote: int | None = None
    confirmed: bool = False
    failure: tuple[int, str] | None = None
    remoteWindow: int = 0
    remoteMaxPacket: int = 0
    received: int = 0
    messages: int = 0
    largest: int = 0
    eof: bool = False
    closed: bool = False
    exitStatus: int | None = None
    replies: list[bool] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.confirmed or self.failure is not None


class HostileClient:
    """
    An SSH client on a blocking socket that does what its caller says, in
    order, nothing more. L{pump} reads and handles what the server sends;
    not calling it is how the client stops reading.
    """

    def __init__(self, target: Target, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.target = target
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect(), so the TCP window scale reflects it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((target.host, target.port))
        self.sock = sock
        self._buf = bytearray()
        self._sealer: _Plain | _GCM = _Plain()
        self._opener: _Plain | _GCM = _Plain()
        self.sessionID = b""
        self.serverVersion = b""
        self.channels: dict[int, Channel] = {}
        self._nextChannel = 0
        self.globalReplies: list[tuple[int, bytes]] = []
        self.received: list[int] = []  # message numbers after login, for tests to look at
        self.recordReceived = False
        self.disconnect: tuple[int, str] | None = None
        self.closed = False  # the server closed the socket (EOF or reset)
        self.closedAt: float | None = None
        self.serverKexInits = 0
        self.openAnswers = 0  # channel opens confirmed or refused so far
        self.answerGlobalRequests = True
        self.bytesRead = 0

    # -- low level

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def sendMessage(self, num: int, payload: bytes = b"") -> None:
        self.sock.sendall(self._sealer.seal(bytes((num,)) + payload))

    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False on timeout or once the server is gone."""
        if self.closed:
            return False
        # A deadline already past still tries once, without blocking.
        self.sock.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            data = self.sock.recv(RECV_SIZE)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            self.closedAt = time.monotonic()
            return False
        self.bytesRead += len(data)
        self._buf += data
        return True

    def readPacket(self, timeout: float) -> bytes | None:
        """The next payload, or None after C{timeout} or when the server is gone."""
        deadline = time.monotonic() + timeout
        while True:
            need = self._opener.need(self._buf)
            if need is not None and len(self._buf) >= need:
                packet = bytes(self._buf[:need])
                del self._buf[:need]
                return self._opener.open(packet)
            if not self._fill(deadline):
                return None

    def readVersion(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end]).rstrip(b"\r")
                del self._buf[: end + 1]
                if line.startswith(b"SSH-"):
                    self.serverVersion = line
                    return
                continue
            if not self._fill(deadline):
                raise SSHError(f"no version line from {self.target}")

    # -- message handling

    def next(self, timeout: float) -> tuple[int, bytes] | None:
        """
        The next message the caller should see: transport noise (IGNORE,
        DEBUG, EXT_INFO, banners) is skipped, DISCONNECT recorded and the
        connection treated as gone, connection-protocol messages handled
        (channels, global requests) and then returned as well.
        """
        deadline = time.monotonic() + timeout
        while True:
            payload = self.readPacket(max(0.0, deadline - time.monotonic()))
            if payload is None:
                return None
            num = payload[0]
            body = payload[1:]
            if self.recordReceived:
                self.received.append(num)
            if num == MSG_DISCONNECT:
                r = Reader(body)
                code = r.u32()
                self.disconnect = (code, r.string().decode("utf-8", "replace"))
                self.closed = True
                self.closedAt = time.monotonic()
                return None
            if num in (MSG_IGNORE, MSG_DEBUG, MSG_EXT_INFO, MSG_USERAUTH_BANNER):
                continue
            if num == MSG_KEXINIT:
                self.serverKexInits += 1
            if num >= MSG_GLOBAL_REQUEST:
                self._connectionMessage(num, body)
            return num, body

    def expect(self, wanted: set[int], timeout: float) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.next(max(0.0, deadline - time.monotonic()))
            if got is None:
                raise SSHError(
                    f"waiting for {sorted(wanted)} from {self.target}: "
                    + (f"disconnected {self.disconnect}" if self.disconnect else "")
                    + ("closed" if self.closed else "timed out")
                )
            if got[0] in wanted:
                return got

    def _connectionMessage(self, num: int, body: bytes) -> None:
        r = Reader(body)
        if num == MSG_GLOBAL_REQUEST:
            r.string()
            wantReply = r.byte()
            if wantReply and self.answerGlobalRequests:
                self.sendMessage(MSG_REQUEST_FAILURE)
            return
        if num in (MSG_REQUEST_SUCCESS, MSG_REQUEST_FAILURE):
            self.globalReplies.append((num, body))
            return
        if num == MSG_CHANNEL_OPEN:
            # Nothing is offered to the server (no forwardings asked for here
            # are ever accepted back): refuse.
            r.string()
            sender = r.u32()
            self.sendMessage(
                MSG_CHANNEL_OPEN_FAILURE, u32(sender) + u32(1) + string("no") + string("")
            )
            return
        channel = self.channels.get(r.u32())
        if channel is None:
            return
        if num == MSG_CHANNEL_OPEN_CONFIRMATION:
            channel.remote = r.u32()
            channel.remoteWindow = r.u32()
            channel.remoteMaxPacket = r.u32()
            channel.confirmed = True
            self.openAnswers += 1
        elif num == MSG_CHANNEL_OPEN_FAILURE:
            code = r.u32()
            channel.failure = (code, r.string().decode("utf-8", "replace"))
            self.openAnswers += 1
        elif num == MSG_CHANNEL_WINDOW_ADJUST:
            channel.remoteWindow += r.u32()
        elif num in (MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA):
            if num == MSG_CHANNEL_EXTENDED_DATA:
                r.u32()
            n = r.u32()
            channel.received += n
            channel.messages += 1
            channel.largest = max(channel.largest, n)
        elif num == MSG_CHANNEL_EOF:
            channel.eof = True
        elif num == MSG_CHANNEL_CLOSE:
            if not channel.closed and channel.remote is not None:
                channel.closed = True
                self.sendMessage(MSG_CHANNEL_CLOSE, u32(channel.remote))
            channel.closed = True
        elif num == MSG_CHANNEL_REQUEST:
            name = r.string()
            r.byte()
            if name == b"exit-status":
                channel.exitStatus = r.u32()
        elif num in (MSG_CHANNEL_SUCCESS, MSG_CHANNEL_FAILURE):
            channel.replies.append(num == MSG_CHANNEL_SUCCESS)

    def pump(
        self,
        seconds: float,
        until: Callable[[], bool] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """
        Read and handle messages for up to C{seconds}, or until C{until()} is
        true, C{stop} is set or the server is gone.
        """
        deadline = time.monotonic() + seconds
        while not self.closed:
            if until is not None and until():
                return
            if stop is not None and stop.is_set():
                return
            remaining = deadline - time.monotonic()
            got = self.next(min(0.25, max(0.0, remaining)))
            # Past the deadline: only what is already there, and not for long.
            if remaining <= 0 and (got is None or remaining < -0.05):
                return

    # -- key exchange

    def kexInitPayload(self) -> bytes:
        return b"".join(
            [
                bytes((MSG_KEXINIT,)),
                os.urandom(16),
                string(KEX),
                string(HOST_KEYS),
                string(CIPHER),
                string(CIPHER),
                string(MAC),
                string(MAC),
                string(b"none"),
                string(b"none"),
                string(b""),
                string(b""),
                b"\0",
                u32(0),
            ]
        )

    def sendKexInit(self) -> None:
        """Start a key exchange (our part of it stops here unless L{handshake} goes on)."""
        self.sendMessage(MSG_KEXINIT, self.kexInitPayload()[1:])

    def handshake(self) -> None:
        self.sock.sendall(VERSION + b"\r\n")
        ourKexInit = self.kexInitPayload()
        self.sock.sendall(self._sealer.seal(ourKexInit))
        self.readVersion()
        num, body = self.expect({MSG_KEXINIT}, self.timeout)
        theirKexInit = bytes((num,)) + body
        ephemeral = X25519PrivateKey.generate()
        ours = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.sendMessage(MSG_KEX_ECDH_INIT, string(ours))
        _, reply = self.expect({MSG_KEX_ECDH_REPLY}, self.timeout)
        r = Reader(reply)
        hostKey = r.string()
        theirs = r.string()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(theirs))
        k = mpint(shared)
        h = hashlib.sha256(
            string(VERSION)
            + string(self.serverVersion)
            + string(ourKexInit)
            + string(theirKexInit)
            + string(hostKey)
            + string(ours)
            + string(theirs)
            + k
        ).digest()
        self.sessionID = self.sessionID or h

        def derive(letter: bytes) -> bytes:
            return hashlib.sha256(k + h + letter + self.sessionID).digest()

        self.sendMessage(MSG_NEWKEYS)
        self._sealer = _GCM(derive(b"C")[:16], derive(b"A")[:12])
        self.expect({MSG_NEWKEYS}, self.timeout)
        self._opener = _GCM(derive(b"D")[:16], derive(b"B")[:12])

    # -- user authentication

    def authRequest(self, method: str) -> bytes:
        """The body of a USERAUTH_REQUEST for our target's credentials."""
        user = self.target.user
        if method == "password":
            return (
                string(user)
                + string("ssh-connection")
                + string("password")
                + b"\0"
                + string(self.target.password or "")
            )
        assert self.target.identity is not None
        key = loadEd25519(self.target.identity)
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        blob = string("ssh-ed25519") + string(raw)
        signed = (
            string(user)
            + string("ssh-connection")
            + string("publickey")
            + b"\1"
            + string("ssh-ed25519")
            + string(blob)
        )
        signature = key.sign(string(self.sessionID) + bytes((MSG_USERAUTH_REQUEST,)) + signed)
        return signed + string(string("ssh-ed25519") + string(signature))

    def authenticate(self) -> None:
        self.sendMessage(MSG_SERVICE_REQUEST, string("ssh-userauth"))
        self.expect({MSG_SERVICE_ACCEPT}, self.timeout)
        method = "password" if self.target.password is not None else "publickey"
        self.sendMessage(MSG_USERAUTH_REQUEST, self.authRequest(method))
        num, _ = self.expect({MSG_USERAUTH_SUCCESS, MSG_USERAUTH_FAILURE}, self.timeout)
        if num != MSG_USERAUTH_SUCCESS:
            raise AuthFailed(f"{self.target}: {method} refused")

    @classmethod
    def login(
        cls, target: Target, timeout: float = 10.0, rcvbuf: int | None = None
    ) -> HostileClient:
        client = cls(target, timeout, rcvbuf)
        try:
            client.handshake()
            client.authenticate()
        except BaseException:
            client.close()
            raise
        return client

    # -- channels

    def openChannel(
        self,
        kind: bytes = b"session",
        window: int = 2 * MiB,
        maxPacket: int = 32768,
        extra: bytes = b"",
        wait: bool = True,
    ) -> Channel:
        channel = Channel(self._nextChannel, kind, window, maxPacket)
        self._nextChannel += 1
        self.channels[channel.local] = channel
        self.sendMessage(
            MSG_CHANNEL_OPEN,
            string(kind) + u32(channel.local) + u32(window) + u32(maxPacket) + extra,
        )
        if wait:
            self.pump(self.timeout, until=lambda: channel.answered)
            if not channel.answered:
                raise SSHError(f"no answer to a channel open from {self.target}")
        return channel

    def request(
        self, channel: Channel, name: str, data: bytes = b"", wantReply: bool = True
    ) -> bool | None:
        """A channel request; with C{wantReply}, whether it succeeded (None: no answer)."""
        assert channel.remote is not None
        before = len(channel.replies)
        self.sendMessage(
            MSG_CHANNEL_REQUEST,
            u32(channel.remote) + string(name) + (b"\1" if wantReply else b"\0") + data,
        )
        if not wantReply:
            return None
        self.pump(self.timeout, until=lambda: len(channel.replies) > before)
        return channel.replies[before] if len(channel.replies) > before else None

    def exec(self, channel: Channel, command: str, wantReply: bool = True) -> bool | None:
        return self.request(channel, "exec", string(command), wantReply)

    def closeChannel(self, channel: Channel) -> None:
        if channel.remote is not None:
            self.sendMessage(MSG_CHANNEL_CLOSE, u32(channel.remote))

    def globalRequest(self, name: str, data: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
        before = len(self.globalReplies)
        self.sendMessage(MSG_GLOBAL_REQUEST, string(name) + b"\1" + data)
        self.pump(timeout, until=lambda: len(self.globalReplies) > before)
        if len(self.globalReplies) <= before:
            raise SSHError(f"no reply to {name} from {self.target}")
        return self.globalReplies[before]


# -- running something while an attack holds


class During:
    """C{fn} in a thread of its own; its result or exception, once it ends."""

    def __init__(self, fn: Callable[[], Any] | None) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if fn is not None:

            def run() -> None:
                try:
                    self.result = fn()
                except BaseException as e:
                    self.error = e

            self._thread = threading.Thread(target=run, name="attack-during", daemon=True)
            self._thread.start()

    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass
class Outcome:
    """What every attack reports."""

    target: str
    seconds: float = 0.0
    stoppedEarly: bool = False  # C{stop} was set (a server grew past the watch's limit)
    disconnect: tuple[int, str] | None = None  # the server's DISCONNECT, if one came
    closedByServer: bool = False
    duringResult: Any = None
    duringError: BaseException | None = None


def _hold(
    client: HostileClient | None,
    during: During,
    seconds: float,
    stop: threading.Event | None,
    read: bool,
    duringTimeout: float,
) -> bool:
    """
    Keep the attack's state for C{seconds} and until C{during} ends (at most
    C{duringTimeout}); read (and discard) what comes when C{read}. True if
    C{stop} cut it short.
    """
    start = time.monotonic()
    while True:
        now = time.monotonic()
        if stop is not None and stop.is_set():
            return True
        if now - start >= seconds and (during.done() or now - start >= duringTimeout):
            return False
        if read and client is not None and not client.closed:
            client.pump(0.1, stop=stop)
        else:
            time.sleep(0.05)


def _finish(outcome: Outcome, client: HostileClient | None, during: During, started: float) -> None:
    during.join(5)
    outcome.duringResult = during.result
    outcome.duringError = during.error
    if client is not None:
        outcome.disconnect = client.disconnect
        outcome.closedByServer = client.closed
        client.close()
    outcome.seconds = time.monotonic() - started


def _warmUp(client: HostileClient, channel: Channel, warmBytes: int, timeout: float) -> None:
    client.pump(timeout, until=lambda: channel.received >= warmBytes or channel.closed)
    if channel.received < warmBytes:
        raise SSHError(
            f"{client.target}: only {channel.received} bytes arrived before the stall "
            f"(wanted {warmBytes}); the attack did not start"
        )


# -- A: a key exchange that never finishes


@dataclass
class KexStallOutcome(Outcome):
    bytesBeforeStall: int = 0  # channel data read before our KEXINIT
    bytesAfterKexInit: int = 0  # channel data that still came after it
    serverKexInit: bool = False  # the server answered (or started) the key exchange
    closedAfter: float | None = None  # seconds from the stall to the server closing


def kexStall(
    target: Target,
    seconds: float = 10.0,
    command: str = "cat /dev/zero",
    window: int = MAX_WINDOW,
    warmBytes: int = MiB,
    mode: str = "initiate",
    rekeyWait: float = 60.0,
    read: bool = True,
    stop: threading.Event | None = None,
    during: Callable[[], Any] | None = None,
    duringTimeout: float = 60.0,
) -> KexStallOutcome:
    """
    Attack A. Log in, run C{command} on a session with a C{window} window,
    read C{warmBytes} of its output, then start a key exchange and never
    finish it: C{mode="initiate"} sends our KEXINIT; C{mode="answer"} reads
    on (up to C{rekeyWait} seconds) until the server starts a re-key of its
    own (ours do after 1 GiB) and answers its KEXINIT with ours.
    No ECDH init ever follows. The client keeps reading (C{read}) for
    C{seconds}, so whatever the server sends, a DISCONNECT included, is seen;
    the data meant for the channel piles up wherever the server keeps it.
    """
    started = time.monotonic()
    outcome = KexStallOutcome(str(target))
    client = HostileClient.login(target)
    channel = client.openChannel(window=window, maxPacket=32768)
    if not channel.confirmed:
        client.close()
        raise SSHError(f"{target}: session refused: {channel.failure}")
    client.exec(channel, command)
    _warmUp(client, channel, warmBytes, 15)
    initial = client.serverKexInits  # the first key exchange's
    if mode == "answer":
        client.pump(rekeyWait, until=lambda: client.serverKexInits > initial, stop=stop)
        if client.serverKexInits == initial:
            client.close()
            raise SSHError(
                f"{target}: the server started no key exchange in {rekeyWait:g} s "
                f"({channel.received >> 20} MiB read)"
            )
    elif mode != "initiate":
        raise ValueError(mode)
    kexAt = time.monotonic()
    client.answerGlobalRequests = False  # no more messages from us
    outcome.bytesBeforeStall = channel.received
    client.sendKexInit()
    holder = During(during)
    outcome.stoppedEarly = _hold(client, holder, seconds, stop, read, duringTimeout)
    outcome.bytesAfterKexInit = channel.received - outcome.bytesBeforeStall
    outcome.serverKexInit = client.serverKexInits > initial
    if client.closedAt is not None:
        outcome.closedAfter = client.closedAt - kexAt
    _finish(outcome, client, holder, started)
    return outcome


# -- B: a huge window, never read


@dataclass
class NeverReadOutcome(Outcome):
    bytesBeforeStall: int = 0


def neverRead(
    target: Target,
    seconds: float = 10.0,
    command: str = "cat /dev/zero",
    window: int = MAX_WINDOW,
    warmBytes: int = MiB,
    rcvbuf: int = 64 * 1024,
    stop: threading.Event | None = None,
    during: Callable[[], Any] | None = None,
    duringTimeout: float = 60.0,
) -> NeverReadOutcome:
    """
    Attack B. Grant a C{window} window (4 GiB by default), run C{command},
    read C{warmBytes} of its output to see it flow, then never call C{recv}
    again for C{seconds}. The socket's receive buffer is C{rcvbuf}, so the
    kernel holds little of what the server sends.
    """
    started = time.monotonic()
    outcome = NeverReadOutcome(str(target))
    client = HostileClient.login(target, rcvbuf=rcvbuf)
    channel = client.openChannel(window=window, maxPacket=32768)
    if not channel.confirmed:
        client.close()
        raise SSHError(f"{target}: session refused: {channel.failure}")
    client.exec(channel, command)
    _warmUp(client, channel, warmBytes, 15)
    outcome.bytesBeforeStall = channel.received
    holder = During(during)
    outcome.stoppedEarly = _hold(None, holder, seconds, stop, False, duringTimeout)
    _finish(outcome, client, holder, started)
    return outcome


# -- C: a maximum packet of one byte


@dataclass
class TinyPacketsOutcome(Outcome):
    refused: bool = False
    failure: tuple[int, str] | None = None  # the open's failure code and text
    bytes: int = 0
    messages: int = 0
    largest: int = 0  # the largest data message, to see the server kept to the maximum
    transferSeconds: float = 0.0


def tinyPackets(
    target: Target,
    seconds: float = 10.0,
    maxPacket: int = 1,
    command: str = "head -c 1M /dev/zero",
    window: int = MAX_WINDOW,
    stop: threading.Event | None = None,
    during: Callable[[], Any] | None = None,
    duringTimeout: float = 60.0,
) -> TinyPacketsOutcome:
    """
    Attack C. Open a session announcing a maximum packet of C{maxPacket}
    bytes. If the server accepts it, run C{command} and read its output for
    up to C{seconds} (and while C{during} runs), counting the messages; if it
    refuses, hold the connection that long.
    """
    started = time.monotonic()
    outcome = TinyPacketsOutcome(str(target))
    client = HostileClient.login(target)
    channel = client.openChannel(window=window, maxPacket=maxPacket)
    holder = During(None)
    if channel.failure is not None:
        # Refused: hold the connection (nothing else to do on it) while C{during} runs.
        outcome.refused = True
        outcome.failure = channel.failure
        holder = During(during)
        outcome.stoppedEarly = _hold(client, holder, seconds, stop, True, duringTimeout)
    else:
        client.exec(channel, command)
        t0 = time.monotonic()
        holder = During(during)
        deadline = t0 + max(seconds, 0)
        while not client.closed and not channel.closed:
            if stop is not None and stop.is_set():
                outcome.stoppedEarly = True
                break
            now = time.monotonic()
            if now >= deadline and (holder.done() or now - t0 >= duringTimeout):
                break
            client.pump(0.2, until=lambda: channel.closed, stop=stop)
        outcome.transferSeconds = time.monotonic() - t0
        outcome.bytes = channel.received
        outcome.messages = channel.messages
        outcome.largest = channel.largest
    _finish(outcome, client, holder, started)
    return outcome


# -- D: authentication after authentication


@dataclass
class AuthAgainOutcome(Outcome):
    loginSuccesses: int = 0  # USERAUTH_SUCCESS answers to the first, pipelined, requests
    firstForwardPort: int | None = None
    secretRequestReplies: list[int] = field(default_factory=list)
    serviceAccepted: bool = False
    serviceReplies: list[int] = field(default_factory=list)
    secondSuccess: bool = False
    authReplies: list[int] = field(default_factory=list)
    laterForwardPort: int | None = None


def _forward(client: HostileClient) -> int | None:
    """A remote forwarding of 127.0.0.1:0; the port the server bound, if it did."""
    try:
        num, body = client.globalRequest("tcpip-forward", string("127.0.0.1") + u32(0))
    except (SSHError, OSError):
        return None
    if num != MSG_REQUEST_SUCCESS or len(body) < 4:
        return None
    return int(struct.unpack(">L", body[:4])[0])


def _collect(client: HostileClient, seconds: float) -> list[int]:
    start = len(client.received)
    client.pump(seconds)
    return client.received[start:]


def authAgain(
    target: Target,
    secret: str,
    seconds: float = 2.0,
    forward: bool = True,
    ahead: int = 2,
    stop: threading.Event | None = None,
    during: Callable[[], Any] | None = None,
    duringTimeout: float = 60.0,
) -> AuthAgainOutcome:
    """
    Attack D. Log in with C{1 + ahead} identical USERAUTH_REQUESTs sent back
    to back (the ones after the first arrive before its answer), and count
    the successes. Then (with C{forward}) a remote forwarding, i.e. a
    listener on the server; a USERAUTH_REQUEST with the password C{secret};
    SERVICE_REQUEST ssh-userauth and a USERAUTH_REQUEST with the target's own
    credentials; another remote forwarding. Each step's replies are collected
    for about a second. The connection is held for C{seconds} more (and while
    C{during} runs), then closed, so the caller can see what outlives it.
    """
    started = time.monotonic()
    outcome = AuthAgainOutcome(str(target))
    client = HostileClient(target)
    try:
        client.handshake()
        client.sendMessage(MSG_SERVICE_REQUEST, string("ssh-userauth"))
        client.expect({MSG_SERVICE_ACCEPT}, client.timeout)
        client.recordReceived = True
        method = "password" if target.password is not None else "publickey"
        request = client.authRequest(method)
        for _ in range(1 + ahead):
            client.sendMessage(MSG_USERAUTH_REQUEST, request)
        client.pump(client.timeout, until=lambda: MSG_USERAUTH_SUCCESS in client.received)
        client.pump(1.0)
    except BaseException:
        client.close()
        raise
    outcome.loginSuccesses = client.received.count(MSG_USERAUTH_SUCCESS)
    if not outcome.loginSuccesses:
        client.close()
        raise AuthFailed(f"{target}: {method} refused ({client.received})")
    if forward:
        outcome.firstForwardPort = _forward(client)
    body = (
        string(target.user) + string("ssh-connection") + string("password") + b"\0" + string(secret)
    )
    client.sendMessage(MSG_USERAUTH_REQUEST, body)
    outcome.secretRequestReplies = _collect(client, 1.0)
    if not client.closed:
        client.sendMessage(MSG_SERVICE_REQUEST, string("ssh-userauth"))
        outcome.serviceReplies = _collect(client, 1.0)
        outcome.serviceAccepted = MSG_SERVICE_ACCEPT in outcome.serviceReplies
    if not client.closed:
        client.sendMessage(MSG_USERAUTH_REQUEST, request)
        outcome.authReplies = _collect(client, 1.5)
        outcome.secondSuccess = MSG_USERAUTH_SUCCESS in outcome.authReplies
    if forward and not client.closed:
        outcome.laterForwardPort = _forward(client)
    holder = During(during)
    outcome.stoppedEarly = _hold(client, holder, seconds, stop, True, duringTimeout)
    _finish(outcome, client, holder, started)
    return outcome


# -- E: thousands of channel opens


@dataclass
class ManyChannelsOutcome(Outcome):
    asked: int = 0
    confirmed: int = 0
    refused: int = 0
    unanswered: int = 0
    failureCodes: Counter[int] = field(default_factory=Counter)
    firstFailure: str | None = None
    execStarted: int = 0  # exec requests that succeeded (with C{command})


def manyChannels(
    target: Target,
    count: int = 10_000,
    command: str | None = None,
    seconds: float = 2.0,
    batch: int = 200,
    window: int = 64 * 1024,
    answerTimeout: float = 30.0,
    stop: threading.Event | None = None,
    during: Callable[[], Any] | None = None,
    duringTimeout: float = 60.0,
) -> ManyChannelsOutcome:
    """
    Attack E. Open C{count} session channels on one connection, C{batch} at a
    time without waiting for each answer, and count confirmations and refusals.
    With C{command}, exec it on every confirmed channel. Everything stays open
    for C{seconds} (and while C{during} runs), then the connection is closed.
    """
    started = time.monotonic()
    outcome = ManyChannelsOutcome(str(target), asked=count)
    client = HostileClient.login(target)
    channels: list[Channel] = []
    deadline = time.monotonic() + answerTimeout
    base = client.openAnswers

    def pending() -> int:
        return len(channels) - (client.openAnswers - base)

    for first in range(0, count, batch):
        if client.closed or time.monotonic() > deadline or (stop is not None and stop.is_set()):
            break
        for _ in range(min(batch, count - first)):
            channels.append(client.openChannel(window=window, wait=False))
        # At most one batch unanswered before the next, so neither side's
        # socket buffer fills while the other waits.
        client.pump(
            max(0.0, deadline - time.monotonic()), until=lambda: pending() <= batch, stop=stop
        )
    client.pump(max(0.0, deadline - time.monotonic()), until=lambda: pending() == 0, stop=stop)
    if command is not None:
        for channel in channels:
            if channel.confirmed and not client.closed:
                if client.exec(channel, command):
                    outcome.execStarted += 1
    outcome.confirmed = sum(1 for c in channels if c.confirmed)
    failures = [c.failure for c in channels if c.failure is not None]
    outcome.refused = len(failures)
    outcome.unanswered = len(channels) - outcome.confirmed - outcome.refused
    outcome.failureCodes = Counter(code for code, _ in failures)
    if failures:
        outcome.firstFailure = f"{failures[0][0]}: {failures[0][1]}"
    holder = During(during)
    outcome.stoppedEarly = _hold(client, holder, seconds, stop, True, duringTimeout)
    _finish(outcome, client, holder, started)
    return outcome


# -- F: orphans


def newMarker() -> str:
    """A sleep duration no one else uses, to find the processes an attack started."""
    return f"{900 + secrets.randbelow(99)}.{secrets.randbelow(10**6):06d}"


def processesWith(marker: str) -> list[int]:
    """PIDs whose command line contains C{marker}."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def killProcesses(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@dataclass
class OrphansOutcome(Outcome):
    marker: str = ""
    rounds: int = 0
    started: int = 0  # exec requests the server said yes to
    survivors: list[int] = field(default_factory=list)  # after the grace period
    firstError: str | None = None


ORPHAN_MODES = ("close-after-reply", "drop-after-reply", "close-at-once", "drop-at-once")


def _closeAndWait(client: HostileClient, channel: Channel, seconds: float) -> None:
    client.closeChannel(channel)
    client.pump(seconds, until=lambda: channel.closed)


# How long no marked process may be seen before the orphans attack counts.
ORPHAN_QUIET = 4.0


def orphans(
    target: Target,
    rounds: int = 20,
    grace: float = 5.0,
    marker: str | None = None,
    cleanup: bool = True,
    stop: threading.Event | None = None,
    during: Callable[[], Any] | None = None,
    duringTimeout: float = 60.0,
) -> OrphansOutcome:
    """
    Attack F. C{rounds} times: log in, exec C{sleep MARKER; true} (a shell
    with a child, so killing only the shell leaves the sleep), then at once
    close the channel or drop the connection, with or without waiting for the
    exec's reply (the four L{ORPHAN_MODES} in turn). Then wait up to C{grace}
    seconds for the processes with the marker to go; those left are the
    survivors. With C{cleanup} they are killed afterwards (by PID). C{during}
    starts with the first round.
    """
    started = time.monotonic()
    marker = marker or newMarker()
    outcome = OrphansOutcome(str(target), marker=marker)
    command = f"sleep {marker}; true"
    holder = During(during)
    for i in range(rounds):
        if stop is not None and stop.is_set():
            outcome.stoppedEarly = True
            break
        mode = ORPHAN_MODES[i % len(ORPHAN_MODES)]
        try:
            client = HostileClient.login(target)
        except (SSHError, OSError) as e:
            outcome.firstError = outcome.firstError or f"login: {e}"
            continue
        try:
            channel = client.openChannel()
            if channel.confirmed:
                atOnce = mode.endswith("at-once")
                ok = client.exec(channel, command, wantReply=not atOnce)
                if ok:
                    outcome.started += 1
                if mode.startswith("close"):
                    _closeAndWait(client, channel, 1.0)
            elif outcome.firstError is None:
                outcome.firstError = f"session refused: {channel.failure}"
        except (SSHError, OSError) as e:
            outcome.firstError = outcome.firstError or f"round {i}: {e}"
        finally:
            client.close()
        outcome.rounds += 1
    # None seen for ORPHAN_QUIET seconds, or C{grace} over. Not "none seen
    # once": a daemon short of CPU may still be starting the last sessions'
    # programs (each hung up at once, killed 2 s later) after the rounds end.
    end = time.monotonic() + grace
    quietSince: float | None = None
    while time.monotonic() < end:
        now = time.monotonic()
        if processesWith(marker):
            quietSince = None
        elif quietSince is None:
            quietSince = now
        elif now - quietSince >= ORPHAN_QUIET:
            break
        time.sleep(0.1)
    holder.join(duringTimeout)
    outcome.survivors = processesWith(marker)
    if cleanup:
        killProcesses(outcome.survivors)
    _finish(outcome, None, holder, started)
    return outcome


# -- watching the servers


def rssKiB(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def peakRssKiB(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def cpuSeconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fdCount(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socketCount(port: int, state: str = "01") -> int:
    """
    Sockets on 127.0.0.1 whose local port is C{port}, in C{state}
    (01 established, 0A listening), from /proc/net/tcp.
    """
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, st = parts[1], parts[3]
        if int(local.split(":")[1], 16) == port and st == state:
            count += 1
    return count


def listening(port: int) -> bool:
    return socketCount(port, "0A") > 0


def _resetPeak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


@dataclass
class Usage:
    """One process over one attack."""

    baseKiB: int
    peakKiB: int
    endKiB: int
    cpu: float
    baseFds: int
    peakFds: int
    endFds: int

    @property
    def growthKiB(self) -> int:
        return self.peakKiB - self.baseKiB

    @property
    def growthMiB(self) -> float:
        return self.growthKiB / 1024


class ProcessWatch:
    """
    Samples the resident memory and descriptors of some processes every
    C{interval} seconds in a thread, from entering to leaving the C{with}
    block; the peak also comes from VmHWM (reset on entry), so a short spike
    between samples counts. Once one grows past C{limitKiB}, C{exceeded} is
    set: pass it to an attack as C{stop} to spare the machine.
    """

    def __init__(
        self, pids: dict[str, int], interval: float = 0.05, limitKiB: int | None = None
    ) -> None:
        self.pids = pids
        self.interval = interval
        self.limitKiB = limitKiB
        self.exceeded = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[str, tuple[int, float, int]] = {}
        self._peak: dict[str, tuple[int, int]] = {}
        self.usage: dict[str, Usage] = {}

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            for name, pid in self.pids.items():
                try:
                    rss, fds = rssKiB(pid), fdCount(pid)
                except (OSError, RuntimeError):
                    continue
                peak, peakFds = self._peak[name]
                self._peak[name] = (max(peak, rss), max(peakFds, fds))
                if self.limitKiB is not None and rss - self._base[name][0] > self.limitKiB:
                    self.exceeded.set()

    def __enter__(self) -> ProcessWatch:
        for name, pid in self.pids.items():
            _resetPeak(pid)
            rss, fds = rssKiB(pid), fdCount(pid)
            self._base[name] = (rss, cpuSeconds(pid), fds)
            self._peak[name] = (rss, fds)
        self._thread = threading.Thread(target=self._sample, name="process-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)
        for name, pid in self.pids.items():
            base, cpu, baseFds = self._base[name]
            peak, peakFds = self._peak[name]
            try:
                end, endFds = rssKiB(pid), fdCount(pid)
                peak = max(peak, end, peakRssKiB(pid))
                cpu = cpuSeconds(pid) - cpu
            except (OSError, RuntimeError):
                end, endFds, cpu = peak, peakFds, 0.0
            self.usage[name] = Usage(base, peak, end, cpu, baseFds, max(peakFds, endFds), endFds)


def waitFor(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll C{condition} until it holds or C{timeout} passes; its last value."""
    end = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def settledFds(pid: int, baseline: int, timeout: float = 5.0) -> int:
    """The process's descriptor count once it is back to C{baseline} (or after C{timeout})."""
    waitFor(lambda: fdCount(pid) <= baseline, timeout)
    return fdCount(pid)


# -- servers to attack


@dataclass
class Servers:
    """A diego-sshd and a diego-ssh-proxy routing C{diego:app/0} to it, as subprocesses."""

    daemon: Any  # tests.support.daemon.Daemon
    proxy: Any  # tests.support.proxy.Proxy
    guid: str = "app"
    kexTimeout: float | None = None  # the key-exchange limit asked for, if any
    kexTimeoutHow: str = ""  # how it was set: command-line options or a patched attribute

    def daemonTarget(self) -> Target:
        return Target(self.daemon.port, "vcap", identity=self.daemon.identity, name="diego-sshd")

    def proxyTarget(self) -> Target:
        from tests.support.proxy import CREDENTIALS

        return Target(
            self.proxy.port, f"diego:{self.guid}/0", password=CREDENTIALS, name="ssh-proxy"
        )

    def target(self, which: str) -> Target:
        """C{"daemon"} or C{"proxy"}."""
        return self.daemonTarget() if which == "daemon" else self.proxyTarget()

    def pids(self) -> dict[str, int]:
        return {"proxy": self.proxy.proc.pid, "daemon": self.daemon.proc.pid}

    def stop(self) -> None:
        for server in (self.proxy, self.daemon):
            try:
                server.stop()
            except Exception as e:  # keep stopping the other
                print(f"stopping {server}: {e}")


# Any option named like --kexTimeout or --keyExchangeTimeout.
_KEX_TIMEOUT_OPTION = re.compile(r"--([a-z_]*(?:kex|keyexchange)[a-z_]*timeout[a-z_]*)=", re.I)


@functools.cache
def kexTimeoutOption(plugin: str, pythonPath: str = "") -> str | None:
    """
    The name of C{twistd PLUGIN}'s option for the key-exchange time limit, if
    it has one (C{--kexTimeout}, C{--keyExchangeTimeout} or the like).
    """
    from tests.support.daemon import TWISTD

    out = subprocess.run(
        [TWISTD, plugin, "--help"], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    match = _KEX_TIMEOUT_OPTION.search(out)
    return match.group(1) if match else None


_LAUNCHER = """#!{python}
# twistd with diegossh's transports patched: {settings!r} (written by
# tests/support/attacks.py, for settings the servers have no option for).
import sys

from diegossh.ssh import transport

classes = (transport.TransportMixin, transport.SSHServerTransport, transport.SSHClientTransport)
for name, value in {settings!r}.items():
    for cls in classes:
        setattr(cls, name, value)
    constant = {{"kexTimeout": "KEX_TIMEOUT", "rekeyBytes": "REKEY_BYTES"}}.get(name)
    if constant:
        setattr(transport, constant, value)

from twisted.scripts.twistd import run

sys.argv[0] = "twistd"
run()
"""


@contextlib.contextmanager
def _twistdReplacedBy(launcher: Path) -> Iterator[None]:
    import tests.support.daemon as daemonSupport
    import tests.support.proxy as proxySupport

    # Both modules read their TWISTD global when they start a server.
    modules = (vars(daemonSupport), vars(proxySupport))
    saved = [m["TWISTD"] for m in modules]
    for m in modules:
        m["TWISTD"] = str(launcher)
    try:
        yield
    finally:
        for m, value in zip(modules, saved, strict=True):
            m["TWISTD"] = value


def startServers(
    tmp: Path,
    daemonArgs: tuple[str, ...] = (),
    proxyArgs: tuple[str, ...] = (),
    kexTimeout: float | None = None,
    rekeyBytes: int | None = None,
) -> Servers:
    """
    A fresh pair in C{tmp}: diego-sshd (key login with C{tests.support.keys}'
    ed25519 key, a fixed host key) and the proxy with one route to it.

    C{kexTimeout}: the servers' key-exchange time limit, through their
    command-line option when both have one (L{kexTimeoutOption}), otherwise
    by starting twistd from a launcher that sets the transports' C{kexTimeout}
    (and C{diegossh.ssh.transport.KEX_TIMEOUT}). C{rekeyBytes}: how much
    traffic makes a server start a re-key of its own (1 GiB by default), by
    the same launcher.
    """
    from tests.support.daemon import startDaemon
    from tests.support.keys import key
    from tests.support.proxy import fingerprintOf, lrp, startProxy

    hostKey = tmp / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    # The daemon's environment is scrubbed; keep PYTHONPATH, so both servers can
    # run another checkout's code (e.g. the last commit, to measure before a fix).
    pythonPath = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": pythonPath} if pythonPath else None
    patched: dict[str, float] = {}
    how: list[str] = []
    if kexTimeout is not None:
        daemonOption = kexTimeoutOption("diego-sshd", pythonPath)
        proxyOption = kexTimeoutOption("diego-ssh-proxy", pythonPath)
        if daemonOption and proxyOption:
            daemonArgs = (*daemonArgs, f"--{daemonOption}={kexTimeout:g}")
            proxyArgs = (*proxyArgs, f"--{proxyOption}={kexTimeout:g}")
            how.append(f"options --{daemonOption} and --{proxyOption}")
        else:
            patched["kexTimeout"] = float(kexTimeout)
            how.append("TransportMixin.kexTimeout patched (no option found)")
    if rekeyBytes is not None:
        patched["rekeyBytes"] = rekeyBytes
        how.append(f"TransportMixin.rekeyBytes patched to {rekeyBytes}")
    launch: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if patched:
        launcher = tmp / "twistd-patched"
        launcher.write_text(_LAUNCHER.format(python=sys.executable, settings=patched))
        launcher.chmod(0o755)
        launch = _twistdReplacedBy(launcher)
    with launch:
        daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}", *daemonArgs), env=env)
        route = {
            "container_port": 2222,
            "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
            "user": "vcap",
            "private_key": key("ed25519").toString("openssh").decode(),
        }
        try:
            proxy = startProxy(tmp, [lrp("app", "127.0.0.1", daemon.port, route)], proxyArgs)
        except Exception:
            daemon.stop()
            raise
    return Servers(daemon, proxy, kexTimeout=kexTimeout, kexTimeoutHow="; ".join(how))

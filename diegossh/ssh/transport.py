# -*- test-case-name: tests.test_transport_unit,tests.test_transport_bounds,tests.test_prelogin -*-
"""
diegossh's SSH transport: Conch's key exchange and service plumbing, with our
own packet layer underneath.

What this adds to L{twisted.conch.ssh.transport}:
  - AES-GCM, chacha20-poly1305 and encrypt-then-MAC (L{diegossh.ssh.packets});
  - strict key exchange (C{kex-strict-*-v00@openssh.com}, the Terrapin fix);
  - each direction switches keys at its own NEWKEYS, as RFC 4253 says, so a
    peer's packets sent right after its NEWKEYS are never read with old keys;
  - rekeying started by us after L{REKEY_BYTES} or L{REKEY_SECONDS};
  - a receive buffer that does not grow quadratically, and hostile input
    (garbage version lines, absurd lengths, bad padding, bad MACs, malformed
    messages) ending the connection with a reason and no traceback;
  - bounded memory whatever the peer does: messages held back by a key
    exchange are counted, and past L{KEX_QUEUE_LIMIT} the transport's feeders
    are told to stop (L{diegossh.ssh.backpressure}), as they are while the
    socket's write buffer is full; past L{KEX_QUEUE_HARD_LIMIT}, or when a key
    exchange takes longer than L{KEX_TIMEOUT}, the connection ends with a
    reason. A peer that sends anything but key exchange messages between its
    KEXINIT and its NEWKEYS (RFC 4253 section 7.1) is disconnected;
  - one service request per connection (a second could restart user
    authentication, with fresh attempts and a second login);
  - no log line carrying a peer's raw message payload.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh import transport as conch
from twisted.conch.ssh.common import NS, getNS
from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python import randbytes

from diegossh.ssh import _conch, kex
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.backpressure import (
    KEY_EXCHANGE,
    SOCKET_FULL,
    ReadGate,
    SocketWatch,
    WritePressure,
)
from diegossh.ssh.logthrottle import ConnectionLogger
from diegossh.ssh.metrics import NO_METRICS
from diegossh.ssh.packets import (
    AEAD_CIPHERS,
    Opener,
    PacketError,
    PlainOpener,
    PlainSealer,
    Sealer,
    makeOpener,
    makeSealer,
)

kex.install()

REKEY_BYTES = 1 << 30
SOCKET_IO_SIZE = 256 * 1024
REKEY_SECONDS = 3600.0
# Bytes of messages held back by a key exchange before the transport's feeders
# are told to stop: the same as one socket write buffer.
KEX_QUEUE_LIMIT = SOCKET_IO_SIZE
# Past this the connection ends: feeders were told to stop at the limit above,
# so only a peer that keeps sending (other than key exchange messages) while
# the other leg of a relay stalls its own exchange gets here.
KEX_QUEUE_HARD_LIMIT = 16 * KEX_QUEUE_LIMIT
# A key exchange (the first or a later one) must finish within this long.
KEX_TIMEOUT = 60.0
# From accept to a successful login, whatever the client sends (OpenSSH's
# LoginGraceTime); 0 turns it off.
LOGIN_GRACE_TIME = 120.0
# Bytes written while the socket's buffer is already full (feeders have
# stopped; what still comes is answers to the peer's own requests) before we
# stop reading the peer: a peer that sends requests and never reads the
# answers cannot grow our buffer without limit.
SOCKET_BACKLOG_LIMIT = 4 * SOCKET_IO_SIZE
_SOCKET_BACKLOG = "peer not reading"
_MASK32 = 0xFFFFFFFF
_MAX_VERSION_LINE = 255
_MAX_PRE_VERSION = 8192

STRICT_CLIENT = b"kex-strict-c-v00@openssh.com"
STRICT_SERVER = b"kex-strict-s-v00@openssh.com"

# Parsing errors a hostile peer can provoke in Conch's message handlers.
# (TypeError: Conch's ord(rest[0:1]) on a message cut before a boolean.)
_MALFORMED = (struct.error, IndexError, ValueError, KeyError, UnicodeDecodeError, TypeError)

# User-key signature algorithms Conch's userauth verifies; the server's
# server-sig-algs must list these, not its host key types.
_USER_KEY_SIG_ALGS = b",".join(
    [
        b"ssh-ed25519",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
        b"rsa-sha2-512",
        b"rsa-sha2-256",
    ]
)


class NegotiatedAlgorithms:
    """
    The ciphers and MACs one key exchange agreed on, and, once keys exist, the
    sealer and opener built from them. Stands where Conch expects its
    C{SSHCiphers} (C{nextEncryptions} / C{currentEncryptions}).
    """

    def __init__(self, outCip: bytes, inCip: bytes, outMac: bytes, inMac: bytes) -> None:
        self.outCipType = outCip
        self.inCipType = inCip
        self.outMACType = outMac
        self.inMACType = inMac
        self.sealer: Sealer | None = None
        self.opener: Opener | None = None
        self.encBlockSize = 0

    @classmethod
    def plain(cls) -> NegotiatedAlgorithms:
        plain = cls(b"none", b"none", b"none", b"none")
        plain.sealer = PlainSealer()
        plain.opener = PlainOpener()
        plain.encBlockSize = 8
        return plain

    def setKeys(
        self,
        outIV: bytes,
        outKey: bytes,
        inIV: bytes,
        inKey: bytes,
        outInteg: bytes,
        inInteg: bytes,
    ) -> None:
        self.sealer = makeSealer(
            self.outCipType.decode(), self.outMACType.decode(), outKey, outIV, outInteg
        )
        self.opener = makeOpener(
            self.inCipType.decode(), self.inMACType.decode(), inKey, inIV, inInteg
        )
        self.encBlockSize = 16

    def describe(self) -> str:
        def one(cipher: bytes, mac: bytes) -> str:
            if cipher.decode() in AEAD_CIPHERS:
                return cipher.decode()
            return f"{cipher.decode()}+{mac.decode()}"

        out = one(self.outCipType, self.outMACType)
        return f"out {out}, in {one(self.inCipType, self.inMACType)}"


@_conch.routeConchLog
class TransportMixin(_conch.TransportInternals):
    """
    The parts shared by our server and client transports. Mixed in before Conch's
    L{conch.SSHServerTransport} / L{conch.SSHClientTransport}; Conch's private
    key-exchange state is reached through L{_conch.TransportInternals}.
    """

    # Bounded text; before login, throttled per source (diegossh.ssh.logthrottle).
    log = ConnectionLogger()

    policy: AlgorithmPolicy = AlgorithmPolicy.fromOptions()
    clock: IReactorTime | None = None
    rekeyBytes = REKEY_BYTES
    rekeySeconds = REKEY_SECONDS
    kexTimeout = KEX_TIMEOUT
    loginGraceTime = LOGIN_GRACE_TIME
    kexQueueLimit = KEX_QUEUE_LIMIT
    kexQueueHardLimit = KEX_QUEUE_HARD_LIMIT
    supportedCompressions = [b"none"]
    # An ISSHMetrics; a server's factory sets its own (diegossh.ssh.factory).
    metrics: Any = NO_METRICS
    _counted = False

    # Conch attributes we rely on (set by Conch or by us).
    isClient: bool
    transport: Any
    gotVersion: bool
    otherVersionString: bytes
    ourVersionString: bytes
    outgoingPacketSequence: int
    incomingPacketSequence: int
    supportedCiphers: list[bytes]
    supportedMACs: list[bytes]
    supportedKeyExchanges: list[bytes]
    supportedPublicKeys: list[bytes]
    nextEncryptions: Any
    currentEncryptions: Any

    def _setUpAlgorithms(self) -> None:
        policy = self.policy
        self.supportedCiphers = [c.encode() for c in policy.ciphers]
        self.supportedMACs = [m.encode() for m in policy.macs]
        kexes = policy.clientKeyExchanges() if self.isClient else policy.keyExchanges
        self.supportedKeyExchanges = [k.encode() for k in kexes]
        if self.isClient:
            accepted = policy.clientHostKeyAlgorithms()
        else:
            # Conch's factory filled this with every signature algorithm our
            # host keys can make (an RSA key: rsa-sha2-512, rsa-sha2-256 and
            # ssh-rsa); offer those the policy allows.
            signable = (a.decode("ascii") for a in self.supportedPublicKeys)
            accepted = policy.serverHostKeyAlgorithms(signable)
        self.supportedPublicKeys = [a.encode() for a in accepted]

    # -- connection life

    def connectionMade(self) -> None:
        _widenSocketIO(self.transport)
        self._inbuf = bytearray()
        self._sealer: Sealer = PlainSealer()
        self._opener: Opener = PlainOpener()
        self._closing = False
        self._parsing = False
        self._strict = False
        self._firstKexDone = False
        self._packetsReceived = 0
        self._peerKexInitThisRound = False
        self._sentNewKeys = False
        self._receivedNewKeys = False
        self._pendingNewKeys = False
        self._bytesSinceKex = 0
        self._rekeyTimer: IDelayedCall | None = None
        self._kexTimer: IDelayedCall | None = None
        self._graceTimer: IDelayedCall | None = None
        self.loggedIn = False
        self._admission: Any = None
        self._kexQueued = 0
        self._serviceRequested = False
        self.clearEarlyNewKeys()
        self.writePressure = WritePressure()
        self.readGate = ReadGate(self.transport)
        self._writtenWhileFull = 0
        self.writePressure.listen(self._socketState)
        self.transport.registerProducer(SocketWatch(self.writePressure), True)
        if not self.isClient:
            self._startGrace()
            self._counted = True
            self.metrics.connectionOpened()
        self.outgoingPacketSequence = 0
        self.incomingPacketSequence = 0
        self._setUpAlgorithms()
        self.currentEncryptions = NegotiatedAlgorithms.plain()
        self.transport.write(self.ourVersionString + b"\r\n")
        self.sendKexInit()

    def connectionLost(self, reason: Any = None) -> None:
        self._closing = True
        for timer in (self._rekeyTimer, self._kexTimer, self._graceTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._rekeyTimer = self._kexTimer = self._graceTimer = None
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.closed(self)
        if self._counted:
            self._counted = False
            self.metrics.connectionClosed()
        self.heldForKeyExchange = None
        self._kexQueued = 0
        super().connectionLost(reason)  # type: ignore[misc]
        self.writePressure.clear()

    def _clock(self) -> IReactorTime:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        assert self.clock is not None
        return self.clock

    # -- version exchange

    def _readVersion(self) -> bool:
        """
        Consume the peer's identification line. A client may see banner lines
        first (RFC 4253 section 4.2); a server insists on C{SSH-} at once.
        """
        buf = self._inbuf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                limit = _MAX_PRE_VERSION if self.isClient else _MAX_VERSION_LINE
                if len(buf) > limit:
                    self._refuseVersion(b"identification line too long")
                return False
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            if line.startswith(b"SSH-"):
                break
            if not self.isClient:
                self._refuseVersion(b"Invalid SSH identification string.")
                return False
        parts = line.split(b"-", 2)
        if len(line) > _MAX_VERSION_LINE or len(parts) < 3:
            self._refuseVersion(b"Invalid SSH identification string.")
            return False
        if parts[1] not in (b"2.0", b"1.99"):
            self._refuseVersion(b"Protocol major versions differ.")
            return False
        self.otherVersionString = line
        self.gotVersion = True
        return True

    def _refuseVersion(self, message: bytes) -> None:
        self.penalise("protocol")
        self.log.info(
            "closing {peer}: {message}", peer=_peerOf(self.transport), message=message.decode()
        )
        self._closing = True
        self.transport.write(message + b"\r\n")
        self.transport.loseConnection()

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._inbuf += data
        if not self.gotVersion and not self._readVersion():
            return
        self._parse()

    def _parse(self) -> None:
        if self._parsing:
            return
        self._parsing = True
        try:
            self._parseLoop()
        finally:
            self._parsing = False

    def _parseLoop(self) -> None:
        buf = self._inbuf
        while not self._closing and not self._pendingNewKeys:
            seq = self.incomingPacketSequence
            opener = self._opener
            try:
                need = opener.need(seq, buf)
                if need is None or len(buf) < need:
                    break
                with memoryview(buf) as view, view[:need] as packet:
                    payload = opener.open(seq, packet)
            except PacketError as e:
                self._packetError(e)
                return
            del buf[:need]
            if not payload:
                self.sendDisconnect(conch.DISCONNECT_PROTOCOL_ERROR, b"empty packet")
                return
            self.incomingPacketSequence = (seq + 1) & _MASK32
            self._packetsReceived += 1
            self._bytesSinceKex += need
            messageNum = payload[0]
            if not self._firstKexDone and not self._initialKexAllows(messageNum, seq):
                return
            if 30 <= messageNum <= 49 and not self._peerKexInitThisRound:
                self.sendDisconnect(
                    conch.DISCONNECT_PROTOCOL_ERROR,
                    b"key exchange message %d outside key exchange" % messageNum,
                )
                return
            if messageNum == conch.MSG_NEWKEYS:
                self._receiveNewKeys(payload[1:])
                continue
            if (
                self._peerKexInitThisRound
                and not self._receivedNewKeys
                and not _allowedDuringKex(messageNum)
            ):
                self.sendDisconnect(
                    conch.DISCONNECT_PROTOCOL_ERROR,
                    b"message %d during key exchange" % messageNum,
                )
                return
            self._dispatchSafely(messageNum, payload[1:])
        self._maybeRekey()

    def _packetError(self, error: PacketError) -> None:
        code = conch.DISCONNECT_MAC_ERROR if error.mac else conch.DISCONNECT_PROTOCOL_ERROR
        self.sendDisconnect(code, error.reason.encode())

    def _initialKexAllows(self, messageNum: int, seq: int) -> bool:
        """
        Until the first NEWKEYS only key exchange messages may arrive (and,
        without strict key exchange, IGNORE, UNIMPLEMENTED and DEBUG): a service
        request or anything later is refused before the connection is encrypted.
        Strict key exchange also forbids those three and a wrapping sequence number.
        """
        if messageNum == conch.MSG_DISCONNECT:
            return True
        if not self._strict:
            if messageNum in (conch.MSG_KEXINIT, conch.MSG_NEWKEYS) or 2 <= messageNum <= 4:
                return True
            if 30 <= messageNum <= 49:
                return True
            self.sendDisconnect(
                conch.DISCONNECT_PROTOCOL_ERROR,
                b"unexpected message %d before key exchange" % messageNum,
            )
            return False
        if seq == _MASK32:
            self.sendDisconnect(
                conch.DISCONNECT_PROTOCOL_ERROR, b"sequence number wrapped during key exchange"
            )
            return False
        if messageNum in (conch.MSG_KEXINIT, conch.MSG_NEWKEYS) or 30 <= messageNum <= 49:
            return True
        self.sendDisconnect(
            conch.DISCONNECT_PROTOCOL_ERROR,
            b"unexpected message %d during strict key exchange" % messageNum,
        )
        return False

    def dispatchMessage(self, messageNum: int, payload: bytes) -> None:
        """
        As Conch's, without logging the payload of a message nobody handles.
        """
        if messageNum < 50 and messageNum in conch.messages:
            handler = getattr(self, "ssh_" + conch.messages[messageNum][4:], None)
            if handler is not None:
                handler(payload)
                return
        elif messageNum >= 50 and self.service is not None:  # type: ignore[attr-defined]
            self.service.packetReceived(messageNum, payload)  # type: ignore[attr-defined]
            return
        self.log.debug("unimplemented message {num}", num=messageNum)
        self.sendUnimplemented()  # type: ignore[attr-defined]

    def _dispatchSafely(self, messageNum: int, payload: bytes) -> None:
        try:
            self.dispatchMessage(messageNum, payload)
        except _MALFORMED as e:
            self.log.info(
                "malformed message {num} from {peer}: {error}",
                num=messageNum,
                peer=_peerOf(self.transport),
                error=f"{type(e).__name__}: {e}",
            )
            reason = b"malformed message %d" % messageNum
            self.sendDisconnect(conch.DISCONNECT_PROTOCOL_ERROR, reason)
        except Exception:
            self.log.failure("error handling message {num}", num=messageNum)
            self.sendDisconnect(conch.DISCONNECT_BY_APPLICATION, b"internal error")

    # -- sending

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.sendMessage(messageType, payload, b"")

    def sendMessage(self, messageType: int, head: bytes, body: bytes | memoryview) -> None:
        """
        Send a message whose payload is C{head} then C{body}, joined only
        where the packet is built: channel data goes out with one copy of
        C{body} before encryption.
        """
        if self._closing and messageType != conch.MSG_DISCONNECT:
            return
        if self.keyExchangeState != _conch.KEY_EXCHANGE_NONE:
            if not self.sendableDuringKeyExchange(messageType):
                assert self.heldForKeyExchange is not None
                self._holdForKeyExchange(messageType, head + body if body else head)
                return
        seq = self.outgoingPacketSequence
        pieces = self._sealer.sealMessage(seq, messageType, head, body)
        self.outgoingPacketSequence = (seq + 1) & _MASK32
        size = 0
        for piece in pieces:
            size += len(piece)
        self._bytesSinceKex += size
        self.transport.writeSequence(pieces)
        if self._writtenWhileFull >= 0 and self.writePressure.holds(SOCKET_FULL):
            self._writtenWhileFull += size
            if self._writtenWhileFull > SOCKET_BACKLOG_LIMIT:
                self._writtenWhileFull = -1
                self.readGate.pause(_SOCKET_BACKLOG)
        if messageType == conch.MSG_NEWKEYS:
            self._sendNewKeysDone()
        elif messageType != conch.MSG_KEXINIT:
            # Not for KEXINIT: sendKexInit sends it before it marks the key
            # exchange as started, so checking here would start another.
            self._maybeRekey()

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        if self._closing:
            return
        if reason in (conch.DISCONNECT_PROTOCOL_ERROR, conch.DISCONNECT_MAC_ERROR):
            self.penalise("protocol")
        self.sendPacket(conch.MSG_DISCONNECT, struct.pack(">L", reason) + NS(desc) + NS(b""))
        self._closing = True
        self.log.info(
            "disconnecting {peer}: {description} (code {code})",
            peer=_peerOf(self.transport),
            code=reason,
            description=desc.decode("utf-8", "replace"),
        )
        self.transport.loseConnection()

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        """
        The peer's goodbye. Conch logs every one as an error ("Got remote
        error, code 11" for each ordinary logout); here an ordinary one
        (C{BY_APPLICATION}) is info, any other a warning, and the peer's
        description is bounded text.
        """
        level = "info" if reasonCode == conch.DISCONNECT_BY_APPLICATION else "warn"
        getattr(self.log, level)(
            "{peer} disconnected: {description} (code {code})",
            peer=_peerOf(self.transport),
            code=reasonCode,
            description=description,
        )

    # -- key exchange

    # -- before login (server side)

    def _startGrace(self) -> None:
        self._admission = getattr(getattr(self, "factory", None), "admission", None)
        if self._admission is not None:
            self._admission.opened(self)
        if self.loginGraceTime > 0:
            self._graceTimer = self._clock().callLater(self.loginGraceTime, self._graceExpired)

    def _graceExpired(self) -> None:
        self._graceTimer = None
        self.penalise("grace")
        self.sendDisconnect(
            conch.DISCONNECT_BY_APPLICATION,
            b"no login within %d seconds" % int(self.loginGraceTime),
        )

    def authenticated(self) -> None:
        """
        The user logged in: no grace time any more, and the connection no
        longer counts as unauthenticated.
        """
        if self.loggedIn:
            return
        self.loggedIn = True
        if self._graceTimer is not None and self._graceTimer.active():
            self._graceTimer.cancel()
        self._graceTimer = None
        if self._admission is not None:
            self._admission.authenticated(self)

    def penalise(self, reason: str) -> None:
        """
        Charge the connection's source for C{reason} (see
        L{diegossh.interfaces.IAdmission.penalise}); after login, nothing is.
        """
        if self._admission is not None and not self.loggedIn:
            self._admission.penalise(self, reason)

    def _socketState(self, reason: str, blocked: bool) -> None:
        if reason == SOCKET_FULL and not blocked:
            self._writtenWhileFull = 0
            self.readGate.resume(_SOCKET_BACKLOG)

    def _holdForKeyExchange(self, messageType: int, payload: bytes) -> None:
        """
        Queue a message until the key exchange ends, and tell the feeders to
        stop once the queue passes its bound.
        """
        held = self.heldForKeyExchange
        assert held is not None
        held.append((messageType, payload))
        self._kexQueued += len(payload)
        if self._kexQueued > self.kexQueueHardLimit:
            self.sendDisconnect(
                conch.DISCONNECT_BY_APPLICATION,
                b"too much data waiting for the key exchange to finish",
            )
        elif self._kexQueued > self.kexQueueLimit:
            self.writePressure.set(KEY_EXCHANGE, True)

    def _keyExchangeStarted(self) -> None:
        self.readGate.keyExchange(True)
        if self.kexTimeout > 0 and self._kexTimer is None:
            self._kexTimer = self._clock().callLater(self.kexTimeout, self._kexTimedOut)

    def _kexTimedOut(self) -> None:
        self._kexTimer = None
        self.sendDisconnect(
            conch.DISCONNECT_KEY_EXCHANGE_FAILED,
            b"key exchange not completed within %d seconds" % int(self.kexTimeout),
        )

    def ssh_DEBUG(self, packet: bytes) -> None:
        """
        A peer's debug message is parsed (a malformed one is a protocol
        error, as any other) and otherwise ignored: its text is the peer's and
        is not logged.
        """
        if len(packet) < 1:
            raise ValueError("empty DEBUG")
        getNS(packet[1:], 2)

    def ssh_SERVICE_REQUEST(self, packet: bytes) -> None:
        """
        One service per connection: a second request could restart user
        authentication (fresh attempts, a second login).
        """
        if self.isClient:
            self.sendUnimplemented()  # type: ignore[attr-defined]
            return
        if self._serviceRequested:
            self.sendDisconnect(conch.DISCONNECT_PROTOCOL_ERROR, b"service already requested")
            return
        self._serviceRequested = True
        super().ssh_SERVICE_REQUEST(packet)  # type: ignore[misc]

    def sendKexInit(self) -> None:
        if self.keyExchangeState != _conch.KEY_EXCHANGE_NONE:
            raise RuntimeError(f"KEXINIT while key exchange is {self.keyExchangeState}")
        kexes = list(self.supportedKeyExchanges)
        kexes.append(b"ext-info-c" if self.isClient else b"ext-info-s")
        if not self._firstKexDone:
            kexes.append(STRICT_CLIENT if self.isClient else STRICT_SERVER)
        publicKeys = b",".join(self.supportedPublicKeys)
        ciphers = b",".join(self.supportedCiphers)
        macs = b",".join(self.supportedMACs)
        compressions = b",".join(self.supportedCompressions)
        self.ourKexInitPayload = b"".join(
            [
                bytes((conch.MSG_KEXINIT,)),
                randbytes.secureRandom(16),
                NS(b",".join(kexes)),
                NS(publicKeys),
                NS(ciphers),
                NS(ciphers),
                NS(macs),
                NS(macs),
                NS(compressions),
                NS(compressions),
                NS(b""),
                NS(b""),
                b"\0\0\0\0\0",
            ]
        )
        self.sendPacket(conch.MSG_KEXINIT, self.ourKexInitPayload[1:])
        self.keyExchangeState = _conch.KEY_EXCHANGE_REQUESTED
        self.heldForKeyExchange = []
        self._kexQueued = 0
        self._keyExchangeStarted()

    def ssh_KEXINIT(self, packet: bytes) -> None:
        if self._peerKexInitThisRound:
            self.sendDisconnect(conch.DISCONNECT_PROTOCOL_ERROR, b"KEXINIT during key exchange")
            return
        self._peerKexInitThisRound = True
        if not self._firstKexDone:
            theirKexes = getNS(packet[16:])[0].split(b",")
            ours = STRICT_SERVER if self.isClient else STRICT_CLIENT
            if ours in theirKexes:
                self._strict = True
                if self._packetsReceived != 1:
                    self.sendDisconnect(
                        conch.DISCONNECT_PROTOCOL_ERROR,
                        b"strict key exchange: KEXINIT was not the first packet",
                    )
                    return
        super().ssh_KEXINIT(packet)  # type: ignore[misc]
        if self._closing:
            return
        stock = self.nextEncryptions
        self.nextEncryptions = NegotiatedAlgorithms(
            stock.outCipType, stock.inCipType, stock.outMACType, stock.inMACType
        )

    def _sendNewKeysDone(self) -> None:
        """
        Our NEWKEYS is out: everything we send from now on uses the new keys.
        """
        sealer = self.nextEncryptions.sealer
        assert sealer is not None, "NEWKEYS sent before keys were set"
        self._sealer = sealer
        if self._strict:
            self.outgoingPacketSequence = 0
        self._sentNewKeys = True
        self._finishKexIfDone()

    def _receiveNewKeys(self, payload: bytes) -> None:
        if payload or not self._peerKexInitThisRound or self._receivedNewKeys:
            self.sendDisconnect(conch.DISCONNECT_PROTOCOL_ERROR, b"unexpected NEWKEYS")
            return
        if self.nextEncryptions.opener is None:
            # We are still computing (or verifying) our side; packets behind this
            # one use keys we do not have yet, so stop reading until we do.
            self._pendingNewKeys = True
            return
        self._switchIncoming()

    def _switchIncoming(self) -> None:
        self._opener = self.nextEncryptions.opener
        if self._strict:
            self.incomingPacketSequence = 0
        self._receivedNewKeys = True
        self._finishKexIfDone()

    def keySetup(self, sharedSecret: bytes, exchangeHash: bytes) -> None:
        super().keySetup(sharedSecret, exchangeHash)
        if self._pendingNewKeys and not self._closing:
            self._pendingNewKeys = False
            self._switchIncoming()
            self._parse()

    def ssh_NEWKEYS(self, packet: bytes) -> None:
        # NEWKEYS never reaches dispatch: _parseLoop handles it in order.
        raise AssertionError("NEWKEYS is handled by the packet loop")

    def _finishKexIfDone(self) -> None:
        if not (self._sentNewKeys and self._receivedNewKeys):
            return
        self._sentNewKeys = self._receivedNewKeys = False
        self._peerKexInitThisRound = False
        self.currentEncryptions = self.nextEncryptions
        self.keyExchangeState = _conch.KEY_EXCHANGE_NONE
        self._bytesSinceKex = 0
        self.log.debug(
            "keys in use with {peer}: {algorithms}",
            peer=_peerOf(self.transport),
            algorithms=self.currentEncryptions.describe(),
        )
        self._scheduleTimedRekey()
        if self._kexTimer is not None and self._kexTimer.active():
            self._kexTimer.cancel()
        self._kexTimer = None
        blocked, self.heldForKeyExchange = self.heldForKeyExchange or [], None
        self._kexQueued = 0
        for messageType, payload in blocked:
            self.sendPacket(messageType, payload)
        self.readGate.keyExchange(False)
        self.writePressure.set(KEY_EXCHANGE, False)
        if not self.isClient:
            kexAlg = getattr(self, "kexAlg", None)  # Conch's, public
            algorithm = kexAlg.decode("ascii", "replace") if kexAlg else "other"
            self.metrics.keyExchange(algorithm, not self._firstKexDone)
        if not self._firstKexDone:
            self._firstKexDone = True
            self.firstKeyExchangeDone()

    def firstKeyExchangeDone(self) -> None:
        """
        Hook: the connection is encrypted for the first time.
        """

    # -- rekeying

    def _scheduleTimedRekey(self) -> None:
        if self._rekeyTimer is not None and self._rekeyTimer.active():
            self._rekeyTimer.cancel()
        self._rekeyTimer = self._clock().callLater(self.rekeySeconds, self._timedRekey)

    def _timedRekey(self) -> None:
        self._rekeyTimer = None
        self._startRekey()

    def _maybeRekey(self) -> None:
        if self._bytesSinceKex > self.rekeyBytes:
            self._startRekey()

    def _startRekey(self) -> None:
        if (
            self._closing
            or not self._firstKexDone
            or self.keyExchangeState != _conch.KEY_EXCHANGE_NONE
        ):
            return
        self.log.debug("starting rekey with {peer}", peer=_peerOf(self.transport))
        self.sendKexInit()

    def isStrict(self) -> bool:
        """
        Whether strict key exchange is in force on this connection.
        """
        return self._strict


def _allowedDuringKex(messageNum: int) -> bool:
    """
    What a peer may send between its KEXINIT and its NEWKEYS (RFC 4253
    section 7.1): transport generic messages other than the service messages,
    and key exchange messages.
    """
    if 1 <= messageNum <= 19:
        return messageNum not in (conch.MSG_SERVICE_REQUEST, conch.MSG_SERVICE_ACCEPT)
    # (a second KEXINIT is refused by ssh_KEXINIT, with its own reason)
    return 20 <= messageNum <= 49


def _widenSocketIO(transport: Any) -> None:
    """
    Read up to L{SOCKET_IO_SIZE} per C{recv} and send as much per C{send}
    (Twisted: 64 KiB and 128 KiB), so bulk data costs fewer system calls and
    reactor turns. Twisted also pauses a registered producer once this much
    is waiting to be sent, which bounds the proxy's buffer per leg.
    """
    if isinstance(transport, tcp.Connection):
        transport.bufferSize = SOCKET_IO_SIZE
        transport.SEND_LIMIT = SOCKET_IO_SIZE


def _peerOf(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "?"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


class SSHServerTransport(TransportMixin, conch.SSHServerTransport):
    """
    The server side. The factory sets C{policy}, C{clock} and the version string.
    """

    ourVersionString = b"SSH-2.0-diegossh"

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        fixed = [
            (name, _USER_KEY_SIG_ALGS if name == b"server-sig-algs" else value)
            for name, value in extensions
        ]
        super().sendExtInfo(fixed)


class SSHClientTransport(TransportMixin, conch.SSHClientTransport):
    """
    The client side: the proxy's leg to a backend, and our test clients.

    Conch calls C{connectionSecure} after every NEWKEYS, which would request
    the service again on each rekey; here it runs once, after the first.
    """

    ourVersionString = b"SSH-2.0-diegossh"

    def connectionSecure(self) -> None:
        """
        Hook for subclasses: request a service here.
        """

    def firstKeyExchangeDone(self) -> None:
        self.connectionSecure()

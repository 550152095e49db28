"""
A test SSH server on our transport with the daemon's port forwarding, driven
by the real OpenSSH client, plus the small TCP peers the tests forward to.

Its relay channels report what the server holds (C{bufferedBytes}, bytes owed
to the client's window) and when it applied backpressure, so tests assert on
state rather than time.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, keys
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTCP
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.factory import SSHServerFactory
from diegossh.ssh.tcpip import DirectTCPIPChannel, makeDirectTCPIPChannel
from diegossh.ssh.tcpip_relay import RelayChannel
from diegossh.sshd.forwarding import ForwardedTCPIPChannel, ForwardingAvatarMixin
from tests.support.memoryserver import MemorySession
from tests.support.openssh import BASE_OPTIONS

# -- what the server side saw


class Observed:
    """
    Server-side facts about every relay channel of one server.
    """

    def __init__(self) -> None:
        self.channels: list[RelayChannel] = []
        self.maxBuffered = 0
        self.maxOwed = 0
        self.readPauses = 0  # the channel stopped reading its socket
        self.writePauses = 0  # the socket's buffer was full; window withheld
        self._waiting: dict[str, list[defer.Deferred[None]]] = {}

    def when(self, event: str) -> defer.Deferred[None]:
        """
        Fires at the next C{readPaused} (the channel stopped reading its
        socket), C{writePaused} (the socket's buffer is full) or
        C{windowClosed} (the client may send nothing more) event.
        """
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.setdefault(event, []).append(d)
        return d

    def fire(self, event: str) -> None:
        for d in self._waiting.pop(event, []):
            d.callback(None)


class _CountingProducer:
    def __init__(self, producer: Any, channel: RelayChannel, observed: Observed) -> None:
        self.producer = producer
        self.channel = channel
        self.observed = observed

    def pauseProducing(self) -> None:
        observed = self.observed
        observed.readPauses += 1
        observed.maxBuffered = max(observed.maxBuffered, self.channel.bufferedBytes)
        self.producer.pauseProducing()
        observed.fire("readPaused")

    def resumeProducing(self) -> None:
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


class _Recording(RelayChannel):
    observed: Observed

    def channelOpen(self, specificData: bytes) -> None:
        self.observed.channels.append(self)
        super().channelOpen(specificData)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(_CountingProducer(producer, self, self.observed), streaming)

    def write(self, data: bytes) -> None:
        super().write(data)
        self.observed.maxBuffered = max(self.observed.maxBuffered, self.bufferedBytes)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.observed.maxOwed = max(self.observed.maxOwed, self.owed)
        if self.localWindowLeft == 0:
            self.observed.fire("windowClosed")

    def pauseProducing(self) -> None:
        super().pauseProducing()
        self.observed.writePauses += 1
        self.observed.fire("writePaused")


def recordingClasses(observed: Observed) -> tuple[type[DirectTCPIPChannel], type[RelayChannel]]:
    direct = type("RecordingDirect", (_Recording, DirectTCPIPChannel), {"observed": observed})
    forwarded = type(
        "RecordingForwarded", (_Recording, ForwardedTCPIPChannel), {"observed": observed}
    )
    return direct, forwarded


# -- the server


class ReadySession(MemorySession):
    """
    C{ready}: print "ready" and stay until stdin ends, so a test knows the
    client's forwards are set up. Records every channel request.
    """

    requests: list[bytes]

    def requestReceived(self, requestType: bytes, data: bytes) -> Any:
        self.avatar.requests.append(requestType)
        return super().requestReceived(requestType, data)

    def request_exec(self, data: bytes) -> int:
        if common.getNS(data)[0] == b"ready":
            self.mode = b"ready"
            self.write(b"ready\n")
            return 1
        return super().request_exec(data)

    def eofReceived(self) -> None:
        if self.mode == b"ready":
            self.finish()
        else:
            super().eofReceived()


class ForwardingUser(ForwardingAvatarMixin, ConchUser):
    def __init__(self, reactor: IReactorTCP, observed: Observed) -> None:
        ConchUser.__init__(self)
        self.requests: list[bytes] = []
        self.channelLookup[b"session"] = ReadySession
        direct, forwarded = recordingClasses(observed)
        self.installForwarding(
            reactor,
            directFactory=makeDirectTCPIPChannel(reactor, channelClass=direct),
            forwardedChannelClass=forwarded,
        )

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> Any:
        self.requests.append(requestType)
        return super().gotGlobalRequest(requestType, data)


@implementer(IRealm)
class ForwardingRealm:
    def __init__(self, reactor: IReactorTCP) -> None:
        self.reactor = reactor
        self.observed = Observed()
        self.avatars: list[ForwardingUser] = []
        #: one per login, fires once its listeners are closed
        self.loggedOut: list[defer.Deferred[None]] = []

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        avatar = ForwardingUser(self.reactor, self.observed)
        self.avatars.append(avatar)
        done: defer.Deferred[None] = defer.Deferred()
        self.loggedOut.append(done)

        def logout() -> None:
            avatar.stopForwarding().chainDeferred(done)

        return IConchUser, avatar, logout


def forwardServerFactory(
    hostKey: keys.Key, clientKey: keys.Key, reactor: Any
) -> tuple[SSHServerFactory, ForwardingRealm]:
    realm = ForwardingRealm(reactor)
    checker = SSHPublicKeyChecker(InMemorySSHKeyDB({b"tester": [clientKey.public()]}))
    factory = SSHServerFactory(
        Portal(realm, [checker]),
        [hostKey],
        AlgorithmPolicy.everything(),
        reactor,
        b"SSH-2.0-diegossh-test",
    )
    return factory, realm


# -- peers to forward to


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Echoes; on EOF finishes sending and closes.
    """

    transport: Any

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class Digest(Protocol):
    """
    Reads to EOF, then answers with the SHA-256 (hex) and byte count of what
    it read. With C{paused}, reads nothing until L{resume}.
    """

    transport: Any

    def __init__(self, server: PeerFactory) -> None:
        self.server = server
        self.digest = hashlib.sha256()
        self.count = 0

    def connectionMade(self) -> None:
        self.server.connections.append(self)
        if self.server.paused:
            self.transport.pauseProducing()

    def resume(self) -> None:
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.digest.update(data)
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.server.sawEOF += 1
        self.transport.write(f"{self.digest.hexdigest()} {self.count}\n".encode())
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Source(Protocol):
    """
    Sends C{server.payload}, then closes.
    """

    transport: Any

    def __init__(self, server: PeerFactory) -> None:
        self.server = server

    def connectionMade(self) -> None:
        self.transport.write(self.server.payload)
        self.transport.loseConnection()


class PeerFactory(Factory):
    def __init__(self, kind: str, payload: bytes = b"", paused: bool = False) -> None:
        self.kind = kind
        self.payload = payload
        self.paused = paused
        self.sawEOF = 0
        self.connections: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        if self.kind == "echo":
            protocol: Protocol = Echo()
            self.connections.append(protocol)
            return protocol
        if self.kind == "digest":
            return Digest(self)
        return Source(self)


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    Sends C{payload}, half-closes, and collects everything until the peer
    closes: C{done} fires with (sha256 hex, byte count, first bytes).
    """

    transport: Any

    def __init__(self, payload: bytes = b"", paused: bool = False, halfClose: bool = True) -> None:
        self.payload = payload
        self.paused = paused
        self.halfClose = halfClose
        self.digest = hashlib.sha256()
        self.count = 0
        self.head = b""
        self.done: defer.Deferred[tuple[str, int, bytes]] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.paused:
            self.transport.pauseProducing()
        if self.payload:
            self.transport.write(self.payload)
        if self.halfClose:
            self.transport.loseWriteConnection()

    def resume(self) -> None:
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.digest.update(data)
        if len(self.head) < 200:
            self.head += data[: 200 - len(self.head)]
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback((self.digest.hexdigest(), self.count, self.head))


# -- the OpenSSH client


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def canListen(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen()
        except OSError:
            return False
        return True


def sshArgv(
    port: int,
    identity: Path,
    flags: Sequence[str],
    command: Sequence[str] = (),
    options: Sequence[str] = (),
    logLevel: str = "ERROR",
) -> list[str]:
    base = [f"LogLevel={logLevel}" if o == "LogLevel=ERROR" else o for o in BASE_OPTIONS]
    argv = ["ssh", *base]
    for option in options:
        argv += ["-o", option]
    return [*argv, "-p", str(port), "-i", str(identity), *flags, "tester@127.0.0.1", *command]


class SSHProcess:
    """
    An OpenSSH client kept open by the C{ready} session: forwards are set up
    once L{waitReady} returns. Stderr goes to a file, readable at any time.
    """

    def __init__(self, argv: list[str], stderrPath: Path, env: dict[str, str] | None = None):
        self.stderrPath = stderrPath
        self._stderr = open(stderrPath, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )

    def waitReady(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def stderr(self) -> str:
        return self.stderrPath.read_text(errors="replace")

    def finish(self, timeout: float = 60) -> int:
        """
        End the session (stdin EOF) and wait for ssh to exit.
        """
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()

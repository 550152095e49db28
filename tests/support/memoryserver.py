"""
A small SSH server on our transport whose sessions run no processes: C{echo}
sends stdin back, C{sha256} answers with the digest of stdin, C{source N}
writes N bytes of a known pattern. It lets the transport be tested with the
real OpenSSH client, independently of the daemon's process handling.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, keys
from twisted.cred.portal import IRealm, Portal
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.channel import BufferedChannel
from diegossh.ssh.factory import SSHServerFactory

WINDOW = 2 * 1024 * 1024
PATTERN = bytes(range(256)) * 256


def pattern(n: int) -> bytes:
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


class MemorySession(BufferedChannel):
    name = b"session"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("localWindow", WINDOW)
        super().__init__(*args, **kwargs)
        self.mode: bytes | None = None
        self.digest = hashlib.sha256()
        self.owed = 0
        self.toSend = 0

    def request_exec(self, data: bytes) -> int:
        command = common.getNS(data)[0].split()
        self.mode = command[0]
        if self.mode == b"source":
            self.toSend = int(command[1])
            self.registerProducer(self, True)
            self.resumeProducing()
        return 1

    def request_env(self, data: bytes) -> int:
        return 1

    # the producer side of "source"
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.toSend:
            n = min(self.toSend, 256 * 1024)
            self.toSend -= n
            self.write(pattern(n))
        if not self.toSend and self.mode == b"source":
            self.mode = b"done"
            self.finish()

    def stopProducing(self) -> None:
        self.toSend = 0

    def dataReceived(self, data: bytes) -> None:
        if self.mode == b"echo":
            self.write(data)
            if self.bufferedBytes > self.highWater:
                self.owed += len(data)
                return
        else:
            self.digest.update(data)
        self.consumed(len(data))

    def bufferDrained(self) -> None:
        owed, self.owed = self.owed, 0
        if owed:
            self.consumed(owed)

    def eofReceived(self) -> None:
        if self.mode == b"sha256":
            self.write(self.digest.hexdigest().encode() + b"\n")
        if self.mode in (b"sha256", b"echo"):
            self.finish()

    def finish(self) -> None:
        self.conn.sendRequest(self, b"exit-status", struct.pack(">L", 0))
        self.loseConnection()


class MemoryUser(ConchUser):
    def __init__(self) -> None:
        super().__init__()
        self.channelLookup[b"session"] = MemorySession

    def logout(self) -> None:
        pass


@implementer(IRealm)
class MemoryRealm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return IConchUser, MemoryUser(), lambda: None


def memoryServerFactory(
    hostKey: keys.Key,
    clientKey: keys.Key,
    clock: IReactorTime,
    policy: AlgorithmPolicy | None = None,
) -> SSHServerFactory:
    checker = SSHPublicKeyChecker(InMemorySSHKeyDB({b"tester": [clientKey.public()]}))
    portal = Portal(MemoryRealm(), [checker])
    return SSHServerFactory(
        portal,
        [hostKey],
        policy or AlgorithmPolicy.everything(),
        clock,
        b"SSH-2.0-diegossh-test",
    )

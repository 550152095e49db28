# -*- test-case-name: tests.test_transport_interop -*-
"""
The server factory both services build on: host keys, portal, algorithm policy,
version string and clock in one place, passed in rather than reached for.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from twisted.conch import error
from twisted.conch.ssh import common, keys, transport, userauth
from twisted.conch.ssh import factory as conchFactory
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

from diegossh.ssh import _conch
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.connection import (
    MAX_CHANNELS,
    MAX_SESSIONS,
    QuietServiceMixin,
    SSHConnection,
)
from diegossh.ssh.limits import MAX_AUTH_TRIES
from diegossh.ssh.logthrottle import ConnectionLogger, LogThrottle, OncePerSource
from diegossh.ssh.metrics import NO_METRICS, metricsOf
from diegossh.ssh.transport import LOGIN_GRACE_TIME, SSHServerTransport

# User authentication requests a client may send ahead of the answer to the
# one being checked (RFC 4252 section 5 allows several); past this, the
# connection ends.
MAX_QUEUED_AUTH_REQUESTS = 8


def unreadablePublicKeyRequest(packet: bytes) -> str | None:
    """
    Why the method-specific part of a C{publickey} request cannot be checked
    (a short message, a non-ASCII algorithm name, a blob that is no key), or
    L{None} if it can.
    """
    try:
        hasSignature = packet[0]
        algorithm, blob, rest = common.getNS(packet[1:], 2)
        if hasSignature:
            common.getNS(rest)
        algorithm.decode("ascii")
    except (IndexError, struct.error, UnicodeDecodeError):
        return "malformed publickey request"
    try:
        keys.Key.fromString(blob)
    except Exception:
        return "unreadable public key"
    return None


@_conch.routeConchLog
class UserAuthServer(QuietServiceMixin, _conch.UserAuthServerInternals, userauth.SSHUserAuthServer):
    """
    Conch's userauth with the transport's clock instead of the global reactor,
    one request checked at a time, and none after success.

    Conch checks every request as it arrives: two sent back to back are
    checked at once, and both may succeed, each starting the next service (for
    the proxy, each dialling the container). Here a request waits until the
    one before it is answered, and after success every further request is
    ignored (RFC 4252 section 5.1).
    """

    loginTimeout = 120
    transport: Any
    # Whether logins are counted here (the daemon, as realm "sshd"); the proxy
    # counts its own, by realm and reason (diegossh.proxy.server).
    countsLogins = True
    loginRealm = "sshd"
    # Conch's own lines carry the user name: bounded, throttled before login.
    log = ConnectionLogger()

    def serviceStarted(self) -> None:
        self.clock = self.transport.clock
        tries = getattr(getattr(self.transport, "factory", None), "maxAuthTries", MAX_AUTH_TRIES)
        # Conch disconnects once its count passes this: at the last try.
        self.attemptsBeforeDisconnect = tries - 1
        self._checking = False
        self._succeeded = False
        self._waiting: deque[bytes] = deque()
        super().serviceStarted()

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> Any:
        if self._succeeded or self._closing():
            # A connection that is closing (too many failures, the grace time,
            # the peer's goodbye) checks no more requests, not even those
            # queued behind the last answered one.
            return None
        if self._checking:
            if len(self._waiting) >= MAX_QUEUED_AUTH_REQUESTS:
                self.transport.sendDisconnect(
                    transport.DISCONNECT_PROTOCOL_ERROR, b"too many authentication requests"
                )
                return None
            self._waiting.append(packet)
            return None
        self._checking = True
        d = super().ssh_USERAUTH_REQUEST(packet)
        if d is None:
            self._answered()
            return None
        d.addBoth(self._answered)
        return d

    def packetReceived(self, messageNum: int, packet: bytes) -> Any:
        if messageNum != userauth.MSG_USERAUTH_REQUEST and 50 <= messageNum <= 79:
            # only a server sends these: UNIMPLEMENTED, not silence
            self.transport.sendUnimplemented()
            return None
        return super().packetReceived(messageNum, packet)

    def _closing(self) -> bool:
        socket = getattr(self.transport, "transport", None)
        return bool(getattr(socket, "disconnecting", False))

    def _answered(self, result: Any = None) -> Any:
        self._checking = False
        if self._waiting and not self._succeeded and self.transport is not None:
            self.ssh_USERAUTH_REQUEST(self._waiting.popleft())
        return result

    def authSucceeded(self, result: Any) -> None:
        if self.countsLogins:
            metricsOf(self.transport).login(self.loginRealm, "success", "none")
        self._succeeded = True
        self._waiting.clear()
        authenticated = getattr(self.transport, "authenticated", None)
        if authenticated is not None:
            authenticated()
        super().authSucceeded(result)

    def authFailed(self, reason: Any) -> Any:
        if self.method != b"none" and not reason.check(error.IgnoreAuthentication):
            if self.countsLogins:
                metricsOf(self.transport).login(self.loginRealm, "failure", "credentials")
            penalise = getattr(self.transport, "penalise", None)
            if penalise is not None:
                penalise("authfail")
        return super().authFailed(reason)

    def serviceStopped(self) -> None:
        self._waiting.clear()
        super().serviceStopped()


@_conch.routeConchLog
class SSHServerFactory(conchFactory.SSHFactory):
    """
    Builds L{SSHServerTransport}s configured from this factory.
    """

    protocol = SSHServerTransport
    # Conch's buildProtocol logs the same line for every connection: once.
    log = OncePerSource()
    # Read by each connection's SSHConnection; tap assembly may override them.
    maxChannels = MAX_CHANNELS
    maxSessions = MAX_SESSIONS
    maxAuthTries = MAX_AUTH_TRIES
    loginGraceTime = LOGIN_GRACE_TIME
    # An IAdmission (MaxStartups, per-source penalties), or None.
    admission: Any = None
    # An ISSHMetrics every connection reports to (the assembly sets one when served).
    metrics: Any = NO_METRICS
    services = {
        b"ssh-userauth": UserAuthServer,
        b"ssh-connection": SSHConnection,
    }

    def __init__(
        self,
        portal: Portal,
        hostKeys: list[keys.Key],
        policy: AlgorithmPolicy,
        clock: IReactorTime,
        version: bytes,
    ) -> None:
        self.portal = portal
        self.policy = policy
        self.clock = clock
        self.version = version
        # Log lines before login, per source and connection (on this clock).
        self.logThrottle = LogThrottle(clock)
        self.privateKeys = {key.sshType(): key for key in hostKeys}
        self.publicKeys = {key.sshType(): key.public() for key in hostKeys}
        self.primes = None

    def getPrimes(self) -> None:
        return None

    def buildProtocol(self, addr: Any) -> SSHServerTransport:
        transport = super().buildProtocol(addr)
        assert isinstance(transport, SSHServerTransport)
        transport.policy = self.policy
        transport.clock = self.clock
        transport.ourVersionString = self.version
        transport.loginGraceTime = self.loginGraceTime
        transport.metrics = self.metrics
        return transport

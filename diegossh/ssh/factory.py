# -*- test-case-name: tests.test_transport_interop -*-
"""
The server factory both services build on: host keys, portal, algorithm policy,
version string and clock in one place, passed in rather than reached for.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh import factory as conchFactory
from twisted.conch.ssh import keys, userauth
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.connection import SSHConnection
from diegossh.ssh.transport import SSHServerTransport


class UserAuthServer(userauth.SSHUserAuthServer):
    """
    Conch's userauth with the transport's clock instead of the global reactor.
    """

    loginTimeout = 120
    transport: Any

    def serviceStarted(self) -> None:
        self.clock = self.transport.clock
        super().serviceStarted()


class SSHServerFactory(conchFactory.SSHFactory):
    """
    Builds L{SSHServerTransport}s configured from this factory.
    """

    protocol = SSHServerTransport
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
        return transport

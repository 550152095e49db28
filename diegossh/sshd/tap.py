# -*- test-case-name: tests.test_sshd_tap,tests.test_sshd_hangup -*-
"""
C{twistd diego-sshd}: options and service assembly.

Flags are upstream diego-sshd's, in Twisted's C{--long} form. Key material
given on the command line is moved into the environment and the process
re-executed, so C{ps} never shows it; the variables are removed before any
session starts, so no child sees them either. The options are parsed once
into a frozen L{diegossh.sshd.settings.SSHDSettings} (C{self["settings"]}),
which C{makeService} reads.

The same options serve the C{diego-sshd} console script
(L{diegossh.sshd.script}), which takes them in Go's flag syntax, as Cloud
Controller writes them, and logs lager lines; under twistd the lager flags
(C{--logLevel}, C{--timeFormat}, C{--debugAddr}, C{--redactSecrets},
C{--redactPatterns}) are accepted and checked, and twistd's own logging
applies (docs/sshd.md).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal

from diegossh.addresses import serverEndpoint
from diegossh.listening import GuardedEndpoint
from diegossh.ssh import admission
from diegossh.ssh.factory import SSHServerFactory
from diegossh.ssh.keys import hostKeyOrGenerated
from diegossh.ssh.openconnections import OpenConnections
from diegossh.sshd.auth import AuthorizedKeyChecker, DaemonUserAuthServer
from diegossh.sshd.avatar import DaemonRealm
from diegossh.sshd.environment import KEY_VARIABLES, baseEnvironment, currentUser
from diegossh.sshd.hangup import HangUpService
from diegossh.sshd.options import Options
from diegossh.sshd.programs import buildProgram
from diegossh.sshd.session import SessionConfig, defaultShell
from diegossh.sshd.settings import SSHDSettings

# OpenSSH's client enables its OpenSSH-only extensions (eow@openssh.com, which
# ends `ssh host cmd | head`, and no-more-sessions@openssh.com) only for a
# server whose software version starts with "OpenSSH" (its compat.c). We speak
# them, so we say so, with no OpenSSH version number for scanners to misread.
VERSION = b"SSH-2.0-OpenSSH_compatible diego-sshd"


def makeService(config: Options) -> IService:
    # twistd only; the diego-sshd script has its own service (issue 15)
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults, maybeDeferred

    class Daemon(StreamServerEndpointService):
        """The listener, whose stop also hangs up the open sessions."""

        def stopService(self) -> Any:
            return gatherResults(
                [maybeDeferred(super().stopService), maybeDeferred(hangUp.stopService)]
            )

    endpoint, factory, hangUp = makeDaemon(config["settings"], reactor)
    return Daemon(endpoint, factory)


def makeDaemon(settings: SSHDSettings, reactor: Any) -> tuple[Any, Any, HangUpService]:
    """
    The endpoint the daemon listens on, the factory it serves, and the
    service whose stop hangs up the sessions still open
    (L{diegossh.sshd.hangup}), from its settings; the key variables are
    removed from the environment first, so no session inherits them. Shared
    by L{makeService} and the C{diego-sshd} script, which logs
    C{sshd.started} once the endpoint listens.
    """
    for variable in KEY_VARIABLES:
        os.environ.pop(variable, None)
    hostKey = hostKeyOrGenerated(settings.hostKey)

    _, home = currentUser()
    sessionConfig = SessionConfig(
        baseEnv=baseEnvironment(settings.inheritDaemonEnv),
        home=home,
        shell=defaultShell(),
        buildProgram=buildProgram,
    )
    checkers: list[Any] = []
    if settings.authorizedKey is not None:
        checkers.append(AuthorizedKeyChecker(settings.authorizedKey))
    if settings.allowUnauthenticatedClients:
        checkers.append(AllowAnonymousAccess())
    portal = Portal(DaemonRealm(sessionConfig, reactor), checkers)
    factory = SSHServerFactory(portal, [hostKey], settings.policy, reactor, VERSION)
    factory.services = {**factory.services, b"ssh-userauth": DaemonUserAuthServer}
    factory.maxSessions = settings.maxSessions
    factory.maxChannels = settings.maxChannels
    factory.maxAuthTries = settings.maxAuthTries
    factory.loginGraceTime = settings.loginGraceTime
    limited = admission.fromSettings(factory, reactor, settings.admission)
    if settings.metrics:
        # prometheus_client only now: -enableMetrics (issue 15's footprint)
        from diegossh.ssh.prometheus import PrometheusSSHMetrics

        factory.metrics = PrometheusSSHMetrics(["sshd"], settings.policy.keyExchanges)
        limited.admission.metrics = factory.metrics
    connections = OpenConnections(limited.admission)
    listening = admission.AdmittingFactory(factory, connections)
    endpoint = GuardedEndpoint(serverEndpoint(reactor, settings.address), reactor)
    return endpoint, listening, HangUpService(connections, reactor)


def debugPages(factory: Any) -> dict[bytes, Any] | None:
    """
    The debug server's C{/metrics} page for the daemon's C{factory} (what
    L{makeDaemon} returned) when it counts (C{-enableMetrics}), else L{None}.
    """
    exposition = getattr(factory.metrics, "exposition", None)
    if exposition is None:
        return None
    from diegossh.ssh.prometheus import metricsChildren

    return metricsChildren(exposition)

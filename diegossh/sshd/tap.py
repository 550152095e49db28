# -*- test-case-name: tests.test_sshd_tap -*-
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

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.python import usage

from diegossh import secretargs
from diegossh.addresses import serverEndpoint
from diegossh.listening import GuardedEndpoint
from diegossh.ssh import admission
from diegossh.ssh.connection import MAX_CHANNELS, MAX_SESSIONS
from diegossh.ssh.factory import MAX_AUTH_TRIES, SSHServerFactory
from diegossh.ssh.keys import hostKeyOrGenerated
from diegossh.sshd.auth import AuthorizedKeyChecker, DaemonUserAuthServer
from diegossh.sshd.avatar import DaemonRealm
from diegossh.sshd.environment import KEY_VARIABLES, baseEnvironment, currentUser
from diegossh.sshd.programs import buildProgram
from diegossh.sshd.session import SessionConfig, defaultShell
from diegossh.sshd.settings import SSHDSettings, parseSettings

# OpenSSH's client enables its OpenSSH-only extensions (eow@openssh.com, which
# ends `ssh host cmd | head`, and no-more-sessions@openssh.com) only for a
# server whose software version starts with "OpenSSH" (its compat.c). We speak
# them, so we say so, with no OpenSSH version number for scanners to misread.
VERSION = b"SSH-2.0-OpenSSH_compatible diego-sshd"
# secret flag -> its environment variable (upstream's; the variable wins)
_SECRET_FLAGS = {"hostKey": "SSHD_HOSTKEY", "authorizedKey": "SSHD_AUTHKEY"}

# Every login through the proxy comes from the proxy's address, up to the 50
# at once the proxy promises a NAT address: OpenSSH's 10:30:100 would drop
# some of them (docs/prelogin.md).
DAEMON_MAX_STARTUPS = admission.MaxStartups(50, 30, 100)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "SSH daemon for one container: one authorized key, no root needed."

    optParameters = [
        ["address", None, "127.0.0.1:2222", "Listen address (host:port)."],
        ["hostKey", None, None, "Host private key: PEM text or a path (env SSHD_HOSTKEY)."],
        ["authorizedKey", None, None, "The one authorized_keys line (env SSHD_AUTHKEY)."],
        ["allowedCiphers", None, None, "Comma list of ciphers (default: upstream's)."],
        ["allowedMACs", None, None, "Comma list of MACs (default: upstream's)."],
        ["allowedKeyExchanges", None, None, "Comma list of key exchanges (default: upstream's)."],
        [
            "allowedHostKeyAlgorithms",
            None,
            None,
            "Comma list of host key algorithms (default: all, ssh-rsa included).",
        ],
        [
            "maxSessions",
            None,
            MAX_SESSIONS,
            "Sessions (programs) per connection (OpenSSH's MaxSessions).",
            int,
        ],
        ["maxChannels", None, MAX_CHANNELS, "Open channels of any kind per connection.", int],
        # Before login (docs/prelogin.md).
        [
            "loginGraceTime",
            None,
            "120",
            "From accept to login, whatever the client sends; 0: off (OpenSSH's LoginGraceTime).",
        ],
        [
            "maxAuthTries",
            None,
            MAX_AUTH_TRIES,
            "Failed login attempts per connection (OpenSSH's MaxAuthTries).",
            int,
        ],
        [
            "maxStartups",
            None,
            str(DAEMON_MAX_STARTUPS),
            "start:rate:full for connections not logged in yet (OpenSSH's MaxStartups).",
        ],
        [
            "perSourceMaxStartups",
            None,
            "none",
            "Connections not logged in yet per source (OpenSSH's PerSourceMaxStartups).",
        ],
        [
            "perSourcePenalties",
            None,
            str(admission.DAEMON_PENALTIES),
            "Penalties for failed logins, by source, or 'no' (OpenSSH's PerSourcePenalties).",
        ],
        [
            "perSourcePenaltyExemptList",
            None,
            "",
            "Addresses and CIDRs never penalised (OpenSSH's PerSourcePenaltyExemptList).",
        ],
        # Upstream's lagerflags and debugserver flags: the diego-sshd script's logs.
        ["logLevel", None, "info", "Lager log level: debug, info, error or fatal."],
        ["timeFormat", None, "unix-epoch", "Lager timestamps: unix-epoch or rfc3339."],
        ["debugAddr", None, "", "host:port for the debug server (/log-level); empty: none."],
        ["redactPatterns", None, "", "Accepted for upstream's command line (docs/sshd.md)."],
    ]
    optFlags = [
        ["allowUnauthenticatedClients", None, "Let anyone in without a key."],
        ["inheritDaemonEnv", None, "Give sessions the daemon's environment."],
        ["redactSecrets", None, "Accepted for upstream's command line (docs/sshd.md)."],
    ]

    def postOptions(self) -> None:
        secretargs.moveOffCommandLine("diego-sshd", _SECRET_FLAGS, self.longOpt)
        self.update(secretargs.takeMoved(_SECRET_FLAGS))
        for flag, variable in _SECRET_FLAGS.items():
            value = os.environ.pop(variable, None)
            if value:
                self[flag] = value
        try:
            self["settings"] = parseSettings(self)
        except ValueError as e:
            # the cause is kept: the diego-sshd script logs a Refused's lager event
            raise usage.UsageError(str(e)) from e


def makeService(config: Options) -> IService:
    from twisted.internet import reactor

    endpoint, factory = makeListener(config["settings"], reactor)
    return StreamServerEndpointService(endpoint, factory)


def makeListener(settings: SSHDSettings, reactor: Any) -> tuple[Any, Any]:
    """
    The endpoint the daemon listens on and the factory it serves, from its
    settings; the key variables are removed from the environment first, so
    no session inherits them. Shared by L{makeService} and the C{diego-sshd}
    script, which logs C{sshd.started} once the endpoint listens.
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
    listening = admission.fromSettings(factory, reactor, settings.admission)
    endpoint = GuardedEndpoint(serverEndpoint(reactor, settings.address), reactor)
    return endpoint, listening

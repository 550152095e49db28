# -*- test-case-name: tests.test_sshd_tap,tests.test_sshd_dropin -*-
"""
The daemon's options, read the same by C{twistd diego-sshd}
(L{diegossh.sshd.tap}) and the C{diego-sshd} script
(L{diegossh.sshd.script}); see L{diegossh.sshd.tap} for what they mean.

A module of its own, importing no SSH protocol code and no reactor: the
script reads its command line, and re-executes itself to move the keys off
it, before it loads the rest (issue 15: every millisecond and MiB of the
daemon counts against the app it runs in). L{Options.postOptions} loads the
settings' parser when it runs.
"""

from __future__ import annotations

import os

from twisted.python import usage

from diegossh import secretargs
from diegossh.ssh import admission
from diegossh.ssh.limits import MAX_AUTH_TRIES, MAX_CHANNELS, MAX_SESSIONS

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
        from diegossh.sshd.settings import parseSettings

        try:
            self["settings"] = parseSettings(self)
        except ValueError as e:
            # the cause is kept: the diego-sshd script logs a Refused's lager event
            raise usage.UsageError(str(e)) from e

# -*- test-case-name: tests.test_sshd_tap,tests.test_sshd_footprint -*-
"""
The daemon's options as data (name, short form, default, help, and a type
for those not strings), as L{twisted.python.usage.Options} takes them: the
table L{diegossh.sshd.options.Options} is built from, and which the
C{diego-sshd} script reads its Go-style flags by.

Nothing here imports Twisted: the script reads its command line and
re-executes itself (keys off the command line) before it loads anything else,
so that first process costs little (issue 15). The two defaults that are
objects elsewhere are written out here; C{tests/test_sshd_footprint.py}
checks them against L{diegossh.ssh.admission}.
"""

from __future__ import annotations

from diegossh.ssh.limits import MAX_AUTH_TRIES, MAX_CHANNELS, MAX_SESSIONS

# Not typing's: the script's first process imports this module and typing
# costs it about 5 ms (issue 15); type checkers read the name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Every login through the proxy comes from the proxy's address, up to the 50
# at once the proxy promises a NAT address: OpenSSH's 10:30:100 would drop
# some of them (docs/prelogin.md). str() of an admission.MaxStartups.
DAEMON_MAX_STARTUPS = "50:30:100"
# str(admission.DAEMON_PENALTIES): OpenSSH's penalties, without noauth.
DAEMON_PENALTIES = (
    "authfail:5s grace-exceeded:10s protocol:10s noauth:0s min:15s max:600s "
    "max-sources4:4096 max-sources6:4096"
)

PARAMETERS: list[list[Any]] = [
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
        DAEMON_MAX_STARTUPS,
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
        DAEMON_PENALTIES,
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
FLAGS: list[list[Any]] = [
    ["allowUnauthenticatedClients", None, "Let anyone in without a key."],
    ["inheritDaemonEnv", None, "Give sessions the daemon's environment."],
    ["redactSecrets", None, "Accepted for upstream's command line (docs/sshd.md)."],
    [
        "enableMetrics",
        None,
        "Serve Prometheus metrics at /metrics on the debug server (needs debugAddr).",
    ],
]

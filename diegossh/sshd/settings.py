# -*- test-case-name: tests.test_sshd_tap -*-
"""
The daemon's settings, parsed once: L{SSHDSettings}, a frozen value built by
L{parseSettings} from C{twistd diego-sshd}'s options, after the key material
was taken from the environment (L{diegossh.sshd.tap.Options}).

Every refusal names the flag; C{makeService} then reads typed attributes
only. The keys stay out of reprs. A refusal upstream names with its own lager
event (an unparseable host key, a missing authorized key) is a L{Refused}
carrying that name, which the C{diego-sshd} console script logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.conch.ssh.keys import Key

from diegossh import lager
from diegossh.addresses import parseAddress
from diegossh.ssh import admission
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.flags import algorithmPolicy, checkHostKey, named
from diegossh.ssh.keys import loadAuthorizedKey, loadHostKey

# lagerflags' -timeFormat also takes the enum's numbers
_TIME_FORMATS = {
    "unix-epoch": "unix-epoch",
    "0": "unix-epoch",
    "rfc3339": "rfc3339",
    "1": "rfc3339",
}


class Refused(ValueError):
    """
    A setting refused at start-up. C{lager} is upstream diego-sshd's event
    for it (C{sshd.failed-to-parse-host-key}, C{sshd.authorized-key-required});
    other refusals are its catch-all C{configure-failed}.
    """

    def __init__(self, message: str, lager: str = "configure-failed") -> None:
        super().__init__(message)
        self.lager = lager


@dataclass(frozen=True, slots=True)
class SSHDSettings:
    """
    Everything C{makeService} needs. C{authorizedKey} is L{None} only with
    C{allowUnauthenticatedClients}; C{hostKey} is L{None} when one is to be
    generated.
    """

    address: str
    policy: AlgorithmPolicy
    hostKey: Key | None = field(repr=False)
    authorizedKey: Key | None
    allowUnauthenticatedClients: bool
    inheritDaemonEnv: bool
    maxSessions: int
    maxChannels: int
    maxAuthTries: int
    loginGraceTime: float
    admission: admission.AdmissionLimits
    # upstream's lagerflags and debugserver flags (docs/sshd.md, "diego-sshd")
    logLevel: int = lager.LEVELS["info"]
    timeFormat: str = "unix-epoch"
    debugAddress: str | None = None
    redactSecrets: bool = False
    redactPatterns: str = ""
    # -enableMetrics: /metrics on the debug server (docs/operations.md, "Metrics")
    metrics: bool = False


def parseSettings(options: Mapping[str, Any]) -> SSHDSettings:
    """
    The daemon's settings from its parsed options (flag -> value, the key
    flags already resolved from the environment).

    @raise ValueError: naming the flag.
    """
    address = options["address"]
    named("address", parseAddress, address)
    policy = algorithmPolicy(
        options["allowedCiphers"],
        options["allowedMACs"],
        options["allowedKeyExchanges"],
        options.get("allowedHostKeyAlgorithms"),
    )
    authorizedText, hostKeyText = options["authorizedKey"], options["hostKey"]
    authorized = (
        named("authorizedKey", loadAuthorizedKey, authorizedText) if authorizedText else None
    )
    try:
        hostKey = named("hostKey", loadHostKey, hostKeyText) if hostKeyText else None
    except ValueError as e:
        raise Refused(str(e), "failed-to-parse-host-key") from None
    checkHostKey(policy, hostKey)
    loginGraceTime = admission.parseTime(str(options["loginGraceTime"]), "--loginGraceTime")
    limits = admission.AdmissionLimits.parse(
        options["maxStartups"],
        options["perSourceMaxStartups"],
        options["perSourcePenalties"],
        options["perSourcePenaltyExemptList"],
        admission.DAEMON_PENALTIES,
    )
    for limit in ("maxSessions", "maxChannels", "maxAuthTries"):
        if options[limit] < 1:
            raise ValueError(f"--{limit} must be at least 1")
    if authorized is None and not options["allowUnauthenticatedClients"]:
        raise Refused(
            "no authorized key: give --authorizedKey (or SSHD_AUTHKEY), "
            "or --allowUnauthenticatedClients",
            "authorized-key-required",
        )
    logLevel = named("logLevel", lager.parseLogLevel, options.get("logLevel") or "info")
    timeFormat = _TIME_FORMATS.get(options.get("timeFormat") or "unix-epoch")
    if timeFormat is None:
        raise ValueError(f"--timeFormat: {options['timeFormat']!r} is not unix-epoch or rfc3339")
    debugAddress = options.get("debugAddr") or None
    if debugAddress is not None:
        named("debugAddr", parseAddress, debugAddress)
    metrics = bool(options.get("enableMetrics"))
    if metrics and debugAddress is None:
        raise ValueError("--enableMetrics serves /metrics on the debug server: give --debugAddr")
    return SSHDSettings(
        address=address,
        policy=policy,
        hostKey=hostKey,
        authorizedKey=authorized,
        allowUnauthenticatedClients=bool(options["allowUnauthenticatedClients"]),
        inheritDaemonEnv=bool(options["inheritDaemonEnv"]),
        maxSessions=options["maxSessions"],
        maxChannels=options["maxChannels"],
        maxAuthTries=options["maxAuthTries"],
        loginGraceTime=loginGraceTime,
        admission=limits,
        logLevel=logLevel,
        timeFormat=timeFormat,
        debugAddress=debugAddress,
        redactSecrets=bool(options.get("redactSecrets")),
        redactPatterns=options.get("redactPatterns") or "",
        metrics=metrics,
    )

# -*- test-case-name: tests.test_sshd_tap -*-
"""
The daemon's settings, parsed once: L{SSHDSettings}, a frozen value built by
L{parseSettings} from C{twistd diego-sshd}'s options, after the key material
was taken from the environment (L{diegossh.sshd.tap.Options}).

Every refusal names the flag; C{makeService} then reads typed attributes
only. The keys stay out of reprs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.conch.ssh.keys import Key

from diegossh.addresses import parseAddress
from diegossh.ssh import admission
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.flags import algorithmPolicy, checkHostKey, named
from diegossh.ssh.keys import loadAuthorizedKey, loadHostKey


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
    hostKey = named("hostKey", loadHostKey, hostKeyText) if hostKeyText else None
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
        raise ValueError(
            "no authorized key: give --authorizedKey (or SSHD_AUTHKEY), "
            "or --allowUnauthenticatedClients"
        )
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
    )

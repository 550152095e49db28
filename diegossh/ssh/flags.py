# -*- test-case-name: tests.test_proxy_settings,tests.test_sshd_tap,tests.test_rsa_compat -*-
"""
What the daemon's and the proxy's settings share: a refusal names the flag
at fault (the style of every start-up refusal here), the algorithm policy
comes from its four flags, and the host key must be able to sign with one of
the allowed host key algorithms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.conch.ssh.keys import Key

from diegossh.ssh.algorithms import AlgorithmPolicy, UnknownAlgorithm

T = TypeVar("T")

# UnknownAlgorithm.kind -> the flag that lists that kind
_ALGORITHM_FLAGS = {"cipher": "allowedCiphers", "MAC": "allowedMACs",
                    "key exchange": "allowedKeyExchanges",
                    "host key algorithm": "allowedHostKeyAlgorithms"}  # fmt: skip


def named(flag: str, parse: Callable[[str], T], value: str) -> T:
    """
    C{parse(value)}, its L{ValueError} prefixed with C{--flag}.
    """
    try:
        return parse(value)
    except ValueError as e:
        raise ValueError(f"--{flag}: {e}") from None


def algorithmPolicy(
    ciphers: str | None,
    macs: str | None,
    keyExchanges: str | None,
    hostKeyAlgorithms: str | None = None,
) -> AlgorithmPolicy:
    """
    L{AlgorithmPolicy.fromOptions} from C{--allowedCiphers}, C{--allowedMACs},
    C{--allowedKeyExchanges} and C{--allowedHostKeyAlgorithms}; its refusal
    names the flag.
    """
    try:
        return AlgorithmPolicy.fromOptions(ciphers, macs, keyExchanges, hostKeyAlgorithms)
    except UnknownAlgorithm as e:
        raise ValueError(f"--{_ALGORITHM_FLAGS[e.kind]}: {e}") from None


def checkHostKey(policy: AlgorithmPolicy, hostKey: Key | None) -> None:
    """
    Refuse, at start-up, a C{--allowedHostKeyAlgorithms} that leaves the host
    key nothing to sign with: such a server would refuse every client at its
    handshake. L{None} stands for the ed25519 key generated when none is given.
    """
    signable = (
        ["ssh-ed25519"]
        if hostKey is None
        else [a.decode("ascii") for a in hostKey.supportedSignatureAlgorithms()]
    )
    if not policy.serverHostKeyAlgorithms(signable):
        which = (
            "a generated ssh-ed25519" if hostKey is None else f"the {hostKey.sshType().decode()}"
        )
        raise ValueError(
            f"--allowedHostKeyAlgorithms: {which} host key can sign with none of "
            f"{', '.join(policy.hostKeyAlgorithms)} (it can with {', '.join(signable)})"
        )

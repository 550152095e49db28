# -*- test-case-name: tests.test_proxy_settings,tests.test_sshd_tap -*-
"""
What the daemon's and the proxy's settings share: a refusal names the flag
at fault (the style of every start-up refusal here), and the algorithm policy
comes from its three flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from diegossh.ssh.algorithms import AlgorithmPolicy, UnknownAlgorithm

T = TypeVar("T")

# UnknownAlgorithm.kind -> the flag that lists that kind
_ALGORITHM_FLAGS = {"cipher": "allowedCiphers", "MAC": "allowedMACs",
                    "key exchange": "allowedKeyExchanges"}  # fmt: skip


def named(flag: str, parse: Callable[[str], T], value: str) -> T:
    """
    C{parse(value)}, its L{ValueError} prefixed with C{--flag}.
    """
    try:
        return parse(value)
    except ValueError as e:
        raise ValueError(f"--{flag}: {e}") from None


def algorithmPolicy(
    ciphers: str | None, macs: str | None, keyExchanges: str | None
) -> AlgorithmPolicy:
    """
    L{AlgorithmPolicy.fromOptions} from C{--allowedCiphers}, C{--allowedMACs}
    and C{--allowedKeyExchanges}; its refusal names the flag.
    """
    try:
        return AlgorithmPolicy.fromOptions(ciphers, macs, keyExchanges)
    except UnknownAlgorithm as e:
        raise ValueError(f"--{_ALGORITHM_FLAGS[e.kind]}: {e}") from None

# -*- test-case-name: tests.test_transport_unit,tests.test_transport_interop -*-
"""
The algorithm names diegossh speaks, the upstream defaults, and the parsing of
C{--allowedCiphers}, C{--allowedMACs} and C{--allowedKeyExchanges}.

Names are kept here, apart from the code implementing them, so that an operator's
typo stops start-up with a message naming it instead of failing at the first
handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)

MACS: tuple[str, ...] = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)

KEY_EXCHANGES: tuple[str, ...] = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
)

# Conch implements the hybrid post-quantum exchange on the server side only.
SERVER_ONLY_KEY_EXCHANGES: frozenset[str] = frozenset({"mlkem768x25519-sha256"})

HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)

# diego-ssh's defaults, so a deployment moving over negotiates what it did before.
DEFAULT_CIPHERS = "aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr"
DEFAULT_MACS = "hmac-sha2-256-etm@openssh.com,hmac-sha2-256"
DEFAULT_KEY_EXCHANGES = "curve25519-sha256@libssh.org,curve25519-sha256"


class UnknownAlgorithm(ValueError):
    """
    An operator named an algorithm diegossh does not implement.
    """

    def __init__(self, kind: str, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} {name!r}; supported: {', '.join(known)}")
        self.kind = kind
        self.name = name


def parseList(text: str, kind: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """
    Parse a comma list of algorithm names, keeping the operator's order.

    @raise UnknownAlgorithm: for the first name not in C{known}, or an empty list.
    """
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise UnknownAlgorithm(kind, text, known)
    for name in names:
        if name not in known:
            raise UnknownAlgorithm(kind, name, known)
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class AlgorithmPolicy:
    """
    What one endpoint offers, most preferred first.
    """

    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    keyExchanges: tuple[str, ...]

    @classmethod
    def fromOptions(
        cls,
        ciphers: str | None = None,
        macs: str | None = None,
        keyExchanges: str | None = None,
    ) -> AlgorithmPolicy:
        """
        Build a policy from the three option strings; L{None} or empty takes the
        upstream default.
        """
        return cls(
            ciphers=parseList(ciphers or DEFAULT_CIPHERS, "cipher", CIPHERS),
            macs=parseList(macs or DEFAULT_MACS, "MAC", MACS),
            keyExchanges=parseList(
                keyExchanges or DEFAULT_KEY_EXCHANGES, "key exchange", KEY_EXCHANGES
            ),
        )

    @classmethod
    def everything(cls) -> AlgorithmPolicy:
        """
        Every algorithm diegossh implements (for clients and tests).
        """
        return cls(CIPHERS, MACS, KEY_EXCHANGES)

    def clientKeyExchanges(self) -> tuple[str, ...]:
        """
        The key exchanges a client of ours may offer.
        """
        return tuple(k for k in self.keyExchanges if k not in SERVER_ONLY_KEY_EXCHANGES)

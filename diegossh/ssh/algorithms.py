# -*- test-case-name: tests.test_transport_unit,tests.test_rsa_compat -*-
"""
The algorithm names diegossh speaks, the upstream defaults, and the parsing of
C{--allowedCiphers}, C{--allowedMACs}, C{--allowedKeyExchanges} and
C{--allowedHostKeyAlgorithms}.

Names are kept here, apart from the code implementing them, so that an operator's
typo stops start-up with a message naming it instead of failing at the first
handshake.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    "ssh-rsa",
)

# Offered by our servers only, for clients that know no other way to check an
# RSA host key (golang.org/x/crypto before November 2021, so the cf CLI's
# releases v6.53, v7.2-v7.5, v8.0-v8.4): its signature hashes with SHA-1. Our
# client (the proxy's leg to a backend) never accepts one.
SERVER_ONLY_HOST_KEY_ALGORITHMS: frozenset[str] = frozenset({"ssh-rsa"})

# diego-ssh's defaults, so a deployment moving over negotiates what it did before.
DEFAULT_CIPHERS = "aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr"
DEFAULT_MACS = "hmac-sha2-256-etm@openssh.com,hmac-sha2-256"
DEFAULT_KEY_EXCHANGES = "curve25519-sha256@libssh.org,curve25519-sha256"
# The lists of the diego-ssh that diego-release pins (e96542ec; ssh-proxy's and
# diego-sshd's main.go alike), for the upstream-named executables (ssh-proxy,
# diego-sshd), which replace those binaries: by flag name, used when a list is
# left out or empty. twistd keeps the defaults above (docs/algorithms.md).
PINNED_UPSTREAM_DEFAULTS: dict[str, str] = {
    "allowedCiphers": "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,"
    "aes256-ctr,aes192-ctr,aes128-ctr",
    "allowedMACs": "hmac-sha2-256-etm@openssh.com,hmac-sha2-256",
    "allowedKeyExchanges": "curve25519-sha256@libssh.org",
}
# Upstream's servers (Go's x/crypto) offer every signature algorithm their host
# key can make, ssh-rsa included: so do ours (docs/algorithms.md).
DEFAULT_HOST_KEY_ALGORITHMS = ",".join(HOST_KEY_ALGORITHMS)


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
    # What a server of ours may sign its host key proof with (it offers those
    # its host keys can make); a client of ours accepts these less ssh-rsa.
    hostKeyAlgorithms: tuple[str, ...] = HOST_KEY_ALGORITHMS

    @classmethod
    def fromOptions(
        cls,
        ciphers: str | None = None,
        macs: str | None = None,
        keyExchanges: str | None = None,
        hostKeyAlgorithms: str | None = None,
    ) -> AlgorithmPolicy:
        """
        Build a policy from the four option strings; L{None} or empty takes the
        upstream default.
        """
        return cls(
            ciphers=parseList(ciphers or DEFAULT_CIPHERS, "cipher", CIPHERS),
            macs=parseList(macs or DEFAULT_MACS, "MAC", MACS),
            keyExchanges=parseList(
                keyExchanges or DEFAULT_KEY_EXCHANGES, "key exchange", KEY_EXCHANGES
            ),
            hostKeyAlgorithms=parseList(
                hostKeyAlgorithms or DEFAULT_HOST_KEY_ALGORITHMS,
                "host key algorithm",
                HOST_KEY_ALGORITHMS,
            ),
        )

    @classmethod
    def everything(cls) -> AlgorithmPolicy:
        """
        Every algorithm diegossh implements (for clients and tests).
        """
        return cls(CIPHERS, MACS, KEY_EXCHANGES, HOST_KEY_ALGORITHMS)

    def clientKeyExchanges(self) -> tuple[str, ...]:
        """
        The key exchanges a client of ours may offer.
        """
        return tuple(k for k in self.keyExchanges if k not in SERVER_ONLY_KEY_EXCHANGES)

    def serverHostKeyAlgorithms(self, signable: Iterable[str]) -> tuple[str, ...]:
        """
        What a server of ours offers when its host keys can sign with
        C{signable}: the allowed ones among them, in the policy's order.
        """
        can = set(signable)
        return tuple(a for a in self.hostKeyAlgorithms if a in can)

    def clientHostKeyAlgorithms(self) -> tuple[str, ...]:
        """
        The host key algorithms a client of ours accepts: never ssh-rsa.
        """
        return tuple(a for a in self.hostKeyAlgorithms if a not in SERVER_ONLY_HOST_KEY_ALGORITHMS)


# RSA signature algorithms for a user key, most preferred first (RFC 8332).
_RSA_SHA2_SIGNATURES: tuple[bytes, ...] = (b"rsa-sha2-512", b"rsa-sha2-256")


def userKeySignatureAlgorithm(keyType: bytes, serverSigAlgs: bytes | None) -> bytes:
    """
    The algorithm a client of ours signs a public-key login with, for a key of
    C{keyType}, given the server's C{server-sig-algs} extension (RFC 8308), or
    L{None} when the server sent none.

    Only RSA has a choice: the first of C{rsa-sha2-512}, C{rsa-sha2-256} the
    server lists (RFC 8332 section 3.2). OpenSSH 8.8 and later refuse
    C{ssh-rsa} (SHA-1) by default, and they always list the SHA-2 ones. A
    server that sends no list, or lists neither, gets C{ssh-rsa}, as OpenSSH's
    and Go's clients do: such a server predates RFC 8332 or says it cannot
    check anything else, and a SHA-2 signature would only cost a login try.
    """
    if keyType != b"ssh-rsa" or serverSigAlgs is None:
        return keyType
    listed = {name.strip() for name in serverSigAlgs.split(b",")}
    for algorithm in _RSA_SHA2_SIGNATURES:
        if algorithm in listed:
            return algorithm
    return keyType

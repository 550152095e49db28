# -*- test-case-name: tests.test_bbs_client -*-
"""
Client-side TLS for the proxy's HTTPS calls, built from PEM files.

BBS is always mutual TLS: the proxy verifies BBS against the deployment's CA
(name checked by service-identity, through Twisted's C{optionsForClientTLS})
and presents its own client certificate. The policy is an ordinary
L{IPolicyForHTTPS}, so it plugs into any L{Agent}; the client certificate is
optional, so UAA and Cloud Controller clients may reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL.crypto import FILETYPE_PEM, X509
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.ssl import (
    Certificate,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["MutualTLSPolicy", "makeHTTPSAgent", "tlsPolicyFromPEMFiles"]


@implementer(IPolicyForHTTPS)
class MutualTLSPolicy:
    """
    Verify every server against C{trustRoot} and, when given, present
    C{clientCertificate} (with C{extraCertChain}, its intermediates).

    C{serverName} overrides the name checked in the server's certificate,
    for a BBS reached by IP address but certified by name.
    """

    def __init__(
        self,
        trustRoot: object,
        clientCertificate: PrivateCertificate | None = None,
        extraCertChain: Sequence[X509] = (),
        serverName: str | None = None,
    ) -> None:
        self._trustRoot = trustRoot
        self._clientCertificate = clientCertificate
        self._extraCertChain = list(extraCertChain)
        self._serverName = serverName

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        """The connection creator for one server, checked against its name."""
        name = self._serverName or hostname.decode("ascii")
        extra = {"extraCertChain": self._extraCertChain} if self._extraCertChain else None
        return optionsForClientTLS(
            name,
            trustRoot=self._trustRoot,  # type: ignore[arg-type]
            clientCertificate=self._clientCertificate,
            extraCertificateOptions=extra,
        )


def _loadCertificates(path: Path) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    if not certs:
        raise ValueError(f"{path}: no PEM certificate found")
    return certs


def _twistedCertificate(cert: x509.Certificate) -> Certificate:
    return Certificate.loadPEM(cert.public_bytes(Encoding.PEM))


def tlsPolicyFromPEMFiles(
    caCertFile: str | Path,
    clientCertFile: str | Path | None = None,
    clientKeyFile: str | Path | None = None,
    *,
    serverName: str | None = None,
) -> MutualTLSPolicy:
    """
    Build a L{MutualTLSPolicy} from PEM files: C{caCertFile} may hold several
    CA certificates; C{clientCertFile} holds the client certificate first,
    then any intermediates; C{clientKeyFile} its private key.

    Raises L{ValueError} (or L{OSError}) at startup rather than at the first
    login when a file is missing or malformed.
    """
    cas = [_twistedCertificate(c) for c in _loadCertificates(Path(caCertFile))]
    trustRoot = trustRootFromCertificates(cas)
    if (clientCertFile is None) != (clientKeyFile is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    if clientCertFile is None or clientKeyFile is None:
        return MutualTLSPolicy(trustRoot, serverName=serverName)
    leaf, *intermediates = _loadCertificates(Path(clientCertFile))
    keyPair = KeyPair.load(Path(clientKeyFile).read_bytes(), format=FILETYPE_PEM)
    clientCertificate = PrivateCertificate.fromCertificateAndKeyPair(
        _twistedCertificate(leaf), keyPair
    )
    if not clientCertificate.getPublicKey().matches(keyPair):
        raise ValueError(f"{clientKeyFile}: the key does not match {clientCertFile}")
    return MutualTLSPolicy(
        trustRoot,
        clientCertificate,
        [X509.from_cryptography(c) for c in intermediates],
        serverName=serverName,
    )


def makeHTTPSAgent(
    reactor: IReactorTime,
    policy: IPolicyForHTTPS,
    pool: HTTPConnectionPool | None = None,
    connectTimeout: float | None = None,
) -> Agent:
    """
    An L{Agent} on C{reactor} using C{policy}; pass a C{pool} to keep
    connections alive between logins (and to close them on shutdown).
    """
    return Agent(reactor, contextFactory=policy, pool=pool, connectTimeout=connectTimeout)

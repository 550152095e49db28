# -*- test-case-name: tests.test_tls -*-
"""
Client-side TLS for every HTTPS or TLS call the proxy and the bastion make,
built from PEM: mutual TLS to BBS; UAA and Cloud Controller verified against
the operator's CA (or the system's roots); the Kubernetes API (CA, client
certificate, C{insecure-skip-tls-verify}); and the backends' TLS, checked
against each instance's server name.

Verification is on unless the operator turns it off by name
(C{--skipCertVerify}, C{insecure-skip-tls-verify: true}), and that choice is
spelled out: L{AcceptAnyCertificatePolicy}. Every file or field is read and
checked at start-up; a bad one raises L{ValueError} naming it (a missing
one, L{OSError} naming the file) instead of failing the first login.

Certificates and keys are C{cryptography} objects, handed to pyOpenSSL as
such: Twisted's L{PrivateCertificate} and L{KeyPair} wrap pyOpenSSL's
C{X509}/C{PKey}, which pyOpenSSL deprecates. The one place pyOpenSSL still
takes only its own C{X509} is the trust store (C{X509Store.add_cert}), so
L{trustRootFromPEM} converts there, and nowhere else. The server's name is
checked by service-identity through Twisted's L{optionsForClientTLS}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from OpenSSL.crypto import X509
from OpenSSL.SSL import Connection
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

if TYPE_CHECKING:
    # not exported by twisted.internet.ssl; the type of what trustRootFromCertificates gives
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "PEM",
    "AcceptAnyCertificatePolicy",
    "ClientIdentity",
    "VerifyingPolicy",
    "loadCertificates",
    "makeHTTPSAgent",
    "serverTLSPolicy",
    "tlsPolicyFromPEM",
    "tlsPolicyFromPEMFiles",
    "trustRootFromPEM",
]


class PEM(NamedTuple):
    """PEM bytes and where they came from (a file, a config field), for errors."""

    data: bytes
    where: str

    @classmethod
    def fromFile(cls, path: str | Path) -> PEM:
        """The file's bytes; L{OSError} (naming it) when it cannot be read."""
        return cls(Path(path).read_bytes(), str(path))


def loadCertificates(pem: PEM) -> list[x509.Certificate]:
    """
    Every certificate in C{pem}, in order.

    @raise ValueError: naming C{pem.where}, when it holds none or a broken one.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem.data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ValueError(f"{pem.where}: no PEM certificate found")
    return certificates


def _loadPrivateKey(pem: PEM) -> PrivateKeyTypes:
    try:
        return load_pem_private_key(pem.data, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{pem.where}: not an unencrypted PEM private key") from None


def _publicBytes(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate, its intermediates and its key (kept out of reprs)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes = field(repr=False)

    @classmethod
    def fromPEM(cls, certificate: PEM | None, key: PEM | None) -> ClientIdentity | None:
        """
        The identity in C{certificate} (the leaf first, then intermediates)
        and C{key}; None when neither is given.

        @raise ValueError: one is given without the other, one does not
            parse, or the key is not the certificate's.
        """
        if certificate is None and key is None:
            return None
        if certificate is None or key is None:
            raise ValueError("a client certificate needs its key, and a key its certificate")
        leaf, *chain = loadCertificates(certificate)
        privateKey = _loadPrivateKey(key)
        if _publicBytes(privateKey.public_key()) != _publicBytes(leaf.public_key()):
            raise ValueError(f"{key.where}: the key does not match {certificate.where}")
        return cls(leaf, tuple(chain), privateKey)

    def certificateOptions(self) -> dict[str, Any]:
        """
        The L{CertificateOptions} arguments that present this identity.
        pyOpenSSL takes C{cryptography} objects here, whatever Twisted's type
        hints say.
        """
        return {
            "certificate": self.certificate,
            "privateKey": self.key,
            "extraCertChain": list(self.chain),
        }


def trustRootFromPEM(pem: PEM) -> IOpenSSLTrustRoot:
    """
    Trust exactly the certificates in C{pem} (one or several CAs).

    @raise ValueError: naming C{pem.where}, when it holds no certificate.
    """
    # X509Store.add_cert takes only pyOpenSSL's X509: the one conversion.
    return trustRootFromCertificates(
        [Certificate(X509.from_cryptography(c)) for c in loadCertificates(pem)]
    )


@implementer(IPolicyForHTTPS)
class VerifyingPolicy:
    """
    Verify every server against C{trustRoot} (the system's roots when None)
    and, when given, present C{identity}.

    C{serverName} overrides the name checked in the server's certificate,
    for a server reached by address but certified by name.
    """

    def __init__(
        self,
        trustRoot: IOpenSSLTrustRoot | None = None,
        identity: ClientIdentity | None = None,
        serverName: str | None = None,
    ) -> None:
        self._trustRoot = trustRoot if trustRoot is not None else platformTrust()
        self._identity = identity
        self._serverName = serverName

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        """The connection creator for one server, checked against its name."""
        return self.creatorForName(self._serverName or hostname.decode("ascii"))

    def creatorForName(self, serverName: str) -> IOpenSSLClientConnectionCreator:
        """The connection creator for a server certified as C{serverName}."""
        options = self._identity.certificateOptions() if self._identity else None
        return optionsForClientTLS(
            serverName, trustRoot=self._trustRoot, extraCertificateOptions=options
        )


@implementer(IOpenSSLClientConnectionCreator)
class _AnyCertificateCreator:
    """Client TLS that sends SNI but checks neither chain nor name."""

    def __init__(self, options: CertificateOptions, hostname: str) -> None:
        self._options = options
        isIP = isIPAddress(hostname) or isIPv6Address(hostname)
        self._serverName = None if isIP else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        return connection


@implementer(IPolicyForHTTPS)
class AcceptAnyCertificatePolicy:
    """
    INSECURE: accepts any server certificate, from anyone, for any name.
    Traffic is encrypted but anyone on the path may read it, one-time codes
    and tokens included. Only for an operator who asked for it by name.
    C{identity}, when given, is still presented.
    """

    def __init__(self, identity: ClientIdentity | None = None) -> None:
        options = identity.certificateOptions() if identity else {}
        self._options = CertificateOptions(verify=False, **options)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _AnyCertificateCreator(self._options, hostname.decode("ascii"))


def tlsPolicyFromPEM(
    ca: PEM | None = None,
    clientCertificate: PEM | None = None,
    clientKey: PEM | None = None,
    *,
    serverName: str | None = None,
    insecure: bool = False,
) -> IPolicyForHTTPS:
    """
    Verified against C{ca} (the system's roots when None) by name
    (C{serverName} when it differs from the URL's host), presenting the
    client certificate when one is given. C{insecure} skips the server's
    verification, and cannot go with a CA.

    @raise ValueError: naming the PEM at fault.
    """
    identity = ClientIdentity.fromPEM(clientCertificate, clientKey)
    if insecure:
        if ca is not None:
            raise ValueError(f"{ca.where}: a CA and unverified TLS exclude each other")
        return AcceptAnyCertificatePolicy(identity)
    trustRoot = trustRootFromPEM(ca) if ca is not None else None
    return VerifyingPolicy(trustRoot, identity, serverName)


def tlsPolicyFromPEMFiles(
    caCertFile: str | Path,
    clientCertFile: str | Path | None = None,
    clientKeyFile: str | Path | None = None,
    *,
    serverName: str | None = None,
) -> VerifyingPolicy:
    """
    A L{VerifyingPolicy} from PEM files: C{caCertFile} may hold several CA
    certificates; C{clientCertFile} holds the client certificate first, then
    any intermediates; C{clientKeyFile} its private key.

    @raise ValueError: naming the file at fault.
    @raise OSError: a file cannot be read.
    """
    trustRoot = trustRootFromPEM(PEM.fromFile(caCertFile))
    identity = ClientIdentity.fromPEM(
        PEM.fromFile(clientCertFile) if clientCertFile is not None else None,
        PEM.fromFile(clientKeyFile) if clientKeyFile is not None else None,
    )
    return VerifyingPolicy(trustRoot, identity, serverName)


def serverTLSPolicy(
    caCertFile: str | Path | None = None, *, skipCertVerify: bool = False
) -> IPolicyForHTTPS:
    """
    The policy for a server the proxy only needs to trust (UAA, Cloud
    Controller): L{AcceptAnyCertificatePolicy} when C{skipCertVerify}, else
    verification against C{caCertFile} (PEM, one or more CAs) or, when it is
    None or empty, the system's roots.

    @raise ValueError: the CA file holds no certificate.
    @raise OSError: the CA file cannot be read.
    """
    if skipCertVerify:
        return AcceptAnyCertificatePolicy()
    if caCertFile:
        return tlsPolicyFromPEMFiles(caCertFile)
    return VerifyingPolicy()


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

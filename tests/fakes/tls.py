"""
A throwaway certificate authority for tests: CA, server and client
certificates as PEM files in a directory, so that fakes and clients load them
exactly as a deployment would.

    ca = CertificateAuthority.create(tmp_path / "ca")
    server = ca.issueServer("bbs")              # SAN 127.0.0.1 and localhost
    client = ca.issueClient("ssh-proxy")
    server.certPath, server.keyPath, ca.certPath

    options = serverOptions(server, clientCA=ca)  # for listenSSL

Keys are P-256 for speed. Nothing here is fit for production. Servers get
C{cryptography} objects, not Twisted's C{PrivateCertificate} (whose pyOpenSSL
C{X509}/C{PKey} pyOpenSSL deprecates), as L{diegossh.tls} does for clients.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL.crypto import X509
from twisted.internet.ssl import CertificateOptions

__all__ = [
    "CertificateAuthority",
    "IssuedCertificate",
    "MutualTLSFiles",
    "commonName",
    "makeMutualTLS",
    "serverOptions",
]

_PEM = serialization.Encoding.PEM


def _name(commonName: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its key, both as PEM bytes and as files."""

    certPath: Path
    keyPath: Path
    certPEM: bytes
    keyPEM: bytes


@dataclass
class CertificateAuthority:
    """A self-signed CA writing what it issues under C{directory}."""

    directory: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, directory: Path, commonName: str = "diegossh test CA") -> CertificateAuthority:
        """Make a new CA and write C{ca.pem} / C{ca-key.pem} to C{directory}."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName))
            .issuer_name(_name(commonName))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        (directory / "ca.pem").write_bytes(cert.public_bytes(_PEM))
        (directory / "ca-key.pem").write_bytes(_keyPEM(key))
        return cls(directory, cert, key)

    @property
    def certPath(self) -> Path:
        """The CA certificate, the file clients and servers trust."""
        return self.directory / "ca.pem"

    @property
    def certPEM(self) -> bytes:
        return self.certificate.public_bytes(_PEM)

    def issue(
        self,
        name: str,
        *,
        dnsNames: Sequence[str] = (),
        ipAddresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> IssuedCertificate:
        """
        Issue a leaf certificate for C{name} (its CN), valid for the given
        names, and write C{NAME.pem} / C{NAME-key.pem}.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ] * client
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dnsNames]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ipAddresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = IssuedCertificate(
            certPath=self.directory / f"{name}.pem",
            keyPath=self.directory / f"{name}-key.pem",
            certPEM=cert.public_bytes(_PEM),
            keyPEM=_keyPEM(key),
        )
        issued.certPath.write_bytes(issued.certPEM)
        issued.keyPath.write_bytes(issued.keyPEM)
        return issued

    def issueServer(
        self,
        name: str,
        dnsNames: Sequence[str] = ("localhost",),
        ipAddresses: Sequence[str] = ("127.0.0.1", "::1"),
    ) -> IssuedCertificate:
        """A server certificate; by default valid for this machine's loopback."""
        return self.issue(name, dnsNames=dnsNames, ipAddresses=ipAddresses, server=True)

    def issueClient(self, name: str) -> IssuedCertificate:
        """A client certificate for mutual TLS, named only by its CN."""
        return self.issue(name, client=True)


@dataclass(frozen=True)
class MutualTLSFiles:
    """One CA with a server and a client certificate: a mutual-TLS setup."""

    ca: CertificateAuthority
    server: IssuedCertificate
    client: IssuedCertificate


def makeMutualTLS(
    directory: Path, serverName: str = "server", clientName: str = "client"
) -> MutualTLSFiles:
    """A fresh CA under C{directory} with a loopback server and a client cert."""
    ca = CertificateAuthority.create(directory)
    return MutualTLSFiles(ca, ca.issueServer(serverName), ca.issueClient(clientName))


def serverOptions(
    issued: IssuedCertificate,
    clientCA: CertificateAuthority | None = None,
    *,
    requireClientCertificate: bool = True,
) -> CertificateOptions:
    """
    TLS server options presenting C{issued}; with C{clientCA}, client
    certificates are verified against it (and required, unless
    C{requireClientCertificate} is false).
    """
    key = serialization.load_pem_private_key(issued.keyPEM, password=None)
    options: dict[str, object] = {
        "privateKey": key,
        "certificate": x509.load_pem_x509_certificate(issued.certPEM),
    }
    if clientCA is not None:
        options.update(
            verify=True,
            requireCertificate=requireClientCertificate,
            # the trust store takes only pyOpenSSL's X509
            caCerts=[X509.from_cryptography(clientCA.certificate)],
        )
    return CertificateOptions(**options)  # type: ignore[arg-type]


def commonName(peer: x509.Certificate | X509) -> str:
    """The CN of a peer certificate, as C{getPeerCertificate} gives it."""
    certificate = peer.to_cryptography() if isinstance(peer, X509) else peer
    [attribute] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)

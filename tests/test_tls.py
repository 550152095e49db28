"""
L{diegossh.tls}: PEM files as an operator writes them (a CA bundle, a client
certificate with its intermediate, broken files) and the policies built from
them, each against a real TLS server on loopback: verification refuses a
wrong CA or a wrong name, a server requiring client certificates gets the
right one, and only the policy named insecure accepts anything.

The module runs with pyOpenSSL's deprecation warnings as errors: certificates
and keys reach pyOpenSSL as C{cryptography} objects.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL.SSL import Error as TLSError
from service_identity import VerificationError
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer
from zope.interface.verify import verifyObject

from diegossh.tls import (
    PEM,
    AcceptAnyCertificatePolicy,
    ClientIdentity,
    VerifyingPolicy,
    loadCertificates,
    serverTLSPolicy,
    tlsPolicyFromPEM,
    tlsPolicyFromPEMFiles,
)
from tests.fakes.tls import (
    CertificateAuthority,
    IssuedCertificate,
    commonName,
    serverOptions,
)

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _intermediate(root: CertificateAuthority, directory: Path) -> CertificateAuthority:
    """A CA signed by C{root}: its leaves verify only with it sent along."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "intermediate")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    directory.mkdir()
    return CertificateAuthority(directory, certificate, key)


@dataclass
class PKI:
    ca: CertificateAuthority
    other: CertificateAuthority
    server: IssuedCertificate
    client: IssuedCertificate
    bundle: Path
    """The other CA, then ours: a bundle of several certificates."""


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    ca = CertificateAuthority.create(tmp_path / "ca", "our CA")
    other = CertificateAuthority.create(tmp_path / "other", "some other CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(other.certPEM + ca.certPEM)
    return PKI(ca, other, ca.issueServer("server"), ca.issueClient("proxy"), bundle)


# -- a TLS server on loopback ------------------------------------------------------


@implementer(IHandshakeListener)
class _SaysPeer(Protocol):
    """Once the handshake is done, says who the client is (or C{-}) and hangs up."""

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        peer = self.transport.getPeerCertificate()  # type: ignore[attr-defined]
        self.transport.write(commonName(peer).encode() if peer is not None else b"-")
        self.transport.loseConnection()


class _Listener(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.done: Deferred[tuple[bytes, Failure]] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback((self.received, reason))


Talk = Callable[..., Deferred[tuple[bytes, Failure]]]


@pytest_twisted.async_yield_fixture
async def talk(pki: PKI) -> AsyncIterator[Talk]:
    """
    C{await talk(policy, server=..., name=b"localhost")}: connect to a fresh
    server with C{policy} as if for C{https://NAME:PORT}; what the server
    said and why the connection ended.
    """
    ports: list[IListeningPort] = []

    async def run(
        policy: IPolicyForHTTPS,
        server: IssuedCertificate = pki.server,
        name: bytes = b"localhost",
        requireClient: bool = True,
    ) -> tuple[bytes, Failure]:
        reactor = _reactor()
        options = serverOptions(server, pki.ca, requireClientCertificate=requireClient)
        port = reactor.listenSSL(0, Factory.forProtocol(_SaysPeer), options, interface="127.0.0.1")
        ports.append(port)
        number = port.getHost().port
        endpoint = wrapClientTLS(
            policy.creatorForNetloc(name, number),
            TCP4ClientEndpoint(reactor, "127.0.0.1", number, timeout=5),
        )
        listener = _Listener()
        await connectProtocol(endpoint, listener)
        return await listener.done

    yield lambda *a, **kw: Deferred.fromCoroutine(run(*a, **kw))
    for port in ports:
        await maybeDeferred(port.stopListening)


def _refused(outcome: tuple[bytes, Failure]) -> bool:
    """Nothing said: the chain (TLS error) or the name (service-identity) was refused."""
    received, reason = outcome
    return received == b"" and reason.check(TLSError, VerificationError) is not None


# -- verification, against the server ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mutual_tls_with_a_ca_bundle(pki: PKI, talk: Talk) -> None:
    policy = tlsPolicyFromPEMFiles(pki.bundle, pki.client.certPath, pki.client.keyPath)
    assert verifyObject(IPolicyForHTTPS, policy)
    received, _ = await talk(policy)
    assert received == b"proxy"


@pytest_twisted.ensureDeferred
async def test_a_wrong_ca_is_refused(pki: PKI, talk: Talk) -> None:
    policy = tlsPolicyFromPEMFiles(pki.other.certPath, pki.client.certPath, pki.client.keyPath)
    assert _refused(await talk(policy))


@pytest_twisted.ensureDeferred
async def test_a_wrong_name_is_refused_unless_named(pki: PKI, talk: Talk) -> None:
    """A server certified by name only, reached by address (BBS, Kubernetes)."""
    named = pki.ca.issueServer("named", dnsNames=["bbs.example"], ipAddresses=[])
    files = (pki.ca.certPath, pki.client.certPath, pki.client.keyPath)
    assert _refused(await talk(tlsPolicyFromPEMFiles(*files), named, b"127.0.0.1"))
    policy = tlsPolicyFromPEMFiles(*files, serverName="bbs.example")
    received, _ = await talk(policy, named, b"127.0.0.1")
    assert received == b"proxy"


@pytest_twisted.ensureDeferred
async def test_backend_options_by_server_name(pki: PKI, talk: Talk) -> None:
    """What the proxy's backend TLS uses: the instance guid is the name checked."""
    backend = pki.ca.issueServer("instance", dnsNames=["instance-guid"], ipAddresses=[])
    policy = tlsPolicyFromPEMFiles(pki.ca.certPath, pki.client.certPath, pki.client.keyPath)

    class ByName:
        def __init__(self, name: str) -> None:
            self.name = name

        def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
            return policy.creatorForName(self.name)

    assert (await talk(ByName("instance-guid"), backend))[0] == b"proxy"
    assert _refused(await talk(ByName("other-guid"), backend))


@pytest_twisted.ensureDeferred
async def test_client_certificate_required(pki: PKI, talk: Talk) -> None:
    received, reason = await talk(tlsPolicyFromPEMFiles(pki.ca.certPath))
    assert received == b"" and reason.check(TLSError)
    stranger = pki.other.issueClient("stranger")
    policy = tlsPolicyFromPEMFiles(pki.ca.certPath, stranger.certPath, stranger.keyPath)
    received, reason = await talk(policy)
    assert received == b"" and reason.check(TLSError)


@pytest_twisted.ensureDeferred
async def test_no_client_certificate_when_none_is_asked(pki: PKI, talk: Talk) -> None:
    received, _ = await talk(serverTLSPolicy(pki.ca.certPath), requireClient=False)
    assert received == b"-"


@pytest_twisted.ensureDeferred
async def test_intermediates_are_sent(pki: PKI, talk: Talk, tmp_path: Path) -> None:
    """The server trusts the root only: the client's chain must carry the intermediate."""
    intermediate = _intermediate(pki.ca, tmp_path / "intermediate")
    leaf = intermediate.issueClient("chained")
    chained = tmp_path / "chained.pem"
    chained.write_bytes(leaf.certPEM + intermediate.certPEM)
    identity = ClientIdentity.fromPEM(PEM.fromFile(chained), PEM.fromFile(leaf.keyPath))
    assert identity is not None and identity.chain == (intermediate.certificate,)
    received, _ = await talk(tlsPolicyFromPEMFiles(pki.ca.certPath, chained, leaf.keyPath))
    assert received == b"chained"
    alone = tlsPolicyFromPEMFiles(pki.ca.certPath, leaf.certPath, leaf.keyPath)
    assert _refused(await talk(alone))


@pytest_twisted.ensureDeferred
async def test_skipping_verification_is_by_name_only(pki: PKI, talk: Talk) -> None:
    verified = serverTLSPolicy(pki.other.certPath)
    assert isinstance(verified, VerifyingPolicy)
    assert _refused(await talk(verified, requireClient=False))
    insecure = serverTLSPolicy(pki.other.certPath, skipCertVerify=True)
    assert isinstance(insecure, AcceptAnyCertificatePolicy)
    received, _ = await talk(insecure, requireClient=False)
    assert received == b"-"


@pytest_twisted.ensureDeferred
async def test_insecure_still_presents_the_client_certificate(pki: PKI, talk: Talk) -> None:
    """Kubernetes' C{insecure-skip-tls-verify} with a client certificate."""
    policy = tlsPolicyFromPEM(
        None,
        PEM(pki.client.certPEM, "client-certificate-data"),
        PEM(pki.client.keyPEM, "client-key-data"),
        insecure=True,
    )
    assert isinstance(policy, AcceptAnyCertificatePolicy)
    received, _ = await talk(policy, name=b"wrong.example")
    assert received == b"proxy"


def test_system_roots_by_default() -> None:
    assert isinstance(serverTLSPolicy(None), VerifyingPolicy)
    assert isinstance(serverTLSPolicy(""), VerifyingPolicy)
    assert isinstance(tlsPolicyFromPEM(), VerifyingPolicy)


# -- PEM, read and refused at start-up ----------------------------------------------


def test_a_bundle_loads_in_order(pki: PKI) -> None:
    assert loadCertificates(PEM.fromFile(pki.bundle)) == [
        pki.other.certificate,
        pki.ca.certificate,
    ]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB",
    ],
)
def test_a_bad_ca_file_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bbs-ca.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: no PEM certificate found$"):
        tlsPolicyFromPEMFiles(path)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: "):
        serverTLSPolicy(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"nowhere\.pem"):
        tlsPolicyFromPEMFiles(tmp_path / "nowhere.pem")


def test_a_bad_client_key_is_named(pki: PKI, tmp_path: Path) -> None:
    key = tmp_path / "client-key.pem"
    key.write_bytes(pki.client.certPEM)  # a certificate, not a key
    with pytest.raises(
        ValueError, match=f"^{re.escape(str(key))}: not an unencrypted PEM private key$"
    ):
        tlsPolicyFromPEMFiles(pki.ca.certPath, pki.client.certPath, key)


def test_a_bad_client_certificate_is_named(pki: PKI, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_bytes(pki.client.keyPEM)
    with pytest.raises(ValueError, match=f"^{re.escape(str(cert))}: no PEM certificate found$"):
        tlsPolicyFromPEMFiles(pki.ca.certPath, cert, pki.client.keyPath)


def test_a_key_of_another_certificate_is_refused(pki: PKI) -> None:
    other = pki.ca.issueClient("other")
    with pytest.raises(
        ValueError, match=f"^{re.escape(str(other.keyPath))}: the key does not match "
    ):
        tlsPolicyFromPEMFiles(pki.ca.certPath, pki.client.certPath, other.keyPath)


@pytest.mark.parametrize("which", ["certificate", "key"])
def test_a_certificate_needs_its_key(pki: PKI, which: str) -> None:
    cert = pki.client.certPath if which == "certificate" else None
    key = pki.client.keyPath if which == "key" else None
    with pytest.raises(ValueError, match="needs its key"):
        tlsPolicyFromPEMFiles(pki.ca.certPath, cert, key)


def test_a_ca_and_insecure_exclude_each_other(pki: PKI) -> None:
    with pytest.raises(ValueError, match=r"^kubeconfig: certificate-authority-data: "):
        tlsPolicyFromPEM(
            PEM(pki.ca.certPEM, "kubeconfig: certificate-authority-data"), insecure=True
        )


def test_the_key_stays_out_of_reprs(pki: PKI) -> None:
    identity = ClientIdentity.fromPEM(
        PEM(pki.client.certPEM, "cert"), PEM(pki.client.keyPEM, "key")
    )
    assert "key=" not in repr(identity) and "Private" not in repr(identity)

# -*- test-case-name: tests.test_cf_integration -*-
"""
TLS for the proxy's calls to UAA and Cloud Controller.

Verified by default: against the CA file the operator names
(C{--uaaCACert}, C{--ccAPICACert}), else the system's trust store, with the
server's name checked by service-identity. This reuses the BBS client's
L{MutualTLSPolicy} without a client certificate.

C{--skipCertVerify} is the only way around it, and it is spelled out:
L{AcceptAnyCertificatePolicy}.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL.SSL import Connection
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion, platformTrust
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from diegossh.proxy.bbs.tls import MutualTLSPolicy, tlsPolicyFromPEMFiles

__all__ = ["AcceptAnyCertificatePolicy", "serverTLSPolicy"]


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
    Traffic is encrypted but anyone on the path may read it, the one-time
    codes and the tokens included. For test deployments only.
    """

    def __init__(self) -> None:
        self._options = CertificateOptions(verify=False, raiseMinimumTo=TLSVersion.TLSv1_2)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _AnyCertificateCreator(self._options, hostname.decode("ascii"))


def serverTLSPolicy(
    caCertFile: str | Path | None = None, *, skipCertVerify: bool = False
) -> IPolicyForHTTPS:
    """
    The policy for one service: L{AcceptAnyCertificatePolicy} when
    C{skipCertVerify}, else verification against C{caCertFile} (PEM, one or
    more CAs) or, when it is None or empty, the system trust store.

    @raise ValueError: the CA file holds no certificate.
    @raise OSError: the CA file cannot be read.
    """
    if skipCertVerify:
        return AcceptAnyCertificatePolicy()
    if caCertFile:
        return tlsPolicyFromPEMFiles(caCertFile)
    return MutualTLSPolicy(platformTrust())

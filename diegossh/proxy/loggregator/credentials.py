# -*- test-case-name: tests.test_loggregator -*-
"""
The mutual-TLS material for the Loggregator agent, read and checked at
start-up, kept as PEM bytes because that is what gRPC takes
(C{grpc.ssl_channel_credentials}).

The checks are L{diegossh.tls}'s (every certificate parses, the key is the
certificate's), so a wrong file is refused when the proxy starts, naming it,
instead of every envelope failing later. Nothing here imports gRPC.

C{serverName} is the name the agent's certificate is checked against. It is
not the address we dial (C{127.0.0.1:3458}): go-loggregator's ingress client
verifies the name C{metron} (C{NewIngressTLSConfig}), which is what the agent
certificates of a Cloud Foundry deployment carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from diegossh.tls import PEM, ClientIdentity, loadCertificates

__all__ = ["AGENT_SERVER_NAME", "IngressTLS"]

AGENT_SERVER_NAME = "metron"
"""The name go-loggregator checks the agent's certificate for."""


@dataclass(frozen=True)
class IngressTLS:
    """CA, client certificate (chain) and key, as PEM; the key out of reprs."""

    caPEM: bytes = field(repr=False)
    certPEM: bytes = field(repr=False)
    keyPEM: bytes = field(repr=False)
    serverName: str = AGENT_SERVER_NAME

    @classmethod
    def fromFiles(
        cls,
        caPath: str | Path,
        certPath: str | Path,
        keyPath: str | Path,
        *,
        serverName: str = AGENT_SERVER_NAME,
    ) -> IngressTLS:
        """
        Read C{loggregator_ca_path}, C{loggregator_cert_path} and
        C{loggregator_key_path}.

        @raise OSError: a file cannot be read (the error names it).
        @raise ValueError: naming the file at fault: no certificate in it,
            not an unencrypted PEM key, or a key that is not the certificate's.
        """
        ca = PEM.fromFile(caPath)
        cert = PEM.fromFile(certPath)
        key = PEM.fromFile(keyPath)
        loadCertificates(ca)
        ClientIdentity.fromPEM(cert, key)
        return cls(ca.data, cert.data, key.data, serverName)

"""
A stand-in for the Loggregator agent's v2 ingress: a real gRPC server with
mutual TLS (client certificates required and checked against a CA), serving
C{/loggregator.v2.Ingress/Send} and recording every envelope it takes.

    agent = FakeIngress(server, clientCA=ca)    # tests.fakes.tls
    agent.start()
    ... agent.address ... agent.envelopes() ... agent.batches()
    agent.stop()

It misbehaves on demand: C{refuse} answers every call C{UNAVAILABLE} (an
agent shedding load); C{hold()} keeps calls waiting until C{release()} (a
hung agent). Handlers run on gRPC's threads, so what it records sits behind a
lock and is read through copies.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc

from diegossh.proxy.loggregator.envelope_pb2 import Envelope, EnvelopeBatch
from diegossh.proxy.loggregator.ingress_pb2 import SendResponse
from tests.fakes.tls import CertificateAuthority, IssuedCertificate

__all__ = ["FakeIngress"]

SERVICE = "loggregator.v2.Ingress"


class FakeIngress:
    """A v2 ingress on 127.0.0.1 with a server certificate and a client CA."""

    def __init__(
        self,
        server: IssuedCertificate,
        clientCA: CertificateAuthority,
        port: int = 0,
    ) -> None:
        self._server = server
        self._clientCA = clientCA
        self._requestedPort = port
        self._lock = threading.Lock()
        self._batches: list[list[Envelope]] = []
        self._peers: list[str] = []
        self._released = threading.Event()
        self._released.set()
        self._grpc: Any = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self.refuse = False
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._executor = futures.ThreadPoolExecutor(max_workers=4)
        server = grpc.server(self._executor)
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Send": grpc.unary_unary_rpc_method_handler(
                    self._send,
                    request_deserializer=EnvelopeBatch.FromString,
                    response_serializer=SendResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        credentials = grpc.ssl_server_credentials(
            [(self._server.keyPEM, self._server.certPEM)],
            root_certificates=self._clientCA.certPEM,
            require_client_auth=True,
        )
        self.port = server.add_secure_port(f"127.0.0.1:{self._requestedPort}", credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on 127.0.0.1:{self._requestedPort}")
        server.start()
        self._grpc = server

    def stop(self) -> None:
        """Stop at once: calls in progress are cancelled."""
        self.release()
        if self._grpc is not None:
            self._grpc.stop(None).wait()
            self._grpc = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def hold(self) -> None:
        """From now on, keep every call waiting until L{release}."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def _send(self, request: EnvelopeBatch, context: grpc.ServicerContext) -> SendResponse:
        self._released.wait()
        if self.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refusing on purpose")
        names = context.auth_context().get("x509_common_name", [])
        with self._lock:
            self._batches.append(list(request.batch))
            self._peers.extend(name.decode() for name in names)
        return SendResponse()

    def batches(self) -> list[list[Envelope]]:
        with self._lock:
            return [list(batch) for batch in self._batches]

    def envelopes(self) -> list[Envelope]:
        return [envelope for batch in self.batches() for envelope in batch]

    def clientNames(self) -> list[str]:
        """The CN of the client certificate of every call taken."""
        with self._lock:
            return list(self._peers)

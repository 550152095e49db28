# -*- test-case-name: tests.test_loggregator -*-
"""
The gRPC leg to the local Loggregator agent: L{IngressSender} sends each
batch as one unary C{/loggregator.v2.Ingress/Send} over mutual TLS.

This is the only module that imports gRPC, and only
L{diegossh.proxy.loggregator.makeEmitter}'s sender factory imports it, when
the service starts: a proxy without Loggregator never loads gRPC.

Why unary C{Send} and not C{BatchSender}, the client stream go-loggregator's
ingress client keeps open: each batch then has its own deadline and its own
status (taken, or not and why), there is no stream to notice broken and
reopen, and the agent implements C{Send} the same way (it is what
go-loggregator's C{EmitEvent} calls). The agent cannot tell the difference in
what it receives.

Why no generated gRPC code: one method, so the stub is one
C{channel.unary_unary(path)}; the path is checked against C{ingress.proto}'s
descriptor by the tests.

gRPC runs its own threads. C{send} starts the call with C{.future()}, which
returns without waiting for the network, and the answer comes back to the
reactor through C{callFromThread}; nothing here blocks the reactor. The
channel dials lazily, reconnects by itself with gRPC's backoff, capped at
L{MAX_RECONNECT_BACKOFF_MS} so that the envelopes lost after the agent comes
back (a BOSH update restarts it) stay few; while it is down, a call fails at
once (C{UNAVAILABLE}) and the emitter drops that batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from diegossh.proxy.loggregator.credentials import IngressTLS
from diegossh.proxy.loggregator.emitter import IEnvelopeSender
from diegossh.proxy.loggregator.envelope_pb2 import Envelope, EnvelopeBatch
from diegossh.proxy.loggregator.ingress_pb2 import SendResponse

__all__ = ["MAX_RECONNECT_BACKOFF_MS", "SEND_METHOD", "IngressError", "IngressSender"]

SEND_METHOD = "/loggregator.v2.Ingress/Send"
"""The gRPC method path of C{Ingress.Send} (package, service, method)."""

MAX_RECONNECT_BACKOFF_MS = 5000
"""Longest wait between two dials while the agent is down (gRPC's default: 120 s)."""


class IngressError(Exception):
    """The agent did not take a batch: the gRPC status code and its details."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


@implementer(IEnvelopeSender)
class IngressSender:
    """One gRPC channel to the agent, mutual TLS from L{IngressTLS}."""

    def __init__(self, reactor: IReactorFromThreads, address: str, tls: IngressTLS) -> None:
        self._reactor = reactor
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.caPEM,
            private_key=tls.keyPEM,
            certificate_chain=tls.certPEM,
        )
        options: list[tuple[str, Any]] = [
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        if tls.serverName:
            options.append(("grpc.ssl_target_name_override", tls.serverName))
        self._channel = grpc.secure_channel(address, credentials, options)
        self._call = self._channel.unary_unary(
            SEND_METHOD,
            request_serializer=EnvelopeBatch.SerializeToString,
            response_deserializer=SendResponse.FromString,
        )

    def send(self, envelopes: Sequence[Envelope], timeout: float) -> Deferred[None]:
        future = self._call.future(EnvelopeBatch(batch=envelopes), timeout=timeout)
        result: Deferred[None] = Deferred(lambda _: future.cancel())
        future.add_done_callback(
            lambda done: self._reactor.callFromThread(self._settle, result, done)
        )
        return result

    def _settle(self, result: Deferred[None], future: Any) -> None:
        """On the reactor thread: hand the call's outcome to its Deferred."""
        if result.called:  # cancelled already
            return
        if future.cancelled():
            result.errback(CancelledError())
            return
        error = future.exception()
        if error is None:
            result.callback(None)
        elif isinstance(error, grpc.Call):
            result.errback(IngressError(error.code().name, error.details() or ""))
        else:
            result.errback(error)

    def close(self) -> None:
        self._channel.close()

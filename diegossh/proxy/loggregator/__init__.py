# -*- test-case-name: tests.test_loggregator -*-
"""
Telemetry for a Cloud Foundry deployment: app logs and gauges sent to the
local Loggregator agent's v2 ingress (gRPC, mutual TLS), as upstream's
ssh-proxy sends them (docs/loggregator.md).

Public face:
  - L{makeEmitter}: the L{LoggregatorEmitter} service of a deployment (gRPC
    to the agent; gRPC is imported when it starts, never before);
  - L{LoggregatorEmitter}: C{appLog}, C{gauge} and C{emit}, which never wait;
  - L{ConnectionTelemetry}: what upstream's proxy sends per relayed
    connection ("Successful remote access by ...", "Remote access ended for
    ...", the C{ssh-connections} gauge);
  - L{IngressTLS}, L{ComponentIdentity}, L{lrpLogTags}, L{clientAddress}.

C{envelope.proto} and C{ingress.proto} declare exactly the parts of
Loggregator's v2 API that the proxy sends (field numbers are upstream's);
C{envelope_pb2.py}, C{ingress_pb2.py} and their C{.pyi} are generated from
them and checked in. No gRPC code is generated (the one stub is written by
hand in C{ingress.py}). To regenerate (grpcio-tools 1.85.1, whose protoc is
35.1, is a development tool only, in any venv), from the repository root::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \\
        diegossh/proxy/loggregator/envelope.proto \\
        diegossh/proxy/loggregator/ingress.proto
    for f in diegossh/proxy/loggregator/*_pb2.py diegossh/proxy/loggregator/*_pb2.pyi; do
        sed -i '1i # ruff: noqa\\n# fmt: off\\n# mypy: ignore-errors' "$f"
    done

The generated code checks at import that the protobuf runtime is at least
the version of the protoc that made it (7.35.1 for the checked-in files).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorFromThreads

from diegossh.proxy.loggregator.connections import (
    SSH_CONNECTIONS_METRIC,
    ConnectionTelemetry,
    TargetTelemetry,
    clientAddress,
)
from diegossh.proxy.loggregator.credentials import AGENT_SERVER_NAME, IngressTLS
from diegossh.proxy.loggregator.emitter import (
    BATCH_SIZE,
    FLUSH_INTERVAL,
    MAX_QUEUE,
    SEND_TIMEOUT,
    SHUTDOWN_BOUND,
    EmitterStats,
    IEnvelopeSender,
    LoggregatorEmitter,
)
from diegossh.proxy.loggregator.envelopes import (
    SSH_SOURCE_TYPE,
    ComponentIdentity,
    lrpLogTags,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = [
    "AGENT_SERVER_NAME",
    "BATCH_SIZE",
    "DEFAULT_ADDRESS",
    "FLUSH_INTERVAL",
    "MAX_QUEUE",
    "SEND_TIMEOUT",
    "SHUTDOWN_BOUND",
    "SSH_CONNECTIONS_METRIC",
    "SSH_SOURCE_TYPE",
    "ComponentIdentity",
    "ConnectionTelemetry",
    "EmitterStats",
    "IEnvelopeSender",
    "IngressTLS",
    "LoggregatorEmitter",
    "TargetTelemetry",
    "clientAddress",
    "lrpLogTags",
    "makeEmitter",
]

DEFAULT_ADDRESS = "127.0.0.1:3458"
"""The agent's v2 ingress: diego-logging-client's host, the BOSH job's port."""


def makeEmitter(
    reactor: IReactorTime,
    tls: IngressTLS,
    identity: ComponentIdentity,
    address: str = DEFAULT_ADDRESS,
    *,
    maxQueue: int = MAX_QUEUE,
    batchSize: int = BATCH_SIZE,
    flushInterval: float = FLUSH_INTERVAL,
    sendTimeout: float = SEND_TIMEOUT,
    shutdownBound: float = SHUTDOWN_BOUND,
) -> LoggregatorEmitter:
    """
    The emitter of a deployment: batches sent to the agent at C{address}
    (C{host:port}) over mutual TLS. gRPC is imported and the channel made
    when the service starts. C{reactor} also provides C{IReactorFromThreads}
    (gRPC answers on its own threads). The bounds default to the module's
    constants; C{batchSize} is upstream's C{loggregator_batch_max_size}.
    """
    threads = IReactorFromThreads(reactor)

    def senderFactory() -> IEnvelopeSender:
        from diegossh.proxy.loggregator.ingress import IngressSender

        return IngressSender(threads, address, tls)

    return LoggregatorEmitter(
        reactor,
        senderFactory,
        identity,
        maxQueue=maxQueue,
        batchSize=batchSize,
        flushInterval=flushInterval,
        sendTimeout=sendTimeout,
        shutdownBound=shutdownBound,
    )

# -*- test-case-name: tests.test_loggregator -*-
"""
What upstream's ssh-proxy tells Loggregator about each connection it relays
(C{proxy.HandleConnection} in diego-ssh), once the backend leg is up:

  1. the app log "Successful remote access by <client ip:port>" to the
     instance's app (C{SSH} source type, the instance's log tags), when the
     login named an LRP instance;
  2. the gauge C{ssh-connections}: how many such connections this process
     now relays (unit C{Metric}, the proxy's own source and instance id);

and when it ends, in this order (Go runs the later C{defer} first):

  3. C{ssh-connections} again, one lower;
  4. the app log "Remote access ended for <client ip:port>".

A connection whose backend leg never came up sends nothing. The count is per
process, as upstream's is per ssh-proxy process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zope.interface import implementer

from diegossh.interfaces import IConnectionTelemetry
from diegossh.proxy.loggregator.emitter import LoggregatorEmitter
from diegossh.proxy.loggregator.envelopes import lrpLogTags
from diegossh.proxy.target import LRPTarget

__all__ = [
    "GAUGE_UNIT",
    "SSH_CONNECTIONS_METRIC",
    "ConnectionTelemetry",
    "TargetTelemetry",
    "clientAddress",
]

SSH_CONNECTIONS_METRIC = "ssh-connections"
GAUGE_UNIT = "Metric"
"""The unit of diego-logging-client's C{SendMetric}."""


def clientAddress(host: str, port: int) -> str:
    """C{host:port} as Go's C{net.Addr.String} writes it: IPv6 bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConnectionTelemetry:
    """The connection count of one proxy process, and its app logs."""

    def __init__(self, emitter: LoggregatorEmitter) -> None:
        self._emitter = emitter
        self.connections = 0

    def connectionRelayed(self, client: str, tags: Mapping[str, str] | None) -> Callable[[], None]:
        """
        A connection from C{client} (see L{clientAddress}) now reaches its
        backend; C{tags} are the instance's log tags
        (L{diegossh.proxy.loggregator.lrpLogTags}), or None when the login
        named no LRP instance (no app logs then, the gauge all the same).

        @return: call it when the connection ends; calls after the first do
            nothing.
        """
        tags = dict(tags) if tags is not None else None
        if tags is not None:
            self._emitter.appLog(f"Successful remote access by {client}", tags)
        self.connections += 1
        self._emitter.gauge(SSH_CONNECTIONS_METRIC, self.connections, GAUGE_UNIT)
        ended = False

        def connectionEnded() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            self.connections -= 1
            self._emitter.gauge(SSH_CONNECTIONS_METRIC, self.connections, GAUGE_UNIT)
            if tags is not None:
                self._emitter.appLog(f"Remote access ended for {client}", tags)

        return connectionEnded


@implementer(IConnectionTelemetry)
class TargetTelemetry:
    """
    L{ConnectionTelemetry} as the proxy's relay calls it, with the login's
    target: an LRP instance's log tags (L{lrpLogTags}) when the target is
    one, none (the gauge only) for a realm's other targets.
    """

    def __init__(self, connections: ConnectionTelemetry) -> None:
        self.connections = connections

    def connectionRelayed(self, client: str, target: object) -> Callable[[], None]:
        tags = lrpLogTags(target) if isinstance(target, LRPTarget) else None
        return self.connections.connectionRelayed(client, tags)

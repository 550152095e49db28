# -*- test-case-name: tests.test_metrics -*-
"""
The SSH layer's side of metrics: the no-op default every server starts with
(L{NO_METRICS}), and the fixed vocabularies that peer-chosen text is mapped to
before it becomes a label.

Nothing here imports C{prometheus_client}: the daemon loads it only when its
metrics are turned on (C{-enableMetrics}), the proxy only when it serves a
debug listener (L{diegossh.ssh.prometheus} is the implementation both use).

Labels must stay few whatever a peer sends, or a client could grow the
exposition (and Prometheus's memory) without bound by naming channels or
realms at random: a channel type outside L{CHANNEL_TYPES} counts as
C{"other"}, a realm the proxy does not serve as C{"unknown"}.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from diegossh.interfaces import IProxyMetrics

__all__ = ["CHANNEL_TYPES", "NO_METRICS", "NoMetrics", "channelType", "metricsOf"]

#: The channel types counted by name (RFC 4254 and OpenSSH's); others are "other".
CHANNEL_TYPES = frozenset(
    {
        "session",
        "direct-tcpip",
        "forwarded-tcpip",
        "x11",
        "auth-agent@openssh.com",
        "direct-streamlocal@openssh.com",
        "forwarded-streamlocal@openssh.com",
        "tun@openssh.com",
    }
)
_CHANNEL_TYPES = {name.encode(): name for name in CHANNEL_TYPES}


def channelType(name: bytes) -> str:
    """
    The label for a channel type a peer sent: its name when known, else C{"other"}.
    """
    return _CHANNEL_TYPES.get(name, "other")


def metricsOf(holder: object) -> IProxyMetrics:
    """
    The metrics a transport, factory or admission reports to (its C{metrics}), or L{NO_METRICS}.
    """
    metrics: IProxyMetrics = getattr(holder, "metrics", None) or NO_METRICS
    return metrics


def _nothing() -> None:
    pass


@implementer(IProxyMetrics)
class NoMetrics:
    """
    Counts nothing: what a server uses while no metrics are served.
    """

    def connectionOpened(self) -> None:
        pass

    def connectionClosed(self) -> None:
        pass

    def refused(self, reason: str) -> None:
        pass

    def penalised(self, reason: str) -> None:
        pass

    def keyExchange(self, algorithm: str, initial: bool) -> None:
        pass

    def login(self, realm: str, outcome: str, reason: str) -> None:
        pass

    def channelOpened(self, kind: str) -> None:
        pass

    def channelClosed(self, kind: str) -> None:
        pass

    def sessionRelayed(self, realm: str, relay: object) -> Callable[[], None]:
        return _nothing

    def backendDial(self, seconds: float, outcome: str) -> None:
        pass

    def backendLogin(self, seconds: float, outcome: str) -> None:
        pass

    def httpCall(self, service: str, seconds: float, outcome: str) -> None:
        pass

    def workerEnded(self, slot: int, restarting: bool) -> None:
        pass

    def draining(self) -> None:
        pass


NO_METRICS = NoMetrics()

# -*- test-case-name: tests.test_metrics -*-
"""
The SSH server's figures as Prometheus metrics, for the proxy and the
daemon alike (docs/operations.md, "Metrics", lists every name), and the
C{/metrics} page of the debug listener.

Imported only when metrics are on: the daemon's footprint
(C{tests/test_sshd_footprint.py}) keeps C{prometheus_client} out unless
C{-enableMetrics} is given.

Each L{PrometheusSSHMetrics} registers in its own C{CollectorRegistry},
never the library's global one, so two in one process (tests) do not clash
and nothing else (the library's process and GC collectors) is exposed by
surprise. Every label set is created up front with its fixed values, so a
scrape shows zeros rather than missing series and the number of series is
known before the first connection: it cannot grow with what peers send.

The page is rendered on the reactor thread: C{prometheus_client.twisted}'s
resource runs the WSGI app in the reactor's thread pool, which a Twisted
program then has to start and stop, for a render that takes well under a
millisecond here (a few hundred samples; with C{--workers}, a few small
files read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from diegossh.interfaces import ISSHMetrics
from diegossh.ssh.metrics import CHANNEL_TYPES

__all__ = [
    "LOGIN_REASONS",
    "PENALTY_REASONS",
    "REFUSAL_REASONS",
    "MetricsResource",
    "PrometheusSSHMetrics",
]

PREFIX = "diegossh_"
REFUSAL_REASONS = ("penalty", "per_source", "max_startups")
PENALTY_REASONS = ("authfail", "grace", "protocol", "noauth")
LOGIN_REASONS = ("credentials", "lookup", "backend", "internal")
KEX_KINDS = ("initial", "rekey")
_CHANNEL_LABELS = (*sorted(CHANNEL_TYPES), "other")

# No "_created" series (a start timestamp per counter and label set): they
# double the page for no alert anyone writes, and multiprocess mode, which
# --workers uses, has none, so one process and many read the same.
disable_created_metrics()


@implementer(ISSHMetrics)
class PrometheusSSHMetrics:
    """
    L{ISSHMetrics} as Prometheus counters and gauges in C{self.registry}.

    @param realms: the realm names a login may be counted under (the
        daemon: C{("sshd",)}); any other counts as C{"unknown"}.
    @param keyExchanges: the key exchange algorithms the server offers; one
        it did not offer (none can be negotiated) counts as C{"other"}.
    """

    def __init__(
        self,
        realms: Iterable[str],
        keyExchanges: Iterable[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.realms = frozenset(realms)
        self._kexes = frozenset(keyExchanges)
        r = self.registry
        self.connectionsOpen = Gauge(
            PREFIX + "connections_open",
            "SSH connections admitted and not yet closed.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            PREFIX + "connections", "SSH connections admitted since start.", registry=r
        )
        self.refusals = Counter(
            PREFIX + "preauth_refused",
            "Connections closed at accept, before any byte, by reason.",
            ["reason"],
            registry=r,
        )
        self.penalties = Counter(
            PREFIX + "penalties",
            "Penalties charged to a source when its connection ended without a login.",
            ["reason"],
            registry=r,
        )
        self.kexes = Counter(
            PREFIX + "key_exchanges",
            "Key exchanges completed with clients, by algorithm and kind.",
            ["algorithm", "kind"],
            registry=r,
        )
        self.logins = Counter(
            PREFIX + "logins",
            "Login attempts that ended, by realm, outcome and reason.",
            ["realm", "outcome", "reason"],
            registry=r,
        )
        self.channelsOpen = Gauge(
            PREFIX + "channels_open",
            "Channels open, by type.",
            ["type"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.channelsOpened = Counter(
            PREFIX + "channels_opened",
            "Channels opened since start, by type.",
            ["type"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)
        for reason in PENALTY_REASONS:
            self.penalties.labels(reason)
        for algorithm in (*sorted(self._kexes), "other"):
            for kind in KEX_KINDS:
                self.kexes.labels(algorithm, kind)
        for realm in (*sorted(self.realms), "unknown"):
            self.logins.labels(realm, "success", "none")
            for reason in LOGIN_REASONS:
                self.logins.labels(realm, "failure", reason)
        for kind in _CHANNEL_LABELS:
            self.channelsOpen.labels(kind)
            self.channelsOpened.labels(kind)

    def realm(self, name: str) -> str:
        """
        C{name} if a login may be counted under it, else C{"unknown"}.
        """
        return name if name in self.realms else "unknown"

    # -- ISSHMetrics

    def connectionOpened(self) -> None:
        self.connectionsOpen.inc()
        self.connections.inc()

    def connectionClosed(self) -> None:
        self.connectionsOpen.dec()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason if reason in REFUSAL_REASONS else "max_startups").inc()

    def penalised(self, reason: str) -> None:
        self.penalties.labels(reason if reason in PENALTY_REASONS else "noauth").inc()

    def keyExchange(self, algorithm: str, initial: bool) -> None:
        name = algorithm if algorithm in self._kexes else "other"
        self.kexes.labels(name, "initial" if initial else "rekey").inc()

    def login(self, realm: str, outcome: str, reason: str) -> None:
        if outcome == "success":
            self.logins.labels(self.realm(realm), "success", "none").inc()
        else:
            why = reason if reason in LOGIN_REASONS else "internal"
            self.logins.labels(self.realm(realm), "failure", why).inc()

    def channelOpened(self, kind: str) -> None:
        label = kind if kind in CHANNEL_TYPES else "other"
        self.channelsOpen.labels(label).inc()
        self.channelsOpened.labels(label).inc()

    def channelClosed(self, kind: str) -> None:
        self.channelsOpen.labels(kind if kind in CHANNEL_TYPES else "other").dec()

    # -- the page

    def exposition(self) -> bytes:
        """
        The text exposition of this registry.
        """
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """
    C{GET /metrics}: the text exposition C{render} returns, as the classic
    text format 0.0.4 (what C{prometheus_client}'s own server answers a
    scraper that asks for nothing newer; every scraper reads it).
    """

    isLeaf = True

    def __init__(self, render: Callable[[], bytes]) -> None:
        super().__init__()
        self._render = render

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"method not allowed\n"
        request.setHeader(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode())
        return self._render()


def metricsChildren(render: Callable[[], bytes]) -> dict[bytes, Any]:
    """
    The debug site's children that serve C{/metrics}.
    """
    return {b"metrics": MetricsResource(render)}

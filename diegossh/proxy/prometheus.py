# -*- test-case-name: tests.test_metrics -*-
"""
The proxy's Prometheus metrics (docs/operations.md, "Metrics"): the SSH
server's figures (L{diegossh.ssh.prometheus}) and the proxy's own, and how
the figures of C{--workers} processes reach the parent's one C{/metrics}.

Why C{prometheus_client}'s multiprocess mode rather than the parent pulling
from each worker: the workers already share nothing but a socket and a pipe
for their log; pulling would give each a listener (or a second pipe
protocol), the parent a fan-out with timeouts and a merge of text
expositions, and a scrape would lose the counts of a worker that died since
the last one. In multiprocess mode each process writes its values to
memory-mapped files in one private directory and the parent sums the files
at scrape time, dead workers' counters included, so the totals never go
back when a worker is replaced.

How it is set up (L{MetricsDirectory}, L{useMultiprocess}):
  - the parent makes a private (0700) directory before any metric exists,
    names it in C{PROMETHEUS_MULTIPROC_DIR} (the workers inherit the
    environment), and removes it when it stops;
  - each process's files are named by its worker slot (the parent is 0,
    workers 1 to N-1, the slot in L{SLOT_VARIABLE}), not by pid, which is
    the library's default: a replaced worker reopens its slot's counters
    and goes on adding, so the directory holds (N x 3) files however often
    workers die, where pid-named files would grow with every restart;
  - gauges sum the live processes' values (C{livesum}): when a worker ends,
    the parent deletes its slot's gauge file (C{mark_process_dead}) before
    another takes the slot.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.application.service import Service
from zope.interface import implementer

from diegossh.interfaces import IProxyMetrics
from diegossh.proxy.workers import SLOT_VARIABLE
from diegossh.ssh.prometheus import PREFIX, PrometheusSSHMetrics

__all__ = [
    "HTTP_OUTCOMES",
    "HTTP_SERVICES",
    "MULTIPROC_VARIABLE",
    "SLOT_VARIABLE",
    "MetricsDirectory",
    "PrometheusProxyMetrics",
    "multiprocessExposition",
    "useMultiprocess",
]

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
BACKEND_OUTCOMES = ("success", "timeout", "failure")
HTTP_SERVICES = ("bbs", "uaa", "cloud_controller")
HTTP_OUTCOMES = ("1xx", "2xx", "3xx", "4xx", "5xx", "failed")
DIRECTIONS = ("to_instance", "to_user")
#: Latency buckets (seconds) for dials, logins and HTTP calls.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@implementer(IProxyMetrics)
class PrometheusProxyMetrics(PrometheusSSHMetrics):
    """
    L{diegossh.interfaces.IProxyMetrics} as Prometheus metrics.

    The bytes of a running session are read from its relay's two counters
    by L{flush} (every few seconds, L{diegossh.proxy.metrics.RelayedBytesFlush})
    and when it ends; C{_relays} holds one entry per session open.
    """

    def __init__(
        self,
        realms: Iterable[str],
        keyExchanges: Iterable[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(realms, keyExchanges, registry)
        r = self.registry
        self.sessionsOpen = Gauge(
            PREFIX + "proxy_sessions_open",
            "Logins relayed to an instance and not yet ended, by realm.",
            ["realm"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.relayedBytes = Counter(
            PREFIX + "proxy_relayed_bytes",
            "Channel data bytes relayed, by direction.",
            ["direction"],
            registry=r,
        )
        self.dials = Histogram(
            PREFIX + "proxy_backend_dial_seconds",
            "Time to connect to an instance, by outcome.",
            ["outcome"],
            registry=r,
            buckets=BUCKETS,
        )
        self.backendLogins = Histogram(
            PREFIX + "proxy_backend_login_seconds",
            "Time from dialling an instance to being logged in to it, by outcome.",
            ["outcome"],
            registry=r,
            buckets=BUCKETS,
        )
        self.calls = Histogram(
            PREFIX + "proxy_http_call_seconds",
            "Time to the answer of a call to the BBS, UAA or Cloud Controller, "
            "by service and outcome (status class, or failed).",
            ["service", "outcome"],
            registry=r,
            buckets=BUCKETS,
        )
        self.workerRestarts = Counter(
            PREFIX + "proxy_worker_restarts",
            "--workers processes that ended and were started again.",
            registry=r,
        )
        self.drainingGauge = Gauge(
            PREFIX + "proxy_draining",
            "1 while the proxy drains (after the first SIGTERM), else 0.",
            registry=r,
            multiprocess_mode="livemax",
        )
        for realm in (*sorted(self.realms), "unknown"):
            self.sessionsOpen.labels(realm)
        for direction in DIRECTIONS:
            self.relayedBytes.labels(direction)
        for outcome in BACKEND_OUTCOMES:
            self.dials.labels(outcome)
            self.backendLogins.labels(outcome)
        self._relays: dict[Any, list[int]] = {}
        self._toInstance = self.relayedBytes.labels("to_instance")
        self._toUser = self.relayedBytes.labels("to_user")

    # -- IProxyMetrics

    def sessionRelayed(self, realm: str, relay: Any) -> Callable[[], None]:
        gauge = self.sessionsOpen.labels(self.realm(realm))
        gauge.inc()
        self._relays[relay] = [relay.bytesFromClient, relay.bytesFromBackend]

        def ended() -> None:
            reported = self._relays.pop(relay, None)
            if reported is None:
                return
            gauge.dec()
            self._add(relay.bytesFromClient - reported[0], relay.bytesFromBackend - reported[1])

        return ended

    def flush(self) -> None:
        """
        Add what running sessions relayed since the last flush.
        """
        up = down = 0
        for relay, reported in self._relays.items():
            fromClient, fromBackend = relay.bytesFromClient, relay.bytesFromBackend
            up += fromClient - reported[0]
            down += fromBackend - reported[1]
            reported[0], reported[1] = fromClient, fromBackend
        self._add(up, down)

    def _add(self, up: int, down: int) -> None:
        if up:
            self._toInstance.inc(up)
        if down:
            self._toUser.inc(down)

    def backendDial(self, seconds: float, outcome: str) -> None:
        self.dials.labels(_known(outcome, BACKEND_OUTCOMES, "failure")).observe(seconds)

    def backendLogin(self, seconds: float, outcome: str) -> None:
        self.backendLogins.labels(_known(outcome, BACKEND_OUTCOMES, "failure")).observe(seconds)

    def httpCall(self, service: str, seconds: float, outcome: str) -> None:
        self.calls.labels(
            _known(service, HTTP_SERVICES, "bbs"), _known(outcome, HTTP_OUTCOMES, "failed")
        ).observe(seconds)

    def draining(self) -> None:
        self.drainingGauge.set(1)

    def workerEnded(self, slot: int, restarting: bool) -> None:
        if restarting:
            self.workerRestarts.inc()
        if values.ValueClass is not values.MutexValue:
            # its live gauges go; its counters stay in the sums
            mark_process_dead(str(slot))


def _known(value: str, allowed: tuple[str, ...], otherwise: str) -> str:
    return value if value in allowed else otherwise


def useMultiprocess(directory: str, slot: int) -> Callable[[], None]:
    """
    From now on, metrics created in this process keep their values in
    C{directory}, in files named by C{slot}. Call before any metric is
    created.

    @return: undoes it (for tests): metrics created later are in memory again.
    """
    previous = values.ValueClass, os.environ.get(MULTIPROC_VARIABLE)
    os.environ[MULTIPROC_VARIABLE] = directory
    name = str(slot)
    values.ValueClass = values.MultiProcessValue(lambda: name)

    def undo() -> None:
        values.ValueClass = previous[0]
        if previous[1] is None:
            os.environ.pop(MULTIPROC_VARIABLE, None)
        else:
            os.environ[MULTIPROC_VARIABLE] = previous[1]

    return undo


def multiprocessExposition(directory: str) -> Callable[[], bytes]:
    """
    What C{/metrics} answers in multiprocess mode: every process's files summed.
    """

    def render() -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)

    return render


class MetricsDirectory(Service):
    """
    The parent's private directory of metric files under C{--workers}: made
    (mode 0700) and put in use when built, so before any metric exists;
    removed when the proxy stops.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="diegossh-metrics-")
        self._undo = useMultiprocess(self.path, 0)

    def stopService(self) -> Any:
        super().stopService()
        values.close_all_multiprocess_files()
        self._undo()
        shutil.rmtree(self.path, ignore_errors=True)
        return None

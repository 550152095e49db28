"""
L{PoolService}: the kept-alive HTTP connections of a component are closed
when its service stops, against a real loopback HTTP server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
import treq
from twisted.internet import defer, endpoints
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from diegossh.proxy.pools import PoolService


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello"


class CountingSite(Site):
    """A site that knows when each of its connections ends."""

    def __init__(self) -> None:
        super().__init__(Hello())
        self.open = 0
        self.lost: list[defer.Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        assert protocol is not None
        site, lost = self, defer.Deferred[None]()
        self.lost.append(lost)
        original = protocol.connectionLost
        site.open += 1

        def connectionLost(reason: Any) -> None:
            site.open -= 1
            original(reason)
            lost.callback(None)

        protocol.connectionLost = connectionLost  # type: ignore[method-assign]
        return protocol


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[tuple[CountingSite, str]]:
    site = CountingSite()
    port = await endpoints.TCP4ServerEndpoint(_reactor(), 0, interface="127.0.0.1").listen(site)
    yield site, f"http://127.0.0.1:{port.getHost().port}/"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_closes_the_pooled_connections(
    server: tuple[CountingSite, str],
) -> None:
    site, url = server
    service = PoolService(_reactor())
    service.startService()
    pool = service.pool(maxPersistentPerHost=4)
    assert pool.persistent and pool.maxPersistentPerHost == 4
    agent = Agent(_reactor(), pool=pool)
    response = await agent.request(b"GET", url.encode())
    assert await treq.content(response) == b"hello"
    second = await agent.request(b"GET", url.encode())
    assert await treq.content(second) == b"hello"
    assert site.open == 1  # one connection, kept alive between the two requests
    assert not site.lost[0].called
    await service.stopService()
    assert not service.running
    # the server saw the connection end (bounded: a pool left open fails here)
    await defer.gatherResults(site.lost).addTimeout(10, _reactor())
    assert site.open == 0


@pytest_twisted.ensureDeferred
async def test_a_service_with_no_pools_or_no_idle_connections_stops_at_once() -> None:
    service = PoolService(_reactor())
    service.pool(persistent=False)
    service.startService()
    stopped = service.stopService()
    assert stopped.called
    await stopped


def test_a_peer_that_never_finishes_closing_does_not_hold_the_stop() -> None:
    """
    Closing a TLS connection waits for the peer's close_notify: a peer that
    never sends it holds the stop for the grace only.
    """
    from twisted.internet.task import Clock

    clock = Clock()
    service = PoolService(clock, grace=2)
    pool = service.pool()
    never: defer.Deferred[None] = defer.Deferred()
    pool.closeCachedConnections = lambda: never  # type: ignore[method-assign]
    service.startService()
    stopped = service.stopService()
    clock.advance(1.9)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called and clock.getDelayedCalls() == []
    never.callback(None)  # closing late is harmless


def test_a_quick_close_leaves_no_timer() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    service = PoolService(clock)
    service.pool()
    service.startService()
    assert service.stopService().called
    assert clock.getDelayedCalls() == []


# -- who uses one


def test_the_bbs_agent_pools_in_the_proxys_pool_service(tmp_path: Any) -> None:
    from diegossh.proxy import tap
    from tests.fakes.tls import makeMutualTLS

    pki = makeMutualTLS(tmp_path)
    options = tap.Options()
    options.parseOptions(
        ["--enableDiegoAuth", "--diegoCredentials=x", "--bbsAddress=https://127.0.0.1:8889",
         f"--bbsCACert={pki.ca.certPath}", f"--bbsClientCert={pki.client.certPath}",
         f"--bbsClientKey={pki.client.keyPath}", "--disableHealthCheckServer"]
    )  # fmt: skip
    top: Any = tap.makeService(options)
    services = [s for s in top if isinstance(s, PoolService)]
    assert len(services) == 1
    (pool,) = services[0].pools
    assert pool.persistent


def test_the_cf_realm_pools_in_its_own_service() -> None:
    from diegossh.proxy.realmplugins import CFRealmPlugin

    settings = {
        "ccAPIURL": "https://cc.example.com", "uaaTokenURL": "https://uaa.example.com/oauth/token",
        "uaaUsername": "ssh-proxy", "uaaPassword": "secret", "communicationTimeout": 5.0,
    }  # fmt: skip
    plugin = CFRealmPlugin()
    built = plugin.build(_reactor(), plugin.parse(settings), directory=None)  # type: ignore[arg-type]
    (service,) = built.services
    assert isinstance(service, PoolService)
    (pool,) = service.pools
    assert pool.persistent and pool.maxPersistentPerHost == 16

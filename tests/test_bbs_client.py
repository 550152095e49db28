# -*- test-case-name: tests.test_bbs_client -*-
"""
L{BBSClient} against the fake BBS over real sockets with mutual TLS, plus
unit tests on an in-memory clock for timing and retries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from OpenSSL.SSL import Error as SSLError
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IAgent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from diegossh.interfaces import ILRPDirectory
from diegossh.proxy.bbs import (
    ACTUAL_LRPS_PATH,
    DESIRED_LRP_PATH_R2,
    BBSClient,
)
from diegossh.proxy.bbs import models_pb2 as pb
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.target import LRPTarget
from diegossh.tls import makeHTTPSAgent, tlsPolicyFromPEMFiles
from tests.fakes.bbs import DESIRED_R3, Behaviour, FakeBBS
from tests.fakes.tls import CertificateAuthority, MutualTLSFiles, makeMutualTLS

GUID = "app-guid-1"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def pki(tmp_path: Path) -> MutualTLSFiles:
    return makeMutualTLS(tmp_path / "pki", serverName="bbs", clientName="ssh-proxy")


@pytest_twisted.async_yield_fixture
async def bbs(pki: MutualTLSFiles) -> AsyncIterator[FakeBBS]:
    fake = FakeBBS(_reactor(), pki.ca, pki.server)
    await fake.start()
    yield fake
    await fake.stop()


@pytest_twisted.async_yield_fixture
async def connect(bbs: FakeBBS, pki: MutualTLSFiles) -> AsyncIterator[Callable[..., BBSClient]]:
    """Build clients for the fake; every connection pool is closed at teardown."""
    pools: list[HTTPConnectionPool] = []

    def make(
        caCert: Path | None = None,
        clientCert: Path | None = pki.client.certPath,
        clientKey: Path | None = pki.client.keyPath,
        url: str | None = None,
        **kw: Any,
    ) -> BBSClient:
        reactor = _reactor()
        pool = HTTPConnectionPool(reactor)
        pools.append(pool)
        policy = tlsPolicyFromPEMFiles(caCert or pki.ca.certPath, clientCert, clientKey)
        kw.setdefault("communicationTimeout", 5.0)
        return BBSClient(makeHTTPSAgent(reactor, policy, pool), url or bbs.url, reactor, **kw)

    yield make
    for pool in pools:
        await pool.closeCachedConnections()


async def denied(d: Deferred[LRPTarget]) -> str:
    with pytest.raises(LoginDenied) as info:
        await d
    return info.value.reason


def test_provides_interface(connect: Callable[..., BBSClient]) -> None:
    assert verifyObject(ILRPDirectory, connect())


@pytest_twisted.ensureDeferred
async def test_host_address(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(
        GUID,
        0,
        instanceGuid="inst-0",
        route={"container_port": 2222, "user": "vcap", "password": "pw", "private_key": "KEY"},
        metricTags={
            "app_id": pb.MetricTagValue(static="app-1"),
            "instance_id": pb.MetricTagValue(dynamic=pb.MetricTagValue.INDEX),
            "guid": pb.MetricTagValue(dynamic=pb.MetricTagValue.INSTANCE_GUID),
        },
    )
    target = await connect().lookup(GUID, 0)
    assert (target.host, target.port, target.tls_port) == ("127.0.0.1", 61001, None)
    assert target.instance_guid == target.tls_server_name == "inst-0"
    assert target.route.user == "vcap"
    assert target.route.password == "pw"
    assert target.route.private_key == "KEY"
    assert target.log_guid == "log-guid"
    assert target.cell_id == "cell-1"
    assert target.metric_tags == {"app_id": "app-1", "instance_id": "0", "guid": "inst-0"}
    assert "pw" not in repr(target) and "KEY" not in str(target)
    # index 0 went on the wire explicitly, and the r3 path was used
    (path1, body1), (path2, body2) = bbs.requests
    assert path1 == ACTUAL_LRPS_PATH.encode() and path2 == DESIRED_R3
    query = pb.ActualLRPsRequest.FromString(body1)
    assert query.HasField("index") and query.index == 0 and query.process_guid == GUID
    assert pb.DesiredLRPByProcessGuidRequest.FromString(body2).process_guid == GUID


@pytest_twisted.ensureDeferred
async def test_instance_address_and_tls(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 1, instanceAddress="10.255.9.9")
    bbs.addLRP(GUID, 2, preferredAddress=pb.ActualLRPNetInfo.HOST)
    client = connect(connectToInstanceAddress=True, backendsTLSEnabled=True)
    first = await client.lookup(GUID, 1)
    assert (first.host, first.port, first.tls_port) == ("10.255.9.9", 2222, 61443)
    second = await client.lookup(GUID, 2)
    assert (second.host, second.port, second.tls_port) == ("127.0.0.1", 61001, 61002)


@pytest_twisted.ensureDeferred
async def test_preferred_instance(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0, preferredAddress=pb.ActualLRPNetInfo.INSTANCE)
    target = await connect(connectToInstanceAddress=False).lookup(GUID, 0)
    assert (target.host, target.port, target.tls_port) == ("10.255.0.2", 2222, None)


@pytest_twisted.ensureDeferred
async def test_r2_path(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0)
    await connect(desiredLRPPath=DESIRED_LRP_PATH_R2).lookup(GUID, 0)
    assert bbs.requests[1][0] == DESIRED_LRP_PATH_R2.encode()


@pytest_twisted.ensureDeferred
async def test_not_found(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0)
    assert await denied(connect().lookup(GUID, 3)) == f"no instance 3 of process {GUID}"
    assert await denied(connect().lookup("other", 0)) == "no instance 0 of process other"


@pytest_twisted.ensureDeferred
async def test_resource_not_found_error(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.failWith(ACTUAL_LRPS_PATH.encode(), pb.Error.ResourceNotFound, "nope")
    assert await denied(connect().lookup(GUID, 0)) == f"no instance 0 of process {GUID}"


@pytest_twisted.ensureDeferred
async def test_desired_not_found(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0)
    del bbs.desiredLRPs[GUID]
    assert await denied(connect().lookup(GUID, 0)) == f"no process {GUID}"


@pytest_twisted.ensureDeferred
async def test_other_bbs_error(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.failWith(DESIRED_R3, pb.Error.UnknownError, "database on fire")
    bbs.addLRP(GUID, 0)
    reason = await denied(connect().lookup(GUID, 0))
    assert reason == "the LRP directory (BBS) refused the lookup"
    assert "fire" not in reason


@pytest_twisted.ensureDeferred
async def test_two_lrps(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0)
    bbs.addLRP(GUID, 0, instanceGuid="evacuating")
    assert "ambiguous" in await denied(connect().lookup(GUID, 0))


@pytest_twisted.ensureDeferred
async def test_missing_route(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0, route=b"")
    assert "no diego-ssh route" in await denied(connect().lookup(GUID, 0))


@pytest_twisted.ensureDeferred
async def test_bad_route(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0, route=b"{not json")
    bbs.addLRP("g2", 0, route=json.dumps({"user": "vcap"}).encode())
    assert "not valid JSON" in await denied(connect().lookup(GUID, 0))
    assert "container_port is missing" in await denied(connect().lookup("g2", 0))


@pytest_twisted.ensureDeferred
async def test_no_port_mapping(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0, ports=[(8080, 61000, 0, 0)])
    reason = await denied(connect().lookup(GUID, 0))
    assert reason == "the instance has no port mapping for the ssh container port 2222"


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
@pytest_twisted.ensureDeferred
async def test_bbs_down(pki: MutualTLSFiles, connect: Callable[..., BBSClient]) -> None:
    """Nothing listens: connection refused, a few quick retries, then denied."""
    port = _reactor().listenTCP(0, Factory(), interface="127.0.0.1")
    url = f"https://127.0.0.1:{port.getHost().port}"
    await port.stopListening()
    client = connect(url=url, retries=2, retryDelay=0.01)
    assert await denied(client.lookup(GUID, 0)) == "the LRP directory (BBS) is unavailable"


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
@pytest_twisted.ensureDeferred
async def test_hanging_bbs_times_out(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.addLRP(GUID, 0)
    bbs.setBehaviour(Behaviour(mode="hang"), DESIRED_R3)
    reason = await denied(connect(communicationTimeout=0.5).lookup(GUID, 0))
    assert reason == "the LRP directory (BBS) did not answer in time"


@pytest_twisted.ensureDeferred
async def test_connection_closed_is_retried(
    bbs: FakeBBS, connect: Callable[..., BBSClient]
) -> None:
    bbs.addLRP(GUID, 0)
    bbs.setBehaviour(Behaviour(mode="close", times=2))
    target = await connect(retries=3, retryDelay=0.01).lookup(GUID, 0)
    assert target.port == 61001
    assert len(bbs.requests) == 4


@pytest_twisted.ensureDeferred
async def test_connection_always_closed(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.setBehaviour(Behaviour(mode="close"))
    reason = await denied(connect(retries=2, retryDelay=0.01).lookup(GUID, 0))
    assert reason == "the LRP directory (BBS) is unavailable"
    assert len(bbs.requests) == 3


@pytest_twisted.ensureDeferred
async def test_garbage_body(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.setBehaviour(Behaviour(mode="garbage"))
    reason = await denied(connect().lookup(GUID, 0))
    assert reason == "the LRP directory (BBS) sent an invalid response"


@pytest_twisted.ensureDeferred
async def test_html_body(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.setBehaviour(Behaviour(mode="html"))
    reason = await denied(connect().lookup(GUID, 0))
    assert reason == "the LRP directory (BBS) sent an invalid response"


@pytest_twisted.ensureDeferred
async def test_error_status(bbs: FakeBBS, connect: Callable[..., BBSClient]) -> None:
    bbs.setBehaviour(Behaviour(mode="status", status=503))
    assert await denied(connect().lookup(GUID, 0)) == "the LRP directory (BBS) answered HTTP 503"


@pytest_twisted.ensureDeferred
async def test_server_from_wrong_ca(
    bbs: FakeBBS, connect: Callable[..., BBSClient], tmp_path: Path
) -> None:
    bbs.addLRP(GUID, 0)
    other = CertificateAuthority.create(tmp_path / "other", "some other CA")
    client = connect(caCert=other.certPath)
    assert await denied(client.lookup(GUID, 0)) == "the LRP directory (BBS) is unavailable"
    assert bbs.requests == []


# Whether the policy refuses a wrong name or a client without (the right)
# certificate is tested in test_tls, against a plain TLS server.


# --- unit tests: in-memory agent and clock -----------------------------------


@implementer(IAgent)
class ScriptedAgent:
    """
    Answers from the fake BBS's resource in memory (treq's
    L{RequestTraversalAgent}), except that the first requests get the
    scripted outcomes: an exception, or C{"hang"} for a Deferred that never
    fires (and records its cancellation).
    """

    def __init__(self, fake: FakeBBS, script: list[Exception | str]) -> None:
        self._inner = RequestTraversalAgent(fake.resource())
        self.script = script
        self.calls = 0
        self.cancelled = 0

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        self.calls += 1
        if self.script:
            outcome = self.script.pop(0)
            if outcome == "hang":

                def cancel(d: Deferred[Any]) -> None:
                    self.cancelled += 1
                    d.errback(ResponseNeverReceived([Failure(CancelledError())]))

                return Deferred(cancel)
            assert isinstance(outcome, Exception)
            return fail(outcome)
        d = self._inner.request(method, uri, headers, bodyProducer)
        self._inner.flush()
        return d

    def flush(self) -> None:
        """Deliver whatever the in-memory server wrote since the last flush."""
        self._inner.flush()


def _memoryFake() -> FakeBBS:
    fake = FakeBBS(Clock())
    fake.addLRP(GUID, 0)
    return fake


def _outcome(d: Deferred[LRPTarget]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


def _memoryClient(agent: ScriptedAgent, clock: Clock, **kw: Any) -> BBSClient:
    return BBSClient(agent, "https://bbs.test:8889/", clock, **kw)


def test_retries_are_spaced_on_the_clock() -> None:
    clock = Clock()
    agent = ScriptedAgent(_memoryFake(), [ConnectionRefusedError(), ConnectionRefusedError()])
    box = _outcome(_memoryClient(agent, clock, retryDelay=0.1).lookup(GUID, 0))
    assert box == [] and agent.calls == 1
    clock.advance(0.1)
    assert box == [] and agent.calls == 2
    clock.advance(0.2)
    assert agent.calls == 4  # third attempt of the first call, then the second call
    [target] = box
    assert isinstance(target, LRPTarget) and target.port == 61001


def test_index_out_of_range_denied_without_a_call() -> None:
    agent = ScriptedAgent(_memoryFake(), [])
    box = _outcome(_memoryClient(agent, Clock()).lookup(GUID, 2**31))
    [failure] = box
    assert failure.value.reason == f"no instance {2**31} of process {GUID}"
    assert agent.calls == 0


def test_retries_exhausted() -> None:
    clock = Clock()
    agent = ScriptedAgent(_memoryFake(), [ConnectionRefusedError()] * 5)
    box = _outcome(_memoryClient(agent, clock, retries=2, retryDelay=0.1).lookup(GUID, 0))
    clock.pump([0.1] * 5)
    [failure] = box
    assert failure.value.reason == "the LRP directory (BBS) is unavailable"
    assert agent.calls == 3


def test_tls_failure_is_not_retried() -> None:
    clock = Clock()
    tlsFailure = ResponseNeverReceived([Failure(SSLError("certificate verify failed"))])
    agent = ScriptedAgent(_memoryFake(), [tlsFailure])
    box = _outcome(_memoryClient(agent, clock).lookup(GUID, 0))
    [failure] = box
    assert isinstance(failure.value, LoginDenied)
    assert agent.calls == 1


def test_timeout_cancels_the_request() -> None:
    clock = Clock()
    agent = ScriptedAgent(_memoryFake(), ["hang"])
    box = _outcome(_memoryClient(agent, clock, communicationTimeout=10).lookup(GUID, 0))
    clock.advance(9.9)
    assert box == []
    clock.advance(0.2)
    [failure] = box
    assert failure.value.reason == "the LRP directory (BBS) did not answer in time"
    assert agent.cancelled == 1 and agent.calls == 1


def test_timeout_covers_retries() -> None:
    """Retries do not extend the deadline of a call."""
    clock = Clock()
    agent = ScriptedAgent(_memoryFake(), [ConnectionRefusedError()] * 100)
    client = _memoryClient(agent, clock, communicationTimeout=1.0, retries=100, retryDelay=0.3)
    box = _outcome(client.lookup(GUID, 0))
    clock.pump([0.1] * 11)
    [failure] = box
    assert failure.value.reason == "the LRP directory (BBS) did not answer in time"


def test_each_call_has_its_own_deadline() -> None:
    clock = Clock()
    fake = _memoryFake()
    fake.reactor = clock
    fake.setBehaviour(Behaviour(delay=0.8))
    agent = ScriptedAgent(fake, [])
    box = _outcome(_memoryClient(agent, clock, communicationTimeout=1.0).lookup(GUID, 0))
    for _ in range(17):
        clock.advance(0.1)
        agent.flush()
    [target] = box
    assert isinstance(target, LRPTarget)

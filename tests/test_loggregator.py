"""
diegossh.proxy.loggregator: the envelopes upstream's ssh-proxy sends, field
for field; the emitter's queue, batches and bounded stop on a L{Clock} with an
in-memory sender; and the gRPC leg against a real gRPC stand-in for the agent
with mutual TLS (tests.fakes.loggregator).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_twisted
from twisted.application.service import IService
from twisted.internet import defer, task
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from diegossh.proxy.loggregator import (
    ComponentIdentity,
    ConnectionTelemetry,
    IEnvelopeSender,
    IngressTLS,
    LoggregatorEmitter,
    lrpLogTags,
    makeEmitter,
)
from diegossh.proxy.loggregator.connections import clientAddress
from diegossh.proxy.loggregator.envelope_pb2 import Envelope, Log
from diegossh.proxy.loggregator.ingress_pb2 import DESCRIPTOR as INGRESS
from diegossh.proxy.target import LRPTarget, SSHRoute
from tests.fakes.loggregator import FakeIngress
from tests.fakes.tls import CertificateAuthority

IDENTITY = ComponentIdentity(origin="ssh_proxy", sourceId="ssh_proxy", instanceId="vm-guid-1")
LRP_TAGS = {
    "source_id": "log-guid-1",
    "instance_id": "2",
    "app_name": "dora",
    "space_name": "dev",
}
NOW = 1_700_000_000.25


# -- an in-memory sender


@implementer(IEnvelopeSender)
class MemorySender:
    """Records each batch; answers when the test says (or at once)."""

    def __init__(self, answer: str = "hold") -> None:
        self.answer = answer
        self.batches: list[list[Envelope]] = []
        self.timeouts: list[float] = []
        self.pending: list[Deferred[None]] = []
        self.cancelled = 0
        self.closed = False

    def send(self, envelopes: Sequence[Envelope], timeout: float) -> Deferred[None]:
        self.batches.append(list(envelopes))
        self.timeouts.append(timeout)
        if self.answer == "ok":
            return defer.succeed(None)
        if self.answer == "fail":
            return defer.fail(RuntimeError("agent down"))

        def cancel(_: Deferred[None]) -> None:
            self.cancelled += 1

        d: Deferred[None] = Deferred(cancel)
        self.pending.append(d)
        return d

    def answerNext(self, error: Exception | None = None) -> None:
        d = self.pending.pop(0)
        if error is None:
            d.callback(None)
        else:
            d.errback(error)

    def close(self) -> None:
        self.closed = True


def _clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(NOW)
    return clock


def _emitter(
    clock: task.Clock, sender: MemorySender, start: bool = True, **kwargs: float
) -> LoggregatorEmitter:
    emitter = LoggregatorEmitter(clock, lambda: sender, IDENTITY, **kwargs)  # type: ignore[arg-type]
    if start:
        emitter.startService()
    return emitter


def _payloads(batch: Sequence[Envelope]) -> list[str]:
    return [e.log.payload.decode() for e in batch]


def _logLines(emitter: LoggregatorEmitter, count: int, prefix: str = "line") -> None:
    for i in range(count):
        emitter.appLog(f"{prefix} {i}", LRP_TAGS)


# -- envelopes, field for field


def test_appLogIsUpstreamsSendAppLog() -> None:
    """
    diego-logging-client's SendAppLog: payload, type OUT, source and
    instance ids from the tags, tags = origin + source_type + the tags,
    timestamp in nanoseconds.
    """
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender, flushInterval=0.1)
    emitter.appLog("Successful remote access by 10.0.0.1:50000", LRP_TAGS)
    clock.advance(0.1)
    [[envelope]] = sender.batches
    assert envelope.WhichOneof("message") == "log"
    assert envelope.log.payload == b"Successful remote access by 10.0.0.1:50000"
    assert envelope.log.type == Log.OUT
    assert envelope.source_id == "log-guid-1"
    assert envelope.instance_id == "2"
    assert dict(envelope.tags) == {
        "origin": "ssh_proxy",
        "source_type": "SSH",
        "source_id": "log-guid-1",
        "instance_id": "2",
        "app_name": "dora",
        "space_name": "dev",
    }
    assert envelope.timestamp == 1_700_000_000_250_000_000


def test_lrpTagsWinOverOriginAndSourceType() -> None:
    """Upstream applies the LRP's tags last: a metric tag of the same name wins."""
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender)
    emitter.appLog("x", {**LRP_TAGS, "origin": "app", "source_type": "APP"}, sourceType="SSH")
    clock.advance(1)
    [[envelope]] = sender.batches
    assert envelope.tags["origin"] == "app"
    assert envelope.tags["source_type"] == "APP"


def test_gaugeIsUpstreamsSendMetric() -> None:
    """
    SendMetric("ssh-connections", n): one metric, unit Metric, the proxy's own
    source and instance ids, only the origin tag, no source_type.
    """
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender)
    emitter.gauge("ssh-connections", 3, "Metric")
    clock.advance(1)
    [[envelope]] = sender.batches
    assert envelope.WhichOneof("message") == "gauge"
    assert list(envelope.gauge.metrics) == ["ssh-connections"]
    metric = envelope.gauge.metrics["ssh-connections"]
    assert (metric.unit, metric.value) == ("Metric", 3.0)
    assert (envelope.source_id, envelope.instance_id) == ("ssh_proxy", "vm-guid-1")
    assert dict(envelope.tags) == {"origin": "ssh_proxy"}
    assert envelope.timestamp == 1_700_000_000_250_000_000


def test_gaugeOfZeroStillNamesTheMetric() -> None:
    """The last connection closing sends ssh-connections 0, not an empty gauge."""
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender)
    emitter.gauge("ssh-connections", 0, "Metric")
    clock.advance(1)
    [[envelope]] = sender.batches
    parsed = Envelope.FromString(envelope.SerializeToString())
    assert parsed.WhichOneof("message") == "gauge"
    assert parsed.gauge.metrics["ssh-connections"].unit == "Metric"
    assert parsed.gauge.metrics["ssh-connections"].value == 0.0


def _target(**kwargs: object) -> LRPTarget:
    fields: dict[str, object] = {
        "process_guid": "pg",
        "index": 4,
        "instance_guid": "ig",
        "host": "10.0.0.9",
        "port": 61000,
        "route": SSHRoute(container_port=2222),
        "log_guid": "the-log-guid",
    }
    fields.update(kwargs)
    return LRPTarget(**fields)  # type: ignore[arg-type]


def test_lrpLogTagsDefaults() -> None:
    """source_id is the log guid and instance_id the index, unless metric tags say else."""
    assert lrpLogTags(_target()) == {"source_id": "the-log-guid", "instance_id": "4"}
    tagged = _target(metric_tags={"source_id": "app-guid", "instance_id": "ig", "org": "o"})
    assert lrpLogTags(tagged) == {"source_id": "app-guid", "instance_id": "ig", "org": "o"}


def test_clientAddressLikeGo() -> None:
    assert clientAddress("10.0.0.1", 50000) == "10.0.0.1:50000"
    assert clientAddress("2001:db8::1", 22) == "[2001:db8::1]:22"


def test_connectionTelemetryIsUpstreamsOrder() -> None:
    """
    proxy.HandleConnection: start log, gauge up; at the end gauge down, then
    the end log. The count is of connections open in this process.
    """
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender)
    telemetry = ConnectionTelemetry(emitter)
    endFirst = telemetry.connectionRelayed("10.0.0.1:50000", LRP_TAGS)
    endSecond = telemetry.connectionRelayed("[::1]:50001", None)
    endFirst()
    endFirst()
    endSecond()
    clock.advance(1)
    [batch] = sender.batches

    def describe(e: Envelope) -> tuple[str, object]:
        if e.WhichOneof("message") == "log":
            return ("log", e.log.payload.decode())
        return ("gauge", e.gauge.metrics["ssh-connections"].value)

    assert [describe(e) for e in batch] == [
        ("log", "Successful remote access by 10.0.0.1:50000"),
        ("gauge", 1.0),
        ("gauge", 2.0),
        ("gauge", 1.0),
        ("log", "Remote access ended for 10.0.0.1:50000"),
        ("gauge", 0.0),
    ]
    assert telemetry.connections == 0


# -- batching, on a clock


def test_emitReturnsWithoutSending() -> None:
    """
    Emitting never sends, not even a full batch: the send is scheduled on the
    clock, so a login that logs never does gRPC work inside its call.
    """
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender, batchSize=3)
    _logLines(emitter, 3)
    assert sender.batches == []
    clock.advance(0)
    assert [len(b) for b in sender.batches] == [3]


def test_flushIntervalSendsAPartialBatch() -> None:
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender, batchSize=10, flushInterval=0.1)
    _logLines(emitter, 4)
    clock.advance(0.099)
    assert sender.batches == []
    clock.advance(0.001)
    assert [_payloads(b) for b in sender.batches] == [["line 0", "line 1", "line 2", "line 3"]]
    assert clock.getDelayedCalls() == []


def test_batchesAreBoundedAndOneAtATime() -> None:
    """250 envelopes, batches of 100: one in flight; the next when it ends."""
    clock, sender = _clock(), MemorySender("hold")
    emitter = _emitter(clock, sender, batchSize=100, sendTimeout=5.0)
    _logLines(emitter, 250)
    clock.advance(0)
    assert [len(b) for b in sender.batches] == [100]
    clock.advance(1)
    assert [len(b) for b in sender.batches] == [100]
    sender.answerNext()
    clock.advance(0)
    assert [len(b) for b in sender.batches] == [100, 100]
    sender.answerNext()
    clock.advance(0.1)
    assert [len(b) for b in sender.batches] == [100, 100, 50]
    sender.answerNext()
    assert emitter.stats.sent == 250
    assert sender.timeouts == [5.0, 5.0, 5.0]
    assert _payloads(sender.batches[2])[-1] == "line 249"
    assert clock.getDelayedCalls() == []


def test_queuedBeforeStartIsSentAfter() -> None:
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender, start=False)
    _logLines(emitter, 2)
    assert clock.getDelayedCalls() == []
    emitter.startService()
    clock.advance(0.1)
    assert [len(b) for b in sender.batches] == [2]


# -- when the agent is down or stuck


def test_failedBatchIsDroppedAndTheNextOneIsTheRetry() -> None:
    """
    Upstream's behaviour: a batch the agent does not take is lost (counted),
    not queued again; the next batch goes out as usual.
    """
    clock, sender = _clock(), MemorySender("fail")
    emitter = _emitter(clock, sender, batchSize=2, flushInterval=0.1)
    with capturedLogs() as events:
        _logLines(emitter, 5)
        clock.advance(0)
        clock.advance(0)
        clock.advance(0.1)
    assert [len(b) for b in sender.batches] == [2, 2, 1]
    assert emitter.stats.droppedSendFailed == 5
    assert emitter.stats.failedBatches == 3
    assert emitter.stats.sent == 0
    [warning] = [e for e in events if e.get("log_namespace") == "diegossh.loggregator"]
    assert warning["failed"] == 2 and warning["error"] == "agent down"
    sender.answer = "ok"
    emitter.appLog("back", LRP_TAGS)
    clock.advance(0.1)
    assert _payloads(sender.batches[-1]) == ["back"]
    assert emitter.stats.sent == 1
    assert clock.getDelayedCalls() == []


def test_fullQueueDropsTheOldestAndCountsThem() -> None:
    """
    A stuck agent: one batch in flight, the queue fills to its bound, then
    each new envelope pushes out the oldest. Memory stays bounded; the count
    and one throttled warning say so; the newest go out when the agent answers.
    """
    clock, sender = _clock(), MemorySender("hold")
    emitter = _emitter(clock, sender, maxQueue=5, batchSize=2, warnInterval=60.0)
    with capturedLogs() as events:
        _logLines(emitter, 2)
        clock.advance(0)  # lines 0 and 1 in flight, never answered yet
        _logLines(emitter, 9, prefix="new")
        clock.advance(10)
    assert emitter.stats.droppedQueueFull == 4
    warnings = [e for e in events if e.get("log_namespace") == "diegossh.loggregator"]
    assert len(warnings) == 1  # throttled: four drops, one warning
    assert warnings[0]["new"] == 1
    with capturedLogs() as events:
        clock.advance(60)
        emitter.appLog("new 9", LRP_TAGS)
    [later] = [e for e in events if e.get("log_namespace") == "diegossh.loggregator"]
    assert later["new"] == 4  # the drops held back, and this one
    assert emitter.stats.droppedQueueFull == 5
    sender.answerNext()
    clock.advance(0)
    sender.answerNext()
    clock.advance(0)
    sender.answerNext()
    clock.advance(1)
    sender.answerNext()
    sent = [p for b in sender.batches for p in _payloads(b)]
    assert sent == ["line 0", "line 1", "new 5", "new 6", "new 7", "new 8", "new 9"]
    assert emitter.stats.sent == 7


def test_cancelledSendCountsAsFailed() -> None:
    clock, sender = _clock(), MemorySender("hold")
    emitter = _emitter(clock, sender, batchSize=1)
    _logLines(emitter, 1)
    clock.advance(0)
    sender.answerNext(CancelledError())
    assert emitter.stats.droppedSendFailed == 1


# -- stopping


def test_stopSendsWhatIsQueuedThenCloses() -> None:
    clock, sender = _clock(), MemorySender("hold")
    emitter = _emitter(clock, sender, batchSize=2, shutdownBound=2.0)
    _logLines(emitter, 5)
    clock.advance(0)
    stopped = emitter.stopService()
    _logLines(emitter, 1, prefix="late")  # a connection ending while we stop
    assert not stopped.called
    while sender.pending:
        sender.answerNext()
    assert stopped.called and sender.closed
    sent = [p for b in sender.batches for p in _payloads(b)]
    assert sent == ["line 0", "line 1", "line 2", "line 3", "line 4", "late 0"]
    assert clock.getDelayedCalls() == []
    emitter.appLog("after", LRP_TAGS)
    assert emitter.stats.droppedStopped == 1
    assert clock.getDelayedCalls() == []


def test_stopIsBoundedWhenTheAgentHangs() -> None:
    """
    The agent takes nothing: stop gives up at the shutdown bound, cancels the
    batch in flight, drops what is queued (counted) and closes the channel.
    """
    clock, sender = _clock(), MemorySender("hold")
    emitter = _emitter(clock, sender, batchSize=2, shutdownBound=2.0)
    _logLines(emitter, 5)
    clock.advance(0)
    with capturedLogs() as events:
        stopped = emitter.stopService()
        clock.advance(1.999)
        assert not stopped.called
        clock.advance(0.001)
    assert stopped.called and sender.closed
    assert sender.cancelled == 1
    assert emitter.stats.droppedSendFailed == 2
    assert emitter.stats.droppedStopped == 3
    assert clock.getDelayedCalls() == []
    warned = [e for e in events if e.get("log_namespace") == "diegossh.loggregator"]
    # the cancelled batch, then what stop dropped: nothing goes unreported
    assert [e["new"] for e in warned] == [2, 3]


def test_drainSendsWithWhatIsLeftOfTheBound() -> None:
    clock, sender = _clock(), MemorySender("hold")
    emitter = _emitter(clock, sender, batchSize=1, shutdownBound=2.0)
    _logLines(emitter, 2)
    clock.advance(0)
    stopped = emitter.stopService()
    clock.advance(0.5)
    sender.answerNext()
    assert sender.timeouts[-1] == pytest.approx(1.5)
    sender.answerNext()
    assert stopped.called


def test_stopWithNothingQueued() -> None:
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender)
    stopped = emitter.stopService()
    assert stopped.called and sender.closed and sender.batches == []
    assert clock.getDelayedCalls() == []


def test_emitterIsAService() -> None:
    clock, sender = _clock(), MemorySender("ok")
    emitter = _emitter(clock, sender, start=False)
    assert verifyObject(IService, emitter)
    assert verifyObject(IEnvelopeSender, sender)


# -- the wire


def test_sendPathIsTheProtosMethod() -> None:
    from diegossh.proxy.loggregator.ingress import SEND_METHOD

    method = INGRESS.services_by_name["Ingress"].methods_by_name["Send"]
    assert SEND_METHOD == f"/{method.containing_service.full_name}/{method.name}"
    assert SEND_METHOD == "/loggregator.v2.Ingress/Send"
    assert method.input_type.full_name == "loggregator.v2.EnvelopeBatch"


def test_fieldNumbersAreUpstreams() -> None:
    """The numbers of loggregator-api v2/envelope.proto, which the agent parses with."""
    envelope = Envelope.DESCRIPTOR
    numbers = {f.name: f.number for f in envelope.fields}
    assert numbers == {
        "timestamp": 1,
        "source_id": 2,
        "instance_id": 8,
        "tags": 9,
        "log": 4,
        "gauge": 6,
    }
    assert {f.name: f.number for f in Log.DESCRIPTOR.fields} == {"payload": 1, "type": 2}
    gaugeValue = envelope.fields_by_name["gauge"].message_type.fields_by_name["metrics"]
    value = gaugeValue.message_type.fields_by_name["value"].message_type
    assert {f.name: f.number for f in value.fields} == {"unit": 1, "value": 2}


@pytest.mark.interop
def test_proxyWithoutLoggregatorNeverImportsGrpc(tmp_path: Path) -> None:
    """
    Importing the proxy, and even building the emitter, loads no gRPC: only
    starting the service does.
    """
    ca = CertificateAuthority.create(tmp_path / "ca")
    client = ca.issueClient("ssh-proxy")
    script = f"""
import sys
import diegossh.proxy.tap, diegossh.proxy.loggregator as lg
from twisted.internet import reactor
tls = lg.IngressTLS.fromFiles(
    {str(ca.certPath)!r}, {str(client.certPath)!r}, {str(client.keyPath)!r}
)
emitter = lg.makeEmitter(reactor, tls, lg.ComponentIdentity("o", "s", "i"))
emitter.appLog("queued before start", {{"source_id": "x"}})
assert "grpc" not in sys.modules, "grpc imported before start"
emitter.startService()
assert "grpc" in sys.modules
emitter.stopService()
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_tlsFilesAreCheckedAtStart(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    client = ca.issueClient("ssh-proxy")
    other = ca.issueClient("other")
    tls = IngressTLS.fromFiles(ca.certPath, client.certPath, client.keyPath)
    assert tls.keyPEM == client.keyPEM and tls.serverName == "metron"
    assert "PRIVATE" not in repr(tls)
    with pytest.raises(ValueError, match="does not match"):
        IngressTLS.fromFiles(ca.certPath, client.certPath, other.keyPath)
    with pytest.raises(ValueError, match=str(client.keyPath)):
        IngressTLS.fromFiles(client.keyPath, client.certPath, client.keyPath)
    with pytest.raises(OSError):
        IngressTLS.fromFiles(tmp_path / "missing.pem", client.certPath, client.keyPath)


# -- against a real gRPC agent stand-in


class World:
    def __init__(self, tmp: Path) -> None:
        self.ca = CertificateAuthority.create(tmp / "ca")
        self.serverCert = self.ca.issueServer("metron", dnsNames=("metron",))
        self.clientCert = self.ca.issueClient("ssh-proxy")
        self.agent = FakeIngress(self.serverCert, clientCA=self.ca)
        self.tls = IngressTLS.fromFiles(
            self.ca.certPath, self.clientCert.certPath, self.clientCert.keyPath
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.agent.start()
    yield w
    w.agent.stop()


async def eventually(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll C{check} on the reactor until it holds, failing after C{limit} seconds."""
    from twisted.internet import reactor

    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await task.deferLater(reactor, 0.02, lambda: None)


def _deployment(world: World, address: str | None = None) -> LoggregatorEmitter:
    from twisted.internet import reactor

    emitter = makeEmitter(reactor, world.tls, IDENTITY, address or world.agent.address)
    emitter.startService()
    return emitter


async def _stop(emitter: LoggregatorEmitter) -> None:
    """Stop, and check that nothing of the emitter's is left on the reactor."""
    from twisted.internet import reactor

    await emitter.stopService()
    assert emitter._timer is None and emitter._inFlight is None
    ours = [
        call
        for call in reactor.getDelayedCalls()
        if getattr(call.func, "__self__", None) is emitter
    ]
    assert ours == []


@pytest_twisted.ensureDeferred
async def test_envelopesReachTheAgentOverMutualTLS(world: World) -> None:
    emitter = _deployment(world)
    telemetry = ConnectionTelemetry(emitter)
    ended = telemetry.connectionRelayed("10.0.0.1:50000", LRP_TAGS)
    ended()
    await eventually(lambda: len(world.agent.envelopes()) == 4, "four envelopes")
    start, up, down, end = world.agent.envelopes()
    assert start.log.payload == b"Successful remote access by 10.0.0.1:50000"
    assert end.log.payload == b"Remote access ended for 10.0.0.1:50000"
    for log in (start, end):
        assert (log.source_id, log.instance_id, log.log.type) == ("log-guid-1", "2", Log.OUT)
        assert log.tags["source_type"] == "SSH" and log.tags["app_name"] == "dora"
        assert log.tags["origin"] == "ssh_proxy"
    assert [g.gauge.metrics["ssh-connections"].value for g in (up, down)] == [1.0, 0.0]
    assert up.source_id == "ssh_proxy" and dict(up.tags) == {"origin": "ssh_proxy"}
    assert abs(start.timestamp / 1e9 - time.time()) < 60
    assert set(world.agent.clientNames()) == {"ssh-proxy"}
    # the agent has them before the client's future reports back to the reactor
    await eventually(lambda: emitter.stats.sent == 4, "the emitter to count four sent")
    await _stop(emitter)


@pytest_twisted.ensureDeferred
async def test_batchesOverTheWire(world: World) -> None:
    emitter = _deployment(world)
    world.agent.hold()
    _logLines(emitter, 250)
    await eventually(lambda: emitter._inFlight is not None, "first batch in flight")
    world.agent.release()
    await eventually(lambda: emitter.stats.sent == 250, "all sent")
    assert [len(b) for b in world.agent.batches()] == [100, 100, 50]
    assert _payloads(world.agent.envelopes()) == [f"line {i}" for i in range(250)]
    await _stop(emitter)


def _closedPort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
@pytest_twisted.ensureDeferred
async def test_agentDownDropsBatchesAndRecovers(world: World, tmp_path: Path) -> None:
    """
    Nothing listens: each batch fails at once and is dropped (counted), the
    queue does not grow. When an agent listens there, batches arrive again.
    """
    port = _closedPort()
    emitter = _deployment(world, f"127.0.0.1:{port}")
    _logLines(emitter, 3)
    await eventually(lambda: emitter.stats.failedBatches >= 1, "a failed batch")
    assert emitter.stats.droppedSendFailed == 3 and emitter.stats.sent == 0
    assert len(emitter._queue) == 0
    late = FakeIngress(world.serverCert, clientCA=world.ca, port=port)
    late.start()
    try:

        def delivered() -> bool:
            emitter.appLog("again", LRP_TAGS)
            return bool(late.envelopes())

        await eventually(delivered, "a batch after the agent came back")
        assert set(_payloads(late.envelopes())) == {"again"}
        await _stop(emitter)
    finally:
        late.stop()


@pytest_twisted.ensureDeferred
async def test_untrustedClientCertificateIsRefused(world: World, tmp_path: Path) -> None:
    stranger = CertificateAuthority.create(tmp_path / "stranger")
    client = stranger.issueClient("ssh-proxy")
    world.tls = IngressTLS.fromFiles(world.ca.certPath, client.certPath, client.keyPath)
    emitter = _deployment(world)
    _logLines(emitter, 1)
    await eventually(lambda: emitter.stats.failedBatches == 1, "refused")
    assert world.agent.envelopes() == []
    await _stop(emitter)


@pytest_twisted.ensureDeferred
async def test_agentWithoutTheMetronNameIsRefused(world: World, tmp_path: Path) -> None:
    """Like go-loggregator, the agent's certificate must be for C{metron}."""
    impostor = FakeIngress(world.ca.issueServer("elsewhere"), clientCA=world.ca)
    impostor.start()
    try:
        emitter = _deployment(world, impostor.address)
        _logLines(emitter, 1)
        await eventually(lambda: emitter.stats.failedBatches == 1, "refused")
        assert impostor.envelopes() == []
        await _stop(emitter)
    finally:
        impostor.stop()


@pytest_twisted.ensureDeferred
async def test_stopOverTheWireIsBoundedWhenTheAgentHangs(world: World) -> None:
    from twisted.internet import reactor

    world.agent.hold()
    emitter = makeEmitter(reactor, world.tls, IDENTITY, world.agent.address, shutdownBound=0.3)
    emitter.startService()
    _logLines(emitter, 150)
    await eventually(lambda: emitter._inFlight is not None, "a batch in flight")
    began = time.monotonic()
    await emitter.stopService()
    assert time.monotonic() - began < 2.0
    assert emitter.stats.sent == 0
    assert emitter.stats.droppedSendFailed + emitter.stats.droppedStopped == 150
    assert emitter._inFlight is None
    assert not [
        c for c in reactor.getDelayedCalls() if getattr(c.func, "__self__", None) is emitter
    ]
    world.agent.release()


@pytest_twisted.ensureDeferred
async def test_grpcThreadsDoNotOutliveTheService(tmp_path: Path) -> None:
    """Once the service and the agent have stopped, no thread of theirs is left."""
    before = set(threading.enumerate())
    world = World(tmp_path)
    world.agent.start()
    try:
        emitter = _deployment(world)
        _logLines(emitter, 3)
        await eventually(lambda: emitter.stats.sent == 3, "sent")
        await _stop(emitter)
    finally:
        world.agent.stop()
    await eventually(lambda: set(threading.enumerate()) <= before, "gRPC threads gone")

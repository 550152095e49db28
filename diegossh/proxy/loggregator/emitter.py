# -*- test-case-name: tests.test_loggregator -*-
"""
The proxy's side of Loggregator: L{LoggregatorEmitter} takes app logs and
gauges from the reactor thread, returns at once, and sends them to the local
agent in batches, one batch at a time, through an L{IEnvelopeSender}
(L{diegossh.proxy.loggregator.ingress.IngressSender} in a deployment).

Like go-loggregator's ingress client (C{IngressClient}, which
C{diego-logging-client} wraps for upstream's ssh-proxy):
  - a batch goes out when it holds L{BATCH_SIZE} envelopes, or
    L{FLUSH_INTERVAL} after its first envelope, whichever is first (upstream's
    C{WithBatchMaxSize} and C{WithBatchFlushInterval} defaults);
  - a batch the agent does not take (it is down, restarting, refuses our
    certificate) is dropped, not retried: the next batch is the retry;
  - one sender, one batch in flight.

Unlike it:
  - emitting never waits. Upstream's envelopes go through a Go channel of 100
    that blocks the emitting goroutine when it is full (a stuck agent stalls
    the connection that logs). Here the queue holds at most L{MAX_QUEUE}
    envelopes and, when full, drops the oldest to take the newest: the
    newest say what is happening now (the current C{ssh-connections}, the
    latest logins). Drops are counted (L{EmitterStats}) and logged at most
    once per L{WARN_INTERVAL};
  - each batch is one unary C{Send} with a deadline (L{SEND_TIMEOUT}) instead
    of a message on a long-lived C{BatchSender} stream, so a hung agent costs
    one batch, and its status says whether the agent took it;
  - stopping is bounded: L{LoggregatorEmitter.stopService} sends what is
    queued for at most L{SHUTDOWN_BOUND} seconds, then drops the rest and
    closes the connection (upstream's C{CloseSend} waits for ever, and the
    ssh-proxy never calls it).

The queue is the only memory the emitter holds on to: at most L{MAX_QUEUE}
envelopes queued plus one batch of at most L{BATCH_SIZE} in flight.

The sender is made by the factory given, when the service starts, not when it
is built: twistd builds the application, then forks to daemonize, and gRPC's
threads must not exist before that fork. So the proxy imports gRPC only when
it runs with Loggregator configured.

The clock is passed in; it times the batches, the shutdown bound, the
warnings and the envelopes' timestamps (C{clock.seconds()} is the wall clock
in a real reactor, in nanoseconds as the envelope wants).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface

from diegossh.logtext import SafeLogger
from diegossh.proxy.loggregator.envelope_pb2 import Envelope
from diegossh.proxy.loggregator.envelopes import (
    SSH_SOURCE_TYPE,
    ComponentIdentity,
    appLogEnvelope,
    gaugeEnvelope,
)

__all__ = [
    "BATCH_SIZE",
    "FLUSH_INTERVAL",
    "MAX_QUEUE",
    "SEND_TIMEOUT",
    "SHUTDOWN_BOUND",
    "WARN_INTERVAL",
    "EmitterStats",
    "IEnvelopeSender",
    "LoggregatorEmitter",
]

MAX_QUEUE = 1000
"""Envelopes waiting for a batch; past it the oldest is dropped."""
BATCH_SIZE = 100
"""Envelopes per C{Send} (go-loggregator's default C{batchMaxSize})."""
FLUSH_INTERVAL = 0.1
"""Seconds an envelope waits for its batch to fill (go-loggregator: 100 ms)."""
SEND_TIMEOUT = 5.0
"""Deadline of one C{Send}; the agent is local, so this is generous."""
SHUTDOWN_BOUND = 2.0
"""Seconds C{stopService} spends sending what is queued before dropping it."""
WARN_INTERVAL = 60.0
"""At most one warning about dropped envelopes per this many seconds."""

_log = SafeLogger(namespace="diegossh.loggregator")


class IEnvelopeSender(Interface):
    """One connection to a Loggregator v2 ingress."""

    def send(envelopes: Sequence[Envelope], timeout: float) -> Deferred[None]:  # noqa: N805
        """
        Send one batch. Fire with None when the agent took it; fail when it
        did not, or C{timeout} seconds passed. Never block the caller.
        Cancelling the Deferred gives up on the batch.
        """

    def close() -> None:
        """Drop the connection; a send still pending fails."""


@dataclass
class EmitterStats:
    """What became of the envelopes emitted, counted since the start."""

    sent: int = 0
    """Taken by the agent."""
    droppedQueueFull: int = 0
    """The oldest in a full queue, pushed out by a newer one."""
    droppedSendFailed: int = 0
    """In a batch the agent did not take."""
    droppedStopped: int = 0
    """Still queued at the shutdown bound, or emitted after the stop."""
    failedBatches: int = 0
    """Batches the agent did not take."""

    @property
    def dropped(self) -> int:
        return self.droppedQueueFull + self.droppedSendFailed + self.droppedStopped


class LoggregatorEmitter(Service):
    """
    App logs and gauges for the local Loggregator agent: emit from the
    reactor thread, sent in bounded batches (see the module docstring).
    """

    name = "loggregator"

    def __init__(
        self,
        clock: IReactorTime,
        senderFactory: Callable[[], IEnvelopeSender],
        identity: ComponentIdentity,
        *,
        maxQueue: int = MAX_QUEUE,
        batchSize: int = BATCH_SIZE,
        flushInterval: float = FLUSH_INTERVAL,
        sendTimeout: float = SEND_TIMEOUT,
        shutdownBound: float = SHUTDOWN_BOUND,
        warnInterval: float = WARN_INTERVAL,
    ) -> None:
        if maxQueue < 1 or batchSize < 1:
            raise ValueError("the queue and a batch hold at least one envelope")
        self._clock = clock
        self._senderFactory = senderFactory
        self.identity = identity
        self._maxQueue = maxQueue
        self._batchSize = batchSize
        self._flushInterval = flushInterval
        self._sendTimeout = sendTimeout
        self._shutdownBound = shutdownBound
        self._warnInterval = warnInterval
        self._queue: collections.deque[Envelope] = collections.deque()
        self._sender: IEnvelopeSender | None = None
        self._timer: IDelayedCall | None = None
        self._inFlight: Deferred[None] | None = None
        self._idleWaiters: list[Deferred[None]] = []
        self._stopping = False
        self._stopWaiters: list[Deferred[None]] = []
        self._stopped = False
        self._givenUp = False
        self._nextWarning = 0.0
        self._droppedWarned = 0
        self._lastError = ""
        self.stats = EmitterStats()

    # -- emitting (reactor thread; never waits, never does I/O)

    def appLog(
        self,
        message: str,
        tags: Mapping[str, str],
        sourceType: str = SSH_SOURCE_TYPE,
    ) -> None:
        """
        An app log line (C{OUT}) for the instance that C{tags} name: what
        upstream's C{SendAppLog(message, sourceType, tags)} sends.
        """
        self.emit(
            appLogEnvelope(
                message,
                tags,
                identity=self.identity,
                timestamp=self._now(),
                sourceType=sourceType,
            )
        )

    def gauge(
        self,
        name: str,
        value: float,
        unit: str,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """
        A gauge of the proxy itself: what upstream's C{SendMetric} (unit
        C{Metric}) and C{SendComponentMetric} send.
        """
        self.emit(
            gaugeEnvelope(
                name,
                value,
                unit,
                identity=self.identity,
                timestamp=self._now(),
                tags=tags,
            )
        )

    def emit(self, envelope: Envelope) -> None:
        """Queue one envelope; when the queue is full, drop the oldest."""
        if self._stopped:
            self.stats.droppedStopped += 1
            return
        if len(self._queue) >= self._maxQueue:
            self._queue.popleft()
            self.stats.droppedQueueFull += 1
            self._warnDropped()
        self._queue.append(envelope)
        self._schedule()

    def _now(self) -> int:
        """The clock in nanoseconds, whole seconds kept exact."""
        seconds = self._clock.seconds()
        whole = int(seconds)
        return whole * 1_000_000_000 + round((seconds - whole) * 1_000_000_000)

    # -- batching

    def _schedule(self) -> None:
        """
        Time the next batch: now (through the clock, never inside an emit
        call) when a full batch waits, else one flush interval after the
        first envelope. Nothing is scheduled while a batch is in flight:
        its end calls this again.
        """
        if not self.running or self._inFlight is not None or not self._queue:
            return
        full = len(self._queue) >= self._batchSize
        if self._timer is None:
            delay = 0.0 if full else self._flushInterval
            self._timer = self._clock.callLater(delay, self._flush)
        elif full and self._timer.getTime() > self._clock.seconds():
            self._timer.reset(0)

    def _flush(self) -> None:
        self._timer = None
        if self._queue and self._inFlight is None:
            self._send(self._takeBatch(), self._sendTimeout)

    def _takeBatch(self) -> list[Envelope]:
        count = min(self._batchSize, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    def _send(self, batch: list[Envelope], timeout: float) -> Deferred[None]:
        assert self._sender is not None
        sent = maybeDeferred(self._sender.send, batch, timeout)
        self._inFlight = sent
        sent.addCallbacks(
            self._batchSent,
            self._batchFailed,
            callbackArgs=(len(batch),),
            errbackArgs=(len(batch),),
        )
        sent.addBoth(self._sendEnded)
        return sent

    def _batchSent(self, _: object, count: int) -> None:
        self.stats.sent += count

    def _batchFailed(self, failure: Failure, count: int) -> None:
        self.stats.droppedSendFailed += count
        self.stats.failedBatches += 1
        self._lastError = failure.getErrorMessage()
        self._warnDropped()

    def _sendEnded(self, _: object) -> None:
        self._inFlight = None
        waiters, self._idleWaiters = self._idleWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._schedule()

    def _whenIdle(self) -> Deferred[None]:
        if self._inFlight is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idleWaiters.append(waiter)
        return waiter

    # -- warnings

    def _warnDropped(self) -> None:
        """Log the drops so far, at most once per warning interval."""
        now = self._clock.seconds()
        if now < self._nextWarning:
            return
        self._nextWarning = now + self._warnInterval
        self._logDropped()

    def _logDropped(self) -> None:
        stats = self.stats
        _log.warn(
            "loggregator: {new} envelopes dropped since the last warning"
            " ({full} in all for a full queue, {failed} in {batches} batches"
            " the agent did not take; last error: {error})",
            new=stats.dropped - self._droppedWarned,
            full=stats.droppedQueueFull,
            failed=stats.droppedSendFailed,
            batches=stats.failedBatches,
            error=self._lastError or "none",
        )
        self._droppedWarned = stats.dropped

    # -- service

    def startService(self) -> None:
        """Connect (lazily: gRPC dials on the first batch) and send what queued up."""
        self._sender = self._senderFactory()
        self._stopped = False
        self._givenUp = False
        super().startService()
        self._schedule()

    def stopService(self) -> Deferred[None]:
        """
        Send what is queued for at most the shutdown bound, then drop the
        rest and close the connection. Fires within the bound.
        """
        super().stopService()
        waiter: Deferred[None] = Deferred()
        self._stopWaiters.append(waiter)
        if self._stopping:
            return waiter
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._clock.seconds() + self._shutdownBound
        guard = self._clock.callLater(self._shutdownBound, self._giveUp)
        drained: Deferred[None] = Deferred.fromCoroutine(self._drain(deadline))
        drained.addErrback(lambda f: _log.failure("loggregator: stopping failed", f))
        drained.addBoth(self._finishStopping, guard)
        return waiter

    async def _drain(self, deadline: float) -> None:
        await self._whenIdle()
        while self._queue and not self._givenUp and self._sender is not None:
            timeout = max(deadline - self._clock.seconds(), 0.0)
            self._send(self._takeBatch(), timeout)
            await self._whenIdle()

    def _giveUp(self) -> None:
        self._givenUp = True
        if self._inFlight is not None:
            self._inFlight.cancel()

    def _finishStopping(self, _: object, guard: IDelayedCall) -> None:
        if guard.active():
            guard.cancel()
        self.stats.droppedStopped += len(self._queue)
        self._queue.clear()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self._stopped = True
        self._stopping = False
        if self.stats.dropped > self._droppedWarned:
            self._logDropped()
        waiters, self._stopWaiters = self._stopWaiters, []
        for waiter in waiters:
            waiter.callback(None)

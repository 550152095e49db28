# -*- test-case-name: tests.test_proxy_workers -*-
"""
C{--workers N}: N proxy processes accepting on one listening socket.

One reactor is one core. With N > 1 the process twistd started (the parent)
binds the listening socket itself, accepts on it like any worker, and starts
N-1 worker processes that inherit the same socket as file descriptor
L{WORKER_FD} and adopt it as C{adoptStreamPort} would. The kernel hands each
new connection to whichever process calls C{accept} first, so an idle process
takes the next login while a busy one is still working; each process accepts
one connection per wake-up (L{SharedPort}), so a burst is spread too.

Why one inherited socket rather than one C{SO_REUSEPORT} socket per process:
  - the kernel spreads C{SO_REUSEPORT} connections by a hash of the address,
    blind to load, so four transfers can land on one process while another
    idles; a shared accept queue goes to whoever is free;
  - connections waiting in a dead worker's own C{SO_REUSEPORT} queue are
    reset; in a shared queue they wait for the next process to accept;
  - the address is bound once, by the parent, before twistd drops privileges;
    no other process of the same user can join the port.

Each worker is a fresh Python (C{python -c}, not a fork of the running
reactor) running L{diegossh.proxy.worker}, which builds its own portal, realms
and directory from the parent's options. Those, and the host key (generated or
loaded once, so every process shows the client the same key), reach it as one
JSON line on its stdin, never on a command line. The worker keeps reading
stdin: when the parent goes away, however it goes, the pipe closes and the
worker stops; on Linux it also asks for SIGTERM at its parent's death
(C{PR_SET_PDEATHSIG}). Workers serve no health check (the parent does) and log
to their stdout, which the parent copies into its own log with the worker's
pid. Each process keeps its own pre-login tables (L{diegossh.ssh.admission}:
connections not logged in yet, penalties): the limits apply per process, and a
penalised source is refused by the process that charged it (the others learn
it from their own connections). A worker that ends while the parent runs is
logged and started again, after a delay that grows while workers keep dying
young.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet import defer, tcp
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from diegossh._twisted import adoptListeningPort
from diegossh.addresses import parseAddress, serverEndpoint
from diegossh.interfaces import IProxyMetrics
from diegossh.listening import GuardedEndpoint, guardAccepting
from diegossh.ssh.metrics import NO_METRICS

WORKER_FD = 3
#: What the parent tells a worker on its stdin, a line each, after the boot
#: line: C{drain} (as a first SIGTERM would: the parent drains) and C{stop}
#: (stop now). Lines, not signals, so that a SIGTERM sent to every process
#: of the group at once (systemd's default) is not taken as a second one.
DRAIN = b"drain"
STOP = b"stop"
MESSAGES = (DRAIN, STOP)
#: How long the parent's stop waits for a worker told to stop before killing
#: it: the worker's own stop closes its connections within CLOSE_GRACE.
STOP_GRACE = 20.0
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# A worker that lived less than this is "dying young": the next delay doubles.
YOUNG = 10.0
_MAX_LINE = 16 * 1024
# The worker's program: its own module (diegossh.proxy.worker), which imports tap.
_BOOT = "from diegossh.proxy.worker import runWorker; runWorker()"
# Names the worker's slot in its environment (its metrics files are named by it;
# diegossh.proxy.prometheus reads it under the same name).
SLOT_VARIABLE = "DIEGOSSH_WORKER_SLOT"

log = Logger()


def listeningService(
    reactor: Any, config: Any, factory: Any, metrics: IProxyMetrics = NO_METRICS
) -> IService:
    """
    The service that accepts users' connections for C{factory}: the plain
    endpoint with one process, a L{WorkerPool} with more (telling C{metrics}
    of each worker that ends), an adopted socket in a worker.
    """
    settings = config["settings"]
    if settings.inheritedListenFD is not None:
        return AdoptedPort(reactor, settings.inheritedListenFD, factory)
    if settings.workers <= 1:
        endpoint = GuardedEndpoint(serverEndpoint(reactor, settings.address), reactor)
        return Listener(endpoint, factory)
    pool = WorkerPool(
        reactor, settings.address, factory, settings.workers - 1, workerOptions(config)
    )
    pool.metrics = metrics
    return pool


def workerOptions(config: Any) -> dict[str, Any]:
    """
    What a worker needs to rebuild the parent's options: every option as given
    (flags, C{config}, C{realms}), JSON-safe values only.
    """
    raw: dict[str, Any] = {}
    for name, value in config.items():
        if name == "settings":
            continue
        if value is None or isinstance(value, str | int | float | bool | list):
            raw[name] = value
    return raw


class SharedPort(tcp.Port):
    """
    A listening port shared with other processes: one C{accept} per wake-up.

    Twisted's port accepts up to C{numberAccepts} (100 and growing) connections
    each time the socket is readable, so when four clients connect at once the
    first process to wake takes all four. Taking one and going back to the
    reactor lets the other processes, woken by the same readiness, take theirs.
    """

    @property
    def numberAccepts(self) -> int:
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        pass


def adoptShared(reactor: Any, fd: int, family: int, factory: Any) -> SharedPort:
    """
    What C{reactor.adoptStreamPort} does for TCP, with a L{SharedPort}.
    """
    port = adoptListeningPort(SharedPort, reactor, fd, family, factory)
    port.startListening()
    guardAccepting(port, reactor)
    return port


def bindListener(address: str, backlog: int = 511) -> socket.socket:
    """
    A non-blocking listening TCP socket on C{address} (C{host:port}).
    """
    host, port = parseAddress(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))  # noqa: S104
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener(StreamServerEndpointService):
    """
    The one-process listener, which a drain closes before the rest stops.
    """

    def stopAccepting(self) -> Any:
        """
        Close the listening port (once; the ordinary stop then skips it).
        """
        if not self.running:
            return None
        return self.stopService()


class AdoptedPort(Service):
    """
    A worker's listener: the socket inherited from the parent.
    """

    def __init__(self, reactor: Any, fd: int, factory: Any) -> None:
        self._reactor = reactor
        self._fd = fd
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        with socket.socket(fileno=os.dup(self._fd)) as probe:
            family = probe.family
        # adoptStreamPort takes its own duplicate; ours is no longer needed.
        self.port = adoptShared(self._reactor, self._fd, family, self.factory)
        os.close(self._fd)

    def stopAccepting(self) -> Any:
        """
        Close this worker's copy of the listening socket (a drain does it
        before the rest stops).
        """
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    def stopService(self) -> Any:
        super().stopService()
        return self.stopAccepting()


class _Worker(ProcessProtocol):
    """
    The parent's end of one worker: its stdin (the options, then held open as
    the worker's lifeline) and its output, copied into the parent's log.
    """

    def __init__(self, pool: WorkerPool, slot: int, started: float) -> None:
        self.pool = pool
        self.slot = slot
        self.started = started
        self.pid: int | None = None
        self.ended = False
        self._followers: list[defer.Deferred[None]] = []
        self._partial = b""

    def whenEnded(self) -> defer.Deferred[None]:
        """
        Fires once the process has ended; each caller gets its own (which
        it may cancel).
        """
        if self.ended:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._followers.remove(d))
        self._followers.append(d)
        return d

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.write(json.dumps(self.pool.boot).encode() + b"\n")  # type: ignore[union-attr]

    def tell(self, message: bytes) -> None:
        """
        One of L{MESSAGES} down the worker's stdin (nothing if it is gone).
        """
        try:
            self.transport.write(message + b"\n")  # type: ignore[union-attr]
        except Exception:  # noqa: S110 - it ended meanwhile
            pass

    def outReceived(self, data: bytes) -> None:
        self._lines(data)

    def errReceived(self, data: bytes) -> None:
        self._lines(data)

    def _lines(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > _MAX_LINE:
            complete.append(self._partial)
            self._partial = b""
        for line in complete:
            if line.strip():
                log.info(
                    "worker {slot} (pid {pid}): {line}",
                    slot=self.slot,
                    pid=self.pid,
                    line=line.decode("utf-8", "replace").rstrip(),
                )

    def processEnded(self, reason: Failure) -> None:
        self._lines(b"\n")
        self.ended = True
        self.pool._workerEnded(self, reason)
        followers, self._followers = self._followers, []
        for d in followers:
            d.callback(None)


class WorkerPool(Service):
    """
    The parent's listener with C{workers} more processes on the same socket.
    Each worker's environment names its slot (C{DIEGOSSH_WORKER_SLOT}, 1 to
    C{workers}), which its metrics files are named by.
    """

    metrics: IProxyMetrics = NO_METRICS

    def __init__(self, reactor: Any, address: str, factory: Any, workers: int,
                 options: dict[str, Any]) -> None:  # fmt: skip
        self._reactor = reactor
        self._address = address
        self.factory = factory
        self.workers = workers
        self.boot = {
            "options": options,
            "hostKeys": [key.toString("OPENSSH").decode() for key in factory.privateKeys.values()],
        }
        self.socket: socket.socket | None = None
        self.port: Any = None
        self._running: dict[int, _Worker] = {}
        self._delays: dict[int, float] = {}
        self._restarts: dict[int, Any] = {}
        self.draining = False

    def pids(self) -> list[int]:
        """
        The worker processes running now (not the parent).
        """
        return [w.pid for w in self._running.values() if w.pid is not None]

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.socket is None:
            self.socket = bindListener(self._address)

    def startService(self) -> None:
        if self.socket is None:
            self.privilegedStartService()
        super().startService()
        assert self.socket is not None
        self.port = adoptShared(
            self._reactor, self.socket.fileno(), self.socket.family, self.factory
        )
        log.info(
            "listening on {address} with {n} worker processes besides this one",
            address=self._address,
            n=self.workers,
        )
        for slot in range(1, self.workers + 1):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if not self.running or self.socket is None or self.draining:
            return
        worker = _Worker(self, slot, self._reactor.seconds())
        self._reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, "-c", _BOOT],
            env={**os.environ, SLOT_VARIABLE: str(slot)},
            childFDs={0: "w", 1: "r", 2: "r", WORKER_FD: self.socket.fileno()},
        )
        self._running[slot] = worker
        log.info("started worker {slot}: pid {pid}", slot=slot, pid=worker.pid)

    def _workerEnded(self, worker: _Worker, reason: Failure) -> None:
        if self._running.get(worker.slot) is worker:
            del self._running[worker.slot]
        self.metrics.workerEnded(worker.slot, bool(self.running and not self.draining))
        if not self.running or self.draining:
            log.info("worker {slot} (pid {pid}) ended", slot=worker.slot, pid=worker.pid)
            return
        lived = self._reactor.seconds() - worker.started
        previous = self._delays.get(worker.slot, RESTART_DELAY / 2)
        delay = min(previous * 2, MAX_RESTART_DELAY) if lived < YOUNG else RESTART_DELAY
        self._delays[worker.slot] = delay
        log.warn(
            "worker {slot} (pid {pid}) ended: {reason}; starting another in {delay:g}s",
            slot=worker.slot,
            pid=worker.pid,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self._restarts[worker.slot] = self._reactor.callLater(delay, self._spawn, worker.slot)

    def _cancelRestarts(self) -> None:
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()

    def stopAccepting(self) -> Any:
        """
        Close the parent's port and its listening socket: no worker is
        started after this, and the socket stops listening once the
        workers, draining too, have closed their copies (until then the
        kernel would go on queueing connections nobody accepts).
        """
        port, self.port = self.port, None
        stopped = defer.maybeDeferred(port.stopListening) if port is not None else None

        def closeSocket(result: Any) -> Any:
            if self.socket is not None:
                self.socket.close()
                self.socket = None
            return result

        if stopped is None:
            return closeSocket(None)
        return stopped.addBoth(closeSocket)

    def drain(self) -> defer.Deferred[Any]:
        """
        Tell every worker to drain, start no more; fires when all have
        exited (L{diegossh.proxy.drain.Drainable}).
        """
        self.draining = True
        self._cancelRestarts()
        waits = []
        for worker in list(self._running.values()):
            waits.append(worker.whenEnded())
            worker.tell(DRAIN)
        return defer.DeferredList(waits, consumeErrors=True)  # a cancelled wait is no error

    def stopService(self) -> Any:
        super().stopService()
        self._cancelRestarts()
        waits = []
        for worker in list(self._running.values()):
            waits.append(worker.whenEnded())
            worker.tell(STOP)
        killer = self._reactor.callLater(STOP_GRACE, self._killAll)
        stopped: list[Any] = [defer.DeferredList(waits)]
        if self.port is not None:
            stopped.append(defer.maybeDeferred(self.stopAccepting))

        def done(result: Any) -> None:
            if killer.active():
                killer.cancel()
            if self.socket is not None:
                self.socket.close()
                self.socket = None

        return defer.DeferredList(stopped).addCallback(done)

    def _killAll(self) -> None:
        for worker in list(self._running.values()):
            log.warn("worker {pid} did not stop; killing it", pid=worker.pid)
            _signal(worker, signal.SIGKILL)


def _signal(worker: _Worker, number: int) -> None:
    try:
        worker.transport.signalProcess(number)  # type: ignore[union-attr]
    except Exception:  # noqa: S110 - it ended meanwhile
        pass

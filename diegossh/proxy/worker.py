# -*- test-case-name: tests.test_proxy_workers -*-
"""
The worker process of C{--workers N}: its main, L{runWorker}.

The parent (L{diegossh.proxy.workers.WorkerPool}) starts each worker as
C{python -c} running L{runWorker} (its C{_BOOT}), with the listening socket as
descriptor L{WORKER_FD} and one JSON line on stdin: the parent's options and
its host key. The worker rebuilds the parent's options with the proxy's own
C{tap.Options} and builds its service with C{tap.makeService}, as twistd
would, except that it listens on the inherited socket, serves no health check,
and uses the parent's host key (so every process shows the client the same
key): one C{dataclasses.replace} of the settings it parsed. It keeps reading
stdin: the parent's C{drain} starts the worker's drain (as a SIGTERM to the
worker itself does: L{diegossh.proxy.drain}), its C{stop} stops it now, and
when the parent goes away the pipe closes and the worker stops now.

A module of its own because it is a separate program: it needs C{tap}, and
C{tap} needs the parent's half (C{workers.listeningService}); kept apart, the
two import in one direction only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace
from typing import Any

from twisted.conch.ssh import keys
from twisted.internet import stdio
from twisted.logger import eventAsText, globalLogBeginner
from twisted.protocols.basic import LineOnlyReceiver

from diegossh.proxy import tap
from diegossh.proxy.workers import DRAIN, STOP, WORKER_FD


def _dieWithParent() -> None:
    """
    Ask Linux for SIGTERM when the parent dies; a parent already gone ends us now.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent == 1 or os.getppid() != parent:
        os._exit(0)


class _Lifeline(LineOnlyReceiver):
    """
    The parent's end of stdin: after the boot line, only the parent's
    messages (L{diegossh.proxy.workers.MESSAGES}: drain, stop) come down
    it, and its closing means the parent is gone (stop now).
    """

    delimiter = b"\n"
    MAX_LENGTH = 64

    def __init__(self, reactor: Any, drain: Any) -> None:
        self._reactor = reactor
        self._drain = drain

    def lineReceived(self, line: bytes) -> None:
        if self._drain is None:
            return
        if line.strip() == DRAIN:
            self._drain.begin()
        elif line.strip() == STOP:
            self._drain.hurry()

    def connectionLost(self, reason: Any = None) -> None:
        if self._drain is not None:
            self._drain.hurry()
        elif self._reactor.running:
            self._reactor.stop()


def _watchParent(reactor: Any, drain: Any) -> None:
    """
    Drain or stop when the parent says so on stdin; stop when it closes.
    """
    standardIO: Any = stdio.StandardIO
    standardIO(
        _Lifeline(reactor, drain),
        stdin=0,
        stdout=os.open(os.devnull, os.O_WRONLY),
        reactor=reactor,
    )


def _readBootLine(fd: int = 0, limit: int = 1024 * 1024) -> bytes:
    """
    The parent's first line on C{fd}, read a byte at a time: a buffered read
    could take the parent's next message (drain, stop) along with it.
    """
    line = bytearray()
    while len(line) < limit:
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
        if byte == b"\n":
            break
    return bytes(line)


def _stdoutObserver(event: dict[str, Any]) -> None:
    # One line per event on stdout, which the parent copies into its log.
    text = eventAsText(event, includeTimestamp=False)
    try:
        sys.stdout.write(text.replace("\n", "\n\t") + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def buildWorkerOptions(boot: dict[str, Any], fd: int = WORKER_FD) -> tap.Options:
    """
    The parent's options rebuilt in a worker, listening on the inherited C{fd}
    and serving the parent's host key.
    """
    options = tap.Options()
    options.update(boot["options"])
    options.postOptions()
    hostKeys = boot.get("hostKeys") or []
    parent = options["settings"]
    options["settings"] = replace(
        parent,
        workers=1,
        inheritedListenFD=fd,
        healthCheckAddress=None,
        hostKey=keys.Key.fromString(hostKeys[0].encode()) if hostKeys else parent.hostKey,
    )
    return options


def _named(service: Any, name: str) -> Any:
    try:
        return service.getServiceNamed(name)
    except (KeyError, AttributeError):
        return None


def runWorker() -> None:
    """
    The worker's main: read the parent's options from stdin, serve until told to stop.
    """
    _dieWithParent()
    line = _readBootLine()
    if not line:
        sys.exit(0)
    boot = json.loads(line)
    observer: Any = _stdoutObserver
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    from twisted.internet import reactor

    options = buildWorkerOptions(boot)
    service = tap.makeService(options)
    r: Any = reactor
    drain = _named(service, "drain")
    _watchParent(r, drain)
    service.startService()
    r.addSystemEventTrigger("before", "shutdown", service.stopService)
    r.run()
